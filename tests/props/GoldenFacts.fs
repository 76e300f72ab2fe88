/// Golden JSON as Python-like values, and facts about the golden models, for the param-group tests.
module Optim.Tests.GoldenFacts

open System.Text.Json
open System.Text.Json.Nodes
open Optim.Core

/// A JSON node as the Python value json.loads would give (ints stay ints).
let py (node: JsonNode) : PyValue =
    if isNull node then PyValue.None
    else
        use doc = JsonDocument.Parse(node.ToJsonString())
        PyJson.ofElement doc.RootElement

/// The string items of a JSON array.
let strings (node: JsonNode) = [ for x in node.AsArray() -> x.GetValue<string>() ]

/// The parameter facts MMEngine's add_params meets on a golden model, built from the file's
/// `modules_with_params` (walk order, shared tensors marked `same_tensor_as`), with each fact's
/// canonical name (its `named_parameters` name) as the identity's meaning.
let factsOf (model: JsonNode) : (Paramwise.ParamFact * string) list * string list =
    let canonical = [ for p in model["named_parameters"].AsArray() -> p["name"].GetValue<string>() ]
    let identity name = canonical |> List.findIndex ((=) name) |> int64
    let facts =
        [ for m in model["modules_with_params"].AsArray() do
              let prefix = m["module"].GetValue<string>()
              let typ = m["type"].GetValue<string>()
              let kind =
                  match typ with
                  | "BatchNorm1d" | "BatchNorm2d" | "BatchNorm3d" | "GroupNorm" | "LayerNorm"
                  | "InstanceNorm1d" | "InstanceNorm2d" | "InstanceNorm3d" | "SyncBatchNorm" -> Paramwise.ModuleKind.Norm
                  | "Conv2d" when m["in_channels"].GetValue<int>() = m["groups"].GetValue<int>() -> Paramwise.ModuleKind.DepthwiseConv
                  | "Conv2d" -> Paramwise.ModuleKind.Conv2d
                  | _ -> Paramwise.ModuleKind.Other
              for p in m["params"].AsArray() do
                  let canon =
                      match p["same_tensor_as"] with
                      | null -> p["full_name"].GetValue<string>()
                      | s -> s.GetValue<string>()
                  let fact : Paramwise.ParamFact =
                      { Prefix = prefix
                        Name = p["name"].GetValue<string>()
                        Kind = kind
                        InDcnModule = false
                        Ndim = p["ndim"].GetValue<int>()
                        RequiresGrad = p["requires_grad"].GetValue<bool>()
                        Identity = identity canon }
                  yield fact, canon ]
    facts, canonical
