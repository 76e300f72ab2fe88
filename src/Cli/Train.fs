/// `optim train`: a small CNN on Fashion-MNIST with everything about optimisation taken from the
/// config (wrapper, accumulation, clipping, paramwise rules, schedulers), metrics and curves in
/// `--out`, a checkpoint per epoch and `last`, `--resume` continuing bit-exactly, Ctrl-C stopping
/// cleanly after the current step.
module Optim.Cli.Train

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open Microsoft.Extensions.Logging
open TorchSharp
open Optim
open Optim.Cli.RunConfig

/// A run's configuration or arguments cannot be used: every problem, with its path or option.
exception UsageError of Problem list

/// What `optim train` was asked to do.
type Options =
    { Config: RunConfig
      Data: FashionMnist.Choice
      /// Overrides `train_cfg.max_epochs`.
      Epochs: int option
      /// Stop after this many iterations in all (a quick try, or a test): the schedules and the
      /// accumulation still follow the full run's length, so the run can be resumed to its end.
      MaxIters: int option
      /// Train on the first N images of the training split only.
      TrainLimit: int option
      Out: string
      Resume: string option
      Device: torch.Device
      /// Overrides `randomness.seed`.
      Seed: int option
      /// Plain output: a line every this many iterations.
      LogEvery: int }

/// Everything a training run is made of, built in one place (`build`): the model, the data and its
/// loader (the index batches of each epoch), the optimizer wrapper and the schedulers. A
/// data-parallel run replaces this (its sampler shards `EpochBatches`, its model wraps `Model`).
type Setup =
    { Model: torch.nn.Module<torch.Tensor, torch.Tensor>
      Wrapper: OptimWrapper
      Schedulers: ParamScheduler list
      Data: FashionMnist.DataSet
      Train: Idx.LabelledImages
      BatchSize: int
      EpochLength: int
      Epochs: int
      Seed: int
      /// The index batches of epoch `e` (0-based): a permutation of the training set seeded by the
      /// run's seed and the epoch, cut into full batches (the remainder is dropped, like drop_last).
      EpochBatches: int -> int[][] }

/// The outcome of a run (also written to `summary.json`).
type Summary =
    { ValAccuracy: float
      ValLoss: float
      WallSeconds: float
      Iterations: int
      Steps: int
      SkippedSteps: int
      Epochs: int
      ImagesPerSecond: float
      Interrupted: bool
      FinalLr: float list
      Source: string }

let private problemsOfConfigException (e: OptimConfigException) =
    e.Errors
    |> Seq.map (fun err ->
        let p = Optim.Core.ConfigError.under "optim_wrapper" err
        { Path = p.Path; Message = sprintf "%s (%s)" p.Message (Inspection.KindName err.Kind) })
    |> List.ofSeq

/// Builds the model, data loader, wrapper and schedulers of a run (the one seam).
let build (options: Options) (data: FashionMnist.DataSet) : Setup =
    let cfg = options.Config
    let seed = defaultArg options.Seed cfg.Seed
    let epochs = defaultArg options.Epochs cfg.MaxEpochs
    let train =
        match options.TrainLimit with
        | Some n when n < data.Train.Count -> FashionMnist.subset data.Train [| 0 .. n - 1 |]
        | _ -> data.Train
    let batchSize = cfg.BatchSize
    let epochLength = train.Count / batchSize
    if epochLength = 0 then
        raise (UsageError [ { Path = "train_dataloader.batch_size"; Message = sprintf "batch size %d is larger than the %d training images" batchSize train.Count } ])
    torch.manual_seed (int64 seed) |> ignore
    let model = Models.fashionCnn ()
    model.``to``(options.Device) |> ignore
    let wrapper =
        try Builder.build_optim_wrapper (model, cfg.OptimWrapper)
        with
        | :? OptimConfigException as e -> raise (UsageError(problemsOfConfigException e))
        | :? ArgumentException as e -> raise (UsageError [ { Path = "optim_wrapper"; Message = e.Message } ])
    let schedulers =
        match cfg.ParamScheduler with
        | None -> []
        | Some text ->
            try
                ParamSchedulers.build_list (text, SchedulerTarget.Of wrapper, int64 epochLength, int64 epochs, int64 (epochs * epochLength))
                |> List.ofSeq
            with
            | :? ParamSchedulerException as e -> raise (UsageError [ { Path = e.Path; Message = sprintf "%s (%s)" e.PythonMessage e.PythonType } ])
            | :? Collections.Generic.KeyNotFoundException as e -> raise (UsageError [ { Path = "param_scheduler"; Message = e.Message } ])
    let batches epoch =
        let p = FashionMnist.permutation (seed * 100003 + epoch) train.Count
        Array.init epochLength (fun b -> p.[b * batchSize .. (b + 1) * batchSize - 1])
    { Model = model; Wrapper = wrapper; Schedulers = schedulers; Data = data; Train = train
      BatchSize = batchSize; EpochLength = epochLength; Epochs = epochs; Seed = seed; EpochBatches = batches }

/// Validation accuracy and mean loss (fp32, eval mode, no gradients).
let evaluate (setup: Setup) (device: torch.Device) : float * float =
    let set = setup.Data.Validation
    setup.Model.eval()
    let mutable correct = 0L
    let mutable lossSum = 0.0
    use _ = torch.no_grad()
    for start in 0 .. 500 .. set.Count - 1 do
        use _scope = torch.NewDisposeScope()
        let idx = [| start .. min set.Count (start + 500) - 1 |]
        let x, y = FashionMnist.batch set idx device
        let logits = setup.Model.forward x
        lossSum <- lossSum + float (torch.nn.functional.cross_entropy(logits, y, reduction = torch.nn.Reduction.Sum).item<float32>())
        correct <- correct + (logits.argmax(1L).eq(y).sum().item<int64>())
    setup.Model.train()
    float correct / float set.Count, lossSum / float set.Count

let private lossScaleOf (w: OptimWrapper) =
    match w with
    | :? AmpOptimWrapper as a when a.loss_scaler.is_enabled() -> Some(a.loss_scaler.get_scale())
    | _ -> None

/// Whether this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX); without it bf16 matmuls are emulated.
let private cpuHasBf16 () =
    try
        let info = File.ReadAllText "/proc/cpuinfo"
        info.Contains "avx512_bf16" || info.Contains "amx_bf16"
    with _ -> false

/// Runs training. `cancel` is polled after every iteration (Ctrl-C).
let run (options: Options) (loggerFactory: ILoggerFactory) (reporter: Display.Reporter) (cancel: unit -> bool) : Summary =
    let log = loggerFactory.CreateLogger "optim.train"
    let data =
        match FashionMnist.load options.Data with
        | Ok d -> d
        | Error e -> raise (UsageError [ { Path = "--data"; Message = e.Message } ])
    let setup = build options data
    let model, wrapper = setup.Model, setup.Wrapper
    match wrapper with
    | :? AmpOptimWrapper as a when options.Device.``type`` = DeviceType.CPU ->
        let dtype = a.cast_dtype |> Option.ofNullable |> Option.map string |> Option.defaultValue "BFloat16"
        if dtype <> "Float32" && dtype <> "Float64" && not (cpuHasBf16 ()) then
            reporter.Message(
                sprintf "note: AmpOptimWrapper autocasts to %s, and this CPU has no bf16/fp16 arithmetic units: its matmuls are emulated and run many times slower than fp32 (bench/RESULTS.md). Mixed precision here is for memory and correctness; use configs/fashion_mnist.json for speed." dtype)
    | _ -> ()
    let totalIters = setup.Epochs * setup.EpochLength
    let stopAt = match options.MaxIters with Some m -> min m totalIters | None -> totalIters
    Directory.CreateDirectory options.Out |> ignore

    // Where to start: a resumed checkpoint's epoch and iteration, or the beginning.
    let startIter, checkpointSource =
        match options.Resume with
        | None -> 0, None
        | Some path ->
            if not (File.Exists path) then raise (UsageError [ { Path = "--resume"; Message = sprintf "%s: no such file" path } ])
            let meta =
                try Checkpointing.load path model wrapper setup.Schedulers
                with :? CheckpointException as e -> raise (UsageError [ { Path = "--resume"; Message = sprintf "%s: %s" path e.Message } ])
            let it, saved =
                match meta.["iter"], meta.["epoch_length"] with
                | null, _ | _, null -> raise (UsageError [ { Path = "--resume"; Message = sprintf "%s: not a checkpoint of optim train (no iter/epoch_length in its metadata)" path } ])
                | i, e -> i.GetValue<int>(), e.GetValue<int>()
            if saved <> setup.EpochLength then
                raise (UsageError [ { Path = "--resume"; Message = sprintf "%s was saved with %d iterations per epoch, this run has %d (another data set, batch size or --train-limit)" path saved setup.EpochLength } ])
            it, Some path
    checkpointSource |> Option.iter (fun p -> reporter.Message(sprintf "resumed from %s at iteration %d (epoch %d)" p startIter (startIter / setup.EpochLength + 1)))
    wrapper.initialize_count_status (model, startIter, totalIters)
    reporter.Message(sprintf "data: %s; %d iterations per epoch of %d images, %d epochs; %s on %O" setup.Data.Source setup.EpochLength setup.BatchSize setup.Epochs (wrapper.GetType().Name) options.Device)

    let groups = OptimizerGroups.Of(wrapper.optimizer).Count
    use csv = new Metrics.CsvWriter(Path.Combine(options.Out, "metrics.csv"), groups, startIter)
    let metadata (iter: int) =
        JsonObject(
            [ Collections.Generic.KeyValuePair<string, JsonNode>("iter", JsonValue.Create iter)
              Collections.Generic.KeyValuePair<string, JsonNode>("epoch", JsonValue.Create(iter / setup.EpochLength))
              Collections.Generic.KeyValuePair<string, JsonNode>("epoch_length", JsonValue.Create setup.EpochLength)
              Collections.Generic.KeyValuePair<string, JsonNode>("seed", JsonValue.Create setup.Seed)
              Collections.Generic.KeyValuePair<string, JsonNode>("config", JsonValue.Create options.Config.Source)
              Collections.Generic.KeyValuePair<string, JsonNode>("data", JsonValue.Create setup.Data.Source) ])
    let saveAs (name: string) (iter: int) =
        let path = Path.Combine(options.Out, name)
        Checkpointing.save path model wrapper setup.Schedulers (metadata iter)
        path

    let mutable gradNorm: float option = None
    wrapper.GradNormReported.Add(fun n -> gradNorm <- Some n)
    let watch = Stopwatch.StartNew()
    let mutable steps, skipped = 0, 0
    let mutable iter = startIter
    let mutable interrupted = false
    let mutable recentImages = 0
    let recent = Stopwatch.StartNew()
    let mutable imagesPerSecond = 0.0
    let mutable lastVal = (nan, nan)
    model.train()
    let device = options.Device
    while iter < stopAt && not interrupted do
        let epoch = iter / setup.EpochLength
        let batches = setup.EpochBatches epoch
        let mutable b = iter % setup.EpochLength
        while b < setup.EpochLength && iter < stopAt && not interrupted do
            let lrs = wrapper.get_lr().["lr"] |> List.ofSeq
            let momenta = wrapper.get_momentum().["momentum"] |> List.ofSeq
            let scaleBefore = lossScaleOf wrapper
            gradNorm <- None
            let loss =
                use _scope = torch.NewDisposeScope()
                let x, y = FashionMnist.batch setup.Train batches.[b] device
                let loss =
                    use _ctx = wrapper.optim_context model
                    torch.nn.functional.cross_entropy (model.forward x, y)
                wrapper.update_params loss
                loss.item<float32>() |> float
            let stepped = wrapper.should_update ()
            let scaleAfter = lossScaleOf wrapper
            // A dynamic scaler backs off exactly when it skipped the step for inf/NaN gradients.
            let skip = stepped && (match scaleBefore, scaleAfter with Some a, Some c -> c < a | _ -> false)
            if stepped then steps <- steps + 1
            if skip then skipped <- skipped + 1
            ParamSchedulerHook.after_train_iter setup.Schedulers
            iter <- iter + 1
            b <- b + 1
            recentImages <- recentImages + batches.[b - 1].Length
            if recent.Elapsed.TotalSeconds >= 1.0 then
                imagesPerSecond <- float recentImages / recent.Elapsed.TotalSeconds
                recentImages <- 0
                recent.Restart()
            csv.Write
                { Iter = iter - 1; Epoch = epoch + 1; Loss = loss; Lr = lrs; Momentum = momenta; GradNorm = gradNorm
                  LossScale = scaleAfter; Stepped = stepped; Skipped = skip }
            reporter.Progress
                { Iter = iter; TotalIters = totalIters; Epoch = epoch + 1; Epochs = setup.Epochs; Loss = loss
                  Lr = List.head lrs; GradNorm = gradNorm; LossScale = scaleAfter
                  ImagesPerSecond = (if imagesPerSecond > 0.0 then imagesPerSecond else float ((iter - startIter) * setup.BatchSize) / max 1e-3 watch.Elapsed.TotalSeconds)
                  Elapsed = watch.Elapsed }
            if cancel () then interrupted <- true
        if b = setup.EpochLength then
            ParamSchedulerHook.after_train_epoch setup.Schedulers
            let acc, vloss = evaluate setup device
            lastVal <- (acc, vloss)
            let metrics = Collections.Generic.Dictionary<string, float>()
            metrics.["accuracy"] <- acc
            metrics.["loss"] <- vloss
            ParamSchedulerHook.after_val_epoch (setup.Schedulers, metrics)
            let path = saveAs (sprintf "epoch_%d.ckpt" (epoch + 1)) iter
            File.Copy(path, Path.Combine(options.Out, "last.ckpt"), true)
            reporter.Message(sprintf "epoch %d/%d: validation accuracy %.2f%%, loss %.4f (checkpoint %s)" (epoch + 1) setup.Epochs (100.0 * acc) vloss path)
    if interrupted || (iter < totalIters && iter % setup.EpochLength <> 0) then
        let path = saveAs "last.ckpt" iter
        let how = if interrupted then "interrupted" else sprintf "stopped at --max-iters %d" stopAt
        reporter.Message(sprintf "%s after iteration %d; checkpoint %s. Resume with: optim train --resume %s (and the same --config/--data/--epochs)" how iter path path)
    elif iter < totalIters then
        reporter.Message(sprintf "stopped at --max-iters %d; resume with: optim train --resume %s (and the same --config/--data/--epochs)" stopAt (Path.Combine(options.Out, "last.ckpt")))
    // The last epoch's validation holds only if training stopped at its end.
    let acc, vloss = if iter % setup.EpochLength = 0 && not (Double.IsNaN(fst lastVal)) then lastVal else evaluate setup device
    let wall = watch.Elapsed.TotalSeconds
    log.LogDebug("training finished after {Iterations} iterations in {Seconds} s", iter - startIter, wall)
    try Metrics.plotFromCsv (Path.Combine(options.Out, "metrics.csv")) (Path.Combine(options.Out, "curves.png")) "optim train: Fashion-MNIST"
    with e -> log.LogWarning("curves.png not written: {Message}", e.Message)
    let summary =
        { ValAccuracy = acc; ValLoss = vloss; WallSeconds = wall; Iterations = iter; Steps = steps; SkippedSteps = skipped
          Epochs = setup.Epochs; ImagesPerSecond = float ((iter - startIter) * setup.BatchSize) / max 1e-3 wall
          Interrupted = interrupted; FinalLr = wrapper.get_lr().["lr"] |> List.ofSeq; Source = setup.Data.Source }
    let json =
        JsonSerializer.Serialize(
            {| val_accuracy = summary.ValAccuracy; val_loss = summary.ValLoss; wall_seconds = summary.WallSeconds
               iterations = summary.Iterations; steps = summary.Steps; skipped_steps = summary.SkippedSteps
               epochs = summary.Epochs; epoch_length = setup.EpochLength; batch_size = setup.BatchSize
               images_per_second = summary.ImagesPerSecond; interrupted = summary.Interrupted
               final_lr = summary.FinalLr; data = summary.Source; train_images = setup.Train.Count
               validation_images = setup.Data.Validation.Count; optim_wrapper = wrapper.GetType().Name |},
            JsonSerializerOptions(WriteIndented = true))
    File.WriteAllText(Path.Combine(options.Out, "summary.json"), json)
    summary
