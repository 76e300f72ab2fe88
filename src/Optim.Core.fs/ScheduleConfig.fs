/// MMEngine's `param_scheduler` configs (PyValue dicts with MMEngine's key names) parsed into
/// `Schedules.Scheduler` values, the way `PARAM_SCHEDULERS.build(cfg, default_args=...)` does it:
/// registry lookup, Python's keyword-argument binding (so an unknown key is
/// "`...__init__() got an unexpected keyword argument 'max_lr'`"), `convert_to_iter_based`
/// (`build_iter_from_epoch`), then each constructor's checks in MMEngine's order, with its messages.
///
/// Deliberately stricter than Python: values are type-checked here (a string `gamma` is a TypeError
/// now, not at the first step); integer settings (`step_size`, `milestones`, `T_max`, `periods`,
/// `begin`, `end`, `patience`, `cooldown`) must be integral numbers (fractional `begin`/`end` are
/// only meaningful, and accepted, with `convert_to_iter_based`). Checks that need the optimizer's
/// groups (OneCycle's `eta_max` list, ReduceOnPlateau's `min_value` list, `initial_*` on resume)
/// happen in `Schedules.attach`.
module Optim.Core.ScheduleConfig

open System
open Optim.Core.ResultFlow
open Optim.Core.Schedules

/// What `default_args` and the Runner add to a scheduler config.
type Context =
    { /// `epoch_length` (iterations per epoch, `len(train_dataloader)`), needed by `convert_to_iter_based`.
      EpochLength: PyValue option
      /// When set, `end` defaults as in MMEngine's Runner: `max_epochs` for epoch-based schedulers...
      MaxEpochs: int64 option
      /// ... and `max_iters` for iteration-based ones. Unset: `end` defaults to INF.
      MaxIters: int64 option }

/// No epoch length, no Runner defaults (`PARAM_SCHEDULERS.build(cfg, default_args=dict(optimizer=...))`).
let noContext = { EpochLength = None; MaxEpochs = None; MaxIters = None }

/// The rule a registered class implements (its `*ParamScheduler` base).
type Kind =
    | KStep
    | KMultiStep
    | KConstant
    | KExponential
    | KCosineAnnealing
    | KLinear
    | KPoly
    | KOneCycle
    | KCosineRestart
    | KReduceOnPlateau

let private kindName k =
    match k with
    | KStep -> "Step"
    | KMultiStep -> "MultiStep"
    | KConstant -> "Constant"
    | KExponential -> "Exponential"
    | KCosineAnnealing -> "CosineAnnealing"
    | KLinear -> "Linear"
    | KPoly -> "Poly"
    | KOneCycle -> "OneCycle"
    | KCosineRestart -> "CosineRestart"
    | KReduceOnPlateau -> "ReduceOnPlateau"

let private allKinds =
    [ KStep; KMultiStep; KConstant; KExponential; KCosineAnnealing; KLinear; KPoly; KOneCycle; KCosineRestart; KReduceOnPlateau ]

/// PARAM_SCHEDULERS: every registered type name, its rule and family.
let registry : (string * Kind * Family) list =
    [ for k in allKinds -> kindName k + "ParamScheduler", k, Generic ]
    @ [ for k in allKinds -> kindName k + "LR", k, LR ]
    @ [ for k in allKinds do
            if k <> KOneCycle then kindName k + "Momentum", k, Momentum ]

/// The registered type names.
let names = registry |> List.map (fun (n, _, _) -> n)

/// The rule and family of a registered type name.
let tryLookup (typeName: string) =
    registry |> List.tryFind (fun (n, _, _) -> n = typeName) |> Option.map (fun (_, k, f) -> k, f)

let private kindClass k = kindName k + "ParamScheduler"

let private f (x: float) = Some(PyValue.Float x)
let private i (x: int64) = Some(PyValue.Int x)
let private b (x: bool) = Some(PyValue.Bool x)
let private none = Some PyValue.None
let private required : PyValue option = Option.None
let private str (s: string) = Some(PyValue.Str s)

// `begin`, `end`, `last_step`, `by_epoch`, `verbose` with MMEngine's defaults.
let private tail = [ "begin", i 0L; "end", i INF; "last_step", i -1L; "by_epoch", b true; "verbose", b false ]

/// Each constructor's parameters after `optimizer`, in order, with defaults (None = required).
let signature (k: Kind) : (string * PyValue option) list =
    let p = "param_name", required
    match k with
    | KStep -> [ p; "step_size", required; "gamma", f 0.1 ] @ tail
    | KMultiStep ->
        [ p; "milestones", required; "gamma", f 0.1; "last_step", i -1L; "begin", i 0L; "end", i INF; "by_epoch", b true; "verbose", b false ]
    | KConstant -> [ p; "factor", f (1.0 / 3.0) ] @ tail
    | KExponential -> [ p; "gamma", required ] @ tail
    | KCosineAnnealing -> [ p; "T_max", none; "eta_min", none ] @ tail @ [ "eta_min_ratio", none ]
    | KLinear -> [ p; "start_factor", f (1.0 / 3.0); "end_factor", f 1.0 ] @ tail
    | KPoly -> [ p; "eta_min", i 0L; "power", f 1.0 ] @ tail
    | KOneCycle ->
        [ p; "eta_max", i 0L; "total_steps", none; "pct_start", f 0.3; "anneal_strategy", str "cos"
          "div_factor", f 25.0; "final_div_factor", f 1e4; "three_phase", b false ] @ tail
    | KCosineRestart ->
        [ p; "periods", required; "restart_weights", Some(PyValue.Tuple [ PyValue.Int 1L ]); "eta_min", none; "eta_min_ratio", none ] @ tail
    | KReduceOnPlateau ->
        [ p; "monitor", str "loss"; "rule", str "less"; "factor", f 0.1; "patience", i 10L; "threshold", f 1e-4
          "threshold_rule", str "rel"; "cooldown", i 0L; "min_value", f 0.0; "eps", f 1e-8 ] @ tail

type private Args = (string * PyValue) list

// ---------------------------------------------------------------------------------------------
// Python's argument binding

let private quoteList (names: string list) =
    let q = names |> List.map (fun n -> "'" + n + "'")
    match q with
    | [] -> ""
    | [ a ] -> a
    | [ a; b ] -> a + " and " + b
    | _ -> String.Join(", ", List.take (q.Length - 1) q) + ", and " + List.last q

/// Binds keyword arguments to a constructor as CPython does: unknown keyword, then duplicate, then missing.
let private bind (func: string) (sigParams: (string * PyValue option) list) (positional: (string * PyValue) list) (kwargs: Args) =
    let known = sigParams |> List.map fst
    let rec check (kw: Args) =
        match kw with
        | [] -> Ok()
        | (k, _) :: _ when k <> "optimizer" && not (List.contains k known) ->
            Error({ ScheduleError.typeError (sprintf "%s() got an unexpected keyword argument '%s'" func k) with Path = k })
        | (k, _) :: _ when positional |> List.exists (fun (p, _) -> p = k) ->
            Error({ ScheduleError.typeError (sprintf "%s() got multiple values for argument '%s'" func k) with Path = k })
        | _ :: rest -> check rest
    match check kwargs with
    | Error e -> Error e
    | Ok() ->
        let given = positional @ kwargs
        let missing = sigParams |> List.filter (fun (n, d) -> d.IsNone && not (given |> List.exists (fun (k, _) -> k = n))) |> List.map fst
        match missing with
        | [] ->
            Ok(sigParams |> List.map (fun (n, d) -> n, (match PyValue.tryFind n given with Some v -> v | Option.None -> d.Value)))
        | _ ->
            let plural = if missing.Length = 1 then "argument" else "arguments"
            Error(ScheduleError.typeError (sprintf "%s() missing %d required positional %s: %s" func missing.Length plural (quoteList missing)))

// ---------------------------------------------------------------------------------------------
// Typed reads (this port's checks; MMEngine would fail later, or not at all)

let private atKey key (e: ScheduleError) = { e with Path = key }

let private get (key: string) (args: Args) = (PyValue.tryFind key args).Value

let private integer key (v: PyValue) : Result<int64, ScheduleError> =
    match v with
    | PyValue.Int n -> Ok n
    | PyValue.Float x when Math.Floor x = x && abs x < 9.2e18 -> Ok(int64 x)
    | other -> Error(atKey key (ScheduleError.typeError (sprintf "'%s' must be an integer, got %s" key (PyFormat.repr other))))

let private number key (v: PyValue) : Result<float, ScheduleError> =
    match v with
    | PyValue.Int n -> Ok(float n)
    | PyValue.Float x -> Ok x
    | other -> Error(atKey key (ScheduleError.typeError (sprintf "'%s' must be a number, got %s" key (PyFormat.repr other))))

let private optNumber key (v: PyValue) =
    match v with
    | PyValue.None -> Ok Option.None
    | other -> number key other |> Result.map Some

let private boolean key (v: PyValue) : Result<bool, ScheduleError> =
    match v with
    | PyValue.Bool x -> Ok x
    | other -> Error(atKey key (ScheduleError.typeError (sprintf "'%s' must be true or false, got %s" key (PyFormat.repr other))))

let private text key (v: PyValue) : Result<string, ScheduleError> =
    match v with
    | PyValue.Str s -> Ok s
    | other -> Error(atKey key (ScheduleError.typeError (sprintf "'%s' must be a string, got %s" key (PyFormat.repr other))))

// Python iterates lists and tuples; anything else here is "'int' object is not iterable".
let private sequenceOf key (item: string -> PyValue -> Result<'a, ScheduleError>) (v: PyValue) =
    match v with
    | PyValue.List xs | PyValue.Tuple xs -> allOk (item key) xs
    | PyValue.Str _ | PyValue.Dict _ ->
        Error(atKey key (ScheduleError.typeError (sprintf "'%s' must be a list, got %s" key (PyFormat.repr v))))
    | other -> Error(atKey key (ScheduleError.typeError (sprintf "'%s' object is not iterable" (PyNum.typeName other))))

let private forGroups key (v: PyValue) =
    match v with
    | PyValue.List _ | PyValue.Tuple _ -> sequenceOf key number v |> Result.map Each
    | other -> number key other |> Result.map Same

let private fail e : Result<unit, ScheduleError> = Error e
let private check cond e : Result<unit, ScheduleError> = if cond then Error e else Ok()

// ---------------------------------------------------------------------------------------------
// The constructors' own checks, in MMEngine's order

let private baseChecks (args: Args) (beginV: int64) (endV: int64) =
    result {
        do! check (endV <= beginV) (ScheduleError.valueError (sprintf "end should be larger than begin, but got begin=%d, end=%d" beginV endV))
        match get "last_step" args with
        | PyValue.Int n when n >= -1L -> return n
        | _ -> return! Error(atKey "last_step" (ScheduleError.assertion ""))
    }

let private ruleOf (k: Kind) (typeName: string) (paramName: string) (args: Args) (beginV: int64) (endV: int64) : Result<Rule, ScheduleError> =
    result {
        match k with
        | KStep ->
            let! stepSize = integer "step_size" (get "step_size" args)
            let! gamma = number "gamma" (get "gamma" args)
            return Step(stepSize, gamma)
        | KMultiStep ->
            let! milestones = sequenceOf "milestones" integer (get "milestones" args)
            let! gamma = number "gamma" (get "gamma" args)
            return MultiStep(milestones, gamma)
        | KConstant ->
            let! factor = number "factor" (get "factor" args)
            do! check (factor > 1.0 || factor < 0.0) (atKey "factor" (ScheduleError.valueError "Constant multiplicative factor should between 0 and 1."))
            return Constant factor
        | KExponential ->
            let! gamma = number "gamma" (get "gamma" args)
            return Exponential gamma
        | KCosineAnnealing ->
            let! etaMin = optNumber "eta_min" (get "eta_min" args)
            let! ratio = optNumber "eta_min_ratio" (get "eta_min_ratio" args)
            let etaMin = if etaMin.IsNone && ratio.IsNone then Some 0.0 else etaMin
            do! check (etaMin.IsSome = ratio.IsSome) (ScheduleError.assertion "Either `eta_min` or `eta_min_ratio should be specified")
            let! tMax =
                match get "T_max" args with
                | PyValue.None -> Ok 0L
                | v -> integer "T_max" v
            let tMax = if tMax = 0L then endV - beginV else tMax // `T_max or (end - begin)`
            return CosineAnnealing(tMax, (match etaMin with Some m -> EtaMin m | Option.None -> EtaMinRatio ratio.Value))
        | KLinear ->
            let! s = number "start_factor" (get "start_factor" args)
            let! e = number "end_factor" (get "end_factor" args)
            do! check (s > 1.0 || s < 0.0) (atKey "start_factor" (ScheduleError.valueError "Starting multiplicative factor should between 0 and 1."))
            do! check (e > 1.0 || e < 0.0) (atKey "end_factor" (ScheduleError.valueError "Ending multiplicative factor should between 0 and 1."))
            return Linear(s, e)
        | KPoly ->
            let! etaMin = number "eta_min" (get "eta_min" args)
            let! power = number "power" (get "power" args)
            return Poly(etaMin, power)
        | KOneCycle ->
            do! check (paramName <> "lr")
                    (ScheduleError.assertion (sprintf "OneCycle only works for learning rate updating, but got patam_name as %s" paramName))
            let! etaMax = forGroups "eta_max" (get "eta_max" args)
            let! totalSteps =
                match get "total_steps" args with
                | PyValue.None -> Ok(endV - beginV)
                | PyValue.Int n when n > 0L -> Ok n
                | v -> Error(atKey "total_steps" (ScheduleError.valueError (sprintf "Expected positive integer total_steps, but got %s" (PyFormat.str v))))
            let! pctStart =
                match get "pct_start" args with
                | PyValue.Float x when x >= 0.0 && x <= 1.0 -> Ok x
                | v -> Error(atKey "pct_start" (ScheduleError.valueError (sprintf "Expected float between 0 and 1 pct_start, but got %s" (PyFormat.str v))))
            let! strategy =
                match get "anneal_strategy" args with
                | PyValue.Str "cos" -> Ok AnnealCos
                | PyValue.Str "linear" -> Ok AnnealLinear
                | v ->
                    Error(atKey "anneal_strategy" (ScheduleError.valueError (sprintf "anneal_strategy must by one of \"cos\" or \"linear\", instead got %s" (PyFormat.str v))))
            let! divFactor = number "div_factor" (get "div_factor" args)
            let! finalDiv = number "final_div_factor" (get "final_div_factor" args)
            let! threePhase = boolean "three_phase" (get "three_phase" args)
            return
                OneCycle
                    { EtaMax = etaMax; TotalSteps = totalSteps; PctStart = pctStart; Strategy = strategy
                      DivFactor = divFactor; FinalDivFactor = finalDiv; ThreePhase = threePhase }
        | KCosineRestart ->
            let! etaMin = optNumber "eta_min" (get "eta_min" args)
            let! ratio = optNumber "eta_min_ratio" (get "eta_min_ratio" args)
            do! check (etaMin.IsSome = ratio.IsSome) (ScheduleError.assertion "exactly one of `eta_min` and `eta_min_ratio` must be specified")
            let! periods = sequenceOf "periods" integer (get "periods" args)
            let! weights = sequenceOf "restart_weights" number (get "restart_weights" args)
            do! check (periods.Length <> weights.Length) (ScheduleError.assertion "periods and restart_weights should have the same length.")
            return CosineRestart(periods, weights, (match etaMin with Some m -> EtaMin m | Option.None -> EtaMinRatio ratio.Value))
        | KReduceOnPlateau ->
            let! factor = number "factor" (get "factor" args)
            do! check (factor >= 1.0) (atKey "factor" (ScheduleError.valueError "Factor should be < 1.0."))
            let! minValue = forGroups "min_value" (get "min_value" args)
            let! patience = integer "patience" (get "patience" args)
            let! cooldown = integer "cooldown" (get "cooldown" args)
            let! eps = number "eps" (get "eps" args)
            let! monitor = text "monitor" (get "monitor" args)
            let! threshold = number "threshold" (get "threshold" args)
            do! check (threshold < 0.0)
                    (atKey "threshold" (ScheduleError.valueError (sprintf "threshold %s should be >= 0." (PyFormat.str (get "threshold" args)))))
            let! mode =
                match get "rule" args with
                | PyValue.Str "less" -> Ok Less
                | PyValue.Str "greater" -> Ok Greater
                | v -> Error(atKey "rule" (ScheduleError.valueError (sprintf "mode %s is unknown!" (PyFormat.str v))))
            let! thresholdRule =
                match get "threshold_rule" args with
                | PyValue.Str "rel" -> Ok Rel
                | PyValue.Str "abs" -> Ok Abs
                | v -> Error(atKey "threshold_rule" (ScheduleError.valueError (sprintf "threshold mode %s is unknown!" (PyFormat.str v))))
            return
                ReduceOnPlateau
                    { Monitor = monitor; Mode = mode; Factor = factor; Patience = patience; Threshold = threshold
                      ThresholdRule = thresholdRule; Cooldown = cooldown; MinValue = minValue; Eps = eps }
    }

/// Runs one constructor on bound arguments: its own checks, then the base class's.
let private construct (typeName: string) (k: Kind) (family: Family) (args: Args) : Result<Scheduler, ScheduleError> =
    result {
        let! paramName = text "param_name" (get "param_name" args)
        let! beginV = integer "begin" (get "begin" args)
        let! endV = integer "end" (get "end" args)
        let! byEpoch = boolean "by_epoch" (get "by_epoch" args)
        let! verbose = boolean "verbose" (get "verbose" args)
        let! rule, lastStep =
            if k = KReduceOnPlateau then
                // Its own constructor: base checks first, then its settings.
                result {
                    let! lastStepCheck =
                        result {
                            do! check (endV <= beginV) (ScheduleError.valueError (sprintf "end should be larger than begin, but got begin=%d, end=%d" beginV endV))
                            do! check (not byEpoch) (atKey "by_epoch" (ScheduleError.assertion (sprintf "Now %s only support by_epoch=True" typeName)))
                            match get "last_step" args with
                            | PyValue.Int n when n >= -1L -> return n
                            | _ -> return! Error(atKey "last_step" (ScheduleError.assertion ""))
                        }
                    let! rule = ruleOf k typeName paramName args beginV endV
                    return rule, lastStepCheck
                }
            else
                result {
                    let! rule = ruleOf k typeName paramName args beginV endV
                    let! lastStep = baseChecks args beginV endV
                    return rule, lastStep
                }
        return
            { TypeName = typeName; Family = family; ParamName = paramName; Rule = rule
              Begin = beginV; End = endV; LastStep = lastStep; ByEpoch = byEpoch; Verbose = verbose }
    }

// `int(x * epoch_length)` for begin/end.
let private scaleBound key (v: PyValue) (epochLength: int64) : Result<PyValue, ScheduleError> =
    match v with
    | PyValue.Int n -> Ok(PyValue.Int(n * epochLength))
    | PyValue.Float x when Double.IsFinite x -> Ok(PyValue.Int(int64 (Math.Truncate(x * float epochLength))))
    | other -> Error(atKey key (ScheduleError.typeError (sprintf "'%s' must be a number, got %s" key (PyFormat.repr other))))

let private scaleInt key (v: PyValue) (epochLength: int64) =
    integer key v |> Result.map (fun n -> PyValue.Int(n * epochLength))

/// `build_iter_from_epoch`: the epoch-based settings in iterations.
let private buildIterFromEpoch (typeName: string) (k: Kind) (kwargs: Args) : Result<Args, ScheduleError> =
    let func = kindClass k + ".build_iter_from_epoch"
    let requiredKw =
        match k with
        | KStep -> [ "step_size" ]
        | KMultiStep -> [ "milestones" ]
        | KCosineRestart -> [ "periods" ]
        | _ -> []
    result {
        do! check (k = KReduceOnPlateau)
                (ScheduleError.make "AttributeError" (sprintf "type object '%s' has no attribute 'build_iter_from_epoch'" typeName))
        let missing = requiredKw |> List.filter (fun n -> PyValue.tryFind n kwargs |> Option.isNone)
        do! check (not missing.IsEmpty)
                (ScheduleError.typeError (sprintf "%s() missing %d required keyword-only argument: %s" func missing.Length (quoteList missing)))
        let byEpoch = PyValue.tryFind "by_epoch" kwargs |> Option.defaultValue (PyValue.Bool true)
        do! check (byEpoch = PyValue.Bool false || byEpoch = PyValue.Int 0L || byEpoch = PyValue.None)
                (ScheduleError.assertion "Only epoch-based kwargs whose `by_epoch=True` can be converted to iter-based.")
        let epochLengthV = PyValue.tryFind "epoch_length" kwargs |> Option.defaultValue PyValue.None
        let! epochLength =
            match epochLengthV with
            | PyValue.Int n when n > 0L -> Ok n
            | v -> Error(ScheduleError.assertion (sprintf "`epoch_length` must be a positive integer, but got %s." (PyFormat.str v)))
        let rest = kwargs |> List.filter (fun (key, _) -> key <> "epoch_length")
        let! scaled =
            rest
            |> allOk (fun (key, v) ->
                match key, k with
                | "begin", _ -> scaleBound key v epochLength |> Result.map (fun v -> key, v)
                | "end", _ when v = PyValue.Int INF || v = PyValue.Float(float INF) -> Ok(key, v)
                | "end", _ -> scaleBound key v epochLength |> Result.map (fun v -> key, v)
                | "step_size", KStep -> scaleInt key v epochLength |> Result.map (fun v -> key, v)
                | ("milestones", KMultiStep) | ("periods", KCosineRestart) ->
                    sequenceOf key integer v |> Result.map (fun xs -> key, PyValue.List [ for x in xs -> PyValue.Int(x * epochLength) ])
                | ("T_max", KCosineAnnealing) | ("total_steps", KOneCycle) when v <> PyValue.None ->
                    scaleInt key v epochLength |> Result.map (fun v -> key, v)
                | "by_epoch", _ -> Ok(key, PyValue.Bool false)
                | _ -> Ok(key, v))
        let scaled = if PyValue.tryFind "by_epoch" scaled |> Option.isSome then scaled else scaled @ [ "by_epoch", PyValue.Bool false ]
        return scaled
    }

/// MMEngine's KeyError for a type name the registry lacks.
let unknownType (typeName: string) =
    ScheduleError.keyError (
        sprintf
            "%s is not in the mmengine::parameter scheduler registry. Please check whether the value of `%s` is correct or it was registered as expected. More details can be found at https://mmengine.readthedocs.io/en/latest/advanced_tutorials/config.html#import-the-custom-module"
            typeName typeName
        + Suggest.didYouMean typeName names)

let private truthy (v: PyValue) =
    match v with
    | PyValue.None | PyValue.Bool false | PyValue.Int 0L -> false
    | PyValue.Float x when x = 0.0 -> false
    | PyValue.Str "" | PyValue.List [] | PyValue.Tuple [] | PyValue.Dict [] -> false
    | _ -> true

/// Parses one scheduler config (a dict with `type`), as `PARAM_SCHEDULERS.build` would; errors carry
/// `path` (and the key, for a bad key).
let parse (ctx: Context) (path: string) (cfg: PyValue) : Result<Scheduler, ScheduleError> =
    let located (r: Result<'a, ScheduleError>) =
        r |> Result.mapError (fun e -> { e with Path = (if e.Path = "" then path else path + "." + e.Path) })
    match cfg with
    | PyValue.Dict kvs ->
        located (result {
            // The Runner's default `end`.
            let kvs =
                match PyValue.tryFind "end" kvs, ctx.MaxEpochs, ctx.MaxIters with
                | Some _, _, _ -> kvs
                | Option.None, maxEpochs, maxIters ->
                    let byEpoch = PyValue.tryFind "by_epoch" kvs |> Option.map truthy |> Option.defaultValue true
                    match (if byEpoch then maxEpochs else maxIters) with
                    | Some e -> kvs @ [ "end", PyValue.Int e ]
                    | Option.None -> kvs
            // default_args: epoch_length (the optimizer is implicit).
            let kvs =
                match ctx.EpochLength with
                | Some l when PyValue.tryFind "epoch_length" kvs |> Option.isNone -> kvs @ [ "epoch_length", l ]
                | _ -> kvs
            let kvs = PyValue.remove "_scope_" kvs
            let convert = PyValue.tryFind "convert_to_iter_based" kvs |> Option.map truthy |> Option.defaultValue false
            let kvs = PyValue.remove "convert_to_iter_based" kvs
            let! typeName =
                match PyValue.tryFind "type" kvs with
                | Some(PyValue.Str s) -> Ok s
                | Some other -> Error(atKey "type" (ScheduleError.typeError (sprintf "type must be a str or valid type, but got %s" (PyFormat.repr other))))
                | Option.None -> Error(ScheduleError.keyError "type")
            let kwargs = PyValue.remove "type" kvs
            do! check (convert
                       && (PyValue.tryFind "epoch_length" kwargs |> Option.isNone
                           || not (PyValue.tryFind "by_epoch" kwargs |> Option.map truthy |> Option.defaultValue true)))
                    (ScheduleError.assertion "Only epoch-based parameter scheduler can be converted to iter-based, and `epoch_length` should be set")
            let! kind, family =
                match tryLookup typeName with
                | Some kf -> Ok kf
                | Option.None -> Error(atKey "type" (unknownType typeName))
            do! (match PyValue.tryFind "optimizer" kwargs with
                 | Some v -> fail (atKey "optimizer" (ScheduleError.typeError (sprintf "``optimizer`` should be an Optimizer,but got %s" (PyNum.typeName v))))
                 | Option.None -> Ok())
            let! kwargs = if convert then buildIterFromEpoch typeName kind kwargs else Ok(PyValue.remove "epoch_length" kwargs)
            let positional =
                match family with
                | LR -> [ "param_name", PyValue.Str "lr" ]
                | Momentum -> [ "param_name", PyValue.Str "momentum" ]
                | Generic -> []
            let! args = bind (kindClass kind + ".__init__") (signature kind) positional kwargs
            return! construct typeName kind family args
        })
    | other -> Error { ScheduleError.typeError (sprintf "cfg should be a dict, ConfigDict or Config, but got %s" (PyNum.typeName other)) with Path = path }

/// A `param_scheduler` entry: one dict or a list of dicts (built in order, composing in that order).
/// Settings MMEngine accepts when a scheduler is constructed but that fail when it is stepped (beyond
/// MMEngine, which raises ZeroDivisionError there): `step_size` 0 (modulo by zero), `start_factor` 0
/// (division by zero at the second step), a negative or NaN `power` (0 ** power at the last step).
/// Rejected on the config path (`parseForConfig`); a scheduler constructed directly keeps MMEngine's behaviour.
let steppable (path: string) (s: Scheduler) : Result<Scheduler, ScheduleError> =
    let at key (e: ScheduleError) = { e with Path = (if path = "" then key else path + "." + key) }
    match s.Rule with
    | Step(n, _) when n < 1L ->
        Error(at "step_size" (ScheduleError.valueError (sprintf "step_size must be a positive integer (it divides the step count), got %d" n)))
    | Linear(start, _) when start = 0.0 ->
        Error(at "start_factor" (ScheduleError.valueError "Starting multiplicative factor must be above 0 (0 divides by zero at the first step)."))
    | Poly(_, p) when p < 0.0 || System.Double.IsNaN p ->
        Error(at "power" (ScheduleError.valueError (sprintf "power must be at least 0 (a negative power divides by zero at the last step), got %s" (PyFormat.float p))))
    | _ -> Ok s

/// `parse`, plus `steppable`: what a config entry (param_scheduler in a config) must pass.
let parseForConfig (ctx: Context) (path: string) (cfg: PyValue) : Result<Scheduler, ScheduleError> =
    parse ctx path cfg |> Result.bind (steppable path)

let parseList (ctx: Context) (path: string) (cfg: PyValue) : Result<Scheduler list, ScheduleError> =
    match cfg with
    | PyValue.List xs | PyValue.Tuple xs -> xs |> List.mapi (fun n x -> parseForConfig ctx (sprintf "%s[%d]" path n) x) |> allOk id
    | PyValue.Dict _ -> parseForConfig ctx path cfg |> Result.map List.singleton
    | other -> Error { ScheduleError.typeError (sprintf "param_scheduler should be a dict or a list of dicts, got %s" (PyNum.typeName other)) with Path = path }

/// A whole `param_scheduler` setting: a list (or one dict) for an OptimWrapper, or — a dict without
/// `type` — one list per member of an OptimWrapperDict, by name.
type Config =
    | ForWrapper of Scheduler list
    | PerWrapper of (string * Scheduler list) list

let parseConfig (ctx: Context) (cfg: PyValue) : Result<Config, ScheduleError> =
    match cfg with
    | PyValue.Dict kvs when PyValue.tryFind "type" kvs |> Option.isNone ->
        kvs
        |> allOk (fun (name, v) -> parseList ctx ("param_scheduler." + name) v |> Result.map (fun s -> name, s))
        |> Result.map PerWrapper
    | _ -> parseList ctx "param_scheduler" cfg |> Result.map ForWrapper

/// Every entry's first error (MMEngine stops at the first; a config checker wants them all).
let validate (ctx: Context) (cfg: PyValue) : ScheduleError list =
    let entries path v =
        match v with
        | PyValue.List xs | PyValue.Tuple xs -> xs |> List.mapi (fun n x -> parseForConfig ctx (sprintf "%s[%d]" path n) x)
        | PyValue.Dict _ -> [ parseForConfig ctx path v ]
        | other ->
            [ Error { ScheduleError.typeError (sprintf "param_scheduler should be a dict or a list of dicts, got %s" (PyNum.typeName other)) with Path = path } ]
    let results =
        match cfg with
        | PyValue.Dict kvs when PyValue.tryFind "type" kvs |> Option.isNone ->
            kvs |> List.collect (fun (name, v) -> entries ("param_scheduler." + name) v)
        | _ -> entries "param_scheduler" cfg
    results |> List.choose (function Error e -> Some e | Ok _ -> None)
