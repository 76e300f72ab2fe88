/// Parity with golden/paramgroups_*.json through the whole facade: the golden model rebuilt in
/// TorchSharp (toy specs with ties and frozen parameters; resnet18 from TorchVision), the config
/// given as JSON to build_optim_wrapper (via the inspection entry point), and every recorded fact
/// compared: groups, names, MMEngine-set keys and values, options after defaults, defaults,
/// base_param_settings, get_lr, get_momentum, parameters left out, log lines.
module Optim.Tests.ParamGroupsParityTests

open System.Text.Json.Nodes
open Expecto
open Microsoft.Extensions.Logging
open TorchSharp
open Optim
open Optim.Core

/// Keys torch 1.13 adds to every group that TorchSharp has no counterpart for.
let torchOnly = set [ "foreach"; "differentiable"; "capturable"; "fused" ]

let private py (n: JsonNode) = GoldenFacts.py n

/// Python equality of two values where ints and floats compare by value (0 == 0.0), lists elementwise.
let rec pyEquals (a: PyValue) (b: PyValue) =
    match a, b with
    | (PyValue.Int _ | PyValue.Float _), (PyValue.Int _ | PyValue.Float _) -> PyNum.toDouble a = PyNum.toDouble b
    | (PyValue.List xs | PyValue.Tuple xs), (PyValue.List ys | PyValue.Tuple ys) -> xs.Length = ys.Length && List.forall2 pyEquals xs ys
    | PyValue.Dict xs, PyValue.Dict ys ->
        xs.Length = ys.Length && xs |> List.forall (fun (k, x) -> match PyValue.tryFind k ys with Some y -> pyEquals x y | None -> false)
    | _ -> a = b

/// Compares a golden dict of options with ours: every golden key except torch-only ones must be in
/// ours with an equal value, and ours has nothing else.
let compareOptions (what: string) (golden: JsonNode) (ours: JsonNode) =
    let g = match py golden with PyValue.Dict kvs -> kvs | v -> failwithf "%s: golden is %A" what v
    let o = match py ours with PyValue.Dict kvs -> kvs | v -> failwithf "%s: ours is %A" what v
    for (k, gv) in g do
        match PyValue.tryFind k o with
        | Some ov -> Expect.isTrue (pyEquals gv ov) (sprintf "%s.%s: golden %s, ours %s" what k (PyFormat.repr gv) (PyFormat.repr ov))
        | None -> Expect.isTrue (torchOnly.Contains k) (sprintf "%s: missing key %s" what k)
    for (k, _) in o do
        Expect.isTrue (PyValue.tryFind k g |> Option.isSome) (sprintf "%s: extra key %s" what k)

/// The golden model in TorchSharp.
let buildModel (doc: JsonNode) : torch.nn.Module =
    let model = doc["model"]
    match model["spec"] with
    | null ->
        let m = torchvision.models.resnet18()
        m :> torch.nn.Module
    | spec -> ModelSpec.build spec

/// Runs `f` with Optim's logs captured; returns f's result and the lines as (level, message).
let withLogs (f: unit -> 'T) : 'T * (string * string) list =
    let provider, scope = TestSupport.captureLogs ()
    use _ = scope
    let r = f ()
    let name (l: LogLevel) = if l = LogLevel.Warning then "WARNING" elif l = LogLevel.Information then "INFO" else string l
    r, provider.Records |> List.map (fun r -> name r.Level, r.Message)

let private files = [ "paramgroups_toy.json"; "paramgroups_toy_frozen.json"; "paramgroups_toy_shared.json"; "paramgroups_resnet18.json" ]

let private goldenLogs (case: JsonNode) = [ for l in case["logs"].AsArray() -> l["level"].GetValue<string>(), l["msg"].GetValue<string>() ]

let private ourLogs (r: JsonObject) = [ for l in r["logs"].AsArray() -> l["level"].GetValue<string>(), l["msg"].GetValue<string>() ]

/// Checks one golden case against the inspection of the same config on the rebuilt model, and that
/// the same log lines went through ILogger. Returns the number of compared groups.
let checkCase (doc: JsonNode) (case: JsonNode) =
    use _ = torch.NewDisposeScope()
    let model = buildModel doc
    let cfg = case["build_optim_wrapper_cfg"].ToJsonString()
    let r, logged = withLogs (fun () -> Inspection.inspect (model, cfg))
    Expect.equal (ourLogs r) (goldenLogs case) "log lines (inspection)"
    Expect.equal logged (goldenLogs case) "log lines (through ILogger)"
    match case["result"].GetValue<string>() with
    | "error" ->
        Expect.equal (r["result"].GetValue<string>()) "error" "an error"
        let e = case["error"]
        let first = r["errors"].AsArray().[0]
        Expect.equal (first["kind"].GetValue<string>()) (e["type"].GetValue<string>()) "error kind"
        Expect.stringContains (first["message"].GetValue<string>()) (e["message"].GetValue<string>()) "error message"
        0
    | _ ->
        Expect.equal (r["result"].GetValue<string>()) "ok" (sprintf "built: %s" (r.ToJsonString()))
        Expect.equal (r["optimizer_type"].GetValue<string>()) (case["optimizer_type"].GetValue<string>()) "optimizer type"
        Expect.equal (r["optim_wrapper_type"].GetValue<string>()) (case["optim_wrapper_type"].GetValue<string>()) "wrapper type"
        compareOptions "optimizer_defaults" (case["optimizer_defaults"]) (r["optimizer_defaults"])
        let golden = case["param_groups"].AsArray()
        let ours = r["param_groups"].AsArray()
        Expect.equal ours.Count (case["num_groups"].GetValue<int>()) "number of groups"
        for i in 0 .. golden.Count - 1 do
            let g, o = golden.[i], ours.[i]
            Expect.equal (GoldenFacts.strings (o["params"])) (GoldenFacts.strings (g["params"])) (sprintf "group %d params" i)
            let explicitKeys = GoldenFacts.strings (g["explicit_keys"])
            Expect.equal (GoldenFacts.strings (o["explicit_keys"])) explicitKeys (sprintf "group %d explicit keys" i)
            compareOptions (sprintf "group %d options" i) (g["options"]) (o["options"])
            // Keys MMEngine set that are no hyper-parameter (lr_mult, decay_mult, ...) keep their Python type.
            let hyper = Optimizers.order (case["optimizer_type"].GetValue<string>()) |> set
            for k in explicitKeys do
                if not (hyper.Contains k) then
                    Expect.equal (py (o["options"][k])) (py (g["options"][k])) (sprintf "group %d extra key %s keeps its type" i k)
        match case["base_param_settings"] with
        | null -> Expect.isNull (r["base_param_settings"]) "no base_param_settings"
        | b -> compareOptions "base_param_settings" b (r["base_param_settings"])
        Expect.isTrue (pyEquals (py (case["get_lr"])) (py (r["get_lr"]))) (sprintf "get_lr %s vs %s" (case["get_lr"].ToJsonString()) (r["get_lr"].ToJsonString()))
        Expect.equal (GoldenFacts.strings (r["get_lr"].AsObject() |> Seq.map (fun kv -> JsonValue.Create kv.Key :> JsonNode) |> Array.ofSeq |> JsonArray))
                     (GoldenFacts.strings (case["get_lr"].AsObject() |> Seq.map (fun kv -> JsonValue.Create kv.Key :> JsonNode) |> Array.ofSeq |> JsonArray)) "get_lr key order"
        Expect.isTrue (pyEquals (py (case["get_momentum"])) (py (r["get_momentum"]))) "get_momentum"
        Expect.equal (GoldenFacts.strings (r["params_not_in_optimizer"])) (GoldenFacts.strings (case["params_not_in_optimizer"])) "params left out"
        golden.Count

let parity =
    testList "golden param groups through build_optim_wrapper" [
        for file in files do
            let doc = Golden.load file
            test (file + ": the rebuilt model has PyTorch's names, shapes and order") {
                use _ = torch.NewDisposeScope()
                let model = buildModel doc
                let ours = ModuleFacts.NamedParameters model |> Seq.map (fun struct (n, p) -> n, List.ofArray p.shape, p.requires_grad) |> List.ofSeq
                let golden =
                    [ for p in (doc["model"]["named_parameters"]).AsArray() ->
                        p["name"].GetValue<string>(), [ for s in p["shape"].AsArray() -> s.GetValue<int64>() ], p["requires_grad"].GetValue<bool>() ]
                Expect.equal ours golden "named_parameters"
            }
            for case in doc["cases"].AsArray() do
                test (case["id"].GetValue<string>()) { checkCase doc case |> ignore }
    ]

[<Tests>]
let tests = testList "paramgroups parity" [ parity ]
