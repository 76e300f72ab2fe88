/// Parity with golden/trajectories_*.json: MMEngine's OptimWrapper replayed on TorchSharp, call by call.
module Optim.Tests.TrajectoryTests

open System
open System.Collections.Generic
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Optim

/// The issue's bar: |a − e| ≤ 1e-6 + 1e-5·|e| (float32; libtorch 2.10 vs torch 1.13 summation order).
let atol, rtol = 1e-6, 1e-5

/// Where the relative term of the bar dominates (|e| ≥ atol / rtol), the relative deviation is meaningful.
let relativeFloor = atol / rtol

/// An OptimWrapper that records, for each update_params call, whether it stepped and the gradients
/// the optimizer saw (after clipping: a TorchSharp step does not change p.grad).
type RecordingWrapper(optimizer, acc, clip) =
    inherit OptimWrapper(optimizer, acc, clip)
    member val Stepped = false with get, set
    member val GradsAtStep : (string * float32[]) list = [] with get, set
    member val Names : (string * Modules.Parameter) list = [] with get, set
    override this.step() =
        base.step()
        this.Stepped <- true
        this.GradsAtStep <- this.Names |> List.map (fun (n, p) -> n, p.grad.data<float32>().ToArray())

let private num (n: JsonNode) = n.GetValue<double>()

/// The wrapper type the replays register: the golden config with `type` replaced by it goes through
/// build_optim_wrapper (registry, DefaultOptimWrapperConstructor, Optim's optimizers) unchanged otherwise.
let recordingType = "GoldenRecordingOptimWrapper"

let private registerRecording =
  lazy
    Registries.OPTIM_WRAPPERS.register_module(recordingType, OptimWrapperFactory(fun optimizer kwargs ->
        WrapperArgs.Check(recordingType, kwargs, "accumulative_counts", "clip_grad")
        RecordingWrapper(optimizer, WrapperArgs.Int(kwargs, "accumulative_counts", 1), WrapperArgs.Dict(kwargs, "clip_grad")) :> OptimWrapper), force = true)
    |> ignore

/// The golden build config with the recording wrapper type and, optionally, extra optimizer keys
/// (`foreach`/`fused` to pick an implementation).
let configFor (cfg: JsonNode) (optimizerExtras: (string * bool) list) : JsonNode =
    let copy = JsonNode.Parse(cfg.ToJsonString())
    copy.["type"] <- JsonValue.Create recordingType
    for (k, v) in optimizerExtras do copy.["optimizer"].[k] <- JsonValue.Create v
    copy

/// Optim's optimizer for the SGD/Adam/AdamW golden configs over the model's parameters (for tests that
/// build wrappers by hand; the replays here go through build_optim_wrapper).
let optimizerFor (cfg: JsonNode) (parameters: Modules.Parameter seq) : torch.optim.Optimizer =
    let o = cfg.["optimizer"]
    let get (key: string) dflt = match o.[key] with null -> dflt | v -> num v
    let getBool (key: string) = match o.[key] with null -> false | v -> v.GetValue<bool>()
    let beta i = match o.["betas"] with null -> (if i = 0 then 0.9 else 0.999) | b -> num (b.[i])
    match o.["type"].GetValue<string>() with
    | "SGD" -> upcast (new Torch.SGD(parameters, get "lr" nan, get "momentum" 0.0, get "dampening" 0.0, get "weight_decay" 0.0, getBool "nesterov"))
    | "Adam" -> new Torch.Adam(parameters, get "lr" 0.001, beta 0, beta 1, get "eps" 1e-8, get "weight_decay" 0.0, getBool "amsgrad")
    | "AdamW" -> new Torch.AdamW(parameters, get "lr" 0.001, beta 0, beta 1, get "eps" 1e-8, get "weight_decay" 0.01, getBool "amsgrad")
    | t -> failwithf "unsupported optimizer %s" t

/// The clip_grad of a golden config as the wrapper's dict.
let clipFor (cfg: JsonNode) : IDictionary<string, obj> =
    match cfg.["clip_grad"] with
    | null -> null
    | c ->
        let d = Dictionary<string, obj>()
        for kv in c.AsObject() do
            d.[kv.Key] <-
                match kv.Value.GetValueKind() with
                | Text.Json.JsonValueKind.String -> box (kv.Value.GetValue<string>())
                | _ ->
                    let raw = kv.Value.ToJsonString()
                    if raw.Contains "." || raw.Contains "e" then box (kv.Value.GetValue<double>()) else box (kv.Value.GetValue<int64>())
        d :> IDictionary<string, obj>

/// Replays one golden case; returns the mismatches (empty when it matches) and the worst relative error seen.
let replay (optimizerExtras: (string * bool) list) (file: JsonNode) (case: JsonNode) : string list * float =
    use _ = torch.NewDisposeScope()
    torch.set_num_threads 1
    let errors = ResizeArray<string>()
    let mutable worst = 0.0
    let check where (actual: float32[]) (expectedNode: JsonNode) =
        let expected, _ = Golden.tensorValues expectedNode
        worst <- max worst (Golden.worstRelative relativeFloor actual expected)
        if not (Golden.allClose atol rtol actual expected) then errors.Add(sprintf "%s: got %A expected %A" where actual expected)
    let checkScalar where (actual: float) (expected: float) =
        let a, e = float32 actual, float32 expected
        worst <- max worst (Golden.worstRelative relativeFloor [| a |] [| e |])
        if not (Golden.allClose atol rtol [| a |] [| e |]) then errors.Add(sprintf "%s: got %g expected %g" where actual expected)
    let model = ModelSpec.build file.["model"].["spec"]
    ModelSpec.loadState model file.["model"].["initial_state_dict"]
    let names = ModelSpec.namedParameters model
    let cfg = case.["build_optim_wrapper_cfg"]
    let hub = MessageHub.get_instance ("trajectory-" + case.["id"].GetValue<string>() + "-" + string (Guid.NewGuid()))
    registerRecording.Force()
    let wrapper = Builder.build_optim_wrapper<RecordingWrapper>(model, Builder.ParseConfig(configFor cfg optimizerExtras))
    wrapper.Names <- names
    match case.["initialize_count_status"] with
    | null -> ()
    | init -> wrapper.initialize_count_status(model, init.["init_counts"].GetValue<int>(), init.["max_counts"].GetValue<int>())
    let inputs = Golden.tensor file.["data"].["inputs"]
    let targets = Golden.tensor file.["data"].["targets"]
    let forward = model :?> torch.nn.Module<torch.Tensor, torch.Tensor>
    for it in case.["iterations"].AsArray() do
        let call = it.["call"].GetValue<int>()
        let i = it.["data_index"].GetValue<int64>()
        let at what = sprintf "call %d %s" call what
        if wrapper.inner_count <> it.["inner_count_before"].GetValue<int>() then errors.Add(at "inner_count_before")
        if wrapper.should_sync() <> it.["should_sync_before"].GetValue<bool>() then errors.Add(at "should_sync_before")
        let loss = torch.nn.functional.mse_loss(forward.forward(inputs.[i]), targets.[i])
        checkScalar (at "loss") (loss.item<float32>() |> float) (num it.["loss"])
        checkScalar (at "scaled_loss") (float (wrapper.scale_loss(loss).item<float32>())) (num it.["scaled_loss"])
        wrapper.Stepped <- false
        wrapper.update_params loss
        if wrapper.Stepped <> it.["stepped"].GetValue<bool>() then errors.Add(at "stepped")
        if wrapper.inner_count <> it.["inner_count_after"].GetValue<int>() then errors.Add(at "inner_count_after")
        match it.["grads_passed_to_optimizer_step"] with
        | null -> ()
        | grads when wrapper.Stepped ->
            for (n, g) in wrapper.GradsAtStep do check (at ("grad " + n)) g grads.[n]
        | _ -> ()
        for (n, p) in names do check (at ("param " + n)) (p.data<float32>().ToArray()) it.["params_after"].[n]
    for (n, p) in names do check ("final " + n) (p.data<float32>().ToArray()) case.["final_params"].[n]
    // Left-over grads: torch 1.13 zeroes them after a step where we (like torch 2) set None; compare values.
    for (n, p) in names do
        let actual = if isNull p.grad then Array.zeroCreate (int (p.numel())) else p.grad.data<float32>().ToArray()
        check ("final grad " + n) actual case.["final_grads"].[n]
    let lr = wrapper.get_lr().["lr"] |> List.ofSeq
    let expectedLr = case.["get_lr"].["lr"].AsArray() |> Seq.map num |> List.ofSeq
    if lr <> expectedLr then errors.Add(sprintf "get_lr %A expected %A" lr expectedLr)
    let mom = wrapper.get_momentum().["momentum"] |> List.ofSeq
    let expectedMom = case.["get_momentum"].["momentum"].AsArray() |> Seq.map num |> List.ofSeq
    if mom <> expectedMom then errors.Add(sprintf "get_momentum %A expected %A" mom expectedMom)
    // Optimizer state per parameter (momentum_buffer, exp_avg, exp_avg_sq, step), read from TorchSharp's state objects.
    let states = (wrapper.optimizer :?> Modules.OptimizerHelper).state_dict().State
    for ((n, _), st) in Seq.zip names states do
        for kv in case.["state_dict"].["state"].[n].AsObject() do
            let field = st.GetType().GetField(kv.Key)
            let where = sprintf "state %s.%s" n kv.Key
            if isNull field then errors.Add(sprintf "%s missing" where)
            else
                match field.GetValue st, kv.Value with
                | null, null -> ()
                | v, null -> errors.Add(sprintf "%s: got %A, expected None" where v)
                | null, _ -> errors.Add(sprintf "%s: got None" where)
                | :? torch.Tensor as t, e when not (isNull e.["shape"]) && (e.["shape"].AsArray().Count > 0) ->
                    check where (t.data<float32>().ToArray()) e
                | v, e ->
                    // A 0-dim tensor (torch 1.13's step/eta/mu) or a Python int (Adadelta's, Rprop's, RMSprop's step).
                    let expected = match e with :? JsonObject -> float (fst (Golden.tensorValues e)).[0] | _ -> num e
                    let actual = match v with :? torch.Tensor as t -> float (t.item<float32>()) | v -> Convert.ToDouble v
                    checkScalar where actual expected
    if not (obj.ReferenceEquals(wrapper.message_hub, hub)) then errors.Add "the wrapper did not capture the current message hub"
    let history = match hub.log_scalars.TryGetValue "train/grad_norm" with | true, h -> Array.ofSeq h | _ -> [||]
    match case.["message_hub_grad_norm_history"] with
    | null -> if history.Length > 0 then errors.Add(sprintf "grad norm reported without norm clipping: %A" history)
    | expected ->
        let e = expected.AsArray() |> Seq.map num |> Array.ofSeq
        if e.Length <> history.Length then errors.Add(sprintf "grad norm history length %d, expected %d" history.Length e.Length)
        else Array.iteri2 (fun k a b -> checkScalar (sprintf "grad norm %d" k) a b) history e
    List.ofSeq errors, worst

/// Every shared trajectory file, whichever optimizer it records.
let private files =
    IO.Directory.GetFiles(Golden.dir, "trajectories_*.json") |> Array.map IO.Path.GetFileName |> Array.sort |> List.ofArray

/// The optimizer of a trajectory file (its first case's `optimizer.type`).
let private optimizerOf (file: JsonNode) = file.["cases"].[0].["build_optim_wrapper_cfg"].["optimizer"].["type"].GetValue<string>()

/// The implementations replayed: the default, and the per-tensor loop (`foreach: false`) where the default is the fused kernel.
let private implementationsFor (optimizer: string) =
    [ yield "default", []
      if Core.Optimizers.hasFused optimizer then yield "foreach=false", [ "foreach", false ] ]

[<Tests>]
let tests =
    testList "golden trajectories" [
        test "every trajectory file is replayed (RAdam and Adadelta included)" {
            for name in [ "sgd"; "adam"; "adamw"; "radam"; "adadelta"; "rprop"; "asgd"; "adamax"; "rmsprop_centered_momentum"; "adagrad_lr_decay" ] do
                Expect.contains files (sprintf "trajectories_%s.json" name) "the shared file is found"
        }
        test "parity summary: every case, worst relative deviation" {
            let results =
                [ for f in files do
                    let file = Golden.load f
                    for label, extras in implementationsFor (optimizerOf file) do
                        for case in file.["cases"].AsArray() -> (f, label), replay extras file case ]
            let worst = results |> List.map (snd >> snd) |> List.max
            for (f, label), group in results |> List.groupBy fst do
                printfn "trajectory parity %s [%s]: %d/%d cases match; worst relative deviation %.3g" f label
                    (group |> List.filter (snd >> fst >> List.isEmpty) |> List.length) group.Length (group |> List.map (snd >> snd) |> List.max)
            Expect.isTrue (results |> List.forall (snd >> fst >> List.isEmpty)) "all cases match"
            Expect.isLessThanOrEqual worst rtol "where |e| ≥ 0.1, deviations stay within the relative bar"
        }
        for f in files do
            let file = Golden.load f
            for label, extras in implementationsFor (optimizerOf file) do
                for case in file.["cases"].AsArray() do
                    test (sprintf "%s [%s]" (case.["id"].GetValue<string>()) label) {
                        let errors, _ = replay extras file case
                        Expect.isEmpty errors "every recorded value matches within 1e-6 + 1e-5·|e|"
                    }
    ]
