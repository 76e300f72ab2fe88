/// FsCheck properties of the pure schedules.
module Optim.Tests.ScheduleProps

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Optim.Core
open Optim.Core.Schedules
open Optim.Tests.ScheduleTests

let private okOr (r: Result<'a, ScheduleError>) =
    match r with
    | Ok x -> x
    | Error e -> failwithf "unexpected error: %s" (ScheduleError.describe e)

// ---------------------------------------------------------------------------------------------
// Generators

let private unit01 = Gen.choose (1, 999) |> Gen.map (fun n -> float n / 1000.0)

/// A valid iteration-based scheduler config of any kind, on lr or momentum.
let private configGen (steps: int) : Gen<PyValue> =
    gen {
        let! family = Gen.elements [ "LR"; "Momentum"; "Generic" ]
        let! kind = Gen.elements [ "Step"; "MultiStep"; "Constant"; "Exponential"; "CosineAnnealing"; "Linear"; "Poly"; "OneCycle"; "CosineRestart"; "ReduceOnPlateau" ]
        let kind = if family = "Momentum" && kind = "OneCycle" then "Exponential" else kind
        let family = if kind = "OneCycle" then "LR" else family
        let! b = Gen.choose (0, 5)
        let! span = Gen.choose (2, 40)
        let! bounded = Gen.elements [ true; false ]
        let bounds = [ "begin", I(int64 b) ] @ (if bounded then [ "end", I(int64 (b + span)) ] else [])
        let! specific =
            match kind with
            | "Step" -> gen { let! s = Gen.choose (1, 7) in let! g = unit01 in return [ "step_size", I(int64 s); "gamma", F g ] }
            | "MultiStep" ->
                gen {
                    let! ms = Gen.listOfLength 3 (Gen.choose (0, 30))
                    let! g = unit01
                    return [ "milestones", L(ms |> List.map (int64 >> I)); "gamma", F g ]
                }
            | "Constant" -> gen { let! f = unit01 in return [ "factor", F f ] }
            | "Exponential" -> gen { let! g = Gen.choose (900, 999) in return [ "gamma", F(float g / 1000.0) ] }
            | "CosineAnnealing" ->
                gen {
                    let! t = Gen.choose (1, 30)
                    let! useRatio = Gen.elements [ true; false ]
                    let! r = unit01
                    return [ "T_max", I(int64 t); (if useRatio then "eta_min_ratio", F r else "eta_min", F(r * 1e-3)) ]
                }
            | "Linear" -> gen { let! s = unit01 in let! e = unit01 in return [ "start_factor", F s; "end_factor", F e ] }
            | "Poly" -> gen { let! p = Gen.choose (1, 30) in return [ "eta_min", F 1e-5; "power", F(float p / 10.0) ] }
            | "OneCycle" ->
                gen {
                    let! three = Gen.elements [ true; false ]
                    let! strategy = Gen.elements [ "cos"; "linear" ]
                    let! k = Gen.choose (2, 8)
                    return [ "eta_max", F 0.5; "total_steps", I(int64 (steps + 10)); "pct_start", F(float k / 20.0)
                             "anneal_strategy", S strategy; "three_phase", B three ]
                }
            | "CosineRestart" ->
                gen {
                    let! ps = Gen.listOfLength 2 (Gen.choose (1, 12))
                    let! w = unit01
                    return [ "periods", L(ps |> List.map (int64 >> I)); "restart_weights", L [ I 1L; F w ]; "eta_min", F 1e-6 ]
                }
            | _ ->
                gen {
                    let! patience = Gen.choose (0, 3)
                    let! cooldown = Gen.choose (0, 2)
                    return [ "monitor", S "loss"; "patience", I(int64 patience); "cooldown", I(int64 cooldown); "factor", F 0.5; "min_value", F 1e-4 ]
                }
        let byEpoch = if kind = "ReduceOnPlateau" then [] else [ "by_epoch", B false ]
        let bounds = if kind = "OneCycle" then [] else bounds
        let typeName, paramName =
            match family with
            | "LR" -> kind + "LR", []
            | "Momentum" -> kind + "Momentum", []
            // (Adam groups have no `momentum` key: a generic scheduler on it is MMEngine's KeyError too.)
            | _ -> kind + "ParamScheduler", [ "param_name", S(if kind = "OneCycle" then "lr" else "weight_decay") ]
        return D([ "type", S typeName ] @ paramName @ specific @ bounds @ byEpoch)
    }

type ResumeCase =
    { Configs: PyValue list
      Lrs: float list
      Adam: bool
      Steps: int
      Interrupt: int
      Metrics: float list }

    override this.ToString() = sprintf "%A" this

let private resumeGen =
    gen {
        let! steps = Gen.choose (1, 50)
        let! interrupt = Gen.choose (0, steps)
        let! n = Gen.choose (1, 3)
        let! configs = Gen.listOfLength n (configGen steps)
        let! groups = Gen.choose (1, 3)
        let! lrs = Gen.listOfLength groups (Gen.choose (1, 1000) |> Gen.map (fun x -> float x / 1000.0))
        let! adam = Gen.elements [ true; false ]
        let! metrics = Gen.listOfLength steps (Gen.choose (0, 20) |> Gen.map float)
        return { Configs = configs; Lrs = lrs; Adam = adam; Steps = steps; Interrupt = interrupt; Metrics = metrics }
    }

/// The groups of an SGD or Adam optimizer with these learning rates, plus the pseudo group when there
/// are several.
let private groupsFor (adam: bool) (lrs: float list) : Target * Group list =
    let defaults =
        if adam then [ "lr", F 0.001; "betas", PyValue.Tuple [ F 0.9; F 0.999 ]; "eps", F 1e-8; "weight_decay", I 0L ]
        else [ "lr", F 0.1; "momentum", F 0.9; "dampening", I 0L; "weight_decay", F 1e-4; "nesterov", B false ]
    let real = lrs |> List.map (fun lr -> PyValue.set "lr" (F lr) defaults)
    { Defaults = defaults; RealGroupCount = real.Length }, (if real.Length > 1 then real @ [ defaults ] else real)

/// What the schedules write and read, per step: every group's lr and momentum/betas.
let private observe (groups: Group list) =
    groups |> List.map (fun g -> PyValue.tryFind "lr" g, PyValue.tryFind "momentum" g, PyValue.tryFind "betas" g)

let private stepAll (states: State list) (metric: float) (groups: Group list) =
    states
    |> List.fold
        (fun (sts, gs) st ->
            let m = if needsMetrics st.Scheduler then Some [ "loss", metric ] else None
            let o = step st m gs |> okOr
            sts @ [ o.State ], o.Groups)
        ([], groups)

let private attachAll (schedulers: Scheduler list) (target: Target) (groups: Group list) =
    schedulers |> List.fold (fun (sts, gs) s -> let o = attach s target gs |> okOr in sts @ [ o.State ], o.Groups) ([], groups)

/// A state dict through JSON text and back: the checkpoint is plain data.
let private throughJson (sd: PyValue) =
    match PyJson.parse (PyJson.write false sd) with
    | Ok v -> v
    | Error e -> failwithf "state dict JSON: %s" e

type Arbs =
    static member Resume() = Arb.fromGen resumeGen

let private config n = { FsCheckConfig.defaultConfig with maxTest = n; arbitrary = [ typeof<Arbs> ] }

let resumeProps =
    testList "schedules resume" [
        testPropertyWithConfig (config 300) "interrupted, saved as JSON, restored: the same values and state as uninterrupted" <| fun (c: ResumeCase) ->
            let schedulers = c.Configs |> List.mapi (fun i cfg -> ScheduleConfig.parse ScheduleConfig.noContext (sprintf "p[%d]" i) cfg |> okOr)
            let target, groups0 = groupsFor c.Adam c.Lrs
            // Uninterrupted
            let states, groups = attachAll schedulers target groups0
            let rec run i states groups acc =
                if i = c.Steps then List.rev acc, states
                else
                    let seen = observe groups
                    let states, groups = stepAll states c.Metrics.[i] groups
                    run (i + 1) states groups (seen :: acc)
            let expected, finalStates = run 0 states groups []
            // Interrupted at c.Interrupt: save the groups (the optimizer's state dict) and each
            // scheduler's state dict; rebuild everything (constructors step and write again), then load.
            let rec upTo i states groups acc =
                if i = c.Interrupt then List.rev acc, states, groups
                else
                    let seen = observe groups
                    let states, groups = stepAll states c.Metrics.[i] groups
                    upTo (i + 1) states groups (seen :: acc)
            let before, states, savedGroups = upTo 0 (fst (attachAll schedulers target groups0)) (snd (attachAll schedulers target groups0)) []
            let saved = states |> List.map (ScheduleState.toPy >> throughJson)
            let fresh, _ = attachAll schedulers target groups0
            let restored = List.map2 (fun st sd -> ScheduleState.load st sd |> okOr) fresh saved
            let rec after i states groups acc =
                if i = c.Steps then List.rev acc, states
                else
                    let seen = observe groups
                    let states, groups = stepAll states c.Metrics.[i] groups
                    after (i + 1) states groups (seen :: acc)
            let rest, finalRestored = after c.Interrupt restored savedGroups []
            before @ rest = expected
            && List.map ScheduleState.toPy finalRestored = List.map ScheduleState.toPy finalStates
    ]

// ---------------------------------------------------------------------------------------------
// Epoch-based vs convert_to_iter_based

type ConvertCase =
    { Kind: string
      Epochs: int
      EpochLength: int
      Begin: int
      Span: int option
      Param: int
      Gamma: float }

    override this.ToString() = sprintf "%A" this

let private convertGen =
    gen {
        let! kind = Gen.elements [ "StepLR"; "MultiStepLR"; "CosineAnnealingLR"; "CosineRestartLR" ]
        let! epochs = Gen.choose (2, 14)
        let! len = Gen.choose (1, 9)
        let! b = Gen.choose (0, 2)
        let! bounded = Gen.elements [ true; false ]
        let! span = Gen.choose (1, 12)
        let! p = Gen.choose (1, 6)
        let! g = unit01
        return { Kind = kind; Epochs = epochs; EpochLength = len; Begin = b; Span = (if bounded then Some span else None); Param = p; Gamma = g }
    }

type ConvertArbs =
    static member Convert() = Arb.fromGen convertGen

let convertProps =
    testList "schedules convert_to_iter_based" [
        testPropertyWithConfig { config 300 with arbitrary = [ typeof<ConvertArbs> ] } "epoch-based and its iteration form agree at epoch boundaries before end (Step, MultiStep: at all)" <| fun (c: ConvertCase) ->
            let specific =
                match c.Kind with
                | "StepLR" -> [ "step_size", I(int64 c.Param); "gamma", F c.Gamma ]
                | "MultiStepLR" -> [ "milestones", L [ I(int64 c.Param); I(int64 (c.Param + 2)); I(int64 c.Param) ]; "gamma", F c.Gamma ]
                | "CosineAnnealingLR" -> [ "T_max", I(int64 (c.Param + 3)); "eta_min", F 1e-4 ]
                | _ -> [ "periods", L [ I(int64 c.Param); I 3L ]; "restart_weights", L [ I 1L; F c.Gamma ]; "eta_min_ratio", F 0.01 ]
            let bounds = [ "begin", I(int64 c.Begin) ] @ (match c.Span with Some s -> [ "end", I(int64 (c.Begin + s)) ] | None -> [])
            let cfg = [ "type", S c.Kind ] @ specific @ bounds
            let ctx = { ScheduleConfig.noContext with EpochLength = Some(I(int64 c.EpochLength)) }
            let byEpoch = ScheduleConfig.parse ctx "p" (D cfg) |> okOr
            let byIter = ScheduleConfig.parse ctx "p" (D(cfg @ [ "convert_to_iter_based", B true ])) |> okOr
            let target, groups = groupsFor false [ 0.1; 0.03 ]
            let iters = c.Epochs * c.EpochLength
            let a = ScheduleCurves.simulate [ byEpoch ] target groups iters c.EpochLength |> okOr
            let b = ScheduleCurves.simulate [ byIter ] target groups iters c.EpochLength |> okOr
            // The cosine forms part at `end`: the iteration form anneals through the last epoch
            // (to t = (end − begin)·L − 1), the epoch form stops at t = end − begin − 1.
            let exact = c.Kind = "StepLR" || c.Kind = "MultiStepLR"
            // Likewise after CosineRestart's last period (P epochs stop at step P − 1, P·L iterations at P·L − 1).
            let last = match c.Span with Some s when not exact -> min c.Epochs (c.Begin + s - 1) | _ -> c.Epochs
            let last = if c.Kind = "CosineRestartLR" then min last (c.Begin + c.Param + 3 - 1) else last
            [ for e in 0 .. last ->
                let va = snd a.[e * c.EpochLength].Values.[0]
                let vb = snd b.[e * c.EpochLength].Values.[0]
                List.forall2 (fun (x: float) y -> if exact then x = y else abs (x - y) <= 1e-10 * 0.1) va vb ]
            |> List.forall id
        test "Linear, Constant and Exponential do NOT agree after conversion (MMEngine scales only begin/end)" {
            // LinearLR over 2 epochs of 10 iterations: total_iters is end - begin - 1 in each unit, so the
            // epoch form is at start_factor + 1·(1 − start)/1 = 1.0 at epoch 1, the iteration form at
            // start + 10·(1 − start)/19 at iteration 10. ExponentialLR's gamma applies per iteration.
            let ctx = { ScheduleConfig.noContext with EpochLength = Some(I 10L) }
            let target, groups = groupsFor false [ 0.1 ]
            let lin = [ "type", S "LinearLR"; "start_factor", F 0.5; "end", I 2L ]
            let e = ScheduleCurves.simulate [ ScheduleConfig.parse ctx "p" (D lin) |> okOr ] target groups 20 10 |> okOr
            let i = ScheduleCurves.simulate [ ScheduleConfig.parse ctx "p" (D(lin @ [ "convert_to_iter_based", B true ])) |> okOr ] target groups 20 10 |> okOr
            Expect.floatClose Accuracy.veryHigh ((snd e.[10].Values.[0]).[0]) 0.1 "epoch form: back to the base at epoch 1"
            Expect.floatClose Accuracy.veryHigh ((snd i.[10].Values.[0]).[0]) (0.1 * (0.5 + 10.0 * 0.5 / 19.0)) "iteration form: 10/19 of the way"
            let ex = [ "type", S "ExponentialLR"; "gamma", F 0.5 ]
            let i2 = ScheduleCurves.simulate [ ScheduleConfig.parse ctx "p" (D(ex @ [ "convert_to_iter_based", B true ])) |> okOr ] target groups 10 10 |> okOr
            Expect.floatClose Accuracy.veryHigh ((snd i2.[10].Values.[0]).[0]) (0.1 * Math.Pow(0.5, 10.0)) "gamma per iteration"
        }
    ]

// ---------------------------------------------------------------------------------------------
// Shapes

type CosineCase =
    { TMax: int
      Base: float
      EtaMinFraction: float
      Ratio: bool }

    override this.ToString() = sprintf "%A" this

type OneCycleCase =
    { Total: int
      K: int
      Cos: bool
      ThreePhase: bool
      EtaMax: float
      Base: float }

    override this.ToString() = sprintf "%A" this

type PlateauCase =
    { Metrics: float list
      Patience: int
      Cooldown: int
      Factor: float
      Greater: bool
      Abs: bool }

    override this.ToString() = sprintf "%A" this

type ShapeArbs =
    static member Cosine() =
        gen {
            let! t = Gen.choose (1, 1000)
            let! b = Gen.choose (1, 100000)
            let! f = Gen.choose (0, 999)
            let! r = Gen.elements [ true; false ]
            return { TMax = t; Base = float b / 1e5; EtaMinFraction = float f / 1000.0; Ratio = r }
        }
        |> Arb.fromGen

    static member OneCycle() =
        gen {
            let! total = Gen.choose (4, 300)
            let! three = Gen.elements [ true; false ]
            let maxK = if three then total / 2 - 1 else total - 1
            let! k = Gen.choose (2, max 2 maxK)
            let! cos = Gen.elements [ true; false ]
            let! m = Gen.choose (1, 100000)
            let! b = Gen.choose (1, 100000)
            return { Total = total; K = k; Cos = cos; ThreePhase = three; EtaMax = float m / 1e4; Base = float b / 1e5 }
        }
        |> Arb.fromGen

    static member Plateau() =
        gen {
            let! n = Gen.choose (1, 40)
            let! ms = Gen.listOfLength n (Gen.choose (0, 10) |> Gen.map float)
            let! p = Gen.choose (0, 4)
            let! c = Gen.choose (0, 3)
            let! f = Gen.choose (1, 9)
            let! g = Gen.elements [ true; false ]
            let! a = Gen.elements [ true; false ]
            return { Metrics = ms; Patience = p; Cooldown = c; Factor = float f / 10.0; Greater = g; Abs = a }
        }
        |> Arb.fromGen

let private shapeConfig n = { FsCheckConfig.defaultConfig with maxTest = n; arbitrary = [ typeof<ShapeArbs> ] }

let private lrCurve (cfg: PyValue) (baseLr: float) (iterations: int) =
    let target, groups = groupsFor false [ baseLr ]
    let s = ScheduleConfig.parse ScheduleConfig.noContext "p" cfg |> okOr
    ScheduleCurves.simulate [ s ] target groups iterations 1 |> okOr |> List.map (fun p -> (snd p.Values.[0]).[0])

let shapeProps =
    testList "schedule shapes" [
        testPropertyWithConfig (shapeConfig 300) "cosine stays within [eta_min, base] over T_max steps, ends at eta_min, and stays within 1e-9·base over the next periods" <| fun (c: CosineCase) ->
            let etaMin = c.Base * c.EtaMinFraction
            let eta = if c.Ratio then "eta_min_ratio", F c.EtaMinFraction else "eta_min", F etaMin
            let etaMin = if c.Ratio then c.Base * c.EtaMinFraction else etaMin
            let values = lrCurve (D [ "type", S "CosineAnnealingLR"; "T_max", I(int64 c.TMax); eta; "by_epoch", B false ]) c.Base (3 * c.TMax)
            let first, rest = List.splitAt (c.TMax + 1) values
            List.forall (fun v -> etaMin <= v && v <= c.Base) first
            // Past T_max the chain restarts from (1 − cos(π/T))/2, rounded apart from the 1 + cos terms
            // that follow: relative drift of order 1e-11, as in MMEngine.
            && List.forall (fun v -> etaMin - 1e-9 * c.Base <= v && v <= c.Base * (1.0 + 1e-9)) rest
            && abs (List.last first - etaMin) <= 1e-12 * c.Base
        testPropertyWithConfig (shapeConfig 300) "OneCycle peaks at eta_max, at step pct_start·total_steps − 1, and never above" <| fun (c: OneCycleCase) ->
            let cfg =
                D [ "type", S "OneCycleLR"; "eta_max", F c.EtaMax; "total_steps", I(int64 c.Total); "pct_start", F(float c.K / float c.Total)
                    "anneal_strategy", S(if c.Cos then "cos" else "linear"); "three_phase", B c.ThreePhase; "by_epoch", B false ]
            let values = lrCurve cfg c.Base c.Total
            let peak = List.max values
            abs (peak - c.EtaMax) <= 1e-12 * c.EtaMax
            && abs (values.[c.K - 1] - c.EtaMax) <= 1e-12 * c.EtaMax
            && List.forall (fun v -> v <= c.EtaMax * (1.0 + 1e-12)) values
            && abs (values.[0] - c.EtaMax / 25.0) <= 1e-12 * c.EtaMax
        test "OneCycle with pct_start·total_steps = 1 divides 0 by 0 at its first step, as in MMEngine (and PyTorch)" {
            let target, groups = groupsFor false [ 0.1 ]
            let s = ScheduleConfig.parse ScheduleConfig.noContext "p" (D [ "type", S "OneCycleLR"; "eta_max", F 0.1; "total_steps", I 10L; "pct_start", F 0.1 ]) |> okOr
            attach s target groups |> expectError "ZeroDivisionError" "float division by zero"
        }
        testPropertyWithConfig (shapeConfig 300) "ReduceOnPlateau never raises the value, never goes below min_value, waits patience + 1 bad epochs" <| fun (c: PlateauCase) ->
            let cfg =
                D [ "type", S "ReduceOnPlateauLR"; "monitor", S "loss"; "patience", I(int64 c.Patience); "cooldown", I(int64 c.Cooldown)
                    "factor", F c.Factor; "min_value", F 1e-3; "rule", S(if c.Greater then "greater" else "less")
                    "threshold_rule", S(if c.Abs then "abs" else "rel") ]
            let target, groups = groupsFor false [ 0.1 ]
            let o = attach (ScheduleConfig.parse ScheduleConfig.noContext "p" cfg |> okOr) target groups |> okOr
            let values =
                c.Metrics
                |> List.scan (fun (st, gs) m -> let o = step st (Some [ "loss", m ]) gs |> okOr in o.State, o.Groups) (o.State, o.Groups)
                |> List.map (fun (_, gs) -> Group.number "lr" gs.[0] |> okOr)
            let reductions = values |> List.pairwise |> List.filter (fun (a, b) -> b < a) |> List.length
            List.pairwise values |> List.forall (fun (a, b) -> b <= a)
            && List.forall (fun v -> v >= 1e-3) values
            && reductions <= c.Metrics.Length / (c.Patience + 1)
    ]

[<Tests>]
let tests = testList "schedule properties" [ resumeProps; convertProps; shapeProps ]
