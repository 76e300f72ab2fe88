/// Golden: schedulers_extra.json replayed through the library as a user drives it: build_optim_wrapper
/// from the case's config, the schedulers from its param_scheduler config (with epoch_length), then
/// MMEngine's ParamSchedulerHook order (after every iteration the by_epoch=False schedulers step; at an
/// epoch's end the by_epoch=True ones step, then ReduceOnPlateau* gets step(metrics)). Every recorded
/// value is checked with its Python type: lr, momentum and betas per group, get_lr/get_momentum,
/// base_param_settings, each scheduler's state per iteration and its attributes after build
/// (convert_to_iter_based results), the log lines, the final parameters, or the error's type and message.
module Optim.Tests.SchedulerExtraParityTests

open System
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Optim
open Optim.Core
open Optim.Tests.TestSupport

/// Floats within 1e-12 relative (the bar for scheduled values), everything else equal, types strict
/// (0 is not 0.0); tuples read as lists (JSON has none).
let rec private close (golden: PyValue) (ours: PyValue) : bool =
    match golden, ours with
    | PyValue.Float g, PyValue.Float o -> g = o || abs (g - o) <= 1e-12 * abs g
    | (PyValue.List gs | PyValue.Tuple gs), (PyValue.List os | PyValue.Tuple os) -> gs.Length = os.Length && List.forall2 close gs os
    | PyValue.Dict gs, PyValue.Dict os ->
        gs.Length = os.Length && gs |> List.forall (fun (k, g) -> match List.tryFind (fst >> (=) k) os with Some(_, o) -> close g o | None -> false)
    | g, o -> g = o

let private expectClose (what: string) (golden: PyValue) (ours: PyValue) =
    if not (close golden ours) then failtestf "%s: MMEngine %s, ours %s" what (PyFormat.repr golden) (PyFormat.repr ours)

let private field (key: string) (d: PyValue) =
    match d with
    | PyValue.Dict kvs -> kvs |> List.tryFind (fst >> (=) key) |> Option.map snd
    | _ -> None

/// A scheduler attribute as MMEngine's __dict__ holds it, read from the library's state_dict
/// (MMEngine's names); milestones, a Counter there, recorded as [[milestone, count], ...].
let private attribute (s: ParamScheduler) (key: string) : PyValue option =
    match key with
    | "type" -> Some(PyValue.Str s.TypeName)
    | "need_val_args" -> Some(PyValue.Bool s.need_val_args)
    | "global_step" -> field "_global_step" (ScheduleState.toPy s.State)
    | _ ->
        match field key (ScheduleState.toPy s.State) with
        | Some(PyValue.Dict counter) when key = "milestones" -> Some(PyValue.List [ for (m, c) in counter -> PyValue.List [ PyValue.Int(int64 m); c ] ])
        | v -> v

/// The keys the golden file records for a group, when the group has them (its notes).
let private recordedGroupKeys = [ "lr"; "momentum"; "betas"; "initial_lr"; "initial_momentum"; "max_lr"; "min_lr" ]

let private metricsOf (node: JsonNode) : Collections.Generic.IReadOnlyDictionary<string, double> option =
    match node with
    | null -> None
    | m -> Some(dict [ for kv in m.AsObject() -> kv.Key, kv.Value.GetValue<double>() ] |> Collections.Generic.Dictionary :> _)

let private replay (file: JsonNode) (case: JsonNode) =
    use _ = torch.NewDisposeScope()
    torch.set_num_threads 1
    let id = case.["id"].GetValue<string>()
    let model = ModelSpec.build file.["model"].["spec"]
    ModelSpec.loadState model file.["model"].["initial_state_dict"]
    let epochLength = match case.["epoch_length"] with null -> Nullable() | e -> Nullable(e.GetValue<int64>())
    let metricsPerEpoch = match case.["metrics_per_epoch"] with null -> [||] | m -> m.AsArray() |> Seq.toArray
    let provider, scope = captureLogs ()
    let outcome =
        try
            let wrapper = Builder.build_optim_wrapper (model, case.["build_optim_wrapper_cfg"])
            let schedulers = ParamSchedulers.build_list(case.["schedulers"].ToJsonString(), wrapper, epochLength)
            if case.["result"].GetValue<string>() = "error" then
                failtestf "%s: MMEngine raised %s(%s); ours built" id (case.["error"].["type"].ToJsonString()) (case.["error"].["message"].ToJsonString())
            Expect.equal wrapper.param_groups.Count (case.["optim_wrapper_param_groups_len"].GetValue<int>()) (id + ": param_groups, pseudo group included")
            // Attributes right after construction (convert_to_iter_based visible).
            let attrs = case.["scheduler_attrs_after_build"].AsArray() |> Seq.toArray
            Expect.equal schedulers.Count attrs.Length (id + ": schedulers")
            for (k, (s, a)) in Seq.indexed (Seq.zip schedulers attrs) do
                for kv in a.AsObject() do
                    match attribute s kv.Key with
                    | Some ours -> expectClose (sprintf "%s scheduler %d %s" id k kv.Key) (GoldenFacts.py kv.Value) ours
                    | None -> failtestf "%s scheduler %d: MMEngine has %s = %s, ours has none" id k kv.Key (kv.Value.ToJsonString())
            let inputs = Golden.tensor file.["data"].["inputs"]
            let forward = model :?> torch.nn.Module<torch.Tensor, torch.Tensor>
            let perIter = case.["per_iter"].AsArray() |> Seq.toArray
            let check (i: int) =
                let expected = perIter.[i]
                let where key = sprintf "%s iter %d %s" id i key
                let dictOf (d: Collections.Generic.IReadOnlyDictionary<string, Collections.Generic.IReadOnlyList<double>>) =
                    PyValue.Dict [ for kv in d -> kv.Key, PyValue.List [ for v in kv.Value -> PyValue.Float v ] ]
                let ordered (golden: JsonNode) (ours: PyValue) what =
                    expectClose (where what) (GoldenFacts.py golden) ours
                    match ours with
                    | PyValue.Dict kvs -> Expect.sequenceEqual (List.map fst kvs) [ for kv in golden.AsObject() -> kv.Key ] (where (what + " keys in order"))
                    | _ -> ()
                ordered expected.["get_lr"] (dictOf (wrapper.get_lr())) "get_lr"
                ordered expected.["get_momentum"] (dictOf (wrapper.get_momentum())) "get_momentum"
                let groups = OptimizerGroups.Of(wrapper.optimizer)
                let expGroups = expected.["param_groups"].AsArray() |> Seq.toList
                Expect.equal groups.Count expGroups.Length (where "groups")
                for (gi, (g, eg)) in Seq.indexed (Seq.zip groups expGroups) do
                    let eo = eg.AsObject()
                    for key in recordedGroupKeys do
                        match eo.[key], g.ContainsKey key with
                        | null, false -> ()
                        | null, true -> failtestf "%s: MMEngine's group has no %s, ours %s" (where (sprintf "group %d" gi)) key (Py.Repr g.[key])
                        | e, true -> expectClose (where (sprintf "group %d %s" gi key)) (GoldenFacts.py e) (Py.ToPy g.[key])
                        | e, false -> failtestf "%s: MMEngine has %s, ours has no such key" (where (sprintf "group %d %s" gi key)) (e.ToJsonString())
                match expected.["base_param_settings"] with
                | null -> Expect.isNull wrapper.base_param_settings (where "no base_param_settings")
                | bps ->
                    let b = wrapper.base_param_settings
                    Expect.isNotNull b (where "base_param_settings")
                    for key in recordedGroupKeys do
                        match bps.[key] with
                        | null -> ()
                        | e when b.ContainsKey key -> expectClose (where ("base " + key)) (GoldenFacts.py e) (Py.ToPy b.[key])
                        | _ -> failtestf "%s missing" (where ("base " + key))
                let states = expected.["scheduler_state"].AsArray() |> Seq.toArray
                Expect.equal states.Length schedulers.Count (where "scheduler_state")
                for (k, (s, st)) in Seq.indexed (Seq.zip schedulers states) do
                    for kv in st.AsObject() do
                        match attribute s kv.Key with
                        | Some ours -> expectClose (where (sprintf "scheduler %d %s" k kv.Key)) (GoldenFacts.py kv.Value) ours
                        | None -> failtestf "%s: ours has no %s" (where (sprintf "scheduler %d" k)) kv.Key
            let last = perIter.Length - 1
            for i in 0 .. last - 1 do
                check i
                use loss = forward.forward(inputs.[int64 (i % int inputs.shape.[0])]).sum()
                wrapper.update_params loss
                ParamSchedulerHook.after_train_iter schedulers
                // The epoch's end, as the protocol derives it; the file says whether it ran, and with what.
                let epochEnd = epochLength.HasValue && (int64 i + 1L) % epochLength.Value = 0L
                Expect.equal epochEnd (perIter.[i].["epoch_end"].GetValue<bool>()) (sprintf "%s iter %d epoch_end" id i)
                let fed =
                    if not epochEnd then None
                    else
                        let e = int ((int64 i + 1L) / epochLength.Value) - 1
                        ParamSchedulerHook.after_train_epoch schedulers
                        let m = if e < metricsPerEpoch.Length then metricsPerEpoch.[e] else null
                        match metricsOf m with
                        | Some metrics -> ParamSchedulerHook.after_val_epoch(schedulers, metrics); Some m
                        | None -> None
                expectClose (sprintf "%s iter %d metrics_fed" id i) (GoldenFacts.py perIter.[i].["metrics_fed"]) (match fed with Some m -> GoldenFacts.py m | None -> PyValue.None)
            check last
            let ints (name: string) = case.[name].AsArray() |> Seq.map (fun x -> x.GetValue<int64>()) |> Seq.toList
            Expect.equal (schedulers |> List.ofSeq |> List.map (fun s -> s.last_step)) (ints "scheduler_last_step") (id + ": last_step")
            Expect.equal (schedulers |> List.ofSeq |> List.map (fun s -> s.GlobalStep)) (ints "scheduler_global_step") (id + ": _global_step")
            for (n, p) in ModelSpec.namedParameters model do
                let expected, _ = Golden.tensorValues case.["final_params"].[n]
                let actual = p.data<float32>().ToArray()
                if not (Golden.allClose 1e-6 1e-5 actual expected) then failtestf "%s final %s: got %A expected %A" id n actual expected
            None
        with
        | :? ParamSchedulerException as e when case.["result"].GetValue<string>() = "error" -> Some e
        | e -> scope.Dispose(); reraise ()
    scope.Dispose()
    match outcome with
    | Some e ->
        Expect.equal e.PythonType (case.["error"].["type"].GetValue<string>()) (id + ": error type")
        Expect.equal e.PythonMessage (case.["error"].["message"].GetValue<string>()) (id + ": error message")
    | None -> ()
    // Every INFO/WARNING line MMEngine printed, the paramwise lines and the schedulers' verbose ones.
    let expectedLogs = case.["logs"].AsArray() |> Seq.map (fun l -> l.["msg"].GetValue<string>()) |> List.ofSeq
    let ours = provider.Records |> List.map (fun r -> r.Message)
    Expect.equal ours expectedLogs (id + ": log lines")

[<Tests>]
let tests =
    let file = Golden.load "schedulers_extra.json"
    testList "golden schedulers extra" [
        for case in file.["cases"].AsArray() -> test (case.["id"].GetValue<string>()) { replay file case }
    ]
