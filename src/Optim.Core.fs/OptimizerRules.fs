/// PyTorch's range checks on optimizer hyper-parameters (the `ValueError`s each optimizer's
/// `__init__` raises), plus what TorchSharp needs and PyTorch does not check: every number finite and
/// representable in the parameters' dtype (TorchSharp fills float32 state tensors with some of them;
/// a value beyond float32 fails natively, after part of the model was already updated, or aborts the
/// process from a finalizer). Checked before TorchSharp sees any value.
module Optim.Core.OptimizerRules

open Optim.Core

/// The largest magnitude the parameters' dtype holds: float32's unless a parameter is float64.
let float32Limit = float System.Single.MaxValue
let float64Limit = System.Double.MaxValue

let private shown (x: float) = PyFormat.float x

/// Whether `x` is usable: finite and within ±limit.
let private numberProblem (limit: float) (dtypeName: string) (x: float) : string option =
    if System.Double.IsNaN x || System.Double.IsInfinity x then
        Some(sprintf "must be a finite number, got %s" (shown x))
    elif abs x > limit then
        Some(sprintf "%s is beyond the %s range of the parameters (largest magnitude %s)" (shown x) dtypeName (shown limit))
    else
        None

let private dtypeOf (limit: float) = if limit > float32Limit then "float64" else "float32"

/// The numbers inside a value (a number, or the members of a pair), with their index in the pair.
let private numbersOf (v: PyValue) : (int option * float) list =
    match v with
    | PyValue.Int i -> [ None, float i ]
    | PyValue.Float f -> [ None, f ]
    | PyValue.List xs
    | PyValue.Tuple xs ->
        xs |> List.mapi (fun i x -> match PyValue.tryNumber x with Some d -> Some(Some i, d) | None -> None) |> List.choose id
    | _ -> []

/// PyTorch's checks for one optimizer over its effective hyper-parameters (`get` gives the value a
/// key will have: given, else PyTorch's default). Each problem is the key it belongs to and the
/// ValueError PyTorch raises (with PyTorch's wording).
let private rangeRules (name: string) (get: string -> PyValue) : (string * string) list =
    let num key = PyValue.tryNumber (get key)
    let pair key =
        match get key with
        | PyValue.List [ a; b ] | PyValue.Tuple [ a; b ] ->
            match PyValue.tryNumber a, PyValue.tryNumber b with
            | Some x, Some y -> Some(x, y)
            | _ -> None
        | _ -> None
    let atLeastZero key (message: float -> string) =
        match num key with
        | Some x when not (0.0 <= x) -> [ key, message x ]
        | _ -> []
    let lr = atLeastZero "lr" (fun x -> sprintf "Invalid learning rate: %s" (shown x))
    let eps = atLeastZero "eps" (fun x -> sprintf "Invalid epsilon value: %s" (shown x))
    let wd = atLeastZero "weight_decay" (fun x -> sprintf "Invalid weight_decay value: %s" (shown x))
    let momentum = atLeastZero "momentum" (fun x -> sprintf "Invalid momentum value: %s" (shown x))
    let betas =
        match pair "betas" with
        | Some(b0, _) when not (0.0 <= b0 && b0 < 1.0) -> [ "betas", sprintf "Invalid beta parameter at index 0: %s" (shown b0) ]
        | Some(_, b1) when not (0.0 <= b1 && b1 < 1.0) -> [ "betas", sprintf "Invalid beta parameter at index 1: %s" (shown b1) ]
        | _ -> []
    let positiveInt key =
        match get key with
        | PyValue.Int i when i < 1L -> [ key, sprintf "%s must be at least 1, got %d" key i ]
        | _ -> []
    match name with
    | "SGD" ->
        let nesterov =
            match get "nesterov" with
            | PyValue.Bool true ->
                let m = num "momentum" |> Option.defaultValue 0.0
                let d = num "dampening" |> Option.defaultValue 0.0
                if m <= 0.0 || d <> 0.0 then [ "nesterov", "Nesterov momentum requires a momentum and zero dampening" ] else []
            | _ -> []
        lr @ momentum @ wd @ nesterov
    | "Adam" | "AdamW" | "Adamax" | "RAdam" -> lr @ eps @ betas @ wd
    | "NAdam" ->
        lr @ eps @ betas @ wd
        @ atLeastZero "momentum_decay" (fun x -> sprintf "Invalid momentum_decay value: %s" (shown x))
    | "Adagrad" ->
        lr
        @ atLeastZero "lr_decay" (fun x -> sprintf "Invalid lr_decay value: %s" (shown x))
        @ wd
        @ atLeastZero "initial_accumulator_value" (fun x -> sprintf "Invalid initial_accumulator_value value: %s" (shown x))
        @ eps
    | "Adadelta" ->
        let rho =
            match num "rho" with
            | Some r when not (0.0 <= r && r <= 1.0) -> [ "rho", sprintf "Invalid rho value: %s" (shown r) ]
            | _ -> []
        lr @ rho @ eps @ wd
    | "RMSprop" ->
        lr @ eps @ momentum @ wd @ atLeastZero "alpha" (fun x -> sprintf "Invalid alpha value: %s" (shown x))
    | "ASGD" -> lr @ wd
    | "Rprop" ->
        let etas =
            match pair "etas" with
            | Some(minus, plus) when not (0.0 < minus && minus < 1.0 && 1.0 < plus) ->
                [ "etas", sprintf "Invalid eta values: %s, %s" (shown minus) (shown plus) ]
            | _ -> []
        // Not checked by PyTorch; a negative or inverted range makes Rprop's clamp meaningless.
        let steps =
            match pair "step_sizes" with
            | Some(lo, hi) when not (0.0 <= lo && lo <= hi) ->
                [ "step_sizes", sprintf "Invalid step sizes: %s, %s (need 0 <= min <= max)" (shown lo) (shown hi) ]
            | _ -> []
        lr @ etas @ steps
    | "LBFGS" -> lr @ positiveInt "max_iter" @ positiveInt "max_eval" @ positiveInt "history_size"
    | _ -> []

/// Every problem with the hyper-parameters an optimizer would be built with. `effective` are the
/// values it will see (PyTorch's defaults overlaid by what was given); only keys in `given` are
/// reported, each at most once: a non-finite or out-of-range number first, else PyTorch's check.
/// `limit` is the parameters' largest representable magnitude (`float32Limit` or `float64Limit`).
let check (limit: float) (name: string) (effective: (string * PyValue) list) (given: string list) : (string * RuleError) list =
    let get key = PyValue.tryFind key effective |> Option.defaultValue PyValue.None
    let numeric =
        [ for key in given do
              match PyValue.tryFind key effective with
              | Some v ->
                  match numbersOf v |> List.tryPick (fun (_, x) -> numberProblem limit (dtypeOf limit) x) with
                  | Some msg -> yield key, RuleError.value msg
                  | None -> ()
              | None -> () ]
    let ranges =
        rangeRules name get
        |> List.filter (fun (key, _) -> List.contains key given && not (numeric |> List.exists (fun (k, _) -> k = key)))
        |> List.map (fun (key, msg) -> key, RuleError.value msg)
    // In the order the keys were given.
    given |> List.collect (fun key -> (numeric @ ranges) |> List.filter (fun (k, _) -> k = key))

/// The values an optimizer `name` sees: PyTorch's defaults, overlaid by each layer in turn (the
/// optimizer's keyword arguments, then a group's own keys); null means "not given".
let effective (name: string) (layers: (string * PyValue) list list) : (string * PyValue) list =
    let defaults =
        Optimizers.tryHyperParameters name
        |> Option.map (List.map (fun h -> h.Name, h.Default))
        |> Option.defaultValue []
    (defaults, layers)
    ||> List.fold (fun acc layer ->
        (acc, layer) ||> List.fold (fun acc (k, v) -> if v = PyValue.None then acc else PyValue.set k v acc))

/// `check` for every param group of an optimizer: each group's own values (`groups`, in order) over
/// the keyword arguments `given`. Every distinct problem (key and message) once, with the index of
/// the first group that has it. Groups with the same own values have the same problems, so each
/// distinct set of values is checked once (a handful per model, not one per parameter).
let checkGroups (limit: float) (name: string) (given: (string * PyValue) list) (groups: (string * PyValue) list seq) : (int * string * RuleError) list =
    groups
    |> Seq.indexed
    |> Seq.filter (fun (_, own) -> not own.IsEmpty)
    |> Seq.distinctBy snd
    |> Seq.collect (fun (i, own) -> check limit name (effective name [ given; own ]) (List.map fst own) |> List.map (fun (k, e) -> i, k, e))
    |> Seq.distinctBy (fun (_, k, e) -> k, e.Message)
    |> List.ofSeq

/// A single number that must be finite and within ±limit (a clip value, a loss scale): the problem, if any.
let finiteWithin (limit: float) (x: float) : string option = numberProblem limit (dtypeOf limit) x
