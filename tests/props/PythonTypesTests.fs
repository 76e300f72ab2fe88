/// Issue 11: Python's int/float types kept as given, compared with types against every golden
/// param-group case (MMEngine's own float results, such as weight_decay * decay_mult, stay floats).
module Optim.Tests.PythonTypesTests

open System.IO
open System.Text.Json.Nodes
open Expecto
open Optim
open Optim.Core

/// Tuples as lists (JSON has no tuples); everything else compared with its type (0 is not 0.0).
/// PyTorch-only switches TorchSharp has no counterpart for are left out (as in the parity tests).
let rec private normal (v: PyValue) =
    match v with
    | PyValue.Tuple xs | PyValue.List xs -> PyValue.List(List.map normal xs)
    | PyValue.Dict kvs ->
        PyValue.Dict(kvs |> List.filter (fun (k, _) -> not (ParamGroupsParityTests.torchOnly.Contains k)) |> List.map (fun (k, x) -> k, normal x) |> List.sortBy fst)
    | other -> other

let private typed (what: string) (golden: JsonNode) (ours: JsonNode) =
    let g, o = normal (GoldenFacts.py golden), normal (GoldenFacts.py ours)
    if g <> o then failtestf "%s: golden %s, ours %s" what (PyFormat.repr g) (PyFormat.repr o)

/// The golden param-group files whose models the test model spec builds (as in the parity tests).
let private paramGroupFiles () = [ "paramgroups_toy.json"; "paramgroups_toy_frozen.json"; "paramgroups_toy_shared.json"; "paramgroups_resnet18.json" ]

[<Tests>]
let tests =
    testList "python types (issue 11)" [
        for file in paramGroupFiles () do
            let doc = Golden.load file
            for case in doc["cases"].AsArray() do
                if isNull case["error"] then
                    test (file + ": " + case["id"].GetValue<string>() + " with int/float compared") {
                        let model = ParamGroupsParityTests.buildModel doc
                        let r = Inspection.inspect (model, case["build_optim_wrapper_cfg"].ToJsonString())
                        Expect.equal (r["result"].GetValue<string>()) "ok" "built"
                        typed "optimizer_defaults" (case["optimizer_defaults"]) (r["optimizer_defaults"])
                        let golden = case["param_groups"].AsArray()
                        let ours = r["param_groups"].AsArray()
                        for i in 0 .. golden.Count - 1 do
                            typed (sprintf "group %d options" i) (golden.[i]["options"]) (ours.[i]["options"])
                        if not (isNull case["base_param_settings"]) then typed "base_param_settings" (case["base_param_settings"]) (r["base_param_settings"])
                        typed "get_lr" (case["get_lr"]) (r["get_lr"])
                        typed "get_momentum" (case["get_momentum"]) (r["get_momentum"])
                    }
    ]
