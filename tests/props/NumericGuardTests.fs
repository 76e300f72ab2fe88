/// Issue 11: loss scaling that cannot poison parameters, step(closure) through the scaler,
/// error_if_nonfinite leaving the wrapper usable, the opt-in skip_nonfinite guard, and warnings for
/// config that does nothing (shown by Inspection).
module Optim.Tests.NumericGuardTests

open System
open System.IO
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Optim
open Optim.Core
open Optim.Tests.TestSupport

let private net () =
    torch.random.manual_seed 0L |> ignore
    torch.nn.Linear(3L, 1L)

let private snapshot (m: torch.nn.Module) = m.parameters() |> Seq.map (fun p -> p.detach().clone()) |> List.ofSeq

let private allFinite (m: torch.nn.Module) = m.parameters() |> Seq.forall (fun p -> p.isfinite().all().item<bool>())

let private bitsOf (t: torch.Tensor) = t.contiguous().data<float32>().ToArray() |> Array.map BitConverter.SingleToInt32Bits

let private identical (a: torch.Tensor list) (b: torch.Tensor list) = List.forall2 (fun (x: torch.Tensor) (y: torch.Tensor) -> bitsOf x = bitsOf y) a b

let private stateBytes (w: OptimWrapper) = w.state_dict().optimizer_state

let private lossOf (m: torch.nn.Module<torch.Tensor, torch.Tensor>) (scale: float32) =
    let x = torch.ones(2L, 3L) * scale
    m.forward(x).sum()

[<Tests>]
let tests =
    testList "numeric guards (issue 11)" [
        testProperty "with the default bounds the bounded update is torch's update on every trajectory that stays above the floor" <|
            fun (steps: bool list) ->
                let s0 = LossScaling.init LossScaling.defaults |> Result.defaultWith (fun _ -> failwith "init")
                let rec go (a: LossScaling.State) (b: LossScaling.State) xs =
                    match xs with
                    | [] -> true
                    | f :: rest ->
                        let a' = LossScaling.update f a
                        let b', _ = LossScaling.updateWithin LossScaling.defaults f b
                        if float a'.Scale < LossScaling.defaultMinScale then true // torch itself has left the usable range here
                        else a' = b' && go a' b' rest
                go s0 s0 steps
        test "200 overflows in a row stop at the floor (warned), 1/scale stays finite" {
            let s0 = LossScaling.init LossScaling.defaults |> Result.defaultWith (fun _ -> failwith "init")
            let final, hits =
                ((s0, 0), [ 1 .. 200 ]) ||> List.fold (fun (s, n) _ ->
                    let s', hit = LossScaling.updateWithin LossScaling.defaults true s
                    s', (if hit.IsSome then n + 1 else n))
            Expect.equal (float final.Scale) (float (float32 LossScaling.defaultMinScale)) "at the floor"
            Expect.isTrue (LossScaling.invScaleUsable final) "1/scale usable"
            Expect.isGreaterThan hits 0 "the floor was reported"
            // torch's own rule goes to 0 and poisons.
            let torch = (s0, [ 1 .. 200 ]) ||> List.fold (fun s _ -> LossScaling.update true s)
            Expect.isFalse (LossScaling.invScaleUsable torch) "torch's rule ends unusable"
        }
        test "a ceiling below float32's range stops growth with a warning" {
            let settings = { LossScaling.defaults with InitScale = 4.0; GrowthInterval = 1L; MaxScale = 16.0 }
            let s0 = LossScaling.init settings |> Result.defaultWith (fun _ -> failwith "init")
            let final, hit = ((s0, None), [ 1 .. 5 ]) ||> List.fold (fun (s, h) _ -> let s', h' = LossScaling.updateWithin settings false s in s', Option.orElse h h')
            Expect.equal final.Scale 16.0f "ceiling"
            Expect.equal hit (Some LossScaling.BoundHit.Ceiling) "reported"
        }
        test "AMP: 300 overflowing steps then clean ones never write NaN into a parameter" {
            let provider, scope = captureLogs ()
            inside scope (fun () ->
                let m = net ()
                let w = AmpOptimWrapper(torch.optim.SGD(m.parameters(), 0.1), dtype = "float32")
                for _ in 1 .. 300 do
                    use loss = lossOf m Single.PositiveInfinity
                    w.update_params loss
                Expect.isTrue (allFinite m) "finite after the overflows"
                Expect.isGreaterThanOrEqual (w.loss_scaler.get_scale()) (float (float32 LossScaling.defaultMinScale)) "scale at or above the floor"
                for _ in 1 .. 3 do
                    use loss = lossOf m 1.0f
                    w.update_params loss
                Expect.isTrue (allFinite m) "finite after clean steps"
                Expect.isTrue (provider.Records |> List.exists (fun r -> r.Message.Contains "reached its floor")) "floor warning")
        }
        test "min_scale from a loss_scale config dict: overflows stop at that floor" {
            let m = net ()
            let w = Builder.build_optim_wrapper (m, """{"type": "AmpOptimWrapper", "dtype": "float32", "optimizer": {"type": "SGD", "lr": 0.1},
                                                       "loss_scale": {"init_scale": 4.0, "min_scale": 1.0}}""") :?> AmpOptimWrapper
            for _ in 1 .. 5 do
                use loss = lossOf m Single.PositiveInfinity
                w.update_params loss
            Expect.equal (w.loss_scaler.get_scale()) 1.0 "floor"
            Expect.equal (w.loss_scaler.scale_bounds) (1.0, LossScaling.defaultMaxScale) "bounds"
            Expect.isGreaterThan w.loss_scaler.BoundHits 0L "counted"
        }
        test "GradScaler: an unusable inverse scale counts as an overflow; the step is skipped" {
            let m = net ()
            let opt = torch.optim.SGD(m.parameters(), 0.1)
            let scaler = GradScaler(init_scale = 1.0)
            use l0 = lossOf m 1.0f
            scaler.scale(l0).backward()
            // A static scale of 0 imposed through update(new_scale) is clamped to the floor ...
            scaler.step opt |> ignore
            scaler.update(0.0)
            Expect.equal (scaler.get_scale()) (float (float32 LossScaling.defaultMinScale)) "clamped"
            // ... a scale of 0 is refused on load (the state dict's own checks) ...
            let state0 = dict [ "scale", box 0.0; "growth_factor", box 2.0; "backoff_factor", box 0.5; "growth_interval", box 2000L; "_growth_tracker", box 0L ]
            Expect.throws (fun () -> scaler.load_state_dict state0) "scale 0 is not a loadable state"
            // ... and the smallest positive float32 scale, whose inverse is inf in float32, makes the
            // next step an overflow rather than NaN.
            scaler.load_state_dict(dict [ "scale", box 1.401298464324817e-45; "growth_factor", box 2.0; "backoff_factor", box 0.5; "growth_interval", box 2000L; "_growth_tracker", box 0L ])
            opt.zero_grad()
            let before = snapshot m
            use l1 = lossOf m 1.0f
            scaler.scale(l1).backward()
            let r = scaler.step opt
            Expect.isNull r "skipped"
            Expect.isTrue (identical before (snapshot m)) "parameters untouched"
            scaler.update()
            Expect.isTrue (allFinite m) "finite"
        }
        test "AmpOptimWrapper.step(closure) goes through the scaler: rejected before anything moves (torch's rule)" {
            let m = net ()
            let w = AmpOptimWrapper(torch.optim.SGD(m.parameters(), 0.1), dtype = "float32")
            let before = snapshot m
            let e = throws<InvalidOperationException> (fun () -> w.step(Func<torch.Tensor>(fun () -> let l = lossOf m 1.0f in l.backward(); l))) "closure"
            Expect.stringContains e.Message "Closure use is not currently supported" "torch's message"
            Expect.isTrue (identical before (snapshot m)) "no parameter moved"
        }
        test "error_if_nonfinite: the plain wrapper is usable the next iteration (gradients kept for inspection, cleared by the next backward)" {
            let m = net ()
            let w = OptimWrapper(torch.optim.SGD(m.parameters(), 0.1), clip_grad = kwargs [ "max_norm", box 1.0; "error_if_nonfinite", box true ])
            use bad = lossOf m Single.NaN
            throws<InvalidOperationException> (fun () -> w.update_params bad) "non-finite norm" |> ignore
            Expect.isTrue (m.parameters() |> Seq.forall (fun p -> not (isNull p.grad))) "gradients kept for inspection"
            use good = lossOf m 1.0f
            w.update_params good
            Expect.isTrue (allFinite m) "next iteration steps with finite values"
        }
        test "error_if_nonfinite: the AMP wrapper is usable the next iteration (no 'unscale_() has already been called')" {
            let m = net ()
            let w = AmpOptimWrapper(torch.optim.SGD(m.parameters(), 0.1), dtype = "float32", clip_grad = kwargs [ "max_norm", box 1.0; "error_if_nonfinite", box true ])
            let scale0 = w.loss_scaler.get_scale()
            use bad = lossOf m Single.PositiveInfinity
            throws<InvalidOperationException> (fun () -> w.update_params bad) "non-finite norm" |> ignore
            Expect.equal (w.loss_scaler.get_scale()) (scale0 * 0.5) "the failed step counted as an overflow"
            let before = snapshot m
            use good = lossOf m 1.0f
            w.update_params good
            Expect.isFalse (identical before (snapshot m)) "the next iteration stepped"
            Expect.isTrue (allFinite m) "finite"
        }
        test "skip_nonfinite: a NaN step leaves parameters and optimizer state bit-identical, counted, logged, on the hub" {
            let provider, scope = captureLogs ()
            let m = net ()
            let opt = torch.optim.SGD(m.parameters(), 0.1, momentum = 0.9)
            let w = OptimWrapper(opt, skip_nonfinite = true)
            use l0 = lossOf m 1.0f
            w.update_params l0
            let before = snapshot m
            let stateBefore = stateBytes w
            inside scope (fun () ->
                use bad = lossOf m Single.NaN
                w.update_params bad)
            Expect.isTrue (identical before (snapshot m)) "parameters bit-identical"
            Expect.equal (stateBytes w) stateBefore "optimizer state bit-identical"
            Expect.equal w.SkippedSteps 1L "counted"
            Expect.isTrue w.LastStepSkipped "flag"
            Expect.equal (w.message_hub.get_scalar "train/skipped_steps") (Nullable 1.0) "hub"
            Expect.isTrue (provider.Records |> List.exists (fun r -> r.Level = Microsoft.Extensions.Logging.LogLevel.Warning && r.Message.Contains "skip_nonfinite")) "logged"
            use good = lossOf m 1.0f
            w.update_params good
            Expect.isFalse w.LastStepSkipped "clean step runs"
            Expect.equal w.ConsecutiveSkippedSteps 0 "reset"
        }
        test "skip_nonfinite: an inf gradient with a finite loss is caught by the fused gradient check" {
            let m = net ()
            let w = OptimWrapper(torch.optim.SGD(m.parameters(), 0.1), skip_nonfinite = true)
            use l = lossOf m 1.0f
            w.backward l
            let p = m.parameters() |> Seq.head
            p.grad.index_put_(torch.tensor(Single.PositiveInfinity), [| torch.TensorIndex.Single 0L; torch.TensorIndex.Single 0L |]) |> ignore
            let before = snapshot m
            w.step()
            Expect.isTrue (identical before (snapshot m)) "skipped"
            Expect.equal w.SkippedSteps 1L "counted"
        }
        test "skip_nonfinite {max_consecutive: 2}: the third skip in a row raises NonFiniteTrainingException" {
            let m = net ()
            let w = Builder.build_optim_wrapper (m, """{"optimizer": {"type": "SGD", "lr": 0.1}, "skip_nonfinite": {"max_consecutive": 2}}""")
            for _ in 1 .. 2 do
                use bad = lossOf m Single.NaN
                w.update_params bad
            use bad = lossOf m Single.NaN
            throws<NonFiniteTrainingException> (fun () -> w.update_params bad) "third" |> ignore
            Expect.isTrue (allFinite m) "still finite"
        }
        test "skip_nonfinite on AMP (bf16 autocast): NaN loss skipped, counted, scale backed off" {
            let m = net ()
            let w = AmpOptimWrapper(torch.optim.SGD(m.parameters(), 0.1), skip_nonfinite = true)
            let before = snapshot m
            let scale0 = w.loss_scaler.get_scale()
            use bad = lossOf m Single.NaN
            w.update_params bad
            Expect.isTrue (identical before (snapshot m)) "skipped"
            Expect.equal w.SkippedSteps 1L "counted"
            Expect.equal (w.loss_scaler.get_scale()) (scale0 * 0.5) "backed off"
            use good = lossOf m 1.0f
            w.update_params good
            Expect.isFalse (identical before (snapshot m)) "clean step runs"
        }
        test "the scheduler hook can be told not to advance on a skipped step; MMEngine's default advances" {
            let m = net ()
            let w = OptimWrapper(torch.optim.SGD(m.parameters(), 0.1), skip_nonfinite = true)
            let scheds = ParamSchedulers.build_list("""{"type": "LinearLR", "start_factor": 0.5, "by_epoch": false, "end": 10}""", w)
            use bad = lossOf m Single.NaN
            w.update_params bad
            ParamSchedulerHook.after_train_iter(scheds, w, advance_on_skipped_step = false)
            Expect.equal scheds.[0].last_step 0L "held"
            ParamSchedulerHook.after_train_iter(scheds, w)
            Expect.equal scheds.[0].last_step 1L "default advances"
        }
        test "warnings: unknown paramwise_cfg keys, unknown entry keys and unmatched custom keys, with did-you-mean, in Inspection" {
            let m = net ()
            let cfg = """{"optimizer": {"type": "SGD", "lr": 0.1, "weight_decay": 0.0001},
                          "paramwise_cfg": {"norm_decay_mul": 0, "custom_keys": {"bais": {"lr_mul": 0.5}}}}"""
            let provider, scope = captureLogs ()
            let json = try Inspection.inspect (m, cfg) finally scope.Dispose()
            let warnings = json.["warnings"].AsArray() |> Seq.map (fun w -> string w.["path"], string w.["message"]) |> List.ofSeq
            let find p = warnings |> List.tryFind (fun (x, _) -> x = p) |> Option.map snd |> Option.defaultValue ""
            Expect.stringContains (find "paramwise_cfg.norm_decay_mul") "Did you mean 'norm_decay_mult'?" "paramwise key"
            Expect.stringContains (find "paramwise_cfg.custom_keys.bais.lr_mul") "Did you mean 'lr_mult'?" "entry key"
            Expect.stringContains (find "paramwise_cfg.custom_keys.bais") "matches no parameter name. Did you mean 'bias'?" "unmatched key"
            Expect.isTrue (provider.Records |> List.exists (fun r -> r.Message.Contains "norm_decay_mul")) "logged"
            let strict = cfg.Replace("\"norm_decay_mul\": 0", "\"norm_decay_mul\": 0, \"strict\": true")
            let e = throws<OptimConfigException> (fun () -> Builder.build_optim_wrapper (m, strict) |> ignore) "strict"
            Expect.isGreaterThanOrEqual e.Errors.Count 2 "warnings became errors"
        }
        test "scheduler settings that would fail when stepped are rejected at build, with paths and did-you-mean" {
            let m = net ()
            let w = OptimWrapper(torch.optim.SGD(m.parameters(), 0.1))
            let build (json: string) = ParamSchedulers.build_list(json, w) |> ignore
            for json, path, fragment in
                [ """{"type": "StepLR", "step_size": 0}""", "step_size", "step_size must be a positive integer"
                  """{"type": "LinearLR", "start_factor": 0}""", "start_factor", "must be above 0"
                  """{"type": "PolyLR", "power": -1, "end": 10}""", "power", "power must be at least 0"
                  """{"type": "CosineRestartLR", "periods": [5], "restart_weights": [1]}""", "", "exactly one of `eta_min` and `eta_min_ratio`"
                  """{"type": "StepLr", "step_size": 2}""", "type", "Did you mean 'StepLR'?"
                  """{"type": "StepParamScheduler", "param_name": "weight_decy", "step_size": 2}""", "param_name", "param_scheduler.param_name: 'weight_decy' is not a key of param group 0" ] do
                if path = "type" || path = "param_name" then
                    // An unknown type stays MMEngine's KeyError, now with a suggestion.
                    let e = throws<Collections.Generic.KeyNotFoundException> (fun () -> build json) json
                    Expect.stringContains e.Message fragment json
                else
                    let e = throws<ParamSchedulerException> (fun () -> build json) json
                    Expect.stringContains e.Message fragment json
                    if path <> "" then Expect.stringContains e.Path path json
        }
    ]
