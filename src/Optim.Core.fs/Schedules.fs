/// MMEngine's parameter schedulers as pure data and total functions.
///
/// A scheduler is its settings (`Scheduler`) plus its state (`State`, MMEngine's `state_dict`).
/// Param groups are plain ordered dicts (`Group`): the core reads the values it needs from them and
/// returns the writes MMEngine would make, so the facade only copies values in and out. Formulas are
/// MMEngine's *chainable* recurrences (a new value is derived from the group's current value), in
/// MMEngine's operation order, so several schedulers on one optimizer compose exactly as in Python.
module Optim.Core.Schedules

open System
open System.Globalization
open Optim.Core.ResultFlow

/// A scheduler failure as MMEngine reports it: Python's exception type (`TypeError`, `ValueError`,
/// `KeyError`, `AssertionError`, `ZeroDivisionError`, `AttributeError`), the text `str(exc)` gives,
/// and where in a config the offending value sits (`param_scheduler[1].max_lr`; "" when not from a config).
type ScheduleError = { Type: string; Message: string; Path: string }

module ScheduleError =
    let make ty msg = { Type = ty; Message = msg; Path = "" }
    let typeError msg = make "TypeError" msg
    let valueError msg = make "ValueError" msg
    let assertion msg = make "AssertionError" msg
    /// Python prints a KeyError's argument with repr(), quotes included.
    let keyError (msg: string) = make "KeyError" (PyFormat.repr (PyValue.Str msg))
    let zeroDivision msg = make "ZeroDivisionError" msg
    let at (path: string) (e: ScheduleError) = if e.Path = "" then { e with Path = path } else e
    /// The project's error kind for this Python exception (ZeroDivisionError is a run-time error,
    /// AttributeError a type error).
    let kind (e: ScheduleError) =
        match e.Type with
        | "AssertionError" -> ErrorKind.Assertion
        | "ValueError" -> ErrorKind.Value
        | "KeyError" -> ErrorKind.Key
        | "TypeError" | "AttributeError" -> ErrorKind.Type
        | _ -> ErrorKind.Runtime
    /// As the project's `RuleError` (the path, if any, leads the message).
    let toRuleError (e: ScheduleError) : RuleError =
        { Kind = kind e; Message = (if e.Path = "" then e.Message else e.Path + ": " + e.Message) }
    /// "param_scheduler[1].max_lr: TypeError: ..." — one line for logs and exceptions.
    let describe (e: ScheduleError) =
        (if e.Path = "" then "" else e.Path + ": ") + e.Type + ": " + e.Message

/// MMEngine's `INF` (an int, 10**9): the default `end` of every scheduler.
[<Literal>]
let INF = 1_000_000_000L

/// The lower end of a cosine schedule: a value, or a ratio of each group's base value.
type EtaMin =
    | EtaMin of float
    | EtaMinRatio of float

type AnnealStrategy =
    | AnnealCos
    | AnnealLinear

/// One value for every group, or one per group (OneCycle's `eta_max`, ReduceOnPlateau's `min_value`).
type ForGroups =
    | Same of float
    | Each of float list

type OneCycleRule =
    { EtaMax: ForGroups
      TotalSteps: int64
      PctStart: float
      Strategy: AnnealStrategy
      DivFactor: float
      FinalDivFactor: float
      ThreePhase: bool }

/// `rule` of ReduceOnPlateau.
type PlateauMode =
    | Less
    | Greater

type ThresholdRule =
    | Rel
    | Abs

type PlateauRule =
    { Monitor: string
      Mode: PlateauMode
      Factor: float
      Patience: int64
      Threshold: float
      ThresholdRule: ThresholdRule
      Cooldown: int64
      MinValue: ForGroups
      Eps: float }

/// What a scheduler does, with its own settings (MMEngine's constructor arguments).
type Rule =
    | Step of stepSize: int64 * gamma: float
    | MultiStep of milestones: int64 list * gamma: float
    | Constant of factor: float
    | Exponential of gamma: float
    | CosineAnnealing of tMax: int64 * etaMin: EtaMin
    | Linear of startFactor: float * endFactor: float
    | Poly of etaMin: float * power: float
    | OneCycle of OneCycleRule
    | CosineRestart of periods: int64 list * restartWeights: float list * etaMin: EtaMin
    | ReduceOnPlateau of PlateauRule

/// Which registered family a scheduler belongs to: `*ParamScheduler(param_name)`, `*LR`, `*Momentum`.
type Family =
    | Generic
    | LR
    | Momentum

/// A configured scheduler (MMEngine's constructor arguments after validation).
type Scheduler =
    { /// The registered type name (`LinearLR`, `CosineAnnealingMomentum`, `StepParamScheduler`, ...).
      TypeName: string
      Family: Family
      /// The group key scheduled: `lr`, `momentum`, or the generic scheduler's `param_name`.
      ParamName: string
      Rule: Rule
      Begin: int64
      End: int64
      /// The `last_step` argument: -1 for a fresh start, otherwise a resume without state dict.
      LastStep: int64
      ByEpoch: bool
      Verbose: bool }

/// ReduceOnPlateau's `best` with its Python type: MMEngine starts it at its integer `rule_worse`
/// (INF = int(1e9), or -INF) and replaces it with the first metric that beats it (a float).
type PlateauBest =
    | IntBest of int64
    | FloatBest of float

    member b.Value = match b with IntBest n -> float n | FloatBest x -> x

/// ReduceOnPlateau's counters.
type PlateauState =
    { Best: PlateauBest
      NumBadEpochs: int64
      CooldownCounter: int64
      /// `min_values`: one per group of the param-group list (pseudo group included).
      MinValues: float list }

/// A scheduler attached to an optimizer: MMEngine's `state_dict()` as data.
type State =
    { Scheduler: Scheduler
      /// Momentum schedulers on an Adam-like optimizer mirror `momentum` into `betas[0]`.
      UseBetas: bool
      /// `base_values`: each group's `initial_{param}` when attached (empty for ReduceOnPlateau).
      BaseValues: float list
      LastStep: int64
      /// `_global_step`: how many times `step()` has run (-1 before the constructor's own step).
      GlobalStep: int64
      /// `_last_value`: every group's value after the last step (`get_last_value()`).
      LastValue: float list
      Plateau: PlateauState option }

/// A param group's entries (hyper-parameters and extra keys, no `params`), in order.
type Group = (string * PyValue) list

/// One assignment `param_groups[Group][Key] = Value`.
type Write = { Group: int; Key: string; Value: PyValue }

/// What attaching or stepping produced: the new state, the groups after the writes, the writes
/// themselves in MMEngine's order, and the lines a verbose scheduler logs.
type Outcome =
    { State: State
      Groups: Group list
      Writes: Write list
      Logs: string list }

/// What a scheduler needs to know about the optimizer beyond its param groups.
type Target =
    { /// The (inner) optimizer's `defaults`, to choose between `momentum` and `betas`.
      Defaults: Group
      /// How many groups the real optimizer has; a longer group list ends with the wrapper's
      /// `base_param_settings` pseudo group.
      RealGroupCount: int }

/// The Python class whose `__init__` holds a rule (what MMEngine's error messages name).
let className (rule: Rule) =
    match rule with
    | Step _ -> "StepParamScheduler"
    | MultiStep _ -> "MultiStepParamScheduler"
    | Constant _ -> "ConstantParamScheduler"
    | Exponential _ -> "ExponentialParamScheduler"
    | CosineAnnealing _ -> "CosineAnnealingParamScheduler"
    | Linear _ -> "LinearParamScheduler"
    | Poly _ -> "PolyParamScheduler"
    | OneCycle _ -> "OneCycleParamScheduler"
    | CosineRestart _ -> "CosineRestartParamScheduler"
    | ReduceOnPlateau _ -> "ReduceOnPlateauParamScheduler"

/// Whether the scheduler waits for validation metrics (`need_val_args`).
let needsMetrics (s: Scheduler) =
    match s.Rule with
    | ReduceOnPlateau _ -> true
    | _ -> false

/// `total_iters = end - begin - 1` of Constant, Linear and Poly.
let totalIters (s: Scheduler) = s.End - s.Begin - 1L

/// OneCycle's phases: (end_step, start key, end key), as MMEngine builds `_schedule_phases`.
let oneCyclePhases (paramName: string) (r: OneCycleRule) : (float * string * string) list =
    let initial, maxKey, minKey = "initial_" + paramName, "max_" + paramName, "min_" + paramName
    let total = float r.TotalSteps
    if r.ThreePhase then
        [ float (r.PctStart * total) - 1.0, initial, maxKey
          float (2.0 * r.PctStart * total) - 2.0, maxKey, initial
          float (r.TotalSteps - 1L), initial, minKey ]
    else
        [ float (r.PctStart * total) - 1.0, initial, maxKey
          float (r.TotalSteps - 1L), maxKey, minKey ]

// ---------------------------------------------------------------------------------------------
// Group access

module Group =
    let tryFind (key: string) (g: Group) = PyValue.tryFind key g

    /// `group[key]` as a float (ints widen as in Python arithmetic); KeyError when absent.
    let number (key: string) (g: Group) : Result<float, ScheduleError> =
        match tryFind key g with
        | None -> Error(ScheduleError.keyError key)
        | Some(PyValue.Float f) -> Ok f
        | Some(PyValue.Int i) -> Ok(float i)
        | Some(PyValue.Bool b) -> Ok(if b then 1.0 else 0.0)
        | Some other -> Error(ScheduleError.typeError (sprintf "param group value '%s' is %s, not a number" key (PyValue.kind other)))

    /// Applies writes to groups (what the facade does to the real param groups).
    let applyWrites (writes: Write list) (groups: Group list) : Group list =
        let arr = List.toArray groups
        for w in writes do
            arr[w.Group] <- PyValue.set w.Key w.Value arr[w.Group]
        List.ofArray arr

// Writes accumulated on groups, newest first; pure.
type private Acc = { G: Group list; W: Write list; L: string list }

let private acc (groups: Group list) = { G = groups; W = []; L = [] }

let private set (i: int) (key: string) (v: PyValue) (a: Acc) =
    { a with
        G = a.G |> List.mapi (fun j g -> if j = i then PyValue.set key v g else g)
        W = { Group = i; Key = key; Value = v } :: a.W }

let private log (line: string) (a: Acc) = { a with L = line :: a.L }

let private finish (a: Acc) (st: State) =
    { State = st; Groups = a.G; Writes = List.rev a.W; Logs = List.rev a.L }

/// Python's `'{:.4e}'.format(x)`.
let formatE4 (x: float) =
    if Double.IsNaN x then "nan"
    elif Double.IsPositiveInfinity x then "inf"
    elif Double.IsNegativeInfinity x then "-inf"
    else
        let s = x.ToString("E4", CultureInfo.InvariantCulture) // 1.0000E-003
        let i = s.IndexOf 'E'
        let mant = s.Substring(0, i)
        let exp = int (s.Substring(i + 1))
        sprintf "%se%s%02d" mant (if exp < 0 then "-" else "+") (abs exp)

/// Python's `max(a, b)`: `a` unless `b > a` (so NaN handling matches).
let private pyMax (a: float) (b: float) = if b > a then b else a

// ---------------------------------------------------------------------------------------------
// The recurrences (`_get_value`) — one new value per group from its current value.

let private etaMinOf (eta: EtaMin) (baseValue: float) =
    match eta with
    | EtaMin m -> m
    | EtaMinRatio r -> baseValue * r

let private floatDivZero = ScheduleError.zeroDivision "float division by zero"

/// The value MMEngine's `_get_value` computes for one group at step `t` (= `last_step`).
let private valueAt (s: Scheduler) (baseValue: float) (t: int64) (g: Group) : Result<float, ScheduleError> =
    let p = s.ParamName
    match Group.number p g with
    | Error e -> Error e
    | Ok v ->
        match s.Rule with
        | Step(stepSize, gamma) ->
            if t = 0L then Ok v
            elif stepSize = 0L then Error(ScheduleError.zeroDivision "integer modulo by zero")
            elif t % stepSize <> 0L then Ok v
            else Ok(v * gamma)
        | MultiStep(milestones, gamma) ->
            let count = milestones |> List.filter ((=) t) |> List.length
            if count = 0 then Ok v else Ok(v * Math.Pow(gamma, float count))
        | Constant factor ->
            let total = totalIters s
            if t = 0L then Ok(v * factor)
            elif t <> total then Ok v
            elif factor = 0.0 then Error floatDivZero
            else Ok(v * (1.0 / factor))
        | Exponential gamma -> if t = 0L then Ok v else Ok(v * gamma)
        | CosineAnnealing(tMax, eta) ->
            let etaMin = etaMinOf eta baseValue
            if t = 0L then Ok v
            elif tMax = 0L then Error(ScheduleError.zeroDivision "integer modulo by zero")
            elif (t - 1L - tMax) % (2L * tMax) = 0L then
                Ok(v + (baseValue - etaMin) * (1.0 - Math.Cos(Math.PI / float tMax)) / 2.0)
            else
                let den = 1.0 + Math.Cos(Math.PI * float (t - 1L) / float tMax)
                if den = 0.0 then Error floatDivZero
                else Ok((1.0 + Math.Cos(Math.PI * float t / float tMax)) / den * (v - etaMin) + etaMin)
        | Linear(startFactor, endFactor) ->
            if t = 0L then Ok(v * startFactor)
            else
                let den = float (totalIters s) * startFactor + float (t - 1L) * (endFactor - startFactor)
                if den = 0.0 then Error floatDivZero
                else Ok(v * (1.0 + (endFactor - startFactor) / den))
        | Poly(etaMin, power) ->
            if t = 0L then Ok v
            else
                let k = totalIters s - t + 1L
                if k = 0L then Error(ScheduleError.zeroDivision "division by zero")
                else
                    let b = 1.0 - 1.0 / float k
                    if b = 0.0 && power < 0.0 then Error(ScheduleError.zeroDivision "0.0 cannot be raised to a negative power")
                    else Ok((v - etaMin) * Math.Pow(b, power) + etaMin)
        | OneCycle r ->
            if t > r.TotalSteps then
                Error(ScheduleError.valueError (sprintf "Tried to step %d times. The specified number of total steps is %d" (t + 1L) r.TotalSteps))
            else
                let phases = oneCyclePhases p r
                let last = List.length phases - 1
                let rec go i (startStep: float) =
                    let (endStep, startKey, endKey) = phases[i]
                    if float t <= endStep || i = last then
                        let den = endStep - startStep
                        if den = 0.0 then Error floatDivZero
                        else
                            let pct = (float t - startStep) / den
                            match Group.number startKey g, Group.number endKey g with
                            | Error e, _ | _, Error e -> Error e
                            | Ok a, Ok b ->
                                match r.Strategy with
                                | AnnealCos -> Ok(b + (a - b) / 2.0 * (Math.Cos(Math.PI * pct) + 1.0))
                                | AnnealLinear -> Ok((b - a) * pct + a)
                    else go (i + 1) endStep
                go 0 0.0
        | CosineRestart(periods, weights, eta) ->
            let cumulative = periods |> List.scan (+) 0L |> List.tail
            match cumulative |> List.tryFindIndex (fun c -> t < c) with
            | None -> Ok v
            | Some idx ->
                let weight = weights[idx]
                let nearestRestart = if idx = 0 then 0L else cumulative[idx - 1]
                let period = float periods[idx]
                let step = t - nearestRestart
                let etaMax = baseValue * weight
                let etaMin = etaMinOf eta baseValue
                if step = 0L then Ok etaMax
                else
                    let den = 1.0 + Math.Cos(Math.PI * float (step - 1L) / period)
                    if den = 0.0 then Error floatDivZero
                    else Ok((1.0 + Math.Cos(Math.PI * float step / period)) / den * (v - etaMin) + etaMin)
        | ReduceOnPlateau r -> Ok(v * r.Factor) // clamped by the caller with min_values

let private readValues (paramName: string) (groups: Group list) =
    groups |> List.map (Group.number paramName) |> sequence

// Momentum on Adam-like optimizers: after every step, betas = (momentum, betas[1]).
let private writeBetas (a: Acc) : Result<Acc, ScheduleError> =
    a.G
    |> List.indexed
    |> foldResult
        (fun a (i, g) ->
            match Group.tryFind "betas" g, Group.tryFind "momentum" g with
            | Some(PyValue.Tuple [ _; b1 ]), Some m
            | Some(PyValue.List [ _; b1 ]), Some m -> Ok(set i "betas" (PyValue.Tuple [ m; b1 ]) a)
            | None, _ -> Error(ScheduleError.keyError "betas")
            | _, None -> Error(ScheduleError.keyError "momentum")
            | Some other, _ -> Error(ScheduleError.valueError (sprintf "betas must be a pair, got %s" (PyFormat.repr other))))
        a

/// The end of every step: refresh `_last_value`, then mirror momentum into betas when needed.
let private close (st: State) (a: Acc) =
    result {
        let! last = readValues st.Scheduler.ParamName a.G
        let! a = if st.UseBetas then writeBetas a else Ok a
        return finish a { st with LastValue = last }
    }

/// One `step()` of a scheduler other than ReduceOnPlateau.
let private stepRegular (st: State) (a: Acc) : Result<Outcome, ScheduleError> =
    let s = st.Scheduler
    let g = st.GlobalStep + 1L
    result {
        let! t, a =
            if s.Begin <= g && g < s.End then
                let t = st.LastStep + 1L
                let baseOf i = if i < st.BaseValues.Length then st.BaseValues[i] else nan
                a.G
                |> List.mapi (fun i grp -> valueAt s (baseOf i) t grp)
                |> sequence
                |> Result.map (fun values ->
                    let a =
                        values
                        |> List.indexed
                        |> List.fold
                            (fun a (i, v) ->
                                let a = set i s.ParamName (PyValue.Float v) a
                                if s.Verbose then log (sprintf "Adjusting parameter value of group %d to %s." i (formatE4 v)) a
                                else a)
                            a
                    t, a)
            else Ok(st.LastStep, a)
        return! close { st with GlobalStep = g; LastStep = t } a
    }

let private isBetter (r: PlateauRule) (a: float) (best: float) =
    match r.Mode, r.ThresholdRule with
    | Less, Rel -> a < best * (1.0 - r.Threshold)
    | Less, Abs -> a < best - r.Threshold
    | Greater, Rel -> a > best * (r.Threshold + 1.0)
    | Greater, Abs -> a > best + r.Threshold

/// ReduceOnPlateau's `step(metrics)`.
let private stepPlateau (r: PlateauRule) (ps: PlateauState) (st: State) (metrics: (string * float) list option) (a: Acc) =
    let s = st.Scheduler
    match metrics with
    | None ->
        // Only counts (`_last_value` untouched); the momentum mixin still rewrites betas afterwards.
        let st = { st with GlobalStep = st.GlobalStep + 1L }
        (if st.UseBetas then writeBetas a else Ok a) |> Result.map (fun a -> finish a st)
    | Some metrics when not (s.Begin <= st.GlobalStep && st.GlobalStep < s.End) -> close st a
    | Some metrics ->
        match metrics |> List.tryFind (fun (k, _) -> k = r.Monitor) with
        | None ->
            // MMEngine has already counted `last_step` when it raises; here the state is left as it was.
            let keys = PyFormat.repr (PyValue.List(metrics |> List.map (fst >> PyValue.Str)))
            Error(ScheduleError.keyError (sprintf "Excepted key in %s, but got key %s is not in dict" keys r.Monitor))
        | Some(_, metric) ->
            let t = st.LastStep + 1L
            let best, bad = if isBetter r metric ps.Best.Value then FloatBest metric, 0L else ps.Best, ps.NumBadEpochs + 1L
            let cooldown, bad = if ps.CooldownCounter > 0L then ps.CooldownCounter - 1L, 0L else ps.CooldownCounter, bad
            let st = { st with LastStep = t }
            if bad > r.Patience then
                let minOf i = if i < ps.MinValues.Length then ps.MinValues[i] else nan
                result {
                    let! olds = readValues s.ParamName a.G
                    let a =
                        olds
                        |> List.indexed
                        |> List.fold
                            (fun a (i, old) ->
                                let v = pyMax (old * r.Factor) (minOf i)
                                if old - v > r.Eps then
                                    let a = set i s.ParamName (PyValue.Float v) a
                                    if s.Verbose then
                                        let unit = if s.ByEpoch then "epoch" else "iter"
                                        log (sprintf "Adjusting parameter value of group %d to %s in %s %d." i (formatE4 v) unit t) a
                                    else a
                                else a)
                            a
                    let ps = { ps with Best = best; NumBadEpochs = 0L; CooldownCounter = r.Cooldown }
                    return! close { st with Plateau = Some ps } a
                }
            else close { st with Plateau = Some { ps with Best = best; NumBadEpochs = bad; CooldownCounter = cooldown } } a

/// `scheduler.step()` (metrics = None) or, for ReduceOnPlateau, `scheduler.step(metrics)`.
/// Other schedulers take no metrics (Python raises TypeError).
let step (st: State) (metrics: (string * float) list option) (groups: Group list) : Result<Outcome, ScheduleError> =
    match st.Scheduler.Rule, st.Plateau with
    | ReduceOnPlateau r, Some ps -> stepPlateau r ps st metrics (acc groups)
    | ReduceOnPlateau _, None -> Error(ScheduleError.valueError "ReduceOnPlateau state has no counters")
    | _ ->
        match metrics with
        | Some _ -> Error(ScheduleError.typeError "_ParamScheduler.step() takes 1 positional argument but 2 were given")
        | None -> stepRegular st (acc groups)

/// What a scheduler can see of its optimizer's `step()` calls. MMEngine wraps `optimizer.step` in a
/// counter when a scheduler is attached; here the optimizer wrapper counts its own steps.
type OptimizerSteps =
    /// The calls cannot be seen (a bare TorchSharp optimizer, whose `step()` nothing can intercept):
    /// the order is not checked.
    | Unobserved
    /// `step()` calls since the last scheduler was attached, minus one (-1: none yet), and whether the
    /// optimizer's `step()` is overridden by code that may bypass the counter.
    | Counted of calls: int64 * overridden: bool

/// MMEngine's two warnings about the order of `optimizer.step()` and `scheduler.step()`, verbatim.
module OrderWarning =
    /// The optimizer's `step()` no longer reaches the counter (MMEngine: it was replaced after the
    /// scheduler was built).
    let overridden =
        "Seems like `optimizer.step()` has been overridden after parameter value scheduler initialization. "
        + "Please, make sure to call `optimizer.step()` before `scheduler.step()`. "
        + "See more details at https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"

    /// The scheduler is stepped before the optimizer has been (a fresh start or a resume alike).
    let beforeOptimizer =
        "Detected call of `scheduler.step()` before `optimizer.step()`. In PyTorch 1.1.0 and later, you "
        + "should call them in the opposite order: `optimizer.step()` before `scheduler.step()`. "
        + "Failure to do this will result in PyTorch skipping the first value of the parameter value schedule. "
        + "See more details at https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"

/// The warning MMEngine gives when `scheduler.step()` is called with `steps` seen so far, if any.
/// Only the first call after construction is checked (`_global_step == 0`: the constructor's own step
/// comes before it); ReduceOnPlateau overrides `step()` without the check. An override of the
/// optimizer's `step()` that still reaches the counter shows up as counted calls, so it is reported
/// only while no call has been seen.
let orderWarning (st: State) (steps: OptimizerSteps) : string option =
    if needsMetrics st.Scheduler || st.GlobalStep <> 0L then None
    else
        match steps with
        | Counted(calls, overridden) when calls < 0L ->
            Some(if overridden then OrderWarning.overridden else OrderWarning.beforeOptimizer)
        | Counted _ | Unobserved -> None

// Momentum schedulers: `momentum` if the optimizer has it, else mirror `betas[0]` into `momentum`.
let private prepareMomentum (s: Scheduler) (target: Target) (a: Acc) : Result<bool * Acc, ScheduleError> =
    match s.Family with
    | Momentum when PyValue.tryFind "momentum" target.Defaults |> Option.isSome -> Ok(false, a)
    | Momentum when PyValue.tryFind "betas" target.Defaults |> Option.isSome ->
        a.G
        |> List.indexed
        |> foldResult
            (fun a (i, g) ->
                match Group.tryFind "betas" g with
                | Some(PyValue.Tuple(b0 :: _)) | Some(PyValue.List(b0 :: _)) -> Ok(set i "momentum" b0 a)
                | Some other -> Error(ScheduleError.typeError (sprintf "betas must be a pair, got %s" (PyFormat.repr other)))
                | None -> Error(ScheduleError.keyError "betas"))
            a
        |> Result.map (fun a -> true, a)
    | Momentum -> Error(ScheduleError.valueError "optimizer must support momentum when using momentum scheduler")
    | _ -> Ok(false, a)

// OneCycle: `initial_`, `max_`, `min_` values per group (written only on a fresh start).
let private prepareOneCycle (s: Scheduler) (a: Acc) : Result<Acc, ScheduleError> =
    match s.Rule with
    | OneCycle r ->
        let n = a.G.Length
        let p = s.ParamName
        let maxValues =
            match r.EtaMax with
            | Same x -> Ok(List.replicate n x)
            | Each xs when xs.Length = n -> Ok xs
            | Each xs -> Error(ScheduleError.valueError (sprintf "expected %d values for max_%s, got %d" n p xs.Length))
        maxValues
        |> Result.map (fun maxValues ->
            if s.LastStep <> -1L then a
            else
                maxValues
                |> List.indexed
                |> List.fold
                    (fun a (i, m) ->
                        let initial = m / r.DivFactor
                        a
                        |> set i ("initial_" + p) (PyValue.Float initial)
                        |> set i ("max_" + p) (PyValue.Float m)
                        |> set i ("min_" + p) (PyValue.Float(initial / r.FinalDivFactor)))
                    a)
    | _ -> Ok a

// `initial_{param}`: set where absent on a fresh start; required on a resume (`last_step` given).
let private prepareInitial (s: Scheduler) (a: Acc) : Result<Acc, ScheduleError> =
    let p = s.ParamName
    let key = "initial_" + p
    a.G
    |> List.indexed
    |> foldResult
        (fun a (i, g) ->
            if s.LastStep = -1L then
                match Group.tryFind p g with
                | None -> Error(ScheduleError.keyError p)
                | Some v -> Ok(if Group.tryFind key g |> Option.isNone then set i key v a else a)
            elif Group.tryFind key g |> Option.isNone then
                Error(ScheduleError.keyError (sprintf "param '%s' is not specified in param_groups[%d] when resuming an optimizer" key i))
            else Ok a)
        a

/// Attaches a scheduler to param groups: MMEngine's constructor. Sets `initial_{param}` where absent
/// (or checks it on resume), OneCycle's `initial_/max_/min_` values, momentum's mirror of
/// `betas[0]`, then performs the constructor's own `step()` (ReduceOnPlateau does not).
let attach (s: Scheduler) (target: Target) (groups: Group list) : Result<Outcome, ScheduleError> =
    let n = List.length groups
    result {
        let! useBetas, a = prepareMomentum s target (acc groups)
        match s.Rule with
        | ReduceOnPlateau r ->
            // Its own constructor: no base values and no step; `_global_step` starts at 0.
            let! a = prepareInitial s a
            let! minValues =
                match r.MinValue with
                | Same m -> Ok(List.replicate n m)
                | Each xs when xs.Length <> target.RealGroupCount ->
                    Error(ScheduleError.valueError (sprintf "expected %d min_lrs, got %d" target.RealGroupCount xs.Length))
                // The wrapper's pseudo group takes the last group's value.
                | Each xs -> Ok(if n > target.RealGroupCount && not xs.IsEmpty then xs @ [ List.last xs ] else xs)
            let! last = readValues s.ParamName a.G
            let best = IntBest(match r.Mode with Less -> INF | Greater -> -INF)
            let ps = { Best = best; NumBadEpochs = 0L; CooldownCounter = 0L; MinValues = minValues }
            return
                finish a
                    { Scheduler = s; UseBetas = useBetas; BaseValues = []; LastStep = s.LastStep
                      GlobalStep = 0L; LastValue = last; Plateau = Some ps }
        | _ ->
            let! a = prepareOneCycle s a
            let! a = prepareInitial s a
            let! baseValues = readValues ("initial_" + s.ParamName) a.G
            let st =
                { Scheduler = s; UseBetas = useBetas; BaseValues = baseValues; LastStep = s.LastStep
                  GlobalStep = -1L; LastValue = []; Plateau = None }
            return! stepRegular st a
    }

/// `get_last_value()`.
let lastValue (st: State) = st.LastValue
