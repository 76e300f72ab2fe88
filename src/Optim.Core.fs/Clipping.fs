/// Gradient clipping settings (SPEC §1.3): MMEngine's `clip_grad` dict parsed into a typed value.
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

let private number key (v: PyValue) =
    match v with
    | PyValue.Int i -> Ok(float i)
    | PyValue.Float f -> Ok f
    | PyValue.Str s ->
        match System.Double.TryParse(s, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture) with
        | true, x -> Ok x
        | _ -> Error(RuleError.typeError (sprintf "clip_grad.%s: expected a number, got '%s'" key s))
    | other -> Error(RuleError.typeError (sprintf "clip_grad.%s: expected a number, got %s" key (PyValue.kind other)))

let private boolean key (v: PyValue) =
    match v with
    | PyValue.Bool b -> Ok b
    | other -> Error(RuleError.typeError (sprintf "clip_grad.%s: expected a boolean, got %s" key (PyValue.kind other)))

let private optionalBool key kwargs =
    match PyValue.tryFind key kwargs with
    | None | Some PyValue.None -> Ok None
    | Some v -> boolean key v |> Result.map Some

let private unknownKeys allowed (kwargs: (string * PyValue) list) =
    match kwargs |> List.map fst |> List.filter (fun k -> not (List.contains k allowed)) with
    | [] -> Ok()
    | k :: _ ->
        Error(RuleError.typeError (sprintf "clip_grad: unexpected argument '%s' (accepted: %s)" k (String.concat ", " allowed)))

let private parseNorm kwargs =
    unknownKeys [ "max_norm"; "norm_type"; "error_if_nonfinite"; "foreach" ] kwargs
    |> Result.bind (fun () ->
        match PyValue.tryFind "max_norm" kwargs with
        | None -> Error(RuleError.typeError "clip_grad: norm clipping requires 'max_norm'")
        | Some v -> number "max_norm" v)
    |> Result.bind (fun maxNorm ->
        let order =
            match PyValue.tryFind "norm_type" kwargs with
            | None -> Ok(P 2.0)
            | Some (PyValue.Str s) when s.Trim().ToLowerInvariant() = "inf" -> Ok Infinity
            | Some v -> number "norm_type" v |> Result.map (fun p -> if System.Double.IsPositiveInfinity p then Infinity else P p)
        order
        |> Result.bind (fun normType ->
            let errorIf =
                match PyValue.tryFind "error_if_nonfinite" kwargs with
                | None -> Ok false
                | Some v -> boolean "error_if_nonfinite" v
            errorIf
            |> Result.bind (fun e ->
                optionalBool "foreach" kwargs
                |> Result.map (fun fe -> Norm { MaxNorm = maxNorm; NormType = normType; ErrorIfNonfinite = e; Foreach = fe }))))

let private parseValue kwargs =
    unknownKeys [ "clip_value"; "foreach" ] kwargs
    |> Result.bind (fun () ->
        match PyValue.tryFind "clip_value" kwargs with
        | None -> Error(RuleError.typeError "clip_grad: value clipping requires 'clip_value'")
        | Some v -> number "clip_value" v)
    |> Result.bind (fun clipValue ->
        optionalBool "foreach" kwargs |> Result.map (fun fe -> Value { ClipValue = clipValue; Foreach = fe }))

/// Parses `clip_grad` (None disables clipping) in MMEngine's order of checks.
let parse (clipGrad: PyValue) : Result<Parsed option, RuleError> =
    match clipGrad with
    | PyValue.None -> Ok None
    | PyValue.Dict [] -> Error notADict
    | PyValue.Dict kvs ->
        let typeName =
            match PyValue.tryFind "type" kvs with
            | None -> Ok "norm"
            | Some (PyValue.Str s) -> Ok s
            | Some other -> Ok(PyFormat.str other)
        let kwargs = PyValue.remove "type" kvs
        typeName
        |> Result.bind (fun t ->
            if List.isEmpty kwargs then Error onlyType
            else
                match t with
                | "norm" -> parseNorm kwargs
                | "value" -> parseValue kwargs
                | other -> Error(RuleError.value (sprintf "type of clip_grad should be \"norm\" or \"value\" but got %s" other)))
        |> Result.map (fun clip -> Some { Clip = clip; Kwargs = kwargs })
    | _ -> Error notADict
