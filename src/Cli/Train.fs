/// `optim train`: a small CNN on Fashion-MNIST with everything about optimisation taken from the
/// config (wrapper, accumulation, clipping, paramwise rules, schedulers), metrics and curves in
/// `--out`, a checkpoint per epoch and `last`, `--resume` continuing bit-exactly, Ctrl-C stopping
/// cleanly after the current step; with a process group (`--distributed`, under mpirun), data
/// parallel across ranks.
module Optim.Cli.Train

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open Microsoft.Extensions.Logging
open TorchSharp
open Optim
open Optim.Distributed
open Optim.Cli.RunConfig

/// A run's configuration or arguments cannot be used: every problem, with its path or option.
exception UsageError of Problem list

/// An error on one rank of a data-parallel run after training began: the other ranks may be waiting
/// for it in a collective, so the job must be aborted (MPI_Abort), not wound down rank by rank.
exception RankFailed of exn

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

/// Everything a training run is made of, built in one place (`buildIn`): the model, the data and
/// its loader (the index batches of each epoch), the optimizer wrapper and the schedulers. In a
/// data-parallel run `Model` is the DistributedDataParallel wrapper and `EpochBatches` this rank's
/// shard of every global batch.
type Setup =
    { /// The Fashion-MNIST CNN, or DistributedDataParallel around it.
      Model: torch.nn.Module<torch.Tensor, torch.Tensor>
      Wrapper: OptimWrapper
      Schedulers: ParamScheduler list
      Data: FashionMnist.DataSet
      Train: Idx.LabelledImages
      /// The global batch (the config's `train_dataloader.batch_size`), over all ranks.
      BatchSize: int
      EpochLength: int
      Epochs: int
      Seed: int
      /// The index batches of epoch `e` (0-based): a permutation of the training set seeded by the
      /// run's seed and the epoch, cut into full batches (the remainder is dropped, like drop_last);
      /// in a data-parallel run, this rank's `shard` of each.
      EpochBatches: int -> int[][]
      /// The ranks of a data-parallel run (None: one process).
      Group: IProcessGroup option
      Rank: int
      WorldSize: int }

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
      Source: string
      /// SHA-256 of the final parameters (every rank's are the same in a data-parallel run).
      ParameterChecksum: string }

/// Rank `rank`'s part of a global batch in a run over `world` ranks: `batch[rank::world]`, every
/// `world`-th index starting at `rank`. The batch size must be a multiple of `world` (checked by
/// `buildIn`), so every rank gets the same number of images, the average of the ranks' mean losses is
/// the global batch's mean loss, and the ranks' averaged gradients are the global batch's.
let shard (rank: int) (world: int) (batch: int[]) : int[] =
    Array.init (batch.Length / world) (fun i -> batch.[rank + i * world])

/// Runs `work` on every rank, then lets every rank learn whether all of them succeeded, so that bad
/// input on one rank (a missing file, another config) cannot leave the others waiting in the next
/// collective: a failed rank raises its own error, the others a DistributedException naming it.
let private agreed (group: IProcessGroup option) (what: string) (work: unit -> 'T) : 'T =
    match group with
    | None -> work ()
    | Some g ->
        let result = try Ok(work ()) with e -> Error e
        let failed = g.all_gather [| (match result with Ok _ -> 0L | Error _ -> 1L) |]
        match result with
        | Error e ->
            Runtime.ExceptionServices.ExceptionDispatchInfo.Throw e
            Unchecked.defaultof<'T>
        | Ok v ->
            match [ for r in 0 .. failed.Length - 1 do if failed.[r] <> 0L then yield string r ] with
            | [] -> v
            | ranks -> raise (DistributedException(sprintf "rank %s of %d failed while %s (its error is in its output); rank %d stops too" (String.Join(", ", ranks)) g.world_size what g.rank))

let private problemsOfConfigException (e: OptimConfigException) =
    e.Errors
    |> Seq.map (fun err ->
        let p = Optim.Core.ConfigError.under "optim_wrapper" err
        { Path = p.Path; Message = sprintf "%s (%s)" p.Message (Inspection.KindName err.Kind) })
    |> List.ofSeq

/// Builds the model, data loader, wrapper and schedulers of a run (the one seam). With a process
/// group (every rank calls this), the model is wrapped in DistributedDataParallel (rank 0's initial
/// weights on every rank), the optimizer wrapper is built from the wrapper (so paramwise rules see
/// the CNN's own names) and each rank's batches are its `shard` of the global ones.
/// The library logs (paramwise lines, warnings) through `loggerFactory`.
let buildIn (group: IProcessGroup option) (loggerFactory: ILoggerFactory) (options: Options) (data: FashionMnist.DataSet) : Setup =
    let cfg = options.Config
    let seed = defaultArg options.Seed cfg.Seed
    let epochs = defaultArg options.Epochs cfg.MaxEpochs
    let rank, world = match group with Some g -> g.rank, g.world_size | None -> 0, 1
    let train, batchSize, epochLength, inner =
        agreed group "checking the run's data and batch size" (fun () ->
            let train =
                match options.TrainLimit with
                | Some n when n < data.Train.Count -> FashionMnist.subset data.Train [| 0 .. n - 1 |]
                | _ -> data.Train
            let batchSize = cfg.BatchSize
            let epochLength = train.Count / batchSize
            if epochLength = 0 then
                raise (UsageError [ { Path = "train_dataloader.batch_size"; Message = sprintf "batch size %d is larger than the %d training images" batchSize train.Count } ])
            if batchSize % world <> 0 then
                raise (UsageError [ { Path = "train_dataloader.batch_size"; Message = sprintf "batch size %d does not split evenly over %d ranks: each rank trains on every %d-th image of each global batch, so the batch size must be a multiple of the number of ranks" batchSize world world } ])
            torch.manual_seed (int64 seed) |> ignore
            let inner = Models.fashionCnn ()
            inner.``to``(options.Device) |> ignore
            train, batchSize, epochLength, inner)
    let model =
        match group with
        | Some g -> new DistributedDataParallel(inner, g) :> torch.nn.Module<torch.Tensor, torch.Tensor>
        | None -> inner
    agreed group "building the optimizer wrapper and schedulers from the config" (fun () ->
        let wrapper =
            try Builder.build_optim_wrapper (model, cfg.OptimWrapper, loggerFactory)
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
            Array.init epochLength (fun b -> p.[b * batchSize .. (b + 1) * batchSize - 1] |> (if world = 1 then id else shard rank world))
        { Model = model; Wrapper = wrapper; Schedulers = schedulers; Data = data; Train = train
          BatchSize = batchSize; EpochLength = epochLength; Epochs = epochs; Seed = seed; EpochBatches = batches
          Group = group; Rank = rank; WorldSize = world })

/// `buildIn` for one process.
let build (options: Options) (data: FashionMnist.DataSet) : Setup = buildIn None OptimLogging.LoggerFactory options data

/// The SHA-256 of a model's parameters (unwrapped, in `named_parameters` order, as float32 bytes), in hex.
let parameterChecksum (model: torch.nn.Module) : string =
    use sha = Security.Cryptography.IncrementalHash.CreateHash(Security.Cryptography.HashAlgorithmName.SHA256)
    for struct (_, p) in (ModuleFacts.Unwrap model).named_parameters() do
        use c = p.detach().cpu().contiguous()
        sha.AppendData(c.bytes)
    Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant()

/// In a data-parallel run, the sum of `values` over the ranks (float64); else `values`.
let private sumOverRanks (setup: Setup) (values: float[]) : float[] =
    match setup.Group with
    | Some g when g.world_size > 1 ->
        use t = torch.tensor(values, dtype = torch.float64)
        g.all_reduce_(t, ReduceOp.SUM)
        t.data<float>().ToArray()
    | _ -> values

/// Validation accuracy and mean loss (fp32, eval mode, no gradients). In a data-parallel run every
/// rank first takes rank 0's buffers (BatchNorm statistics: each rank's last forward updated its own),
/// evaluates every world_size-th image from its rank on, and the counts and loss sums are added
/// over the ranks, so every rank reports the same numbers, those of rank 0's model.
let evaluate (setup: Setup) (device: torch.Device) : float * float =
    let set = setup.Data.Validation
    match setup.Group with
    | Some g when g.world_size > 1 ->
        use _ = torch.no_grad()
        for b in setup.Model.buffers() do g.broadcast_(b, 0)
    | _ -> ()
    setup.Model.eval()
    let mutable correct = 0L
    let mutable lossSum = 0.0
    let mine = [| setup.Rank .. setup.WorldSize .. set.Count - 1 |]
    (
        use _ = torch.no_grad()
        for start in 0 .. 500 .. mine.Length - 1 do
            use _scope = torch.NewDisposeScope()
            let idx = mine.[start .. min mine.Length (start + 500) - 1]
            let x, y = FashionMnist.batch set idx device
            let logits = setup.Model.forward x
            lossSum <- lossSum + float (torch.nn.functional.cross_entropy(logits, y, reduction = torch.nn.Reduction.Sum).item<float32>())
            correct <- correct + (logits.argmax(1L).eq(y).sum().item<int64>())
    )
    setup.Model.train()
    let totals = sumOverRanks setup [| float correct; lossSum |]
    totals.[0] / float set.Count, totals.[1] / float set.Count

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

/// Runs training, in one process or (with a process group) as one rank of a data-parallel run:
/// every rank calls it; rank 0 alone writes `--out` (metrics, curves, checkpoints, summary). `cancel`
/// is polled after every iteration (Ctrl-C); in a data-parallel run the ranks stop together when any
/// of them was cancelled.
let run (options: Options) (group: IProcessGroup option) (loggerFactory: ILoggerFactory) (reporter: Display.Reporter) (cancel: unit -> bool) : Summary =
    let log = loggerFactory.CreateLogger "optim.train"
    let data =
        agreed group "loading the data" (fun () ->
            match FashionMnist.load options.Data with
            | Ok d -> d
            | Error e -> raise (UsageError [ { Path = "--data"; Message = e.Message } ]))
    let setup = buildIn group loggerFactory options data
    let model, wrapper = setup.Model, setup.Wrapper
    let lead = setup.Rank = 0
    match wrapper with
    | :? AmpOptimWrapper as a when options.Device.``type`` = DeviceType.CPU ->
        let dtype = a.cast_dtype |> Option.ofNullable |> Option.map string |> Option.defaultValue "BFloat16"
        if dtype <> "Float32" && dtype <> "Float64" && not (cpuHasBf16 ()) then
            reporter.Message(
                sprintf "note: AmpOptimWrapper autocasts to %s, and this CPU has no bf16/fp16 arithmetic units: its matmuls are emulated and run many times slower than fp32 (bench/RESULTS.md). Mixed precision here is for memory and correctness; use configs/fashion_mnist.json for speed." dtype)
    | _ -> ()
    let totalIters = setup.Epochs * setup.EpochLength
    let stopAt = match options.MaxIters with Some m -> min m totalIters | None -> totalIters
    agreed group "creating the output folder (--out)" (fun () -> if lead then Directory.CreateDirectory options.Out |> ignore)

    // Where to start: a resumed checkpoint's epoch and iteration, or the beginning.
    let startIter, checkpointSource =
        match options.Resume with
        | None -> 0, None
        | Some path ->
            agreed group "looking for the --resume file" (fun () ->
                if not (File.Exists path) then raise (UsageError [ { Path = "--resume"; Message = sprintf "%s: no such file" path } ]))
            let meta =
                try Checkpointing.load group path model wrapper setup.Schedulers
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
    if setup.WorldSize > 1 then
        reporter.Message(sprintf "data parallel: %d ranks, %d images of each batch per rank; rank 0 writes %s" setup.WorldSize (setup.BatchSize / setup.WorldSize) options.Out)
    use _rankScope = if setup.Group.IsSome then log.BeginScope("rank {Rank}/{WorldSize}", setup.Rank, setup.WorldSize) else null

    // Everything from here runs in step on every rank: an error on one rank (a full disk on rank 0,
    // a collective that timed out) must end the whole job, not leave the others waiting.
    let train () =

        let groups = OptimizerGroups.Of(wrapper.optimizer).Count
        let csv = if lead then Some(new Metrics.CsvWriter(Path.Combine(options.Out, "metrics.csv"), groups, startIter)) else None
        use _csv = { new IDisposable with member _.Dispose() = csv |> Option.iter (fun c -> (c :> IDisposable).Dispose()) }
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
            Checkpointing.save setup.Group path model wrapper setup.Schedulers (metadata iter)
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
                // One small all-reduce per iteration: the global batch's mean loss (every rank's shard
                // has the same size) and whether any rank was asked to stop, so all stop after this step.
                let loss, stop =
                    let totals = sumOverRanks setup [| loss; (if cancel () then 1.0 else 0.0) |]
                    totals.[0] / float setup.WorldSize, totals.[1] > 0.0
                let stepped = wrapper.should_update ()
                let scaleAfter = lossScaleOf wrapper
                // A dynamic scaler backs off exactly when it skipped the step for inf/NaN gradients.
                let skip = stepped && (match scaleBefore, scaleAfter with Some a, Some c -> c < a | _ -> false)
                if stepped then steps <- steps + 1
                if skip then skipped <- skipped + 1
                ParamSchedulerHook.after_train_iter setup.Schedulers
                iter <- iter + 1
                b <- b + 1
                recentImages <- recentImages + setup.BatchSize
                if recent.Elapsed.TotalSeconds >= 1.0 then
                    imagesPerSecond <- float recentImages / recent.Elapsed.TotalSeconds
                    recentImages <- 0
                    recent.Restart()
                csv |> Option.iter (fun c ->
                  c.Write
                    { Iter = iter - 1; Epoch = epoch + 1; Loss = loss; Lr = lrs; Momentum = momenta; GradNorm = gradNorm
                      LossScale = scaleAfter; Stepped = stepped; Skipped = skip })
                reporter.Progress
                    { Iter = iter; TotalIters = totalIters; Epoch = epoch + 1; Epochs = setup.Epochs; Loss = loss
                      Lr = List.head lrs; GradNorm = gradNorm; LossScale = scaleAfter
                      ImagesPerSecond = (if imagesPerSecond > 0.0 then imagesPerSecond else float ((iter - startIter) * setup.BatchSize) / max 1e-3 watch.Elapsed.TotalSeconds)
                      Elapsed = watch.Elapsed }
                if stop then interrupted <- true
            if b = setup.EpochLength then
                ParamSchedulerHook.after_train_epoch setup.Schedulers
                let acc, vloss = evaluate setup device
                lastVal <- (acc, vloss)
                let metrics = Collections.Generic.Dictionary<string, float>()
                metrics.["accuracy"] <- acc
                metrics.["loss"] <- vloss
                ParamSchedulerHook.after_val_epoch (setup.Schedulers, metrics)
                let path = saveAs (sprintf "epoch_%d.ckpt" (epoch + 1)) iter
                if lead then File.Copy(path, Path.Combine(options.Out, "last.ckpt"), true)
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
        let checksum = parameterChecksum model
        log.LogInformation("final parameters: SHA-256 {Checksum}", checksum)
        // Cheap insurance that data parallelism did what it promises: every rank holds the same weights.
        match setup.Group with
        | Some g when g.world_size > 1 ->
            let prefix = Convert.ToInt64(checksum.Substring(0, 15), 16)
            let all = g.all_gather [| prefix |]
            if all |> Array.exists ((<>) prefix) then
                raise (DistributedException(sprintf "the ranks' parameters differ at the end of training (checksum prefixes by rank: %s)" (String.Join(", ", all |> Array.map (sprintf "%015x")))))
        | _ -> ()
        if lead then
            try Metrics.plotFromCsv (Path.Combine(options.Out, "metrics.csv")) (Path.Combine(options.Out, "curves.png")) "optim train: Fashion-MNIST"
            with e -> log.LogWarning("curves.png not written: {Message}", e.Message)
        let summary =
            { ValAccuracy = acc; ValLoss = vloss; WallSeconds = wall; Iterations = iter; Steps = steps; SkippedSteps = skipped
              Epochs = setup.Epochs; ImagesPerSecond = float ((iter - startIter) * setup.BatchSize) / max 1e-3 wall
              Interrupted = interrupted; FinalLr = wrapper.get_lr().["lr"] |> List.ofSeq; Source = setup.Data.Source
              ParameterChecksum = checksum }
        let json =
            JsonSerializer.Serialize(
                {| val_accuracy = summary.ValAccuracy; val_loss = summary.ValLoss; wall_seconds = summary.WallSeconds
                   iterations = summary.Iterations; steps = summary.Steps; skipped_steps = summary.SkippedSteps
                   epochs = summary.Epochs; epoch_length = setup.EpochLength; batch_size = setup.BatchSize
                   images_per_second = summary.ImagesPerSecond; interrupted = summary.Interrupted
                   final_lr = summary.FinalLr; data = summary.Source; train_images = setup.Train.Count
                   validation_images = setup.Data.Validation.Count; optim_wrapper = wrapper.GetType().Name
                   world_size = setup.WorldSize; parameter_checksum = summary.ParameterChecksum |},
                JsonSerializerOptions(WriteIndented = true))
        if lead then File.WriteAllText(Path.Combine(options.Out, "summary.json"), json)
        summary
    match setup.Group with
    | Some g when g.world_size > 1 -> (try train () with e -> raise (RankFailed e))
    | _ -> train ()
