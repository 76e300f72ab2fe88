/// AmpOptimWrapper on the CPU: MMEngine's TestAmpOptimWrapper ported (bfloat16 where it says float16
/// on CUDA), the extra checks of TESTS.md, bit-for-bit parity with OptimWrapper over the shared golden
/// trajectory cases (float32 autocast, static power-of-two scale), overflow handling, and a bf16 run
/// of a small classifier against fp32.
module Optim.Tests.AmpOptimWrapperTests

open System
open System.Collections.Generic
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Optim
open Optim.Tests.TestSupport
open Optim.Tests.AmpHelpers

type private ST = torch.ScalarType

/// A GradScaler that records its calls into `log`; with `passThrough` false it does nothing else
/// (MMEngine's tests replace the scaler with a mock).
type RecordingScaler(log: ResizeArray<string>, passThrough: bool) =
    inherit GradScaler()
    member val ScaleArgs = ResizeArray<torch.Tensor>()
    member val StepArgs = ResizeArray<torch.optim.Optimizer>()
    member val UpdateArgs = ResizeArray<Nullable<float>>()
    /// What `scale` returns when not passing through: the loss times this factor.
    member val Factor = 1.0 with get, set
    override this.scale(outputs: torch.Tensor) : torch.Tensor =
        log.Add "scale"
        this.ScaleArgs.Add outputs
        if passThrough then base.scale outputs else outputs * this.Factor
    override _.unscale_(optimizer) =
        log.Add "unscale_"
        if passThrough then base.unscale_ optimizer
    override this.step(optimizer) =
        log.Add "step"
        this.StepArgs.Add optimizer
        if passThrough then base.step optimizer else null
    override this.update(new_scale: Nullable<float>) =
        log.Add "update"
        this.UpdateArgs.Add new_scale
        if passThrough then base.update new_scale

/// An AmpOptimWrapper whose clipping is logged into the same list (to check the order of calls).
type LoggingAmpWrapper(optimizer, log: ResizeArray<string>, clip) =
    inherit AmpOptimWrapper(optimizer, clip_grad = clip)
    override this._clip_grad() =
        log.Add "clip"
        base._clip_grad ()

/// An AmpOptimWrapper that poisons one gradient element after every backward.
type PoisoningAmpWrapper(optimizer, value: float32) =
    inherit AmpOptimWrapper(optimizer)
    override this.backward(loss) =
        base.backward loss
        let p = this.optimizer.parameters() |> Seq.head
        use g = p.grad
        use flat = g.view(-1L)
        flat.[0L] <- torch.tensor(value)

let private sgd (m: torch.nn.Module) lr = torch.optim.SGD(parametersOf m, lr)

/// The five dtypes of MMEngine's parameterised tests (None last) and what a CPU Conv2d gives under each.
let private dtypeCases : (obj * string * ST) list =
    [ box "float64", "float64", ST.Float64
      box "float32", "float32", ST.Float32
      box "float16", "float16", ST.Float16
      box "bfloat16", "bfloat16", ST.BFloat16
      null, "None", ST.BFloat16 ]

let private snapshot (ps: Modules.Parameter seq) =
    ps |> Seq.map (fun p -> p.detach().clone().data<float32>().ToArray() |> Array.map bits) |> List.ofSeq

let private scalerRepr (w: AmpOptimWrapper) = Py.Repr(w.loss_scaler.state_dict())

[<Tests>]
let mmengineTests =
    testList "TestAmpOptimWrapper (CPU)" [
        test "test_init" {
            let model = new ToyModel()
            let optimizer = sgd model 0.1
            let w = AmpOptimWrapper(optimizer)
            Expect.isNotNull w.loss_scaler "a GradScaler"
            Expect.equal (w.loss_scaler.GetType()) typeof<GradScaler> "exactly a GradScaler"
            Expect.isFalse w.scale_update_param.HasValue "default: dynamic"
            let dynamic = AmpOptimWrapper(optimizer, "dynamic")
            Expect.isFalse dynamic.scale_update_param.HasValue "'dynamic': _scale_update_param is None"
            Expect.equal (AmpOptimWrapper(optimizer, dtype = "float16").cast_dtype) (Nullable ST.Float16) "float16"
            Expect.equal (AmpOptimWrapper(optimizer, dtype = "bfloat16").cast_dtype) (Nullable ST.BFloat16) "bfloat16"
            Expect.equal (AmpOptimWrapper(optimizer, dtype = ST.BFloat16).cast_dtype) (Nullable ST.BFloat16) "a torch dtype as is"
            Expect.isFalse (AmpOptimWrapper(optimizer).cast_dtype.HasValue) "None"
            let custom = AmpOptimWrapper(optimizer, kwargs [ "init_scale", box 1; "growth_factor", box 2 ])
            Expect.isFalse custom.scale_update_param.HasValue "dict: _scale_update_param is None"
            Expect.equal (scalerRepr custom)
                "{'scale': 1.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 2000, '_growth_tracker': 0}" "dict settings"
            let ex = throws<ArgumentException> (fun () -> AmpOptimWrapper(optimizer, "unknown") |> ignore) "unknown"
            Expect.stringContains ex.Message "loss_scale must be of type float" "message"
        }
        for (dtype, name, _) in dtypeCases do
            test (sprintf "test_step (%s)" name) {
                let model = new ToyModel()
                let optimizer = sgd model 0.1
                let w = AmpOptimWrapper(optimizer, dtype = dtype)
                let log = ResizeArray()
                let scaler = RecordingScaler(log, false)
                w.loss_scaler <- scaler
                w.step()
                Expect.equal (List.ofSeq log) [ "step"; "update" ] "no unscale_ without clipping"
                Expect.equal scaler.StepArgs.Count 1 "step called once"
                Expect.isTrue (obj.ReferenceEquals(scaler.StepArgs.[0], optimizer)) "step(optimizer)"
                Expect.equal (List.ofSeq scaler.UpdateArgs) [ Nullable() ] "update(None)"
            }
        for (dtype, name, _) in dtypeCases do
            test (sprintf "test_backward (%s)" name) {
                let model = new ToyModel()
                let w = AmpOptimWrapper(sgd model 0.1, dtype = dtype)
                let scaler = RecordingScaler(ResizeArray(), false, Factor = 3.0)
                w.loss_scaler <- scaler
                use x = torch.ones(1L, 1L, 1L, 1L)
                let loss = model.forward(x).sum()
                w.backward loss
                Expect.equal scaler.ScaleArgs.Count 1 "scale called once"
                Expect.isTrue (obj.ReferenceEquals(scaler.ScaleArgs.[0], loss)) "scale(loss)"
                Expect.equal w.inner_count 1 "counted"
                // The returned tensor was back-propagated: d(3·conv2(conv1(1)))/d(conv2.bias) = 3.
                let bias2 = (model.named_parameters() |> Seq.find (fun struct (n, _) -> n = "conv2.bias") |> fun struct (_, p) -> p)
                Expect.equal (valuesOf bias2.grad) [| 3.0f |] "backward ran on the scaled loss"
            }
        test "test_state_dict" {
            let model = new ToyModel()
            let optimizer = torch.optim.SGD(parametersOf model, 0.1, momentum = 0.9)
            let w = AmpOptimWrapper(optimizer)
            use x = torch.randn(1L, 1L, 1L, 1L)
            let loss =
                use _ctx = w.optim_context model
                model.forward(x).sum()
            w.update_params loss
            let sd = w.state_dict()
            Expect.equal (List.ofSeq sd.entries.Keys) [ "loss_scaler" ] "one extra entry"
            Expect.equal (Py.Repr(sd.entries.["loss_scaler"])) (Py.Repr(w.loss_scaler.state_dict())) "loss_scaler == loss_scaler.state_dict()"
            let plain = OptimWrapper(optimizer).state_dict()
            sd.entries.Remove "loss_scaler" |> ignore
            // Optim's state dicts also carry the accumulation counters (MMEngine's do not): the fresh
            // wrapper has counted no backward pass.
            Expect.equal sd.inner_count (Nullable 1) "one backward counted"
            sd.inner_count <- plain.inner_count
            Expect.equal (sd.ToJson()) (plain.ToJson()) "the rest is the optimizer's state dict"
            Expect.equal sd.optimizer_state plain.optimizer_state "optimizer bytes"
        }
        test "test_load_state_dict" {
            let model = new ToyModel()
            let w = AmpOptimWrapper(sgd model 0.01)
            // a plain optimizer state (no loss_scaler entry)
            let other = OptimWrapper(sgd model 0.1)
            let before = scalerRepr w
            w.load_state_dict(other.state_dict())
            Expect.equal (w.state_dict().optimizer_state) (other.state_dict().optimizer_state) "optimizer states equal"
            Expect.equal (w.get_lr().["lr"] |> List.ofSeq) [ 0.1 ] "lr loaded"
            Expect.equal (scalerRepr w) before "scaler untouched"
            // another AmpOptimWrapper's state
            let amp = AmpOptimWrapper(sgd model 0.2, kwargs [ "init_scale", box 8.0; "growth_interval", box 7L ])
            w.load_state_dict(amp.state_dict())
            Expect.equal (w.state_dict().optimizer_state) (amp.state_dict().optimizer_state) "optimizer states equal"
            Expect.equal (scalerRepr w) (scalerRepr amp) "loss_scaler states equal"
            Expect.equal (scalerRepr w)
                "{'scale': 8.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 7, '_growth_tracker': 0}" "values"
        }
        for (dtype, name, expected) in dtypeCases do
            test (sprintf "test_optim_context (%s)" name) {
                let model = new ToyModel()
                let w = AmpOptimWrapper(sgd model 0.1, dtype = dtype)
                use x = torch.randn(1L, 1L, 1L, 1L)
                do
                    use _ctx = w.optim_context model
                    let conv = torch.nn.Conv2d(1L, 1L, 1L)
                    Expect.equal (conv.forward(x).dtype) expected "dtype inside optim_context"
                Expect.equal (model.forward(x).dtype) ST.Float32 "float32 after the scope"
                Expect.isFalse (Amp.is_autocast_enabled "cpu") "autocast off after the scope"
            }
    ]

/// Replays one golden trajectory case twice from the same initial state: with OptimWrapper, and with
/// AmpOptimWrapper(dtype float32, the given loss_scale), both forwards inside optim_context. Returns
/// every difference in bits (losses, grad norms, parameters after each call, left-over grads,
/// optimizer state).
let private ampVersusPlain (file: JsonNode) (case: JsonNode) (lossScale: obj) : string list =
    use _ = torch.NewDisposeScope()
    let errors = ResizeArray<string>()
    let build () =
        let model = ModelSpec.build file.["model"].["spec"]
        ModelSpec.loadState model file.["model"].["initial_state_dict"]
        model :?> torch.nn.Module<torch.Tensor, torch.Tensor>, ModelSpec.namedParameters model
    let m1, n1 = build ()
    let m2, n2 = build ()
    let cfg = case.["build_optim_wrapper_cfg"]
    let acc = match cfg.["accumulative_counts"] with null -> 1 | v -> v.GetValue<int>()
    let plain = OptimWrapper(TrajectoryTests.optimizerFor cfg (n1 |> List.map snd), acc, TrajectoryTests.clipFor cfg)
    let amp = AmpOptimWrapper(TrajectoryTests.optimizerFor cfg (n2 |> List.map snd), lossScale, "float32", acc, TrajectoryTests.clipFor cfg)
    match case.["initialize_count_status"] with
    | null -> ()
    | init ->
        for w in [ plain; amp :> OptimWrapper ] do
            w.initialize_count_status(m1, init.["init_counts"].GetValue<int>(), init.["max_counts"].GetValue<int>())
    let inputs = Golden.tensor file.["data"].["inputs"]
    let targets = Golden.tensor file.["data"].["targets"]
    let forward (m: torch.nn.Module<torch.Tensor, torch.Tensor>) (w: OptimWrapper) (i: int64) =
        use _ctx = w.optim_context m
        torch.nn.functional.mse_loss(m.forward(inputs.[i]), targets.[i])
    let ps1, ps2 = List.map snd n1, List.map snd n2
    for it in case.["iterations"].AsArray() do
        let call = it.["call"].GetValue<int>()
        let i = it.["data_index"].GetValue<int64>()
        let l1 = forward m1 plain i
        let l2 = forward m2 amp i
        if bits (l1.item<float32>()) <> bits (l2.item<float32>()) then errors.Add(sprintf "call %d: loss" call)
        plain.update_params l1
        amp.update_params l2
        if plain.LastGradNorm <> amp.LastGradNorm then
            errors.Add(sprintf "call %d: grad norm %A vs %A" call plain.LastGradNorm amp.LastGradNorm)
        if snapshot ps1 <> snapshot ps2 then errors.Add(sprintf "call %d: parameters differ" call)
    let grads (ps: Modules.Parameter list) =
        ps |> List.map (fun p -> if isNull p.grad then [||] else p.grad.data<float32>().ToArray() |> Array.map bits)
    // Left-over accumulated grads are still scaled in the AMP run (no step unscaled them): compare unscaled.
    let scale = float32 (amp.loss_scaler.get_scale())
    let leftover2 = ps2 |> List.map (fun p -> if isNull p.grad then [||] else (p.grad / scale).data<float32>().ToArray() |> Array.map bits)
    if grads ps1 <> leftover2 then errors.Add "left-over grads differ"
    if plain.state_dict().optimizer_state <> amp.state_dict().optimizer_state then errors.Add "optimizer state differs"
    List.ofSeq errors

[<Tests>]
let parityTests =
    testList "AmpOptimWrapper exactness" [
        // float32 autocast and a power-of-two scale: every multiplication by 2^k is exact, so the AMP
        // run must equal the fp32 run bit for bit, case by case (SGD+nesterov, Adam, AdamW; accumulation,
        // resumed counts, clipping by norm and by value).
        let scales = [ box 8.0; box 1024.0; box 65536.0 ]
        for f in [ "trajectories_sgd.json"; "trajectories_adam.json"; "trajectories_adamw.json" ] do
            let file = Golden.load f
            for (k, case) in Seq.indexed (file.["cases"].AsArray()) do
                let lossScale = scales.[k % scales.Length]
                test (sprintf "%s (static %s)" (case.["id"].GetValue<string>()) (Py.Repr lossScale)) {
                    Expect.isEmpty (ampVersusPlain file case lossScale) "AmpOptimWrapper(float32, 2^k) equals OptimWrapper bit for bit"
                }
        test "dynamic scaling (65536, powers of two) is exact too" {
            let file = Golden.load "trajectories_adam.json"
            for case in file.["cases"].AsArray() do
                Expect.isEmpty (ampVersusPlain file case "dynamic") (case.["id"].GetValue<string>())
        }
    ]

/// A synthetic 10-class problem (Gaussian blobs in 32 dimensions) and an MLP classifier.
let private classifierData () =
    torch.manual_seed 1234L |> ignore
    let centers = torch.randn(10L, 32L) * 0.5
    let labels = torch.randint(10L, [| 2048L |])
    let x = centers.index_select(0L, labels) + torch.randn(2048L, 32L)
    x, labels

let private classifier () =
    torch.manual_seed 99L |> ignore
    torch.nn.Sequential(torch.nn.Linear(32L, 128L), torch.nn.ReLU(), torch.nn.Linear(128L, 128L), torch.nn.ReLU(), torch.nn.Linear(128L, 10L))

/// Trains with the given wrapper factory for `steps` minibatches of 128; returns the final full-set loss (fp32).
let trainClassifier (makeWrapper: torch.optim.Optimizer -> OptimWrapper) (steps: int) =
    use _ = torch.NewDisposeScope()
    torch.set_num_threads 1
    let x, y = classifierData ()
    let model = classifier ()
    let w = makeWrapper (torch.optim.SGD(model.parameters(), 0.05, momentum = 0.9))
    for s in 0 .. steps - 1 do
        let start = int64 ((s * 128) % 2048)
        let xb, yb = x.narrow(0L, start, 128L), y.narrow(0L, start, 128L)
        let loss =
            use _ctx = w.optim_context model
            torch.nn.functional.cross_entropy(model.forward xb, yb)
        w.update_params loss
    use _ng = torch.no_grad()
    torch.nn.functional.cross_entropy(model.forward x, y).item<float32>() |> float

[<Tests>]
let trainingTests =
    testList "AmpOptimWrapper training" [
        test "a bf16 AMP run of a small classifier ends within 5% of the fp32 run's loss" {
            let fp32 = trainClassifier (fun o -> OptimWrapper(o)) 120
            let bf16 = trainClassifier (fun o -> AmpOptimWrapper(o, dtype = "bfloat16")) 120
            printfn "classifier final loss: fp32 %.5f, bf16 AMP %.5f (%+.2f%%)" fp32 bf16 (100.0 * (bf16 - fp32) / fp32)
            Expect.isLessThan fp32 1.0 "fp32 learned something"
            Expect.isLessThanOrEqual (abs (bf16 - fp32)) (0.05 * fp32) "within 5%"
        }
        test "a NaN/inf gradient: step skipped, scale halves, tracker resets, no parameter moves, grads cleared" {
            for value in [ Single.PositiveInfinity; Single.NaN ] do
                let model = new ToyModel()
                let optimizer = torch.optim.SGD(parametersOf model, 0.1, momentum = 0.9)
                let clean = AmpOptimWrapper(optimizer)
                use x = torch.ones(1L, 1L, 1L, 1L)
                for _ in 1..3 do
                    let loss =
                        use _ctx = clean.optim_context model
                        model.forward(x).sum()
                    clean.update_params loss
                Expect.equal (clean.loss_scaler.get_growth_tracker()) 3L "three clean steps"
                let w = PoisoningAmpWrapper(optimizer, value)
                w.load_state_dict(clean.state_dict())
                Expect.equal (w.loss_scaler.get_growth_tracker()) 3L "tracker loaded"
                let before = snapshot (parametersOf model)
                let loss =
                    use _ctx = w.optim_context model
                    model.forward(x).sum()
                w.update_params loss
                Expect.equal (snapshot (parametersOf model)) before "no parameter moved"
                Expect.equal (w.loss_scaler.get_scale()) 32768.0 "scale halved"
                Expect.equal (w.loss_scaler.get_growth_tracker()) 0L "tracker reset"
                Expect.isTrue (parametersOf model |> Seq.forall (fun p -> isNull p.grad)) "zero_grad still ran"
        }
        test "with clipping, unscale_ comes before clipping, then step and update" {
            let model = new ToyModel()
            let log = ResizeArray()
            let w = LoggingAmpWrapper(sgd model 0.1, log, kwargs [ "max_norm", box 1.0 ])
            w.loss_scaler <- RecordingScaler(log, true)
            use x = torch.ones(1L, 1L, 1L, 1L)
            let loss =
                use _ctx = w.optim_context model
                model.forward(x).sum()
            w.update_params loss
            Expect.equal (List.ofSeq log) [ "scale"; "unscale_"; "clip"; "step"; "update" ] "order"
            // clipping saw unscaled gradients: the reported norm is the fp32 one, not 65536 times it
            Expect.isLessThan w.LastGradNorm.Value 100.0 "unscaled grad norm"
        }
        test "bad loss_scale and dtype are errors naming the value" {
            let optimizer = sgd (new ToyModel()) 0.1
            let e = throws<ArgumentException> (fun () -> AmpOptimWrapper(optimizer, 512) |> ignore) "int"
            Expect.stringContains e.Message "loss_scale must be of type float, dict, or \"dynamic\", but got 512" "int 512"
            let e = throws<ArgumentException> (fun () -> AmpOptimWrapper(optimizer, dtype = "float8") |> ignore) "float8"
            Expect.stringContains e.Message "dtype should be any of ('float16', 'bfloat16', 'float32', 'float64'), got float8" "float8"
            let e = throws<ArgumentException> (fun () -> AmpOptimWrapper(optimizer, dtype = 16) |> ignore) "int dtype"
            Expect.stringContains e.Message "dtype should be None or instance of torch.dtype, got 16" "16"
            let e = throws<ArgumentException> (fun () -> AmpOptimWrapper(optimizer, kwargs [ "growth_factor", box 0.5 ]) |> ignore) "factor"
            Expect.stringContains e.Message "The growth factor must be > 1.0." "factor"
        }
        test "a static loss_scale is re-imposed after every step, overflow steps are still skipped" {
            let model = new ToyModel()
            let w = AmpOptimWrapper(sgd model 0.1, 512.0)
            Expect.equal w.scale_update_param (Nullable 512.0) "_scale_update_param"
            use x = torch.ones(1L, 1L, 1L, 1L)
            for _ in 1..3 do
                let loss =
                    use _ctx = w.optim_context model
                    model.forward(x).sum()
                w.update_params loss
            Expect.equal (w.loss_scaler.get_scale()) 512.0 "scale"
            Expect.equal (w.loss_scaler.get_growth_tracker()) 0L "tracker untouched by update(new_scale)"
        }
        test "the state survives save/load through a stream, loss_scaler included" {
            let model = new ToyModel()
            let w = AmpOptimWrapper(sgd model 0.1, kwargs [ "init_scale", box 256.0; "growth_interval", box 2L ])
            use x = torch.ones(1L, 1L, 1L, 1L)
            for _ in 1..3 do
                let loss =
                    use _ctx = w.optim_context model
                    model.forward(x).sum()
                w.update_params loss
            use ms = new MemoryStream()
            w.state_dict().save(ms)
            ms.Position <- 0L
            let back = OptimStateDict.load ms
            let w2 = AmpOptimWrapper(sgd model 0.1)
            w2.load_state_dict back
            Expect.equal (scalerRepr w2) (scalerRepr w) "scaler"
            Expect.equal (scalerRepr w2)
                "{'scale': 512.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 2, '_growth_tracker': 1}" "values"
        }
        test "a bad loss_scaler entry fails the load and changes nothing" {
            let model = new ToyModel()
            let w = AmpOptimWrapper(sgd model 0.1)
            let sd = AmpOptimWrapper(sgd model 0.5).state_dict()
            sd.entries.["loss_scaler"] <- OrderedDictionary<string, obj>()
            let e = throws<StateDictException> (fun () -> w.load_state_dict sd) "empty scaler state"
            Expect.stringContains e.Message "The source state dict is empty" "message"
            Expect.equal (w.get_lr().["lr"] |> List.ofSeq) [ 0.1 ] "optimizer unchanged"
            // the scaler loads, the optimizer part does not fit: the scaler is restored
            let other = AmpOptimWrapper(torch.optim.Adam(parametersOf model, 0.1), kwargs [ "init_scale", box 4.0 ])
            throws<StateDictException> (fun () -> w.load_state_dict(other.state_dict())) "wrong optimizer" |> ignore
            Expect.equal (w.loss_scaler.get_scale()) 65536.0 "scaler restored"
        }
        test "inside optim_context (bf16): Linear/Conv2d give bfloat16, grads stay float32, nested enabled:false is float32, after it float32" {
            torch.manual_seed 5L |> ignore
            let lin = torch.nn.Linear(4L, 2L)
            let conv = torch.nn.Conv2d(1L, 1L, 1L)
            let w = AmpOptimWrapper(torch.optim.SGD(Seq.append (lin.parameters()) (conv.parameters()), 0.1), dtype = "bfloat16")
            use x = torch.randn(3L, 4L)
            use xi = torch.randn(1L, 1L, 2L, 2L)
            let loss =
                use _ctx = w.optim_context lin
                let y = lin.forward x
                let z = conv.forward xi
                Expect.equal y.dtype ST.BFloat16 "Linear"
                Expect.equal z.dtype ST.BFloat16 "Conv2d"
                do
                    use _off = Amp.autocast(enabled = false)
                    Expect.equal (lin.forward x).dtype ST.Float32 "nested enabled:false"
                Expect.equal (lin.forward x).dtype ST.BFloat16 "back in the context"
                y.float().sum() + z.float().sum()
            w.update_params loss
            Expect.equal (lin.forward x).dtype ST.Float32 "Linear after"
            Expect.equal (conv.forward xi).dtype ST.Float32 "Conv2d after"
            w.backward ((lin.forward x).sum() + (conv.forward xi).sum())
            for p in w.optimizer.parameters() do
                Expect.equal p.dtype ST.Float32 "params float32"
                Expect.equal p.grad.dtype ST.Float32 "grads float32"
        }
        test "an exception inside optim_context leaves autocast off" {
            let model = new ToyModel()
            let w = AmpOptimWrapper(sgd model 0.1)
            let run () =
                use _ctx = w.optim_context model
                failwith "boom"
            throws<Exception> run "boom" |> ignore
            Expect.isFalse (Amp.is_autocast_enabled "cpu") "off"
        }
        test "build_optim_wrapper builds an AmpOptimWrapper from a config" {
            let model = new ToyModel()
            let w =
                Builder.build_optim_wrapper<AmpOptimWrapper>(model,
                    """{"type": "AmpOptimWrapper", "optimizer": {"type": "SGD", "lr": 0.01},
                        "loss_scale": 512.0, "dtype": "bfloat16", "accumulative_counts": 2, "use_fsdp": false}""")
            Expect.equal w.scale_update_param (Nullable 512.0) "static loss scale"
            Expect.equal w.cast_dtype (Nullable ST.BFloat16) "dtype"
            Expect.equal w.accumulative_counts 2 "accumulative_counts"
            let dyn = Builder.build_optim_wrapper<AmpOptimWrapper>(model, """{"type": "AmpOptimWrapper", "optimizer": {"type": "SGD", "lr": 0.01}, "loss_scale": {"init_scale": 16.0, "growth_interval": 3}}""")
            Expect.equal (scalerRepr dyn) "{'scale': 16.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 3, '_growth_tracker': 0}" "dict"
            Expect.equal (scalerRepr (Builder.build_optim_wrapper<AmpOptimWrapper>(model, """{"type": "AmpOptimWrapper", "optimizer": {"type": "SGD", "lr": 0.01}}""")))
                "{'scale': 65536.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 2000, '_growth_tracker': 0}" "default"
            let e = throws<Exception> (fun () -> Builder.build_optim_wrapper(model, """{"type": "AmpOptimWrapper", "optimizer": {"type": "SGD", "lr": 0.01}, "loss_scale": {"growth_factor": 0.5}}""") |> ignore) "bad factor"
            Expect.stringContains e.Message "The growth factor must be > 1.0." "config error from the core's rule"
            throws<ArgumentException> (fun () -> Builder.build_optim_wrapper(model, """{"type": "AmpOptimWrapper", "optimizer": {"type": "SGD", "lr": 0.01}, "use_fsdp": true}""") |> ignore) "fsdp" |> ignore
        }
        test "repr names the class" {
            let w = AmpOptimWrapper(sgd (new ToyModel()) 0.1)
            Expect.stringStarts (string w) "Type: AmpOptimWrapper\n_accumulative_counts: 1\noptimizer: \n" "repr"
        }
    ]
