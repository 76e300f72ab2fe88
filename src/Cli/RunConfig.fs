/// The run config of `optim train` (JSON, MMEngine's keys): `optim_wrapper` (passed to
/// build_optim_wrapper as it is), `param_scheduler` (one dict or a list), `train_cfg.max_epochs`,
/// `train_dataloader.batch_size`, `randomness.seed`. Every problem is reported at once, each with
/// its JSON path.
module Optim.Cli.RunConfig

open System
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open Optim

/// One problem with a config or an argument: where (a JSON path, or an option name) and what.
type Problem =
    { Path: string
      Message: string }
    override p.ToString() = if p.Path = "" then p.Message else p.Path + ": " + p.Message

/// A checked run config.
type RunConfig =
    { /// Where it was read from (a file, or `embedded:configs/fashion_mnist.json`).
      Source: string
      /// The `optim_wrapper` entry, as given.
      OptimWrapper: JsonNode
      /// The `param_scheduler` entry as JSON text, if any.
      ParamScheduler: string option
      MaxEpochs: int
      BatchSize: int
      Seed: int }

/// The default config, embedded in the CLI (a copy of configs/fashion_mnist.json).
let embeddedName = "embedded:configs/fashion_mnist.json"

let embeddedText () =
    use s = typeof<Problem>.Assembly.GetManifestResourceStream "configs/fashion_mnist.json"
    use r = new StreamReader(s)
    r.ReadToEnd()

let private topKeys = [ "description"; "optim_wrapper"; "param_scheduler"; "train_cfg"; "train_dataloader"; "randomness" ]

/// Parses JSON text, as an object; a syntax error names the line and position.
let parseJson (source: string) (text: string) : Result<JsonObject, Problem list> =
    try
        match JsonNode.Parse(text, documentOptions = JsonDocumentOptions(CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true)) with
        | :? JsonObject as o -> Ok o
        | _ -> Error [ { Path = ""; Message = sprintf "%s: the config must be a JSON object" source } ]
    with :? JsonException as e ->
        Error [ { Path = ""; Message = sprintf "%s: not valid JSON (line %d, position %d): %s" source (int (e.LineNumber.GetValueOrDefault() + 1L)) (int (e.BytePositionInLine.GetValueOrDefault() + 1L)) e.Message } ]

let private positiveInt (path: string) (node: JsonNode) (dflt: int) (problems: ResizeArray<Problem>) =
    match node with
    | null -> dflt
    | :? JsonValue as v when v.GetValueKind() = JsonValueKind.Number ->
        match v.TryGetValue<int>() with
        | true, n when n > 0 -> n
        | _ -> problems.Add { Path = path; Message = sprintf "expected a positive integer, got %s" (v.ToJsonString()) }; dflt
    | other -> problems.Add { Path = path; Message = sprintf "expected a positive integer, got %s" (other.ToJsonString()) }; dflt

let private section (root: JsonObject) (name: string) (known: string list) (problems: ResizeArray<Problem>) : JsonObject option =
    match root.[name] with
    | null -> None
    | :? JsonObject as o ->
        for kv in o do
            if not (List.contains kv.Key known) then
                problems.Add { Path = name + "." + kv.Key; Message = sprintf "unknown key (known here: %s)" (String.Join(", ", known)) }
        Some o
    | other -> problems.Add { Path = name; Message = sprintf "expected an object, got %s" (other.ToJsonString()) }; None

/// The problems `build_optim_wrapper` would raise for an `optim_wrapper` entry, under `optim_wrapper`.
let optimWrapperProblems (node: JsonNode) : Problem list =
    let ofError (e: Optim.Core.ConfigError) =
        let under = Optim.Core.ConfigError.under "optim_wrapper" e
        { Path = under.Path; Message = sprintf "%s (%s)" under.Message (Inspection.KindName e.Kind) }
    try
        let cfg = Builder.ParseConfig node
        Builder.Validate cfg |> Seq.map ofError |> List.ofSeq
    with :? OptimConfigException as e -> e.Errors |> Seq.map ofError |> List.ofSeq

/// The problems of a `param_scheduler` entry (paths `param_scheduler[i]...`). The epoch length is
/// not known yet (it depends on the data): any positive one lets `convert_to_iter_based` be checked.
let paramSchedulerProblems (text: string) : Problem list =
    ParamSchedulers.check (text, 1L)
    |> Seq.map (fun e -> { Path = e.Path; Message = sprintf "%s (%s)" e.PythonMessage e.PythonType })
    |> List.ofSeq

/// Checks a whole run config.
let parse (source: string) (text: string) : Result<RunConfig, Problem list> =
    parseJson source text
    |> Result.bind (fun root ->
        let problems = ResizeArray<Problem>()
        for kv in root do
            if not (List.contains kv.Key topKeys) then
                problems.Add { Path = kv.Key; Message = sprintf "unknown key (known: %s)" (String.Join(", ", topKeys)) }
        let optimWrapper =
            match root.["optim_wrapper"] with
            | null -> problems.Add { Path = "optim_wrapper"; Message = "missing: the optimizer wrapper config (MMEngine's optim_wrapper dict)" }; null
            | node -> problems.AddRange(optimWrapperProblems node); node
        let scheduler =
            match root.["param_scheduler"] with
            | null -> None
            | node ->
                let t = node.ToJsonString()
                problems.AddRange(paramSchedulerProblems t)
                Some t
        let trainCfg = section root "train_cfg" [ "max_epochs" ] problems
        let loader = section root "train_dataloader" [ "batch_size" ] problems
        let randomness = section root "randomness" [ "seed" ] problems
        let maxEpochs = positiveInt "train_cfg.max_epochs" (trainCfg |> Option.map (fun o -> o.["max_epochs"]) |> Option.toObj) 1 problems
        let batchSize = positiveInt "train_dataloader.batch_size" (loader |> Option.map (fun o -> o.["batch_size"]) |> Option.toObj) 64 problems
        let seed =
            match randomness |> Option.map (fun o -> o.["seed"]) |> Option.toObj with
            | null -> 0
            | :? JsonValue as v when (match v.TryGetValue<int>() with | true, _ -> true | _ -> false) -> v.GetValue<int>()
            | other -> problems.Add { Path = "randomness.seed"; Message = sprintf "expected an integer, got %s" (other.ToJsonString()) }; 0
        if problems.Count > 0 then Error(List.ofSeq problems)
        else
            Ok { Source = source; OptimWrapper = optimWrapper; ParamScheduler = scheduler
                 MaxEpochs = maxEpochs; BatchSize = batchSize; Seed = seed })

/// Reads and checks a config file (or the embedded default when `path` is None).
let load (path: string option) : Result<RunConfig, Problem list> =
    match path with
    | None -> parse embeddedName (embeddedText ())
    | Some p when not (File.Exists p) -> Error [ { Path = "--config"; Message = sprintf "%s: no such file" p } ]
    | Some p -> parse p (File.ReadAllText p)

/// The `optim_wrapper` entry of a file that is either a run config or an optim_wrapper config itself
/// (for `inspect`, which needs nothing else).
let loadOptimWrapper (path: string) : Result<JsonNode * string option, Problem list> =
    if not (File.Exists path) then Error [ { Path = "--config"; Message = sprintf "%s: no such file" path } ]
    else
        parseJson path (File.ReadAllText path)
        |> Result.map (fun root ->
            match root.["optim_wrapper"] with
            | null -> root :> JsonNode, None
            | node -> node, (match root.["param_scheduler"] with null -> None | s -> Some(s.ToJsonString())))
