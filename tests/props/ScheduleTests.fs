/// The pure schedules (Optim.Core.Schedules / ScheduleConfig / ScheduleState / ScheduleCurves):
/// MMEngine's own scheduler tests ported (expected values from closed forms, not from this code),
/// the SPEC §8 errors with MMEngine's messages, and the golden curves replayed through the core.
module Optim.Tests.ScheduleTests

open System
open Expecto
open Optim.Core
open Optim.Core.Schedules

// ---------------------------------------------------------------------------------------------
// Helpers

let F (x: float) = PyValue.Float x
let I (x: int64) = PyValue.Int x
let S (x: string) = PyValue.Str x
let B (x: bool) = PyValue.Bool x
let L (xs: PyValue list) = PyValue.List xs
let D (kvs: (string * PyValue) list) = PyValue.Dict kvs

let ok (r: Result<'a, ScheduleError>) =
    match r with
    | Ok x -> x
    | Error e -> failtestf "unexpected error: %s" (ScheduleError.describe e)

let parse cfg = ScheduleConfig.parse ScheduleConfig.noContext "param_scheduler" cfg |> ok

/// MMEngine's TestLRScheduler optimizer: SGD, two groups, lr 0.05 and 0.5, momentum 0.01, wd 5e-4.
let sgdDefaults = [ "lr", F 0.05; "momentum", F 0.01; "dampening", I 0L; "weight_decay", F 5e-4; "nesterov", B false ]
let twoGroups = [ PyValue.set "lr" (F 0.05) sgdDefaults; PyValue.set "lr" (F 0.5) sgdDefaults ]
let sgdTarget n = { Defaults = sgdDefaults; RealGroupCount = n }

/// Attaches the configs in order, then records `key` of every group before each of `epochs` rounds
/// of steps (MMEngine's `_test_scheduler_value`). `metrics` feeds ReduceOnPlateau.
let valuesOver (cfgs: PyValue list) (groups: Group list) (key: string) (epochs: int) (metrics: (string * float) list option list option) =
    let target = sgdTarget groups.Length
    let states, groups =
        cfgs |> List.fold (fun (sts, gs) c -> let o = attach (parse c) target gs |> ok in sts @ [ o.State ], o.Groups) ([], groups)
    let rec go e (states: State list) groups acc =
        if e = epochs then List.rev acc
        else
            let values = groups |> List.map (fun g -> Group.number key g |> ok)
            let m = match metrics with Some ms -> ms.[e] | None -> None
            let states, groups =
                states |> List.fold (fun (sts, gs) st -> let o = step st m gs |> ok in sts @ [ o.State ], o.Groups) ([], groups)
            go (e + 1) states groups (values :: acc)
    go 0 states groups []

let close (tol: float) (expected: float) (actual: float) =
    abs (expected - actual) <= tol + 1e-9 * abs expected

/// Compares per-epoch values of group 0 with `targets` and of group 1 with `targets * mult`.
let expectCurve (name: string) (values: float list list) (targets: float list) (mult: float) =
    for e in 0 .. targets.Length - 1 do
        let t0, t1 = targets.[e], targets.[e] * mult
        if not (close 1e-12 t0 values.[e].[0] && close 1e-12 t1 values.[e].[1]) then
            failtestf "%s: epoch %d expected [%.17g; %.17g], got %A" name e t0 t1 values.[e]

/// Compares per-epoch values of groups 0 and 1 with their own targets.
let expectCurves (name: string) (values: float list list) (targets0: float list) (targets1: float list) =
    for e in 0 .. targets0.Length - 1 do
        if not (close 1e-12 targets0.[e] values.[e].[0] && close 1e-12 targets1.[e] values.[e].[1]) then
            failtestf "%s: epoch %d expected [%.17g; %.17g], got %A" name e targets0.[e] targets1.[e] values.[e]

let expectError (ty: string) (msg: string) (r: Result<'a, ScheduleError>) =
    match r with
    | Ok _ -> failtestf "expected %s: %s, got success" ty msg
    | Error e ->
        Expect.equal e.Type ty (sprintf "exception type (%s)" e.Message)
        Expect.equal e.Message msg "message"

let attachCfg cfg groups = attach (parse cfg) (sgdTarget (List.length groups)) groups

// ---------------------------------------------------------------------------------------------
// MMEngine's tests/test_optim/test_scheduler/test_lr_scheduler.py, ported (targets are closed forms)

let private mult = 10.0

let portedTests =
    testList "MMEngine scheduler tests" [
        test "StepLR: 0.05 for 3 epochs, then ×0.1 every 3" {
            let v = valuesOver [ D [ "type", S "StepLR"; "gamma", F 0.1; "step_size", I 3L; "verbose", B true ] ] twoGroups "lr" 10 None
            expectCurve "step" v ([ 0.05; 0.05; 0.05; 0.005; 0.005; 0.005; 0.0005; 0.0005; 0.0005; 0.00005 ]) mult
        }
        test "MultiStepLR milestones [2, 5, 9]" {
            let v = valuesOver [ D [ "type", S "MultiStepLR"; "gamma", F 0.1; "milestones", L [ I 2L; I 5L; I 9L ] ] ] twoGroups "lr" 10 None
            expectCurve "multistep" v ([ 0.05; 0.05; 0.005; 0.005; 0.005; 0.0005; 0.0005; 0.0005; 0.0005; 0.00005 ]) mult
        }
        test "MultiStepLR: a repeated milestone applies gamma squared" {
            let v = valuesOver [ D [ "type", S "MultiStepLR"; "gamma", F 0.5; "milestones", L [ I 2L; I 2L ] ] ] twoGroups "lr" 4 None
            expectCurve "multistep-dup" v [ 0.05; 0.05; 0.0125; 0.0125 ] mult
        }
        test "ConstantLR factor 1/2 until end=5" {
            let v = valuesOver [ D [ "type", S "ConstantLR"; "factor", F 0.5; "end", I 5L ] ] twoGroups "lr" 10 None
            expectCurve "constant" v ([ 0.025; 0.025; 0.025; 0.025; 0.05; 0.05; 0.05; 0.05; 0.05; 0.05 ]) mult
        }
        test "LinearLR start 1/2 over 4 iterations" {
            let interp = [ for i in 0 .. 3 -> 0.5 + float i * (1.0 - 0.5) / 4.0 ]
            let v = valuesOver [ D [ "type", S "LinearLR"; "start_factor", F 0.5; "end", I 5L ] ] twoGroups "lr" 10 None
            expectCurve "linear" v ([ for x in interp -> x * 0.05 ] @ List.replicate 6 0.05) mult
        }
        test "LinearLR effective interval begin=1" {
            let interp = [ for i in 0 .. 3 -> 0.5 + float i * (1.0 - 0.5) / 4.0 ]
            let v = valuesOver [ D [ "type", S "LinearLR"; "start_factor", F 0.5; "begin", I 1L; "end", I 6L ] ] twoGroups "lr" 10 None
            expectCurve "linear-begin" v ([ 0.05 ] @ [ for x in interp -> x * 0.05 ] @ List.replicate 5 0.05) mult
        }
        test "ExponentialLR gamma 0.9" {
            let v = valuesOver [ D [ "type", S "ExponentialLR"; "gamma", F 0.9 ] ] twoGroups "lr" 10 None
            expectCurve "exp" v [ for x in 0 .. 9 -> 0.05 * Math.Pow(0.9, float x) ] mult
        }
        test "CosineAnnealingLR T_max 10, eta_min 1e-10, through the restart" {
            let etaMin = 1e-10
            let v = valuesOver [ D [ "type", S "CosineAnnealingLR"; "T_max", I 10L; "eta_min", F etaMin ] ] twoGroups "lr" 12 None
            let targets = [ for x in 0 .. 11 -> etaMin + (0.05 - etaMin) * (1.0 + Math.Cos(Math.PI * float x / 10.0)) / 2.0 ]
            for e in 0 .. 11 do
                Expect.isTrue (close 1e-12 targets.[e] v.[e].[0]) (sprintf "epoch %d: %g vs %g" e targets.[e] v.[e].[0])
                let t1 = etaMin + (0.5 - etaMin) * (1.0 + Math.Cos(Math.PI * float e / 10.0)) / 2.0
                Expect.isTrue (close 1e-12 t1 v.[e].[1]) (sprintf "group 1 epoch %d" e)
        }
        test "CosineAnnealingLR default T_max is end - begin" {
            let s = parse (D [ "type", S "CosineAnnealingLR"; "begin", I 5L; "end", I 100L; "eta_min", F 1e-10 ])
            match s.Rule with
            | CosineAnnealing(t, _) -> Expect.equal t 95L "T_max"
            | other -> failtestf "rule %A" other
        }
        test "CosineAnnealingLR with eta_min_ratio uses each group's base" {
            let v = valuesOver [ D [ "type", S "CosineAnnealingLR"; "T_max", I 10L; "eta_min_ratio", F 0.1 ] ] twoGroups "lr" 11 None
            for e in 0 .. 10 do
                for (g, b) in [ 0, 0.05; 1, 0.5 ] do
                    let t = b * 0.1 + (b - b * 0.1) * (1.0 + Math.Cos(Math.PI * float e / 10.0)) / 2.0
                    Expect.isTrue (close 1e-12 t v.[e].[g]) (sprintf "group %d epoch %d" g e)
        }
        test "PolyLR power 0.9, eta_min 0.001, end 5" {
            let v = valuesOver [ D [ "type", S "PolyLR"; "power", F 0.9; "eta_min", F 0.001; "end", I 5L ] ] twoGroups "lr" 10 None
            for (g, b) in [ 0, 0.05; 1, 0.5 ] do
                let targets = [ for i in 0 .. 3 -> 0.001 + (b - 0.001) * Math.Pow(1.0 - float i / 4.0, 0.9) ] @ List.replicate 6 0.001
                for e in 0 .. 9 do
                    Expect.isTrue (close 1e-12 targets.[e] v.[e].[g]) (sprintf "group %d epoch %d: %g vs %g" g e targets.[e] v.[e].[g])
        }
        test "CosineRestartLR periods [4, 5], weights [1, 0.5]" {
            let v =
                valuesOver [ D [ "type", S "CosineRestartLR"; "periods", L [ I 4L; I 5L ]; "restart_weights", L [ I 1L; F 0.5 ]; "eta_min", I 0L ] ]
                    twoGroups "lr" 10 None
            // MMEngine's targets, printed to 7 digits there.
            let targets = [ 0.05; 0.0426776; 0.025; 0.00732233; 0.025; 0.022612712; 0.01636271; 0.0086372; 0.0023872; 0.0023872 ]
            for e in 0 .. 9 do
                Expect.isTrue (abs (targets.[e] - v.[e].[0]) < 1e-5 && abs (targets.[e] * mult - v.[e].[1]) < 1e-5 * mult) (sprintf "epoch %d" e)
        }
        test "OneCycleLR linear, two phases" {
            let v =
                valuesOver [ D [ "type", S "OneCycleLR"; "eta_max", I 25L; "final_div_factor", I 2L; "total_steps", I 10L; "anneal_strategy", S "linear" ] ]
                    [ twoGroups.[0] ] "lr" 10 None
            let targets = [ 1.; 13.; 25.; 21.5; 18.; 14.5; 11.; 7.5; 4.; 0.5 ]
            for e in 0 .. 9 do Expect.isTrue (close 1e-12 targets.[e] v.[e].[0]) (sprintf "epoch %d: %g" e v.[e].[0])
        }
        test "OneCycleLR linear, three phases" {
            let v =
                valuesOver
                    [ D [ "type", S "OneCycleLR"; "eta_max", I 25L; "div_factor", I 25L; "total_steps", I 10L; "anneal_strategy", S "linear"
                          "pct_start", F 0.4; "final_div_factor", I 4L; "three_phase", B true ] ]
                    [ twoGroups.[0] ] "lr" 10 None
            let targets = [ 1.; 9.; 17.; 25.; 17.; 9.; 1.; 0.75; 0.5; 0.25 ]
            for e in 0 .. 9 do Expect.isTrue (close 1e-12 targets.[e] v.[e].[0]) (sprintf "epoch %d: %g" e v.[e].[0])
        }
        test "OneCycleLR cosine" {
            let cosAnneal (a: float) (b: float) (pct: float) = b + (a - b) / 2.0 * (Math.Cos(Math.PI * pct) + 1.0)
            let v = valuesOver [ D [ "type", S "OneCycleLR"; "eta_max", I 25L; "final_div_factor", I 2L; "total_steps", I 10L ] ] [ twoGroups.[0] ] "lr" 10 None
            let targets = [ 1.; 13.; 25. ] @ [ for k in 1 .. 6 -> cosAnneal 25.0 0.5 (float k / 7.0) ] @ [ 0.5 ]
            for e in 0 .. 9 do Expect.isTrue (close 1e-12 targets.[e] v.[e].[0]) (sprintf "epoch %d: %g" e v.[e].[0])
        }
        test "Linear then MultiStep without overlap" {
            let v =
                valuesOver
                    [ D [ "type", S "LinearLR"; "start_factor", F 0.5; "begin", I 0L; "end", I 5L ]
                      D [ "type", S "MultiStepLR"; "gamma", F 0.1; "milestones", L [ I 3L; I 6L ]; "begin", I 5L; "end", I 12L ] ]
                    twoGroups "lr" 12 None
            expectCurve "linear+multistep" v ([ 0.025; 0.03125; 0.0375; 0.04375 ] @ List.replicate 4 0.05 @ List.replicate 3 0.005 @ [ 0.0005 ]) mult
        }
        test "Exponential then Cosine without overlap" {
            // MMEngine's test takes group 1 as 10 × group 0, which ignores eta_min (inside its atol 1e-5);
            // here each group's closed form is its own.
            let first b = [ for x in 0 .. 4 -> b * Math.Pow(0.9, float x) ]
            let second b = [ for x in 0 .. 4 -> 1e-10 + (List.last (first b) - 1e-10) * (1.0 + Math.Cos(Math.PI * float x / 5.0)) / 2.0 ]
            let v =
                valuesOver
                    [ D [ "type", S "ExponentialLR"; "gamma", F 0.9; "begin", I 0L; "end", I 5L ]
                      D [ "type", S "CosineAnnealingLR"; "T_max", I 5L; "eta_min", F 1e-10; "begin", I 5L; "end", I 10L ] ]
                    twoGroups "lr" 10 None
            expectCurves "exp+cos" v (first 0.05 @ second 0.05) (first 0.5 @ second 0.5)
        }
        test "Linear and MultiStep overlapping compose multiplicatively" {
            let v =
                valuesOver
                    [ D [ "type", S "LinearLR"; "start_factor", F 0.5; "begin", I 0L; "end", I 5L ]
                      D [ "type", S "MultiStepLR"; "gamma", F 0.1; "milestones", L [ I 3L; I 6L; I 9L ] ] ]
                    twoGroups "lr" 10 None
            expectCurve "overlap" v ([ 0.025; 0.03125; 0.0375; 0.004375 ] @ [ 0.005; 0.005 ] @ List.replicate 3 0.0005 @ [ 0.00005 ]) mult
        }
        test "Exponential, a gap, then Cosine" {
            let first b = [ for x in 0 .. 4 -> b * Math.Pow(0.9, float x) ]
            let second b = [ for x in 0 .. 4 -> 1e-10 + (List.last (first b) - 1e-10) * (1.0 + Math.Cos(Math.PI * float x / 5.0)) / 2.0 ]
            let v =
                valuesOver
                    [ D [ "type", S "ExponentialLR"; "gamma", F 0.9; "begin", I 0L; "end", I 5L ]
                      D [ "type", S "CosineAnnealingLR"; "T_max", I 5L; "eta_min", F 1e-10; "begin", I 10L; "end", I 15L ] ]
                    twoGroups "lr" 15 None
            let curve b = first b @ List.replicate 5 (List.last (first b)) @ second b
            expectCurves "gap" v (curve 0.05) (curve 0.5)
        }
        test "ReduceOnPlateauLR: every rule/threshold combination, and min_value" {
            let run monitor rule thresholdRule threshold (metricValues: float list) minValue =
                let cfg =
                    D [ "type", S "ReduceOnPlateauLR"; "monitor", S monitor; "rule", S rule; "factor", F 0.1; "patience", I 2L
                        "threshold", F threshold; "threshold_rule", S thresholdRule; "cooldown", I 1L; "min_value", F minValue ]
                valuesOver [ cfg ] twoGroups "lr" 10 (Some [ for m in metricValues -> Some [ monitor, m ] ])
            let falling = [ 10.; 9.; 8.; 7.; 6.; 6.; 6.; 6.; 6.; 6. ]
            let rising = [ 1.; 2.; 3.; 4.; 5.; 5.; 5.; 5.; 5.; 5. ]
            let targets = List.replicate 8 0.05 @ [ 0.005; 0.005 ]
            expectCurve "less/rel" (run "loss" "less" "rel" 0.01 falling 0.0) targets mult
            expectCurve "less/abs" (run "loss" "less" "abs" 0.9 falling 0.0) targets mult
            expectCurve "greater/rel" (run "bbox_mAP" "greater" "rel" 0.01 rising 0.0) targets mult
            expectCurve "greater/abs" (run "bbox_mAP" "greater" "abs" 0.9 rising 0.0) targets mult
            let v = run "loss" "less" "rel" 0.01 falling 0.01
            for e in 0 .. 9 do
                let t0, t1 = (if e < 8 then 0.05, 0.5 else 0.01, 0.05)
                Expect.isTrue (close 1e-15 t0 v.[e].[0] && close 1e-15 t1 v.[e].[1]) (sprintf "min_value epoch %d: %A" e v.[e])
        }
        test "ReduceOnPlateau: step() without metrics only counts; a missing monitor key is a KeyError" {
            let o = attachCfg (D [ "type", S "ReduceOnPlateauLR"; "monitor", S "loss" ]) twoGroups |> ok
            Expect.equal o.State.GlobalStep 0L "no constructor step"
            let o2 = step o.State None o.Groups |> ok
            Expect.equal o2.State.GlobalStep 1L "counted"
            Expect.isEmpty o2.Writes "nothing written"
            step o2.State (Some [ "loss_foo", 1.0 ]) o2.Groups
            |> expectError "KeyError" (PyFormat.repr (S "Excepted key in ['loss_foo'], but got key loss is not in dict"))
        }
        test "StepLR: last_step counts steps; get_last_value follows the groups" {
            let o = attachCfg (D [ "type", S "StepLR"; "gamma", F 0.1; "step_size", I 3L ]) twoGroups |> ok
            Expect.equal o.State.LastStep 0L "after construction"
            let single = [ 0.05; 0.05; 0.05; 0.005; 0.005; 0.005; 0.0005; 0.0005; 0.0005; 0.00005 ]
            let rec go k (o: Outcome) =
                if k < 10 then
                    let last = lastValue o.State
                    Expect.isTrue (close 1e-15 single.[k] last.[0] && close 1e-15 (single.[k] * mult) last.[1]) (sprintf "get_last_value %d" k)
                    let o = step o.State None o.Groups |> ok
                    Expect.equal o.State.LastStep (int64 k + 1L) "last_step"
                    go (k + 1) o
            go 0 o
        }
        test "resume with last_step continues ExponentialLR" {
            let o = attachCfg (D [ "type", S "ExponentialLR"; "gamma", F 0.9 ]) twoGroups |> ok
            let o = [ 1 .. 4 ] |> List.fold (fun (o: Outcome) _ -> step o.State None o.Groups |> ok) o
            let lr4 = Group.number "lr" o.Groups.[0] |> ok
            let o2 = attachCfg (D [ "type", S "ExponentialLR"; "gamma", F 0.9; "last_step", I 4L ]) o.Groups |> ok
            let lr5 = Group.number "lr" o2.Groups.[0] |> ok
            Expect.isTrue (close 1e-15 (0.05 * Math.Pow(0.9, 4.0)) lr4) "epoch 4"
            Expect.isTrue (close 1e-15 (0.05 * Math.Pow(0.9, 5.0)) lr5) "the resumed scheduler's constructor step is epoch 5"
        }
        test "a generic scheduler schedules momentum by param_name" {
            let v = valuesOver [ D [ "type", S "StepParamScheduler"; "param_name", S "momentum"; "gamma", F 0.1; "step_size", I 2L ] ] twoGroups "momentum" 4 None
            for e in 0 .. 3 do
                let t = if e < 2 then 0.01 else 0.001
                Expect.isTrue (close 1e-15 t v.[e].[0] && close 1e-15 t v.[e].[1]) (sprintf "epoch %d" e)
        }
        test "convert_to_iter_based: StepLR, MultiStepLR, ConstantLR, ExponentialLR" {
            let ctx = { ScheduleConfig.noContext with EpochLength = Some(I 7L) }
            let conv (cfg: (string * PyValue) list) = ScheduleConfig.parse ctx "p" (D(cfg @ [ "convert_to_iter_based", B true ])) |> ok
            let s = conv [ "type", S "StepLR"; "gamma", F 0.1; "step_size", I 2L ]
            Expect.equal s.Rule (Step(14L, 0.1)) "step_size × epoch_length"
            Expect.isFalse s.ByEpoch "now iteration-based"
            let m = conv [ "type", S "MultiStepLR"; "milestones", L [ I 2L; I 5L; I 9L ] ]
            Expect.equal m.Rule (MultiStep([ 14L; 35L; 63L ], 0.1)) "milestones × epoch_length"
            let c = conv [ "type", S "ConstantLR"; "factor", F 0.5; "end", I 5L ]
            Expect.equal (c.Begin, c.End) (0L, 35L) "end × epoch_length"
            let e = conv [ "type", S "ExponentialLR"; "gamma", F 0.9 ]
            Expect.equal e.End INF "INF stays INF"
            let frac = conv [ "type", S "LinearLR"; "begin", F 0.5; "end", F 1.5 ]
            Expect.equal (frac.Begin, frac.End) (3L, 10L) "int(0.5 × 7), int(1.5 × 7)"
        }
        test "ConstantLR converted: reduced for 5·7 − 1 iterations" {
            let ctx = { ScheduleConfig.noContext with EpochLength = Some(I 7L) }
            let s = ScheduleConfig.parse ctx "p" (D [ "type", S "ConstantLR"; "factor", F 0.5; "end", I 5L; "convert_to_iter_based", B true ]) |> ok
            let points = ScheduleCurves.simulate [ s ] (sgdTarget 2) twoGroups 69 1000 |> ok
            let lrs = points |> List.take 70 |> List.map (fun p -> (snd p.Values.[0]).[0])
            let targets = List.replicate (5 * 7 - 1) 0.025 @ List.replicate (5 * 7 + 1) 0.05
            Expect.isTrue (List.forall2 (close 1e-15) targets lrs) "curve"
        }
    ]

// ---------------------------------------------------------------------------------------------
// SPEC §8 errors

let private parseErr cfg = ScheduleConfig.parse ScheduleConfig.noContext "param_scheduler.[0]" cfg

let errorTests =
    testList "scheduler errors (§8)" [
        test "OneCycleLR with torch's max_lr (golden error case)" {
            parseErr (D [ "type", S "OneCycleLR"; "max_lr", F 0.1; "total_steps", I 30L; "by_epoch", B false ])
            |> expectError "TypeError" "OneCycleParamScheduler.__init__() got an unexpected keyword argument 'max_lr'"
        }
        test "the error names the offending key's JSON path" {
            match parseErr (D [ "type", S "OneCycleLR"; "max_lr", F 0.1 ]) with
            | Error e -> Expect.equal e.Path "param_scheduler.[0].max_lr" "path"
            | Ok _ -> failtest "expected an error"
        }
        test "missing required arguments, in Python's words" {
            parseErr (D [ "type", S "StepLR" ]) |> expectError "TypeError" "StepParamScheduler.__init__() missing 1 required positional argument: 'step_size'"
            parseErr (D [ "type", S "StepParamScheduler" ])
            |> expectError "TypeError" "StepParamScheduler.__init__() missing 2 required positional arguments: 'param_name' and 'step_size'"
            parseErr (D [ "type", S "ExponentialMomentum" ]) |> expectError "TypeError" "ExponentialParamScheduler.__init__() missing 1 required positional argument: 'gamma'"
            parseErr (D [ "type", S "LinearLR"; "param_name", S "momentum" ])
            |> expectError "TypeError" "LinearParamScheduler.__init__() got multiple values for argument 'param_name'"
        }
        test "unknown type" {
            parseErr (D [ "type", S "WarmupLR" ])
            |> expectError "KeyError"
                (PyFormat.repr (S "WarmupLR is not in the mmengine::parameter scheduler registry. Please check whether the value of `WarmupLR` is correct or it was registered as expected. More details can be found at https://mmengine.readthedocs.io/en/latest/advanced_tutorials/config.html#import-the-custom-module"))
        }
        test "end <= begin" {
            parseErr (D [ "type", S "StepLR"; "gamma", F 0.1; "step_size", I 3L; "begin", I 10L; "end", I 5L ])
            |> expectError "ValueError" "end should be larger than begin, but got begin=10, end=5"
            parseErr (D [ "type", S "ReduceOnPlateauLR"; "begin", I 10L; "end", I 5L ])
            |> expectError "ValueError" "end should be larger than begin, but got begin=10, end=5"
        }
        test "last_step must be an int >= -1" {
            parseErr (D [ "type", S "ExponentialLR"; "gamma", F 0.9; "last_step", I -2L ]) |> expectError "AssertionError" ""
            parseErr (D [ "type", S "ReduceOnPlateauLR"; "last_step", F 1.5 ]) |> expectError "AssertionError" ""
        }
        test "factors out of [0, 1]" {
            parseErr (D [ "type", S "ConstantLR"; "factor", I 99L ]) |> expectError "ValueError" "Constant multiplicative factor should between 0 and 1."
            for (k, v, msg) in
                [ "start_factor", I 10L, "Starting multiplicative factor should between 0 and 1."
                  "start_factor", I -1L, "Starting multiplicative factor should between 0 and 1."
                  "end_factor", F 1.001, "Ending multiplicative factor should between 0 and 1."
                  "end_factor", F -0.00001, "Ending multiplicative factor should between 0 and 1." ] do
                parseErr (D [ "type", S "LinearLR"; k, v; "end", I 900L ]) |> expectError "ValueError" msg
        }
        test "cosine: eta_min and eta_min_ratio together" {
            parseErr (D [ "type", S "CosineAnnealingLR"; "T_max", I 10L; "eta_min", F 0.0; "eta_min_ratio", F 0.1 ])
            |> expectError "AssertionError" "Either `eta_min` or `eta_min_ratio should be specified"
        }
        test "cosine restart: eta_min xor ratio (no default), lengths" {
            parseErr (D [ "type", S "CosineRestartLR"; "periods", L [ I 4L; I 5L ]; "restart_weights", L [ I 1L; F 0.5 ]; "eta_min", I 0L; "eta_min_ratio", F 0.1 ])
            |> expectError "AssertionError" "exactly one of `eta_min` and `eta_min_ratio` must be specified"
            // MMEngine's assert has no message; this port says what is wrong.
            parseErr (D [ "type", S "CosineRestartLR"; "periods", L [ I 4L; I 5L ]; "restart_weights", L [ I 1L; F 0.5 ] ])
            |> expectError "AssertionError" "exactly one of `eta_min` and `eta_min_ratio` must be specified"
            parseErr (D [ "type", S "CosineRestartLR"; "periods", L [ I 4L; I 5L ]; "restart_weights", L [ I 1L; F 0.5; F 0.0 ]; "eta_min", I 0L ])
            |> expectError "AssertionError" "periods and restart_weights should have the same length."
        }
        test "OneCycle settings" {
            parseErr (D [ "type", S "OneCycleParamScheduler"; "param_name", S "momentum"; "eta_max", F 0.1; "total_steps", I 10L ])
            |> expectError "AssertionError" "OneCycle only works for learning rate updating, but got patam_name as momentum"
            parseErr (D [ "type", S "OneCycleLR"; "eta_max", F 0.1; "total_steps", I 0L ])
            |> expectError "ValueError" "Expected positive integer total_steps, but got 0"
            parseErr (D [ "type", S "OneCycleLR"; "eta_max", F 0.1; "total_steps", F 30.0 ])
            |> expectError "ValueError" "Expected positive integer total_steps, but got 30.0"
            parseErr (D [ "type", S "OneCycleLR"; "eta_max", F 0.1; "total_steps", I 10L; "pct_start", I 1L ])
            |> expectError "ValueError" "Expected float between 0 and 1 pct_start, but got 1"
            parseErr (D [ "type", S "OneCycleLR"; "eta_max", F 0.1; "total_steps", I 10L; "pct_start", F 1.5 ])
            |> expectError "ValueError" "Expected float between 0 and 1 pct_start, but got 1.5"
            parseErr (D [ "type", S "OneCycleLR"; "eta_max", F 0.1; "total_steps", I 10L; "anneal_strategy", S "exp" ])
            |> expectError "ValueError" "anneal_strategy must by one of \"cos\" or \"linear\", instead got exp"
        }
        test "OneCycle: an eta_max list must match the group count (pseudo group included)" {
            attachCfg (D [ "type", S "OneCycleLR"; "eta_max", L [ F 0.1; F 0.2; F 0.3 ]; "total_steps", I 10L ]) twoGroups
            |> expectError "ValueError" "expected 2 values for max_lr, got 3"
        }
        test "OneCycle: stepping past total_steps" {
            let o = attachCfg (D [ "type", S "OneCycleLR"; "eta_max", F 0.1; "total_steps", I 3L ]) twoGroups |> ok
            let o = [ 1 .. 3 ] |> List.fold (fun (o: Outcome) _ -> step o.State None o.Groups |> ok) o
            step o.State None o.Groups |> expectError "ValueError" "Tried to step 5 times. The specified number of total steps is 3"
        }
        test "ReduceOnPlateau settings" {
            parseErr (D [ "type", S "ReduceOnPlateauLR"; "by_epoch", B false ]) |> expectError "AssertionError" "Now ReduceOnPlateauLR only support by_epoch=True"
            parseErr (D [ "type", S "ReduceOnPlateauLR"; "factor", F 2.0 ]) |> expectError "ValueError" "Factor should be < 1.0."
            parseErr (D [ "type", S "ReduceOnPlateauLR"; "threshold", F -1.0 ]) |> expectError "ValueError" "threshold -1.0 should be >= 0."
            parseErr (D [ "type", S "ReduceOnPlateauLR"; "rule", S "foo" ]) |> expectError "ValueError" "mode foo is unknown!"
            parseErr (D [ "type", S "ReduceOnPlateauLR"; "threshold_rule", S "foo" ]) |> expectError "ValueError" "threshold mode foo is unknown!"
            attachCfg (D [ "type", S "ReduceOnPlateauLR"; "min_value", L [ F 0.1; F 0.1 ] ]) twoGroups |> ok |> ignore
            attachCfg (D [ "type", S "ReduceOnPlateauLR"; "min_value", L [ F 0.1; F 0.1; F 0.1; F 0.1 ] ]) twoGroups
            |> expectError "ValueError" "expected 2 min_lrs, got 4"
        }
        test "resuming (last_step given) without initial_lr in the groups" {
            attachCfg (D [ "type", S "StepLR"; "gamma", F 0.1; "step_size", I 3L; "last_step", I 10L ]) twoGroups
            |> expectError "KeyError" (PyFormat.repr (S "param 'initial_lr' is not specified in param_groups[0] when resuming an optimizer"))
        }
        test "a param_name the groups lack" {
            attachCfg (D [ "type", S "StepParamScheduler"; "param_name", S "invalid_name"; "step_size", I 10L ]) twoGroups
            |> expectError "KeyError" "'invalid_name'"
        }
        test "momentum scheduler on an optimizer without momentum or betas" {
            let groups = [ [ "lr", F 0.1; "lr_decay", I 0L ] ]
            attach (parse (D [ "type", S "CosineAnnealingMomentum"; "T_max", I 10L ])) { Defaults = groups.[0]; RealGroupCount = 1 } groups
            |> expectError "ValueError" "optimizer must support momentum when using momentum scheduler"
        }
        test "convert_to_iter_based needs epoch_length and an epoch-based scheduler" {
            let msg = "Only epoch-based parameter scheduler can be converted to iter-based, and `epoch_length` should be set"
            parseErr (D [ "type", S "StepLR"; "step_size", I 2L; "convert_to_iter_based", B true ]) |> expectError "AssertionError" msg
            let ctx = { ScheduleConfig.noContext with EpochLength = Some(I 7L) }
            ScheduleConfig.parse ctx "p" (D [ "type", S "StepLR"; "step_size", I 2L; "by_epoch", B false; "convert_to_iter_based", B true ])
            |> expectError "AssertionError" msg
            let bad = { ScheduleConfig.noContext with EpochLength = Some(I -1L) }
            ScheduleConfig.parse bad "p" (D [ "type", S "StepLR"; "gamma", F 0.1; "step_size", I 2L; "convert_to_iter_based", B true ])
            |> expectError "AssertionError" "`epoch_length` must be a positive integer, but got -1."
            ScheduleConfig.parse ctx "p" (D [ "type", S "StepLR"; "convert_to_iter_based", B true ])
            |> expectError "TypeError" "StepParamScheduler.build_iter_from_epoch() missing 1 required keyword-only argument: 'step_size'"
            ScheduleConfig.parse ctx "p" (D [ "type", S "ReduceOnPlateauLR"; "convert_to_iter_based", B true ])
            |> expectError "AttributeError" "type object 'ReduceOnPlateauLR' has no attribute 'build_iter_from_epoch'"
        }
        // MMEngine accepts these and raises ZeroDivisionError when stepped; this port rejects them when built.
        test "LinearLR start_factor 0 (divides by zero at its second step in MMEngine) is rejected when built" {
            ScheduleConfig.parseForConfig ScheduleConfig.noContext "param_scheduler.[0]" (D [ "type", S "LinearLR"; "start_factor", I 0L; "end", I 10L ])
            |> expectError "ValueError" "Starting multiplicative factor must be above 0 (0 divides by zero at the first step)."
        }
        test "StepLR step_size 0 (fails at its first decay in MMEngine) is rejected when built" {
            ScheduleConfig.parseForConfig ScheduleConfig.noContext "param_scheduler.[0]" (D [ "type", S "StepLR"; "step_size", I 0L ])
            |> expectError "ValueError" "step_size must be a positive integer (it divides the step count), got 0"
        }
        test "only ReduceOnPlateau takes metrics" {
            let o = attachCfg (D [ "type", S "StepLR"; "step_size", I 2L ]) twoGroups |> ok
            step o.State (Some [ "loss", 1.0 ]) o.Groups |> expectError "TypeError" "_ParamScheduler.step() takes 1 positional argument but 2 were given"
        }
        test "this port's type checks name the key" {
            match parseErr (D [ "type", S "StepLR"; "step_size", I 2L; "gamma", S "0.1" ]) with
            | Error e ->
                Expect.equal (e.Type, e.Path) ("TypeError", "param_scheduler.[0].gamma") "type and path"
            | Ok _ -> failtest "a string gamma must be rejected"
        }
    ]

// ---------------------------------------------------------------------------------------------
// Momentum on Adam-like optimizers (betas.[0])

let momentumTests =
    testList "momentum schedulers" [
        test "on Adam, momentum mirrors betas.[0] and betas follow the schedule" {
            let adam = [ "lr", F 0.001; "betas", PyValue.Tuple [ F 0.9; F 0.999 ]; "eps", F 1e-8; "weight_decay", I 0L ]
            let groups = [ adam; PyValue.set "lr" (F 0.002) adam ]
            let s = parse (D [ "type", S "StepMomentum"; "step_size", I 2L; "gamma", F 0.5 ])
            let o = attach s { Defaults = adam; RealGroupCount = 2 } groups |> ok
            Expect.isTrue o.State.UseBetas "use_betas"
            Expect.equal (PyValue.tryFind "momentum" o.Groups.[0]) (Some(F 0.9)) "momentum key added"
            let o = [ 1 .. 2 ] |> List.fold (fun (o: Outcome) _ -> step o.State None o.Groups |> ok) o
            for g in o.Groups do
                Expect.equal (PyValue.tryFind "momentum" g) (Some(F 0.45)) "momentum halved at step 2"
                Expect.equal (PyValue.tryFind "betas" g) (Some(PyValue.Tuple [ F 0.45; F 0.999 ])) "betas.[0] follows, betas.[1] kept"
        }
        test "ReduceOnPlateauMomentum on Adam: betas follow momentum, also on a counting step(None)" {
            let adam = [ "lr", F 0.001; "betas", PyValue.Tuple [ F 0.9; F 0.999 ]; "eps", F 1e-8; "weight_decay", I 0L ]
            let s = parse (D [ "type", S "ReduceOnPlateauMomentum"; "patience", I 0L; "factor", F 0.5 ])
            let o = attach s { Defaults = adam; RealGroupCount = 1 } [ adam ] |> ok
            let o = step o.State (Some [ "loss", 1.0 ]) o.Groups |> ok
            let o = step o.State (Some [ "loss", 1.0 ]) o.Groups |> ok
            Expect.equal (PyValue.tryFind "betas" o.Groups.[0]) (Some(PyValue.Tuple [ F 0.45; F 0.999 ])) "reduced"
            // someone edits betas; MMEngine's mixin puts momentum back into betas[0] even on step(None)
            let edited = [ PyValue.set "betas" (PyValue.Tuple [ F 0.7; F 0.999 ]) o.Groups.[0] ]
            let o = step o.State None edited |> ok
            Expect.equal (PyValue.tryFind "betas" o.Groups.[0]) (Some(PyValue.Tuple [ F 0.45; F 0.999 ])) "rewritten from momentum"
        }
        test "on SGD, momentum is scheduled directly and betas are not touched" {
            let s = parse (D [ "type", S "CosineAnnealingMomentum"; "T_max", I 10L; "eta_min", F 0.0 ])
            let o = attach s (sgdTarget 2) twoGroups |> ok
            Expect.isFalse o.State.UseBetas "use_betas"
            Expect.isFalse (o.Writes |> List.exists (fun w -> w.Key = "betas")) "no betas writes"
        }
    ]

// ---------------------------------------------------------------------------------------------
// State dict

let stateTests =
    testList "scheduler state dict" [
        test "keys are MMEngine's attribute names, in MMEngine's order" {
            let o = attachCfg (D [ "type", S "LinearLR"; "start_factor", F 0.5; "end", I 5L ]) twoGroups |> ok
            match ScheduleState.toPy o.State with
            | PyValue.Dict kvs ->
                Expect.equal (List.map fst kvs)
                    [ "start_factor"; "end_factor"; "total_iters"; "param_name"; "begin"; "end"; "by_epoch"; "base_values"
                      "last_step"; "_global_step"; "verbose"; "_last_value" ] "keys"
            | other -> failtestf "not a dict: %A" other
        }
        test "load_state_dict makes a differently-built scheduler equal (MMEngine's _check_scheduler_state_dict)" {
            let pairs =
                [ D [ "type", S "StepLR"; "gamma", F 0.1; "step_size", I 3L ], D [ "type", S "StepLR"; "gamma", F 0.005; "step_size", I 1L ]
                  D [ "type", S "MultiStepLR"; "gamma", F 0.1; "milestones", L [ I 2L; I 5L; I 9L ] ],
                  D [ "type", S "MultiStepLR"; "gamma", F 0.01; "milestones", L [ I 1L; I 4L; I 6L ] ]
                  D [ "type", S "ExponentialLR"; "gamma", F 0.1 ], D [ "type", S "ExponentialLR"; "gamma", F 0.01 ]
                  D [ "type", S "CosineAnnealingLR"; "T_max", I 10L; "eta_min", F 1e-10 ], D [ "type", S "CosineAnnealingLR"; "T_max", I 5L; "eta_min", F 5e-11 ]
                  D [ "type", S "LinearLR"; "start_factor", F(1.0 / 3.0) ], D [ "type", S "LinearLR"; "start_factor", F 0.1; "end_factor", F 0.3 ]
                  D [ "type", S "PolyLR"; "power", F 0.5; "eta_min", F 0.001 ], D [ "type", S "PolyLR"; "power", F 0.8; "eta_min", F 0.002 ]
                  D [ "type", S "CosineRestartLR"; "periods", L [ I 4L; I 5L ]; "restart_weights", L [ I 1L; F 0.5 ]; "eta_min", I 0L ],
                  D [ "type", S "CosineRestartLR"; "periods", L [ I 4L; I 6L ]; "restart_weights", L [ I 1L; F 0.5 ]; "eta_min", I 0L ]
                  D [ "type", S "OneCycleLR"; "eta_max", F 0.1; "total_steps", I 20L ],
                  D [ "type", S "OneCycleLR"; "eta_max", F 0.3; "total_steps", I 40L; "anneal_strategy", S "linear"; "three_phase", B true ] ]
            for (a, b) in pairs do
                let o = attachCfg a twoGroups |> ok
                let o = [ 1 .. 10 ] |> List.fold (fun (o: Outcome) _ -> step o.State None o.Groups |> ok) o
                let copy = attachCfg b twoGroups |> ok
                let loaded = ScheduleState.load copy.State (ScheduleState.toPy o.State) |> ok
                Expect.equal (ScheduleState.toPy loaded) (ScheduleState.toPy o.State) (sprintf "%A" a)
                Expect.equal (lastValue loaded) (lastValue o.State) "get_last_value"
        }
        test "ReduceOnPlateau state round trip" {
            let a =
                D [ "type", S "ReduceOnPlateauLR"; "monitor", S "loss"; "rule", S "less"; "factor", F 0.01; "patience", I 5L
                    "threshold", F 1e-4; "threshold_rule", S "rel"; "cooldown", I 0L; "min_value", F 0.0; "eps", F 1e-8 ]
            let b =
                D [ "type", S "ReduceOnPlateauLR"; "monitor", S "loss_foo"; "rule", S "greater"; "factor", F 0.05; "patience", I 10L
                    "threshold", F 1e-5; "threshold_rule", S "abs"; "cooldown", I 5L; "min_value", F 0.1; "eps", F 1e-9 ]
            let o = attachCfg a twoGroups |> ok
            let o = [ 1 .. 10 ] |> List.fold (fun (o: Outcome) _ -> step o.State (Some [ "loss", 1.0 ]) o.Groups |> ok) o
            let copy = attachCfg b twoGroups |> ok
            let loaded = ScheduleState.load copy.State (ScheduleState.toPy o.State) |> ok
            Expect.equal (ScheduleState.toPy loaded) (ScheduleState.toPy o.State) "state"
        }
    ]

// ---------------------------------------------------------------------------------------------
// Golden: ../shared/golden/schedulers_sgd_adamw.json through the core (lr/momentum only; the
// facade test replays the same cases with real training)

/// A golden JSON value as a PyValue (ints stay ints).
let rec pyOfJson (n: Text.Json.Nodes.JsonNode) : PyValue =
    match n with
    | null -> PyValue.None
    | :? Text.Json.Nodes.JsonObject as o -> PyValue.Dict [ for kv in o -> kv.Key, pyOfJson kv.Value ]
    | :? Text.Json.Nodes.JsonArray as a -> PyValue.List [ for x in a -> pyOfJson x ]
    | v ->
        let e = v.GetValue<Text.Json.JsonElement>()
        match e.ValueKind with
        | Text.Json.JsonValueKind.True -> PyValue.Bool true
        | Text.Json.JsonValueKind.False -> PyValue.Bool false
        | Text.Json.JsonValueKind.String -> PyValue.Str(e.GetString())
        | Text.Json.JsonValueKind.Number ->
            let raw = e.GetRawText()
            match Int64.TryParse raw with
            | true, i -> PyValue.Int i
            | _ -> PyValue.Float(Double.Parse(raw, Globalization.CultureInfo.InvariantCulture))
        | _ -> PyValue.None

/// SGD's param groups as MMEngine builds them for the golden model (Linear(4,3), ReLU, Linear(3,1)):
/// one group without paramwise_cfg; with `bias_lr_mult`, one group per parameter (biases lr × mult)
/// and the `base_param_settings` pseudo group last.
let goldenGroups (cfg: PyValue) : Target * Group list =
    match cfg with
    | PyValue.Dict c ->
        let opt = match PyValue.tryFind "optimizer" c with Some(PyValue.Dict o) -> o | _ -> failwith "optimizer"
        let num k d = match PyValue.tryFind k opt with Some(PyValue.Float x) -> x | Some(PyValue.Int i) -> float i | _ -> d
        let lr = num "lr" nan
        let defaults =
            [ "lr", F lr; "momentum", F(num "momentum" 0.0); "dampening", I 0L; "weight_decay", F(num "weight_decay" 0.0)
              "nesterov", B false; "maximize", B false ]
        match PyValue.tryFind "paramwise_cfg" c with
        | Some(PyValue.Dict pw) ->
            let mult = match PyValue.tryFind "bias_lr_mult" pw with Some(PyValue.Float x) -> x | Some(PyValue.Int i) -> float i | _ -> 1.0
            let groupFor isBias = if isBias then PyValue.set "lr" (F(lr * mult)) defaults else defaults
            { Defaults = defaults; RealGroupCount = 4 }, [ groupFor false; groupFor true; groupFor false; groupFor true; defaults ]
        | _ -> { Defaults = defaults; RealGroupCount = 1 }, [ defaults ]
    | _ -> failwith "config"

/// The core reproduces every golden lr/momentum bit for bit (1e-12 relative is the requirement;
/// exact equality holds, so it is what is checked).
let relClose (expected: float) (actual: float) = expected = actual

let goldenTests =
    let file = Golden.load "schedulers_sgd_adamw.json"
    let cases = file.["cases"].AsArray() |> Seq.toList
    testList "golden schedulers (core)" [
        for c in cases do
            let id = c.["id"].GetValue<string>()
            test id {
                let cfgs = match pyOfJson c.["schedulers"] with PyValue.List xs -> xs | _ -> failwith "schedulers"
                let parsed = cfgs |> List.mapi (fun n x -> ScheduleConfig.parse ScheduleConfig.noContext (sprintf "param_scheduler.[%d]" n) x)
                if c.["result"].GetValue<string>() = "error" then
                    let firstError = parsed |> List.tryPick (function Error e -> Some e | Ok _ -> None)
                    match firstError with
                    | Some e ->
                        let ty: string = c.["error"].["type"].GetValue<string>()
                        let msg: string = c.["error"].["message"].GetValue<string>()
                        Expect.equal e.Type ty "error type"
                        Expect.equal e.Message msg "error message"
                    | None -> failtest "expected a parse error"
                else
                    let schedulers = parsed |> List.map ok
                    let target, groups = goldenGroups (pyOfJson c.["build_optim_wrapper_cfg"])
                    let states, groups =
                        schedulers |> List.fold (fun (sts, gs) s -> let o = attach s target gs |> ok in sts @ [ o.State ], o.Groups) ([], groups)
                    let perIter = c.["per_iter"].AsArray() |> Seq.toArray
                    let check (i: int) (groups: Group list) =
                        let expected = perIter.[i]
                        let real = groups |> List.take target.RealGroupCount
                        let expectedGroups = expected.["param_groups"].AsArray() |> Seq.toList
                        Expect.equal expectedGroups.Length real.Length "group count"
                        for (eg, g) in List.zip expectedGroups real do
                            for kv in eg.AsObject() do
                                let numeric =
                                    match pyOfJson kv.Value with
                                    | PyValue.Float x -> Some x
                                    | PyValue.Int n -> Some(float n)
                                    | _ -> None
                                match numeric with
                                | Some x ->
                                    let mine = Group.number kv.Key g |> ok
                                    if not (relClose x mine) then failtestf "%s iter %d %s: expected %.17g, got %.17g" id i kv.Key x mine
                                | _ -> ()
                        match pyOfJson expected.["base_param_settings"] with
                        | PyValue.Dict bps ->
                            let pseudo = List.last groups
                            for (k, v) in bps do
                                match v with
                                | PyValue.Float x ->
                                    let mine = Group.number k pseudo |> ok
                                    if not (relClose x mine) then failtestf "%s iter %d base %s: expected %.17g, got %.17g" id i k x mine
                                | _ -> ()
                        | _ -> Expect.equal groups.Length target.RealGroupCount "no pseudo group"
                        let lrs = expected.["get_lr"].["lr"].AsArray() |> Seq.map (fun x -> x.GetValue<float>()) |> Seq.toList
                        List.iter2 (fun e (g: Group) -> Expect.isTrue (relClose e (Group.number "lr" g |> ok)) "get_lr") lrs real
                        let moms = expected.["get_momentum"].["momentum"].AsArray() |> Seq.map (fun x -> x.GetValue<float>()) |> Seq.toList
                        List.iter2 (fun e (g: Group) -> Expect.isTrue (relClose e (Group.number "momentum" g |> ok)) "get_momentum") moms real
                    let rec go i (states: State list) groups =
                        check i groups
                        if i < 30 then
                            let states, groups =
                                states |> List.fold (fun (sts, gs) st -> let o = step st None gs |> ok in sts @ [ o.State ], o.Groups) ([], groups)
                            go (i + 1) states groups
                        else states
                    let finalStates = go 0 states groups
                    let ints (name: string) = c.[name].AsArray() |> Seq.map (fun x -> x.GetValue<int64>()) |> Seq.toList
                    let lastSteps = ints "scheduler_last_step"
                    let globalSteps = ints "scheduler_global_step"
                    Expect.equal (finalStates |> List.map (fun s -> s.LastStep)) lastSteps "last_step"
                    Expect.equal (finalStates |> List.map (fun s -> s.GlobalStep)) globalSteps "_global_step"
            }
    ]

// ---------------------------------------------------------------------------------------------
// Curves (plot data) and config checking

let curveTests =
    testList "schedule curves" [
        test "warm-up then cosine for an Adam config, with a momentum schedule on betas[0]" {
            let optimizer = D [ "type", S "Adam"; "lr", F 0.001 ]
            let schedulers =
                L [ D [ "type", S "LinearLR"; "start_factor", F 0.1; "end", I 5L; "by_epoch", B false ]
                    D [ "type", S "CosineAnnealingLR"; "begin", I 5L; "by_epoch", B false ]
                    D [ "type", S "CosineAnnealingMomentum"; "T_max", I 20L; "eta_min", F 0.85; "by_epoch", B false ] ]
            let points = ScheduleCurves.ofConfig optimizer schedulers 20 4 |> ok
            Expect.equal points.Length 21 "20 iterations and the value after the last step"
            Expect.equal (points.[0].Values |> List.map fst) [ "lr"; "momentum" ] "keys"
            let lr i = (snd points.[i].Values.[0]).[0]
            let momentum i = (snd points.[i].Values.[1]).[0]
            Expect.floatClose Accuracy.veryHigh (lr 0) 0.0001 "warm-up starts at 0.1 × lr"
            Expect.floatClose Accuracy.veryHigh (lr 4) 0.001 "warm-up ends at lr"
            // the cosine's end defaults to the run's 20 iterations (the Runner's max_iters): T_max = 15
            Expect.floatClose Accuracy.veryHigh (lr 12) (0.001 * (1.0 + Math.Cos(Math.PI * 7.0 / 15.0)) / 2.0) "cosine"
            Expect.floatClose Accuracy.veryHigh (momentum 0) 0.9 "betas[0] of Adam's defaults"
            // its end is the run's 20 iterations too, so it stops at step 19 of T_max = 20, short of eta_min
            Expect.floatClose Accuracy.veryHigh (momentum 20) (0.85 + 0.05 * (1.0 + Math.Cos(Math.PI * 19.0 / 20.0)) / 2.0) "cosine stopped by end"
        }
        test "epoch-based schedulers step every epoch_length iterations" {
            let points = ScheduleCurves.ofConfig (D [ "type", S "SGD"; "lr", F 0.1 ]) (D [ "type", S "StepLR"; "step_size", I 1L; "gamma", F 0.5 ]) 9 3 |> ok
            let lrs = points |> List.map (fun p -> (snd p.Values.[0]).[0])
            // halved per epoch of 3 iterations; `end` defaults to the run's 3 epochs, so no decay after epoch 2
            Expect.equal lrs [ 0.1; 0.1; 0.1; 0.05; 0.05; 0.05; 0.025; 0.025; 0.025; 0.025 ] "curve"
        }
        test "validate reports every bad entry with its path" {
            let cfg =
                L [ D [ "type", S "LinearLR"; "start_factor", F 2.0 ]
                    D [ "type", S "CosineAnnealingLR"; "T_max", I 10L ]
                    D [ "type", S "OneCycleLR"; "max_lr", F 0.1 ] ]
            let errors = ScheduleConfig.validate ScheduleConfig.noContext cfg
            Expect.equal (errors |> List.map (fun e -> e.Path, e.Type)) [ "param_scheduler[0].start_factor", "ValueError"; "param_scheduler[2].max_lr", "TypeError" ] "two errors"
            Expect.equal (ScheduleError.toRuleError errors.[1]).Kind ErrorKind.Type "as the project's RuleError"
        }
    ]

[<Tests>]
let tests = testList "schedules" [ portedTests; errorTests; momentumTests; stateTests; goldenTests; curveTests ]
