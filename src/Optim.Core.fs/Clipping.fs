/// Gradient clipping settings: MMEngine's `clip_grad` dict parsed into a typed value.
/// Unlike MMEngine, unknown or mistyped keys are rejected here, at construction, rather than by a
/// TypeError at the first clipping step.
module Optim.Core.Clipping

/// The order of the p-norm: a finite p, or the max-abs norm.
type NormOrder =
    | P of float
    | Infinity

/// Clip by the global norm of all gradients (torch.nn.utils.clip_grad_norm_).
type ByNorm =
    { MaxNorm: float
      NormType: NormOrder
      ErrorIfNonfinite: bool
      Foreach: bool option }

/// Clip each gradient element to [-ClipValue, ClipValue] (torch.nn.utils.clip_grad_value_).
type ByValue = { ClipValue: float; Foreach: bool option }

type ClipGrad =
    | Norm of ByNorm
    | Value of ByValue

/// The parsed setting and MMEngine's `clip_grad_kwargs` (the dict without `type`).
type Parsed = { Clip: ClipGrad; Kwargs: (string * PyValue) list }

let private notADict =
    RuleError.assertion
        "If `clip_grad` is not None, it should be a `dict` which is the arguments of `torch.nn.utils.clip_grad_norm_` or clip_grad_value_`."

let private onlyType =
    RuleError.assertion "`clip_grad` should contain other arguments besides `type`. The arguments of `torch.nn.utils.clip_grad_norm_` or clip_grad_value_` should be specified."

/// A problem under `clip_grad`: the key it is about ("" for the dict itself) and the rule broken.
type private Problem = string * RuleError

let private problem key (e: RuleError) : Result<'a, Problem list> = Error [ key, e ]

let private both (a: Result<'a, Problem list>) (b: Result<'b, Problem list>) =
    match a, b with
    | Ok x, Ok y -> Ok(x, y)
    | Error e1, Error e2 -> Error(e1 @ e2)
    | Error e, _ | _, Error e -> Error e

let private number key (v: PyValue) =
    match v with
    | PyValue.Int i -> Ok(float i)
    | PyValue.Float f -> Ok f
    | PyValue.Str s ->
        match System.Double.TryParse(s, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture) with
        | true, x -> Ok x
        | _ -> problem key (RuleError.typeError (sprintf "expected a number, got '%s'" s))
    | other -> problem key (RuleError.typeError (sprintf "expected a number, got %s" (PyValue.kind other)))

/// A clipping bound: a number, not NaN, at least 0 (a negative bound flips or zeroes every gradient).
let private bound key (v: PyValue) =
    number key v
    |> Result.bind (fun x ->
        if System.Double.IsNaN x then problem key (RuleError.value "must be a number, got nan")
        elif x < 0.0 then problem key (RuleError.value (sprintf "must be at least 0, got %s" (PyFormat.float x)))
        else Ok x)

let private boolean key (v: PyValue) =
    match v with
    | PyValue.Bool b -> Ok b
    | other -> problem key (RuleError.typeError (sprintf "expected a boolean, got %s" (PyValue.kind other)))

let private optionalBool key kwargs =
    match PyValue.tryFind key kwargs with
    | None | Some PyValue.None -> Ok None
    | Some v -> boolean key v |> Result.map Some

let private unknownKeys allowed (kwargs: (string * PyValue) list) : Result<unit, Problem list> =
    match kwargs |> List.map fst |> List.filter (fun k -> not (List.contains k allowed)) with
    | [] -> Ok()
    | ks ->
        Error(
            ks
            |> List.map (fun k ->
                k,
                RuleError.typeError (
                    sprintf "unexpected argument '%s' (accepted: %s)%s" k (String.concat ", " allowed) (Suggest.didYouMean k allowed)
                ))
        )

let private required key kwargs what (read: string -> PyValue -> Result<float, Problem list>) =
    match PyValue.tryFind key kwargs with
    | None -> problem "" (RuleError.typeError (sprintf "%s requires '%s'" what key))
    | Some v -> read key v

let private parseNorm kwargs =
    let order =
        match PyValue.tryFind "norm_type" kwargs with
        | None -> Ok(P 2.0)
        | Some(PyValue.Str s) when s.Trim().ToLowerInvariant() = "inf" -> Ok Infinity
        | Some v ->
            number "norm_type" v
            |> Result.bind (fun p ->
                if System.Double.IsPositiveInfinity p then Ok Infinity
                elif System.Double.IsNaN p || p < 0.0 then
                    problem "norm_type" (RuleError.value (sprintf "must be a norm order of at least 0 or inf, got %s" (PyFormat.float p)))
                else Ok(P p))
    let errorIf =
        match PyValue.tryFind "error_if_nonfinite" kwargs with
        | None -> Ok false
        | Some v -> boolean "error_if_nonfinite" v
    both (unknownKeys [ "max_norm"; "norm_type"; "error_if_nonfinite"; "foreach" ] kwargs) (required "max_norm" kwargs "norm clipping" bound)
    |> both order
    |> both errorIf
    |> both (optionalBool "foreach" kwargs)
    |> Result.map (fun (fe, (e, (normType, ((), maxNorm)))) ->
        Norm { MaxNorm = maxNorm; NormType = normType; ErrorIfNonfinite = e; Foreach = fe })

let private parseValue kwargs =
    both (unknownKeys [ "clip_value"; "foreach" ] kwargs) (required "clip_value" kwargs "value clipping" bound)
    |> both (optionalBool "foreach" kwargs)
    |> Result.map (fun (fe, ((), clipValue)) -> Value { ClipValue = clipValue; Foreach = fe })

/// Every problem, in MMEngine's order of checks for the dict itself, then each key's.
let private parseAll (clipGrad: PyValue) : Result<Parsed option, Problem list> =
    match clipGrad with
    | PyValue.None -> Ok None
    | PyValue.Dict [] -> problem "" notADict
    | PyValue.Dict kvs ->
        let typeName =
            match PyValue.tryFind "type" kvs with
            | None -> "norm"
            | Some(PyValue.Str s) -> s
            | Some other -> PyFormat.str other
        let kwargs = PyValue.remove "type" kvs
        let clip =
            if List.isEmpty kwargs then problem "" onlyType
            else
                match typeName with
                | "norm" -> parseNorm kwargs
                | "value" -> parseValue kwargs
                | other ->
                    problem "type" (RuleError.value (sprintf "type of clip_grad should be \"norm\" or \"value\" but got %s%s" other (Suggest.didYouMean other [ "norm"; "value" ])))
        clip |> Result.map (fun clip -> Some { Clip = clip; Kwargs = kwargs })
    | _ -> problem "" notADict

/// Parses `clip_grad` (None disables clipping) in MMEngine's order of checks; the first problem,
/// its message prefixed with `clip_grad.key: ` when it is about one key.
let parse (clipGrad: PyValue) : Result<Parsed option, RuleError> =
    parseAll clipGrad
    |> Result.mapError (fun problems ->
        let key, e = List.head problems
        if key = "" then e
        elif key = "type" then e
        else { e with Message = sprintf "clip_grad.%s: %s" key e.Message })

/// `parse` with every problem, each at its JSON path under `path` (normally `clip_grad`).
let check (path: string) (clipGrad: PyValue) : Result<Parsed option, ConfigError list> =
    parseAll clipGrad
    |> Result.mapError (List.map (fun (key, e) -> ConfigError.ofRule (if key = "" then path else ConfigError.key path key) e))
