/// The `optim` command line: `train`, `inspect`, `schedule`. Exit codes: 0 done, 1 failed while
/// running, 2 bad arguments or config (every problem listed, with its JSON path), 130 interrupted
/// (Ctrl-C; a checkpoint was written). `train --distributed` runs as one rank of an MPI job.
module Optim.Cli.Program

open System
open System.IO
open Argu
open Microsoft.Extensions.Logging
open Spectre.Console
open TorchSharp
open Optim
open Optim.Distributed
open Optim.Cli.RunConfig

type OutputFormat =
    | Table
    | Json
    | Csv

type TrainArgs =
    | Config of file: string
    | Data of dir: string
    | Embedded
    | Epochs of n: int
    | Max_Iters of n: int
    | Train_Limit of n: int
    | Out of dir: string
    | Resume of checkpoint: string
    | Device of device: string
    | Seed of n: int
    | Log_Every of n: int
    | Threads of n: int
    | Distributed
    | Dist_Timeout of seconds: int
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Config _ -> "run config (JSON, MMEngine's keys); default: configs/fashion_mnist.json (embedded)"
            | Data _ -> "folder with Fashion-MNIST's train-* and t10k-* IDX files (gzip or raw): full 60k/10k split"
            | Embedded -> "use the embedded 10k split (9,000 train / 1,000 validation) even when Debian's dataset-fashion-mnist is installed"
            | Epochs _ -> "number of epochs (overrides train_cfg.max_epochs)"
            | Max_Iters _ -> "stop after N iterations in all (schedules keep the full run's length; resumable)"
            | Train_Limit _ -> "train on the first N training images only"
            | Out _ -> "output folder for metrics.csv, curves.png, summary.json and checkpoints (default: runs/fashion_mnist)"
            | Resume _ -> "continue from a checkpoint written by optim train (epoch_N.ckpt or last.ckpt)"
            | Device _ -> "cpu or cuda (default: cpu)"
            | Seed _ -> "random seed (overrides randomness.seed)"
            | Log_Every _ -> "plain output (not a terminal): one line every N iterations (default 50)"
            | Threads _ -> "libtorch intra-op threads (default 1: this small CNN gains little from more, and loses badly on a busy machine)"
            | Distributed -> "data parallel over MPI, one rank per process: mpirun -np N optim train --distributed ... Each rank trains on every N-th image of each global batch (the batch size, a multiple of N, and the schedules stay the config's), gradients are averaged across ranks; rank 0 writes --out and prints plain lines, the others stay quiet; without mpirun it is a job of one rank. SIGUSR1 to any rank (mpirun forwards it to every rank) stops all ranks after the same step, with a checkpoint"
            | Dist_Timeout _ -> "with --distributed: seconds a collective may wait for the other ranks before this rank gives up and aborts the job (default 1800, PyTorch's)"

type InspectArgs =
    | [<Mandatory>] Config of file: string
    | Model of name: string
    | Model_Spec of file: string
    | Format of OutputFormat
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Config _ -> "a run config (with optim_wrapper) or an optim_wrapper config"
            | Model _ -> "fashion_cnn (default), resnet18 or mobilenet_v2"
            | Model_Spec _ -> "a neutral model spec (golden/README.md), or a golden paramgroups file holding one"
            | Format _ -> "table (default) or json"

type ScheduleArgs =
    | [<Mandatory>] Config of file: string
    | [<Mandatory>] Iters of n: int
    | Epoch_Length of n: int
    | Model of name: string
    | Format of OutputFormat
    | Plot of png: string
    | Every of n: int
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Config _ -> "a run config with optim_wrapper and param_scheduler"
            | Iters _ -> "number of iterations"
            | Epoch_Length _ -> "iterations per epoch, for by_epoch schedulers (default: the embedded split's, 9000 / batch size)"
            | Model _ -> "the model whose param groups are scheduled: fashion_cnn (default), resnet18, mobilenet_v2"
            | Format _ -> "table (default), csv or json"
            | Plot _ -> "also draw lr and momentum against iteration into this PNG"
            | Every _ -> "print every N-th iteration only (the plot keeps all)"

[<RequireQualifiedAccess>]
type Level =
    | Trace
    | Debug
    | Information
    | Warning
    | Error
    | None

type Args =
    | [<CliPrefix(CliPrefix.None)>] Train of ParseResults<TrainArgs>
    | [<CliPrefix(CliPrefix.None)>] Inspect of ParseResults<InspectArgs>
    | [<CliPrefix(CliPrefix.None)>] Schedule of ParseResults<ScheduleArgs>
    | [<Inherit>] Verbose
    | [<Inherit>] Log_Level of Level
    interface IArgParserTemplate with
        member a.Usage =
            match a with
            | Train _ -> "train the Fashion-MNIST CNN with the config's optimizer wrapper and schedules"
            | Inspect _ -> "show the param groups a config builds for a model, with each option's provenance"
            | Schedule _ -> "print the lr and momentum of each param group per iteration"
            | Verbose -> "show stack traces of errors"
            | Log_Level _ -> "Microsoft.Extensions.Logging level for Optim's and the CLI's logs (default: warning)"

/// Bad arguments or config: exit code 2.
exception private Usage of Problem list

let private fail (problems: Problem list) = raise (Usage problems)

let private ok (r: Result<'T, Problem list>) = match r with Ok v -> v | Error ps -> fail ps

let private loggerFactory (level: Level) : ILoggerFactory =
    let min =
        match level with
        | Level.Trace -> LogLevel.Trace
        | Level.Debug -> LogLevel.Debug
        | Level.Information -> LogLevel.Information
        | Level.Warning -> LogLevel.Warning
        | Level.Error -> LogLevel.Error
        | Level.None -> LogLevel.None
    // Schedulers warn when stepped before the optimizer has stepped (PyTorch's order warning). The
    // CLI steps them as MMEngine's hook does, so with accumulation the first iterations always
    // "precede" a step, and `schedule` steps no optimizer at all: their warnings are noise here.
    let schedulers = set Registries.PARAM_SCHEDULERS.names
    LoggerFactory.Create(fun b ->
        b.SetMinimumLevel(min)
            .AddFilter(fun (category: string) (level: LogLevel) -> level >= min && (level > LogLevel.Warning || not (schedulers.Contains category)))
            // Scopes carry the rank in a data-parallel run ("=> rank 1/2").
            .AddSimpleConsole(fun o -> o.SingleLine <- true; o.IncludeScopes <- true)
            // Logs go to stderr: stdout carries the command's output (JSON, CSV, the progress display).
            .AddConsole(fun o -> o.LogToStandardErrorThreshold <- LogLevel.Trace)
        |> ignore)

let private device (name: string option) =
    match defaultArg name "cpu" with
    | "cpu" -> torch.CPU
    | "cuda" when torch.cuda.is_available () -> torch.CUDA
    | "cuda" -> fail [ { Path = "--device"; Message = "cuda: no CUDA device or CUDA build of libtorch (this build references libtorch-cpu)" } ]
    | other -> fail [ { Path = "--device"; Message = sprintf "'%s': expected cpu or cuda" other } ]

let private positive (name: string) (v: int option) =
    match v with
    | Some n when n <= 0 -> fail [ { Path = name; Message = sprintf "expected a positive integer, got %d" n } ]
    | _ -> v

/// Set for a data-parallel run of several ranks: errors then say which rank reports them.
let mutable private rankPrefix = ""

let private writeJson (o: Text.Json.Nodes.JsonObject) =
    Console.Out.WriteLine(o.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true, Encoder = Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping)))

let private train (a: ParseResults<TrainArgs>) (factory: ILoggerFactory) : int =
    if a.Contains TrainArgs.Data && a.Contains Embedded then
        fail [ { Path = "--data"; Message = "--data and --embedded exclude each other" } ]
    let config = RunConfig.load (a.TryGetResult TrainArgs.Config) |> ok
    let options : Train.Options =
        { Config = config
          Data =
            match a.TryGetResult TrainArgs.Data with
            | Some dir -> FashionMnist.Folder dir
            | None when a.Contains Embedded -> FashionMnist.Embedded
            | None -> FashionMnist.defaultChoice ()
          Epochs = positive "--epochs" (a.TryGetResult Epochs)
          MaxIters = positive "--max-iters" (a.TryGetResult Max_Iters)
          TrainLimit = positive "--train-limit" (a.TryGetResult Train_Limit)
          Out = a.GetResult(Out, defaultValue = Path.Combine("runs", "fashion_mnist"))
          Resume = a.TryGetResult Resume
          Device = device (a.TryGetResult Device)
          Seed = a.TryGetResult Seed
          LogEvery = defaultArg (positive "--log-every" (a.TryGetResult Log_Every)) 50 }
    // Measured on a shared 2-core machine (load ~30): 1 thread 490 images/s, 2 threads 4x slower.
    torch.set_num_threads (defaultArg (positive "--threads" (a.TryGetResult Threads)) 1)
    if a.Contains Dist_Timeout && not (a.Contains Distributed) then
        fail [ { Path = "--dist-timeout"; Message = "only with --distributed" } ]
    let timeout = TimeSpan.FromSeconds(float (defaultArg (positive "--dist-timeout" (a.TryGetResult Dist_Timeout)) 1800))
    // MPI before anything else a rank does: outside mpirun this is a job of one rank (Open MPI's singleton).
    let group =
        if a.Contains Distributed then
            try Some(MpiProcessGroup.Init(timeout))
            with :? DistributedException as e -> fail [ { Path = "--distributed"; Message = e.Message } ]
        else None
    use _group = { new IDisposable with member _.Dispose() = group |> Option.iter (fun g -> g.Dispose()) }
    let rank, world = match group with Some g -> g.rank, g.world_size | None -> 0, 1
    if world > 1 then rankPrefix <- sprintf "rank %d/%d: " rank world
    let mutable stop = false
    let requestStop (what: string) =
        if not stop then
            stop <- true
            Console.Error.WriteLine(sprintf "%s%s: stopping after this step..." rankPrefix what)
    use _ =
        Console.CancelKeyPress.Subscribe(fun e ->
            // The first Ctrl-C stops after the current step (and checkpoints); a second one kills.
            if not stop then
                e.Cancel <- true
                requestStop "Ctrl-C (again to abort without a checkpoint)")
    // mpirun forwards SIGUSR1 to every rank (a rank that gets it alone stops the others too); Ctrl-C
    // on mpirun terminates the ranks (SIGTERM, SIGKILL a second later), which is left as it is.
    let signals =
        if group.IsSome then
            [ Runtime.InteropServices.PosixSignalRegistration.Create(enum<Runtime.InteropServices.PosixSignal> 10, fun c -> c.Cancel <- true; requestStop "SIGUSR1") ]
        else []
    use _signals = { new IDisposable with member _.Dispose() = for s in signals do s.Dispose() }
    // Several ranks: rank 0 prints plain lines (mpirun gives every rank a pseudo-terminal, but its
    // forwarded, interleaved output is no place for a live display); the others print nothing.
    let display =
        if world > 1 then (if rank = 0 then Display.plain options.LogEvery else Display.quiet)
        elif Display.interactive () then Display.live
        else Display.plain options.LogEvery
    let summary =
        try display (fun reporter -> Train.run options (group |> Option.map (fun g -> g :> IProcessGroup)) factory reporter (fun () -> stop))
        with
        | Train.UsageError ps -> fail ps
        | Train.RankFailed e ->
            // Another rank may be waiting for this one in a collective: end the whole job now.
            let code = match e with Train.UsageError _ -> 2 | _ -> 1
            Console.Error.WriteLine(sprintf "%serror: %s; aborting the MPI job" rankPrefix (match e with Train.UsageError ps -> String.Join("; ", ps |> List.map string) | _ -> e.Message))
            Console.Error.Flush()
            Console.Out.Flush()
            group.Value.Abort code
            code |> exit
    if rank = 0 then
        Display.summary "optim train"
            [ "validation accuracy", sprintf "%.2f%%" (100.0 * summary.ValAccuracy)
              "validation loss", sprintf "%.4f" summary.ValLoss
              "wall time", sprintf "%.1f s" summary.WallSeconds
              "images/s", sprintf "%.0f" summary.ImagesPerSecond
              "iterations", string summary.Iterations
              "optimizer steps", string summary.Steps
              "steps skipped by the loss scaler", string summary.SkippedSteps
              if world > 1 then "ranks (data parallel)", string world
              "data", summary.Source
              "output", Path.GetFullPath options.Out ]
    if summary.Interrupted then 130 else 0

let private inspect (a: ParseResults<InspectArgs>) : int =
    let optimWrapper, _ = RunConfig.loadOptimWrapper (a.GetResult InspectArgs.Config) |> ok
    let choice, name =
        match a.TryGetResult InspectArgs.Model, a.TryGetResult Model_Spec with
        | Some _, Some _ -> fail [ { Path = "--model"; Message = "--model and --model-spec exclude each other" } ]
        | _, Some spec -> Inspect.SpecFile spec, spec
        | m, None -> let n = defaultArg m "fashion_cnn" in Inspect.Named n, n
    let model = Inspect.model choice |> ok
    let result = Inspect.inspect name model optimWrapper |> ok
    match a.GetResult(InspectArgs.Format, defaultValue = Table) with
    | Json -> writeJson result
    | Table -> Inspect.render result
    | Csv -> fail [ { Path = "--format"; Message = "inspect prints table or json" } ]
    0

let private schedule (a: ParseResults<ScheduleArgs>) (factory: ILoggerFactory) : int =
    let path = a.GetResult ScheduleArgs.Config
    let optimWrapper, scheduler = RunConfig.loadOptimWrapper path |> ok
    let iters = (positive "--iters" (Some(a.GetResult Iters))).Value
    let epochLength =
        match positive "--epoch-length" (a.TryGetResult Epoch_Length) with
        | Some n -> n
        | None ->
            // The embedded split's epoch at the config's batch size (a full run config), else 1.
            match RunConfig.load (Some path) with
            | Ok cfg -> (10000 - FashionMnist.embeddedValidation) / cfg.BatchSize
            | Error _ -> 1
    let model = Inspect.model (Inspect.Named(a.GetResult(ScheduleArgs.Model, defaultValue = "fashion_cnn"))) |> ok
    let points = Schedule.simulate factory model optimWrapper scheduler iters epochLength |> ok
    a.TryGetResult Plot |> Option.iter (fun png -> Schedule.plot png points)
    let every = defaultArg (positive "--every" (a.TryGetResult Every)) 1
    let points = points |> List.filter (fun p -> p.Iter % every = 0)
    match a.GetResult(ScheduleArgs.Format, defaultValue = Table) with
    | Json -> writeJson (Schedule.toJson points)
    | Csv -> for l in Schedule.toCsv points do Console.Out.WriteLine l
    | Table -> Schedule.render points
    0

let private report (problems: Problem list) =
    let text =
        match problems with
        | [ p ] -> sprintf "error: %O" p
        | ps -> sprintf "error: %d problems:\n%s" ps.Length (String.Join("\n", ps |> List.map (fun p -> "  " + string p)))
    Console.Error.WriteLine(rankPrefix + text)

[<EntryPoint>]
let main argv =
    let parser = ArgumentParser.Create<Args>(programName = "optim")
    let verbose = argv |> Array.contains "--verbose"
    try
        let parsed =
            try parser.ParseCommandLine(argv, raiseOnUsage = true)
            with :? ArguParseException as e ->
                // Help asked for: exit 0; anything else Argu rejects: exit 2.
                match e.ErrorCode with
                | ErrorCode.HelpText -> Console.Out.WriteLine e.Message; exit 0
                | _ -> Console.Error.WriteLine e.Message; exit 2
        // Piped or redirected output has no terminal width: tables get 120 columns, not Spectre's 80
        // (mpirun's ranks write to a pseudo-terminal whose width is not the user's either).
        if Console.IsOutputRedirected || not (isNull (Environment.GetEnvironmentVariable "OMPI_COMM_WORLD_RANK")) then AnsiConsole.Profile.Width <- 120
        use factory = loggerFactory (parsed.GetResult(Log_Level, defaultValue = Level.Warning))
        // The library logs through this run's factory, handed to what each command builds (no global).
        match parsed.TryGetSubCommand() with
        | Some(Train a) -> train a factory
        | Some(Inspect a) -> inspect a
        | Some(Schedule a) -> schedule a factory
        | _ ->
            Console.Error.WriteLine(parser.PrintUsage(message = "a command is needed: train, inspect or schedule"))
            2
    with
    | Usage problems ->
        report problems
        2
    | :? ArguParseException as e ->
        // A subcommand's arguments are checked when read (a missing mandatory one, say).
        Console.Error.WriteLine e.Message
        2
    | e ->
        Console.Error.WriteLine(sprintf "%serror: %s" rankPrefix (if verbose then e.ToString() else e.Message))
        if not verbose then Console.Error.WriteLine "(--verbose shows the stack trace)"
        1
