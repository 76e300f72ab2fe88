/// `optim inspect`: what a config does to a model's parameters — the param groups in order, every
/// option with the rule that set it, frozen and duplicate (tied) parameters, MMEngine's log lines,
/// and warnings for settings MMEngine ignores silently. Built on the library's `Inspection`.
module Optim.Cli.Inspect

open System
open System.Text.Json
open System.Text.Json.Nodes
open TorchSharp
open Optim
open Optim.Cli.RunConfig
open Spectre.Console

/// The model to inspect: by name, or a neutral model spec (golden/README.md) in a file.
type ModelChoice =
    | Named of string
    | SpecFile of string

/// Builds the model (seeded, so that repeated runs agree).
let model (choice: ModelChoice) : Result<torch.nn.Module, Problem list> =
    torch.manual_seed 0L |> ignore
    match choice with
    | Named n ->
        match Models.byName n with
        | Some m -> Ok m
        | None -> Error [ { Path = "--model"; Message = sprintf "unknown model '%s' (known: %s)" n (String.Join(", ", Models.names)) } ]
    | SpecFile path ->
        if not (IO.File.Exists path) then Error [ { Path = "--model-spec"; Message = sprintf "%s: no such file" path } ]
        else
            parseJson path (IO.File.ReadAllText path)
            |> Result.bind (fun root ->
                // A golden paramgroups file holds the spec under model.spec; a bare spec has `root`.
                let spec =
                    match root.["root"], root.["model"] with
                    | null, null -> None
                    | null, m -> (match m.["spec"] with null -> None | s -> Some s)
                    | _ -> Some(root :> JsonNode)
                match spec with
                | None -> Error [ { Path = "--model-spec"; Message = sprintf "%s: neither a model spec ({root, ties, frozen}) nor a file with model.spec" path } ]
                | Some s ->
                    try Ok(ModelSpec.build s)
                    with e -> Error [ { Path = "--model-spec"; Message = sprintf "%s: %s" path e.Message } ])

// The paramwise_cfg keys DefaultOptimWrapperConstructor reads. Until the core reports unknown keys
// itself (the badinput branch), the CLI warns from this list.
let private paramwiseKeys =
    set [ "custom_keys"; "bias_lr_mult"; "bias_decay_mult"; "norm_decay_mult"; "dwconv_decay_mult"; "flat_decay_mult"; "dcn_offset_lr_mult"; "bypass_duplicate" ]

let private customKeySource (key: string) = "custom_keys[" + Optim.Core.ConfigError.quote key + "]"

/// Warnings for what MMEngine ignores silently: custom keys that set nothing on any parameter, and
/// paramwise_cfg keys it does not read. The library's own (`warnings` in its inspection, once the
/// core reports them) when present; otherwise computed from the inspection's `provenance`.
let warnings (optimWrapper: JsonNode) (result: JsonObject) : string list =
    match result.["warnings"], optimWrapper.["paramwise_cfg"] with
    | :? JsonArray as fromLibrary, _ ->
        [ for w in fromLibrary -> sprintf "%s: %s" (w.["path"].GetValue<string>()) (w.["message"].GetValue<string>()) ]
    | _, paramwise ->
    match paramwise with
    | :? JsonObject as pw ->
        let used =
            match result.["param_groups"] with
            | :? JsonArray as groups ->
                groups
                |> Seq.collect (fun g ->
                    match g.["provenance"] with
                    | :? JsonObject as p -> p |> Seq.map (fun kv -> kv.Value.GetValue<string>())
                    | _ -> Seq.empty)
                |> Set.ofSeq
            | _ -> Set.empty
        [ for kv in pw do
              if not (paramwiseKeys.Contains kv.Key) then
                  yield sprintf "paramwise_cfg.%s: unknown paramwise_cfg key, ignored by DefaultOptimWrapperConstructor (known: %s)" kv.Key (String.Join(", ", paramwiseKeys))
          match pw.["custom_keys"] with
          | :? JsonObject as keys ->
              for kv in keys do
                  if not (used.Contains(customKeySource kv.Key)) then
                      yield sprintf "paramwise_cfg.custom_keys[%s]: matches no parameter name (custom keys match substrings of \"prefix.name\"), so it sets nothing" (Optim.Core.ConfigError.quote kv.Key)
          | _ -> () ]
    | _ -> []

/// Frozen parameters (requires_grad false) and duplicates (a parameter object reachable under a
/// second name, e.g. tied weights): (frozen names, [(duplicate name, first name)]).
let frozenAndDuplicates (m: torch.nn.Module) : string list * (string * string) list =
    let struct (facts, _) = ModuleFacts.Collect(ModuleFacts.Unwrap m)
    let first = Collections.Generic.Dictionary<int64, string>()
    let frozen = ResizeArray<string>()
    let dups = ResizeArray<string * string>()
    for f in facts do
        match first.TryGetValue f.Identity with
        | true, original -> dups.Add((f.FullName, original))
        | _ ->
            first.[f.Identity] <- f.FullName
            if not f.RequiresGrad then frozen.Add f.FullName
    List.ofSeq frozen, List.ofSeq dups

let private arr (xs: JsonNode seq) = JsonArray(Array.ofSeq xs)
let private str (s: string) = JsonValue.Create s :> JsonNode

/// The JSON `optim inspect --format json` prints: `{model, optimizer_type, optim_wrapper_type,
/// groups: [{params, options, provenance}], frozen, duplicates, params_not_in_optimizer, logs,
/// warnings}`; `provenance` names, for every option, the paramwise rule that set it or `optimizer`
/// (the optimizer config and its defaults).
let inspect (modelName: string) (m: torch.nn.Module) (optimWrapper: JsonNode) : Result<JsonObject, Problem list> =
    let result = Inspection.inspect (m, optimWrapper.ToJsonString())
    if result.["result"].GetValue<string>() <> "ok" then
        Error
            [ for e in result.["errors"].AsArray() ->
                  let path = e.["path"].GetValue<string>()
                  { Path = (if path = "" then "optim_wrapper" else "optim_wrapper." + path)
                    Message = sprintf "%s (%s)" (e.["message"].GetValue<string>()) (e.["kind"].GetValue<string>()) } ]
    else
        let groups =
            [ for g in result.["param_groups"].AsArray() ->
                  let options = g.["options"].AsObject()
                  let explicitProvenance =
                      match g.["provenance"] with
                      | :? JsonObject as p -> p |> Seq.map (fun kv -> kv.Key, kv.Value.GetValue<string>()) |> Map.ofSeq
                      | _ -> Map.empty
                  let provenance = JsonObject()
                  for kv in options do
                      if kv.Key <> "params" then
                          provenance.[kv.Key] <- str (explicitProvenance |> Map.tryFind kv.Key |> Option.defaultValue "optimizer")
                  let entry = JsonObject()
                  entry.["params"] <- g.["params"].DeepClone()
                  entry.["options"] <- options.DeepClone()
                  entry.["provenance"] <- provenance
                  entry :> JsonNode ]
        let frozen, dups = frozenAndDuplicates m
        let o = JsonObject()
        o.["model"] <- str modelName
        o.["optimizer_type"] <- result.["optimizer_type"].DeepClone()
        o.["optim_wrapper_type"] <- result.["optim_wrapper_type"].DeepClone()
        o.["groups"] <- arr groups
        o.["frozen"] <- arr (frozen |> List.map str)
        o.["duplicates"] <- arr (dups |> List.map (fun (d, f) -> let x = JsonObject() in x.["param"] <- str d; x.["same_as"] <- str f; x :> JsonNode))
        o.["params_not_in_optimizer"] <- result.["params_not_in_optimizer"].DeepClone()
        o.["logs"] <- result.["logs"].DeepClone()
        o.["warnings"] <- arr (warnings optimWrapper result |> List.map str)
        Ok o

let private fmt (n: JsonNode) =
    match n with
    | null -> "None"
    | :? JsonValue as v when v.GetValueKind() = JsonValueKind.Number -> v.ToJsonString()
    | :? JsonValue as v when v.GetValueKind() = JsonValueKind.String -> v.GetValue<string>()
    | other -> other.ToJsonString()

/// Renders an inspection as Spectre tables: one row per group (its parameters, then each option
/// the paramwise rules set, with the rule), then frozen, duplicate and left-out parameters and warnings.
let render (o: JsonObject) =
    let esc = Spectre.Console.Markup.Escape
    Spectre.Console.AnsiConsole.MarkupLine(
        esc (sprintf "%s on %s: %d param groups" (fmt o.["optim_wrapper_type"] + "(" + fmt o.["optimizer_type"] + ")") (fmt o.["model"]) (o.["groups"].AsArray().Count)))
    let table = Spectre.Console.Table()
    for c in [ "#"; "params"; "lr"; "weight_decay"; "set by paramwise_cfg" ] do table.AddColumn(c) |> ignore
    o.["groups"].AsArray()
    |> Seq.iteri (fun i g ->
        let options = g.["options"].AsObject()
        let prov = g.["provenance"].AsObject()
        // One entry per rule: `custom_keys["head"]: lr=0.025, weight_decay=0.0005, lr_mult=0.5`.
        let setBy =
            [ for kv in prov -> kv.Value.GetValue<string>(), kv.Key ]
            |> List.filter (fun (source, _) -> source <> "optimizer")
            |> List.groupBy fst
            |> List.map (fun (source, keys) ->
                sprintf "%s: %s" source (String.Join(", ", keys |> List.map (fun (_, k) -> sprintf "%s=%s" k (fmt options.[k])))))
        let ps = g.["params"].AsArray() |> Seq.map fmt |> List.ofSeq
        table.AddRow(
            string i, esc (String.Join(", ", ps)), esc (fmt options.["lr"]), esc (fmt options.["weight_decay"]),
            esc (if setBy.IsEmpty then "-" else String.Join("; ", setBy))) |> ignore)
    AnsiConsole.Write(table)
    let list (title: string) (items: string list) =
        if not items.IsEmpty then
            Spectre.Console.AnsiConsole.MarkupLine(esc title)
            for i in items do Spectre.Console.AnsiConsole.MarkupLine(esc ("  " + i))
    list "frozen (requires_grad=False):" (o.["frozen"].AsArray() |> Seq.map fmt |> List.ofSeq)
    list "duplicates (one parameter under two names):" (o.["duplicates"].AsArray() |> Seq.map (fun d -> sprintf "%s = %s" (fmt d.["param"]) (fmt d.["same_as"])) |> List.ofSeq)
    list "not in the optimizer:" (o.["params_not_in_optimizer"].AsArray() |> Seq.map fmt |> List.ofSeq)
    list "warnings:" (o.["warnings"].AsArray() |> Seq.map (fun w -> "WARNING " + fmt w) |> List.ofSeq)
    list "MMEngine's warnings:" (o.["logs"].AsArray() |> Seq.filter (fun l -> fmt l.["level"] = "WARNING") |> Seq.map (fun l -> fmt l.["msg"]) |> List.ofSeq)
