/// A scheduler's `state_dict()` as a Python-like dict, and `load_state_dict()`.
///
/// The keys are MMEngine's attribute names in MMEngine's order (`__dict__` minus `optimizer`), so a
/// checkpoint reads like MMEngine's. Two departures, because MMEngine keeps code there, not data:
/// OneCycle stores `anneal_strategy`, `pct_start` and `three_phase` instead of the bound method
/// `anneal_func` (its `_schedule_phases` are written for information and rebuilt on load); a
/// MultiStep `milestones` Counter is a dict from the milestone (as text) to its multiplicity.
/// Loading is `__dict__.update`: the given keys replace the scheduler's, the others stay.
module Optim.Core.ScheduleState

open System
open Optim.Core.ResultFlow
open Optim.Core.Schedules

let private pf (x: float) = PyValue.Float x
let private pi (x: int64) = PyValue.Int x
let private pb (x: bool) = PyValue.Bool x
let private floats (xs: float list) = PyValue.List(xs |> List.map pf)

let private etaPair (eta: EtaMin) =
    match eta with
    | EtaMin m -> [ "eta_min", pf m; "eta_min_ratio", PyValue.None ]
    | EtaMinRatio r -> [ "eta_min", PyValue.None; "eta_min_ratio", pf r ]

let private forGroups (v: ForGroups) =
    match v with
    | Same x -> pf x
    | Each xs -> floats xs

/// The rule's own attributes, as MMEngine's constructor sets them.
let private ruleAttributes (s: Scheduler) : (string * PyValue) list =
    match s.Rule with
    | Step(stepSize, gamma) -> [ "step_size", pi stepSize; "gamma", pf gamma ]
    | MultiStep(milestones, gamma) ->
        let counter =
            milestones
            |> List.distinct
            |> List.map (fun m -> string m, pi (milestones |> List.filter ((=) m) |> List.length |> int64))
        [ "milestones", PyValue.Dict counter; "gamma", pf gamma ]
    | Constant factor -> [ "factor", pf factor; "total_iters", pi (totalIters s) ]
    | Exponential gamma -> [ "gamma", pf gamma ]
    | CosineAnnealing(tMax, eta) -> [ "T_max", pi tMax ] @ etaPair eta
    | Linear(a, b) -> [ "start_factor", pf a; "end_factor", pf b; "total_iters", pi (totalIters s) ]
    | Poly(etaMin, power) -> [ "eta_min", pf etaMin; "power", pf power; "total_iters", pi (totalIters s) ]
    | OneCycle r ->
        let phases =
            oneCyclePhases s.ParamName r
            |> List.map (fun (e, a, b) ->
                PyValue.Dict [ "end_step", pf e; "start_" + s.ParamName, PyValue.Str a; "end_" + s.ParamName, PyValue.Str b ])
        [ "eta_max", forGroups r.EtaMax; "div_factor", pf r.DivFactor; "final_div_factor", pf r.FinalDivFactor
          "total_steps", pi r.TotalSteps
          "anneal_strategy", PyValue.Str(match r.Strategy with AnnealCos -> "cos" | AnnealLinear -> "linear")
          "_schedule_phases", PyValue.List phases; "pct_start", pf r.PctStart; "three_phase", pb r.ThreePhase ]
    | CosineRestart(periods, weights, eta) ->
        let cumulative = periods |> List.scan (+) 0L |> List.tail
        [ "periods", PyValue.List(periods |> List.map pi) ] @ etaPair eta
        @ [ "restart_weights", floats weights; "cumulative_periods", PyValue.List(cumulative |> List.map pi) ]
    | ReduceOnPlateau _ -> []

/// `state_dict()`.
let toPy (st: State) : PyValue =
    let s = st.Scheduler
    let betas = if s.Family = Momentum then [ "use_betas", pb st.UseBetas ] else []
    match s.Rule, st.Plateau with
    | ReduceOnPlateau r, Some ps ->
        PyValue.Dict(
            betas
            @ [ "param_name", PyValue.Str s.ParamName; "begin", pi s.Begin; "end", pi s.End; "by_epoch", pb s.ByEpoch
                "last_step", pi st.LastStep; "_global_step", pi st.GlobalStep; "verbose", pb s.Verbose
                "factor", pf r.Factor; "min_values", floats ps.MinValues; "patience", pi r.Patience; "cooldown", pi r.Cooldown
                "cooldown_counter", pi ps.CooldownCounter
                "rule_worse", pi (match r.Mode with Less -> INF | Greater -> -INF)
                "best", (match ps.Best with IntBest n -> pi n | FloatBest x -> pf x); "num_bad_epochs", pi ps.NumBadEpochs; "eps", pf r.Eps; "monitor", PyValue.Str r.Monitor
                "rule", PyValue.Str(match r.Mode with Less -> "less" | Greater -> "greater")
                "threshold", pf r.Threshold
                "threshold_rule", PyValue.Str(match r.ThresholdRule with Rel -> "rel" | Abs -> "abs")
                "_last_value", floats st.LastValue ]
        )
    | _ ->
        PyValue.Dict(
            betas
            @ ruleAttributes s
            @ [ "param_name", PyValue.Str s.ParamName; "begin", pi s.Begin; "end", pi s.End; "by_epoch", pb s.ByEpoch
                "base_values", floats st.BaseValues; "last_step", pi st.LastStep; "_global_step", pi st.GlobalStep
                "verbose", pb s.Verbose; "_last_value", floats st.LastValue ]
        )

// ---------------------------------------------------------------------------------------------
// Reading back

let private bad key (what: string) (v: PyValue) =
    Error(ScheduleError.typeError (sprintf "state_dict['%s'] must be %s, got %s" key what (PyFormat.repr v)))

let private num (d: (string * PyValue) list) key =
    match PyValue.tryFind key d with
    | Some(PyValue.Float x) -> Ok x
    | Some(PyValue.Int n) -> Ok(float n)
    | Some v -> bad key "a number" v
    | None -> Error(ScheduleError.keyError key)

let private int64Of (d: (string * PyValue) list) key =
    match PyValue.tryFind key d with
    | Some(PyValue.Int n) -> Ok n
    | Some(PyValue.Float x) when Math.Floor x = x -> Ok(int64 x)
    | Some v -> bad key "an integer" v
    | None -> Error(ScheduleError.keyError key)

let private boolOf (d: (string * PyValue) list) key =
    match PyValue.tryFind key d with
    | Some(PyValue.Bool b) -> Ok b
    | Some v -> bad key "a bool" v
    | None -> Error(ScheduleError.keyError key)

let private textOf (d: (string * PyValue) list) key =
    match PyValue.tryFind key d with
    | Some(PyValue.Str s) -> Ok s
    | Some v -> bad key "a string" v
    | None -> Error(ScheduleError.keyError key)

let private listOf (d: (string * PyValue) list) key (item: PyValue -> Result<'a, unit>) =
    match PyValue.tryFind key d with
    | Some(PyValue.List xs | PyValue.Tuple xs as v) ->
        let items = xs |> List.map item
        if items |> List.forall Result.isOk then Ok(items |> List.map (function Ok x -> x | Error _ -> failwith "unreachable"))
        else bad key "a list of numbers" v
    | Some v -> bad key "a list" v
    | None -> Error(ScheduleError.keyError key)

let private asFloat (v: PyValue) =
    match v with
    | PyValue.Float x -> Ok x
    | PyValue.Int n -> Ok(float n)
    | _ -> Error()

let private asInt (v: PyValue) =
    match v with
    | PyValue.Int n -> Ok n
    | PyValue.Float x when Math.Floor x = x -> Ok(int64 x)
    | _ -> Error()

let private etaOf d =
    match PyValue.tryFind "eta_min_ratio" d with
    | Some PyValue.None | None -> num d "eta_min" |> Result.map EtaMin
    | Some _ -> num d "eta_min_ratio" |> Result.map EtaMinRatio

let private forGroupsOf d key =
    match PyValue.tryFind key d with
    | Some(PyValue.List _ | PyValue.Tuple _) -> listOf d key asFloat |> Result.map Each
    | _ -> num d key |> Result.map Same

let private ruleOf (current: Rule) (d: (string * PyValue) list) : Result<Rule, ScheduleError> =
    result {
        match current with
        | Step _ ->
            let! a = int64Of d "step_size"
            let! g = num d "gamma"
            return Step(a, g)
        | MultiStep _ ->
            let! g = num d "gamma"
            let! ms =
                match PyValue.tryFind "milestones" d with
                | Some(PyValue.Dict counter) ->
                    let parsed =
                        counter
                        |> List.map (fun (k, c) ->
                            match Int64.TryParse k, c with
                            | (true, m), PyValue.Int n when n >= 0L -> Ok(List.replicate (int n) m)
                            | _ -> Error())
                    if parsed |> List.forall Result.isOk then Ok(parsed |> List.collect (function Ok x -> x | Error _ -> []))
                    else bad "milestones" "a Counter of milestones" (PyValue.Dict counter)
                | _ -> listOf d "milestones" asInt
            return MultiStep(ms, g)
        | Constant _ ->
            let! x = num d "factor"
            return Constant x
        | Exponential _ ->
            let! g = num d "gamma"
            return Exponential g
        | CosineAnnealing _ ->
            let! t = int64Of d "T_max"
            let! eta = etaOf d
            return CosineAnnealing(t, eta)
        | Linear _ ->
            let! a = num d "start_factor"
            let! b = num d "end_factor"
            return Linear(a, b)
        | Poly _ ->
            let! a = num d "eta_min"
            let! b = num d "power"
            return Poly(a, b)
        | OneCycle _ ->
            let! etaMax = forGroupsOf d "eta_max"
            let! div = num d "div_factor"
            let! finalDiv = num d "final_div_factor"
            let! total = int64Of d "total_steps"
            let! strategy =
                match textOf d "anneal_strategy" with
                | Ok "cos" -> Ok AnnealCos
                | Ok "linear" -> Ok AnnealLinear
                | Ok other -> bad "anneal_strategy" "'cos' or 'linear'" (PyValue.Str other)
                | Error e -> Error e
            let! pct = num d "pct_start"
            let! three = boolOf d "three_phase"
            return
                OneCycle
                    { EtaMax = etaMax; TotalSteps = total; PctStart = pct; Strategy = strategy
                      DivFactor = div; FinalDivFactor = finalDiv; ThreePhase = three }
        | CosineRestart _ ->
            let! periods = listOf d "periods" asInt
            let! weights = listOf d "restart_weights" asFloat
            let! eta = etaOf d
            return CosineRestart(periods, weights, eta)
        | ReduceOnPlateau _ ->
            let! factor = num d "factor"
            let! patience = int64Of d "patience"
            let! cooldown = int64Of d "cooldown"
            let! threshold = num d "threshold"
            let! eps = num d "eps"
            let! monitor = textOf d "monitor"
            let! mode =
                match textOf d "rule" with
                | Ok "less" -> Ok Less
                | Ok "greater" -> Ok Greater
                | Ok other -> bad "rule" "'less' or 'greater'" (PyValue.Str other)
                | Error e -> Error e
            let! thresholdRule =
                match textOf d "threshold_rule" with
                | Ok "rel" -> Ok Rel
                | Ok "abs" -> Ok Abs
                | Ok other -> bad "threshold_rule" "'rel' or 'abs'" (PyValue.Str other)
                | Error e -> Error e
            let! minValues = listOf d "min_values" asFloat
            return
                ReduceOnPlateau
                    { Monitor = monitor; Mode = mode; Factor = factor; Patience = patience; Threshold = threshold
                      ThresholdRule = thresholdRule; Cooldown = cooldown; MinValue = Each minValues; Eps = eps }
    }

/// `load_state_dict(sd)`: `__dict__.update(sd)` on the scheduler's state.
let load (current: State) (sd: PyValue) : Result<State, ScheduleError> =
    match sd, toPy current with
    | PyValue.Dict given, PyValue.Dict mine ->
        let d = given |> List.fold (fun acc (k, v) -> PyValue.set k v acc) mine
        let unknown = given |> List.map fst |> List.filter (fun k -> not (mine |> List.exists (fun (m, _) -> m = k)))
        result {
            do!
                match unknown with
                | [] -> Ok()
                | ks ->
                    Error(
                        ScheduleError.typeError (
                            sprintf "state_dict has %s, which a %s does not have: it was saved from another kind of scheduler"
                                (String.Join(", ", ks |> List.map (sprintf "'%s'"))) current.Scheduler.TypeName
                        )
                    )
            let! rule = ruleOf current.Scheduler.Rule d
            let! paramName = textOf d "param_name"
            do!
                if paramName = current.Scheduler.ParamName then Ok()
                else
                    Error(
                        ScheduleError.typeError (
                            sprintf "state_dict schedules '%s', this %s schedules '%s'" paramName current.Scheduler.TypeName current.Scheduler.ParamName
                        )
                    )
            let! b = int64Of d "begin"
            let! e = int64Of d "end"
            let! byEpoch = boolOf d "by_epoch"
            let! verbose = boolOf d "verbose"
            let! lastStep = int64Of d "last_step"
            let! globalStep = int64Of d "_global_step"
            let! lastValue = listOf d "_last_value" asFloat
            let! useBetas = if current.Scheduler.Family = Momentum then boolOf d "use_betas" else Ok false
            let s = { current.Scheduler with Rule = rule; ParamName = paramName; Begin = b; End = e; ByEpoch = byEpoch; Verbose = verbose }
            match rule, current.Plateau with
            | ReduceOnPlateau _, Some _ ->
                let! best =
                    match PyValue.tryFind "best" d with
                    | Some(PyValue.Int n) -> Ok(IntBest n)
                    | _ -> num d "best" |> Result.map FloatBest
                let! bad = int64Of d "num_bad_epochs"
                let! cooldownCounter = int64Of d "cooldown_counter"
                let! minValues = listOf d "min_values" asFloat
                return
                    { current with
                        Scheduler = s; UseBetas = useBetas; LastStep = lastStep; GlobalStep = globalStep; LastValue = lastValue
                        Plateau = Some { Best = best; NumBadEpochs = bad; CooldownCounter = cooldownCounter; MinValues = minValues } }
            | _ ->
                let! baseValues = listOf d "base_values" asFloat
                return
                    { current with
                        Scheduler = s; UseBetas = useBetas; BaseValues = baseValues; LastStep = lastStep
                        GlobalStep = globalStep; LastValue = lastValue }
        }
    | other, _ -> Error(ScheduleError.typeError (sprintf "a scheduler state_dict must be a dict, got %s" (PyValue.kind other)))
