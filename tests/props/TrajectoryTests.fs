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

/// A TorchSharp optimizer for the golden configs (SGD, Adam, AdamW) over the model's parameters.
/// (Config-driven building is tested with build_optim_wrapper elsewhere.)
let optimizerFor (cfg: JsonNode) (parameters: Modules.Parameter seq) : torch.optim.Optimizer =
    let o = cfg.["optimizer"]
    let get (key: string) dflt = match o.[key] with null -> dflt | v -> num v
    let getBool (key: string) = match o.[key] with null -> false | v -> v.GetValue<bool>()
    let beta i = match o.["betas"] with null -> (if i = 0 then 0.9 else 0.999) | b -> num (b.[i])
    match o.["type"].GetValue<string>() with
    | "SGD" -> torch.optim.SGD(parameters, get "lr" nan, get "momentum" 0.0, get "dampening" 0.0, get "weight_decay" 0.0, getBool "nesterov")
    | "Adam" -> torch.optim.Adam(parameters, get "lr" 0.001, beta 0, beta 1, get "eps" 1e-8, get "weight_decay" 0.0, getBool "amsgrad")
    | "AdamW" -> torch.optim.AdamW(parameters, get "lr" 0.001, beta 0, beta 1, get "eps" 1e-8, get "weight_decay" 0.01, getBool "amsgrad")
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
let replay (file: JsonNode) (case: JsonNode) : string list * float =
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
    let acc = match cfg.["accumulative_counts"] with null -> 1 | v -> v.GetValue<int>()
    let wrapper = new RecordingWrapper(optimizerFor cfg (names |> List.map snd), acc, clipFor cfg)
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
            if isNull field then errors.Add(sprintf "state %s.%s missing" n kv.Key)
            else
                match field.GetValue st with
                | :? torch.Tensor as t -> check (sprintf "state %s.%s" n kv.Key) (t.data<float32>().ToArray()) kv.Value
                | v -> checkScalar (sprintf "state %s.%s" n kv.Key) (Convert.ToDouble v) (float (fst (Golden.tensorValues kv.Value)).[0])
    if not (obj.ReferenceEquals(wrapper.message_hub, hub)) then errors.Add "the wrapper did not capture the current message hub"
    let history = match hub.log_scalars.TryGetValue "train/grad_norm" with | true, h -> Array.ofSeq h | _ -> [||]
    match case.["message_hub_grad_norm_history"] with
    | null -> if history.Length > 0 then errors.Add(sprintf "grad norm reported without norm clipping: %A" history)
    | expected ->
        let e = expected.AsArray() |> Seq.map num |> Array.ofSeq
        if e.Length <> history.Length then errors.Add(sprintf "grad norm history length %d, expected %d" history.Length e.Length)
        else Array.iteri2 (fun k a b -> checkScalar (sprintf "grad norm %d" k) a b) history e
    List.ofSeq errors, worst

let private files = [ "trajectories_sgd.json"; "trajectories_adam.json"; "trajectories_adamw.json" ]

[<Tests>]
let tests =
    testList "golden trajectories" [
        test "parity summary: every case, worst relative deviation" {
            let results =
                [ for f in files do
                    let file = Golden.load f
                    for case in file.["cases"].AsArray() -> replay file case ]
            let worst = results |> List.map snd |> List.max
            printfn "trajectory parity: %d/%d cases match; worst relative deviation (|e| ≥ 0.1) %.3g" (results |> List.filter (fst >> List.isEmpty) |> List.length) results.Length worst
            Expect.isTrue (results |> List.forall (fst >> List.isEmpty)) "all cases match"
            Expect.isLessThanOrEqual worst rtol "where |e| ≥ 0.1, deviations stay within the relative bar"
        }
        for f in files do
            let file = Golden.load f
            for case in file.["cases"].AsArray() do
                test (case.["id"].GetValue<string>()) {
                    let errors, _ = replay file case
                    Expect.isEmpty errors "every recorded value matches within 1e-6 + 1e-5·|e|"
                }
    ]
