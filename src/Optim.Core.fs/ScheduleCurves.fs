/// A configured schedule's values over N iterations, as data (for plotting and for checking a config
/// before training). Stepping follows MMEngine's ParamSchedulerHook: iteration-based schedulers step
/// after every iteration, epoch-based ones after every `epochLength` iterations, all in list order.
module Optim.Core.ScheduleCurves

open Optim.Core.Schedules

/// The values of every scheduled key, per group, in effect during one iteration.
type Point =
    { Iteration: int
      /// (key, one value per group) for each scheduled key, in the order the schedulers name them.
      Values: (string * float list) list }

let private keysOf (schedulers: Scheduler list) = schedulers |> List.map (fun s -> s.ParamName) |> List.distinct

let private snapshot (keys: string list) (i: int) (groups: Group list) =
    let values =
        keys
        |> List.map (fun k ->
            k, groups |> List.map (fun g -> match Group.number k g with Ok v -> v | Error _ -> nan))
    { Iteration = i; Values = values }

/// Attaches the schedulers in order to `groups`, then runs `iterations` iterations. Returns
/// `iterations + 1` points: the values during iterations 0..N-1, then after the N-th step.
/// ReduceOnPlateau gets no metrics here (its value stays where it is).
let simulate (schedulers: Scheduler list) (target: Target) (groups: Group list) (iterations: int) (epochLength: int) : Result<Point list, ScheduleError> =
    if epochLength <= 0 then Error(ScheduleError.valueError (sprintf "epoch length must be positive, got %d" epochLength))
    else
        let attached =
            schedulers
            |> List.fold
                (fun acc s ->
                    acc
                    |> Result.bind (fun (states, groups) ->
                        attach s target groups |> Result.map (fun o -> states @ [ o.State ], o.Groups)))
                (Ok([], groups))
        let keys = keysOf schedulers
        let stepAll (pick: State -> bool) (states: State list, groups: Group list) =
            states
            |> List.fold
                (fun acc st ->
                    acc
                    |> Result.bind (fun (done_, groups) ->
                        if pick st then step st None groups |> Result.map (fun o -> done_ @ [ o.State ], o.Groups)
                        else Ok(done_ @ [ st ], groups)))
                (Ok([], groups))
        let rec run i (states, groups) points =
            let points = snapshot keys i groups :: points
            if i = iterations then Ok(List.rev points)
            else
                let stepped =
                    stepAll (fun st -> not st.Scheduler.ByEpoch) (states, groups)
                    |> Result.bind (fun sg ->
                        if (i + 1) % epochLength = 0 then stepAll (fun st -> st.Scheduler.ByEpoch) sg else Ok sg)
                match stepped with
                | Error e -> Error e
                | Ok sg -> run (i + 1) sg points
        attached |> Result.bind (fun sg -> run 0 sg [])

/// One param group made of an optimizer config: PyTorch's defaults for its `type` (from
/// `Optimizers`), overridden by the config's values, then any other keys of the config. It also
/// serves as the optimizer's defaults: enough to draw a schedule without a model.
let groupOfOptimizerConfig (optimizer: PyValue) : Result<Target * Group list, ScheduleError> =
    match optimizer with
    | PyValue.Dict kvs ->
        let given = PyValue.remove "type" kvs
        let defaults =
            match PyValue.tryFind "type" kvs with
            | Some(PyValue.Str name) ->
                Optimizers.tryHyperParameters name
                |> Option.map (List.map (fun h -> h.Name, (PyValue.tryFind h.Name given |> Option.defaultValue h.Default)))
                |> Option.defaultValue []
            | _ -> []
        let g = defaults @ (given |> List.filter (fun (k, _) -> PyValue.tryFind k defaults |> Option.isNone))
        Ok({ Defaults = g; RealGroupCount = 1 }, [ g ])
    | other -> Error(ScheduleError.typeError (sprintf "optimizer config must be a dict, got %s" (PyValue.kind other)))

/// The curves of a `param_scheduler` setting (one dict or a list) for an optimizer config (a dict
/// with `type` and its hyper-parameters) over a run of `iterations` iterations of `epochLength`
/// each: `epoch_length` for `convert_to_iter_based`, and the Runner's default `end` (the run's
/// epochs or iterations). `iterations + 1` points, as `simulate`.
let ofConfig (optimizer: PyValue) (paramScheduler: PyValue) (iterations: int) (epochLength: int) : Result<Point list, ScheduleError> =
    if epochLength <= 0 then Error(ScheduleError.valueError (sprintf "epoch length must be positive, got %d" epochLength))
    else
        let ctx : ScheduleConfig.Context =
            { EpochLength = Some(PyValue.Int(int64 epochLength))
              MaxEpochs = Some(int64 ((iterations + epochLength - 1) / epochLength))
              MaxIters = Some(int64 iterations) }
        groupOfOptimizerConfig optimizer
        |> Result.bind (fun (target, groups) ->
            ScheduleConfig.parseList ctx "param_scheduler" paramScheduler
            |> Result.bind (fun schedulers -> simulate schedulers target groups iterations epochLength))
