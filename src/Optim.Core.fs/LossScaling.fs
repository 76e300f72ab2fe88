/// Dynamic loss scaling: the state machine of torch's GradScaler, as data and total
/// functions. The facade's GradScaler does the tensor work (scaling the loss, the fused
/// unscale-and-check kernel, skipping the optimizer step) and asks this module every decision:
/// whether settings are valid, which stage transitions are allowed, and what the scale and the
/// growth tracker become after a step.
///
/// The scale is a float32, as in the kernel (`_amp_update_scale_` keeps it in a float32 tensor and
/// multiplies in double before storing back), so the numbers here are the kernel's bit for bit.
module Optim.Core.LossScaling

open System

/// GradScaler's constructor arguments (torch.amp.GradScaler; MMEngine passes a `loss_scale` dict
/// straight to it).
type Settings =
    { InitScale: float
      GrowthFactor: float
      BackoffFactor: float
      GrowthInterval: int64
      Enabled: bool
      /// The floor: backing off never takes the scale below this (beyond torch; DeepSpeed's
      /// `min_loss_scale`). Below 2**-127, 1/scale is inf in float32 and unscaling writes NaN.
      MinScale: float
      /// The ceiling: growth never takes the scale above this (torch only refuses inf).
      MaxScale: float }

/// The default floor, 2**-126 (float32's smallest normal number): 1/scale stays finite, and torch
/// itself never goes this low without poisoning the parameters, so every usable torch trajectory is unchanged.
[<Literal>]
let defaultMinScale = 1.1754943508222875e-38

/// The default ceiling: float32's largest value (torch's own limit: it never grows to inf).
[<Literal>]
let defaultMaxScale = 3.4028234663852886e38

/// torch's defaults: 2**16, 2.0, 0.5, 2000, enabled; the floor and ceiling leave torch's behaviour unchanged.
let defaults =
    { InitScale = 65536.0
      GrowthFactor = 2.0
      BackoffFactor = 0.5
      GrowthInterval = 2000L
      Enabled = true
      MinScale = defaultMinScale
      MaxScale = defaultMaxScale }

/// The live state of a scaler: what `state_dict` holds, plus whether it is enabled.
/// `Tracker` counts consecutive non-overflow updates since the last change (an int32 in the kernel).
type State =
    { Scale: float32
      GrowthFactor: float
      BackoffFactor: float
      GrowthInterval: int64
      Tracker: int
      Enabled: bool }

let private f32Max = float System.Single.MaxValue

/// A scale usable in float32: finite, above 0, at most float32's largest value.
let private scaleProblem (x: float) =
    if System.Double.IsNaN x || System.Double.IsInfinity x then Some(sprintf "must be a finite number, got %s" (PyFormat.float x))
    elif not (x > 0.0) then Some(sprintf "must be above 0 (a zero or negative scale writes NaN into every parameter), got %s" (PyFormat.float x))
    elif x > f32Max then Some(sprintf "%s is beyond float32's range (the scale is kept in float32)" (PyFormat.float x))
    else None

/// Every problem with the settings, each with the argument it is about: torch's checks (growth > 1,
/// backoff < 1; NaN fails them) and the ones that keep the parameters finite (a finite positive
/// init_scale within float32, a backoff above 0, growth_interval at least 1, 0 < min_scale <= max_scale).
let problems (s: Settings) : (string * RuleError) list =
    if not s.Enabled then []
    else
        [ match scaleProblem s.InitScale with
          | Some m -> yield "init_scale", RuleError.value m
          | None -> ()
          if not (s.GrowthFactor > 1.0) then yield "growth_factor", RuleError.assertion "The growth factor must be > 1.0."
          elif System.Double.IsInfinity s.GrowthFactor then yield "growth_factor", RuleError.value "The growth factor must be finite."
          if not (s.BackoffFactor < 1.0) then yield "backoff_factor", RuleError.assertion "The backoff factor must be < 1.0."
          elif not (s.BackoffFactor > 0.0) then
              yield "backoff_factor", RuleError.value (sprintf "The backoff factor must be > 0.0 (a zero backoff makes the scale 0), got %s" (PyFormat.float s.BackoffFactor))
          if s.GrowthInterval < 1L then yield "growth_interval", RuleError.value (sprintf "growth_interval must be at least 1, got %d" s.GrowthInterval)
          match scaleProblem s.MinScale with
          | Some m -> yield "min_scale", RuleError.value m
          | None -> ()
          match scaleProblem s.MaxScale with
          | Some m -> yield "max_scale", RuleError.value m
          | None -> ()
          if s.MinScale > s.MaxScale then
              yield "min_scale", RuleError.value (sprintf "min_scale %s is above max_scale %s" (PyFormat.float s.MinScale) (PyFormat.float s.MaxScale)) ]

/// Checks the settings (`problems`; only when enabled), the first problem as torch's error.
let validate (s: Settings) : Result<Settings, RuleError> =
    match problems s with
    | [] -> Ok s
    | (key, e) :: _ when e.Kind = ErrorKind.Assertion -> Error e
    | (key, e) :: _ -> Error { e with Message = sprintf "%s: %s" key e.Message }

/// The state of a fresh scaler, or the settings' error.
/// Note: torch keeps `init_scale` as the Python number until the first `scale()`; here it is a float32
/// from the start (they differ only for values float32 cannot hold, e.g. 0.1).
let init (s: Settings) : Result<State, RuleError> =
    validate s
    |> Result.map (fun s ->
        { Scale = float32 s.InitScale
          GrowthFactor = s.GrowthFactor
          BackoffFactor = s.BackoffFactor
          GrowthInterval = s.GrowthInterval
          Tracker = 0
          Enabled = s.Enabled })

/// The state after an `update()` that saw (or did not see) an inf/NaN gradient since the last one
/// (the `_amp_update_scale_` kernel):
/// * overflow: scale × backoff_factor, tracker reset to 0;
/// * otherwise the tracker counts one more clean step; when it reaches growth_interval the scale grows
///   by growth_factor unless that would overflow float32 to inf, and the tracker restarts at 0 either way.
/// Products are taken in double and rounded to float32, as the kernel does. A disabled scaler never changes.
let update (foundInf: bool) (s: State) : State =
    if not s.Enabled then s
    elif foundInf then
        { s with
            Scale = float32 (float s.Scale * s.BackoffFactor)
            Tracker = 0 }
    else
        let successful = s.Tracker + 1
        if int64 successful = s.GrowthInterval then
            let candidate = float32 (float s.Scale * s.GrowthFactor)
            { s with
                Scale = (if Single.IsFinite candidate then candidate else s.Scale)
                Tracker = 0 }
        else
            { s with Tracker = successful }

/// Which bound an update ran into.
[<RequireQualifiedAccess>]
type BoundHit =
    | Floor
    | Ceiling

let private clampScale (minScale: float) (maxScale: float) (wanted: float) : float32 * BoundHit option =
    let lo = float32 minScale
    let hi = float32 maxScale
    let x = float32 wanted
    if System.Single.IsNaN x then lo, Some BoundHit.Floor
    elif x < lo then lo, Some BoundHit.Floor
    elif x > hi && System.Single.IsFinite x then hi, Some BoundHit.Ceiling
    else x, None

/// `update` kept within [min_scale, max_scale] of the settings: a back-off below the floor stops at
/// the floor, a growth above the ceiling stops at the ceiling; the bound hit (if any) is returned so
/// the caller can warn. With the default bounds this is `update` exactly.
let updateWithin (bounds: Settings) (foundInf: bool) (s: State) : State * BoundHit option =
    if not s.Enabled then s, None
    elif foundInf then
        let scale, hit = clampScale bounds.MinScale bounds.MaxScale (float s.Scale * s.BackoffFactor)
        { s with Scale = scale; Tracker = 0 }, hit
    else
        let successful = s.Tracker + 1
        if int64 successful = s.GrowthInterval then
            let candidate = float32 (float s.Scale * s.GrowthFactor)
            if not (Single.IsFinite candidate) then { s with Tracker = 0 }, None
            else
                let scale, hit = clampScale bounds.MinScale bounds.MaxScale (float candidate)
                { s with Scale = scale; Tracker = 0 }, hit
        else
            { s with Tracker = successful }, None

/// `updateWithScale` kept within the bounds (a NaN or zero new scale becomes the floor).
let updateWithScaleWithin (bounds: Settings) (newScale: float) (s: State) : State * BoundHit option =
    if not s.Enabled then s, None
    else
        let scale, hit = clampScale bounds.MinScale bounds.MaxScale newScale
        { s with Scale = scale }, hit

/// Whether 1/scale can unscale gradients: finite and not 0 in float32. When it cannot (a scale of 0
/// or below 2**-127, loaded or imposed), the step must count as an overflow: the fused kernel checks
/// the gradients before multiplying, so it would report them finite and write inf/NaN.
let invScaleUsable (s: State) =
    let inv = float32 (1.0 / float s.Scale)
    Single.IsFinite inv && inv <> 0.0f && s.Scale > 0.0f

/// The state after `update(new_scale)`: the scale is replaced (as a float32), the tracker is untouched.
let updateWithScale (newScale: float) (s: State) : State =
    if not s.Enabled then s else { s with Scale = float32 newScale }

/// The reciprocal used to unscale gradients: computed in double, stored as float32 (as torch does).
let invScale (s: State) : float32 = float32 (1.0 / float s.Scale)

/// `set_growth_factor` (torch does not re-validate).
let withGrowthFactor (v: float) (s: State) = { s with GrowthFactor = v }

/// `set_backoff_factor` (torch does not re-validate).
let withBackoffFactor (v: float) (s: State) = { s with BackoffFactor = v }

/// `set_growth_interval`.
let withGrowthInterval (v: int64) (s: State) = { s with GrowthInterval = v }

// ------------------------------------------------------------------------------------------------
// Per-optimizer stages: what unscale_/step may do between two update() calls.

/// Where an optimizer is in the scaler's iteration: nothing yet, unscaled, or stepped.
[<RequireQualifiedAccess>]
type Stage =
    | Ready
    | Unscaled
    | Stepped

/// Errors of using a scaler before it scaled any loss (torch's AssertionError texts).
let notInitialized (operation: string) =
    RuleError.assertion (
        sprintf
            "Attempted %s but _scale is None.  This may indicate your script did not use scaler.scale(loss or outputs) earlier in the iteration."
            operation
    )

/// May `unscale_` run at this stage?
let beginUnscale (stage: Stage) : Result<unit, RuleError> =
    match stage with
    | Stage.Ready -> Ok()
    | Stage.Unscaled -> Error(RuleError.runtime "unscale_() has already been called on this optimizer since the last update().")
    | Stage.Stepped -> Error(RuleError.runtime "unscale_() is being called after step().")

/// May `step` run at this stage? `Ok true` when it must unscale first (nothing unscaled yet).
let beginStep (stage: Stage) : Result<bool, RuleError> =
    match stage with
    | Stage.Ready -> Ok true
    | Stage.Unscaled -> Ok false
    | Stage.Stepped -> Error(RuleError.runtime "step() has already been called since the last update().")

/// `step` found no parameter with a gradient for this optimizer.
let noInfChecksForOptimizer = RuleError.assertion "No inf checks were recorded for this optimizer."

/// `update()` without a new scale found no inf check of any optimizer since the last update.
let noInfChecksBeforeUpdate = RuleError.assertion "No inf checks were recorded prior to update."

/// Gradients in float16 cannot be unscaled (fp32 master parameters are required).
let fp16Gradients = RuleError.value "Attempting to unscale FP16 gradients."

/// `step(closure=...)` is not supported with an enabled scaler.
let closureUnsupported = RuleError.runtime "Closure use is not currently supported if GradScaler is enabled."

// ------------------------------------------------------------------------------------------------
// State dict: exactly scale, growth_factor, backoff_factor, growth_interval, _growth_tracker.

/// `state_dict()`: the five entries in torch's order; `{}` for a disabled scaler.
let toStateDict (s: State) : PyValue =
    if not s.Enabled then
        PyValue.Dict []
    else
        PyValue.Dict
            [ "scale", PyValue.Float(float s.Scale)
              "growth_factor", PyValue.Float s.GrowthFactor
              "backoff_factor", PyValue.Float s.BackoffFactor
              "growth_interval", PyValue.Int s.GrowthInterval
              "_growth_tracker", PyValue.Int(int64 s.Tracker) ]

let private entry (kvs: (string * PyValue) list) key =
    match PyValue.tryFind key kvs with
    | Some v -> Ok v
    | None -> Error(RuleError.key (sprintf "GradScaler state dict has no '%s' entry" key))

let private numberEntry kvs key =
    entry kvs key
    |> Result.bind (fun v ->
        match PyValue.tryNumber v with
        | Some x -> Ok x
        | None -> Error(RuleError.typeError (sprintf "GradScaler state dict: '%s' should be a number, got %s" key (PyFormat.repr v))))

let private intEntry kvs key =
    entry kvs key
    |> Result.bind (fun v ->
        match v with
        | PyValue.Int i -> Ok i
        | other -> Error(RuleError.typeError (sprintf "GradScaler state dict: '%s' should be an integer, got %s" key (PyFormat.repr other))))

/// The checks a loaded scaler state must pass (torch checks none; a state that fails them would make
/// every later step skip, overflow or never grow): a positive finite scale that float32 holds, a
/// growth factor > 1, a backoff factor in (0, 1), a growth interval ≥ 1 and a tracker in
/// [0, growth_interval).
let checkLoaded (scale: float) (growth: float) (backoff: float) (interval: int64) (tracker: int64) : Result<unit, RuleError> =
    let bad (key: string) (what: string) (v: string) =
        Error(RuleError.value (sprintf "GradScaler state dict: '%s' must be %s, got %s" key what v))
    if not (Double.IsFinite scale && scale > 0.0 && Single.IsFinite(float32 scale) && float32 scale > 0.0f) then
        bad "scale" "a positive finite float32" (PyFormat.float scale)
    elif not (Double.IsFinite growth && growth > 1.0) then bad "growth_factor" "a finite number > 1" (PyFormat.float growth)
    elif not (backoff > 0.0 && backoff < 1.0) then bad "backoff_factor" "a number in (0, 1)" (PyFormat.float backoff)
    elif interval < 1L then bad "growth_interval" "an integer >= 1" (string interval)
    elif tracker < 0L || tracker >= interval then
        bad "_growth_tracker" (sprintf "an integer in [0, growth_interval) = [0, %d)" interval) (string tracker)
    else Ok()

/// `load_state_dict(sd)`: the state `s` with the five entries of `sd` (other entries are ignored, as
/// in torch). A disabled scaler ignores the dict; an empty dict is an error (it was saved from a
/// disabled scaler); a missing entry is a key error.
let ofStateDict (sd: PyValue) (s: State) : Result<State, RuleError> =
    if not s.Enabled then
        Ok s
    else
        match sd with
        | PyValue.Dict [] ->
            Error(RuleError.runtime "The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler.")
        | PyValue.Dict kvs ->
            numberEntry kvs "scale"
            |> Result.bind (fun scale ->
                numberEntry kvs "growth_factor"
                |> Result.bind (fun growth ->
                    numberEntry kvs "backoff_factor"
                    |> Result.bind (fun backoff ->
                        intEntry kvs "growth_interval"
                        |> Result.bind (fun interval ->
                            intEntry kvs "_growth_tracker"
                            |> Result.bind (fun tracker ->
                                checkLoaded scale growth backoff interval tracker
                                |> Result.map (fun () ->
                                    { s with
                                        Scale = float32 scale
                                        GrowthFactor = growth
                                        BackoffFactor = backoff
                                        GrowthInterval = interval
                                        Tracker = int tracker }))))))
        | other -> Error(RuleError.typeError (sprintf "GradScaler state dict should be a dict, got %s" (PyValue.kind other)))

// ------------------------------------------------------------------------------------------------
// AmpOptimWrapper's `loss_scale` argument (SPEC §2.1).

/// How AmpOptimWrapper scales the loss.
[<RequireQualifiedAccess>]
type LossScale =
    /// `'dynamic'`: a GradScaler with torch's defaults.
    | Dynamic
    /// A float: a fixed scale, re-imposed by `update(new_scale)` after every step (inf steps are still skipped).
    | Static of float
    /// A dict: a dynamic GradScaler with these settings.
    | Custom of Settings

/// The scaler settings and the `_scale_update_param` that AmpOptimWrapper passes to `update`.
let scalerOf (ls: LossScale) : Settings * float option =
    match ls with
    | LossScale.Dynamic -> defaults, None
    | LossScale.Static x -> { defaults with InitScale = x }, Some x
    | LossScale.Custom s -> s, None

let private settingsKeys = [ "init_scale"; "growth_factor"; "backoff_factor"; "growth_interval"; "enabled"; "min_scale"; "max_scale" ]

/// GradScaler(**kwargs): the settings a `loss_scale` dict describes, or every problem with the key
/// it is about.
let settingsProblems (kvs: (string * PyValue) list) : Result<Settings, (string * RuleError) list> =
    let read (s: Settings, errs) (key: string, v: PyValue) =
        let number () =
            match v with
            | PyValue.Int i -> Ok(float i)
            | PyValue.Float x -> Ok x
            | _ -> Error(RuleError.typeError (sprintf "loss_scale['%s'] should be a number, got %s" key (PyFormat.repr v)))
        let r =
            match key, v with
            | "init_scale", _ -> number () |> Result.map (fun x -> { s with InitScale = x })
            | "growth_factor", _ -> number () |> Result.map (fun x -> { s with GrowthFactor = x })
            | "backoff_factor", _ -> number () |> Result.map (fun x -> { s with BackoffFactor = x })
            | "min_scale", _ -> number () |> Result.map (fun x -> { s with MinScale = x })
            | "max_scale", _ -> number () |> Result.map (fun x -> { s with MaxScale = x })
            | "growth_interval", PyValue.Int i -> Ok { s with GrowthInterval = i }
            | "growth_interval", other ->
                Error(RuleError.typeError (sprintf "loss_scale['growth_interval'] should be an integer, got %s" (PyFormat.repr other)))
            | "enabled", PyValue.Bool b -> Ok { s with Enabled = b }
            | "enabled", other -> Error(RuleError.typeError (sprintf "loss_scale['enabled'] should be a boolean, got %s" (PyFormat.repr other)))
            | unknown, _ ->
                Error(
                    RuleError.typeError (
                        sprintf "GradScaler got an unexpected keyword argument '%s' (accepted: %s)%s" unknown (String.Join(", ", settingsKeys))
                            (Suggest.didYouMean unknown settingsKeys)
                    )
                )
        match r with
        | Ok s -> s, errs
        | Error e -> s, errs @ [ key, e ]
    let s, errs = kvs |> List.fold read (defaults, [])
    match errs @ (if errs.IsEmpty then problems s else []) with
    | [] -> Ok s
    | es -> Error es

/// GradScaler(**kwargs): the settings a `loss_scale` dict describes, validated (the first problem).
let parseSettings (kvs: (string * PyValue) list) : Result<Settings, RuleError> =
    settingsProblems kvs |> Result.mapError (fun es -> snd (List.head es))

/// The TypeError for a `loss_scale` of a kind that has no Python counterpart (shown as given).
let invalidLossScale (shown: string) =
    RuleError.typeError (sprintf "loss_scale must be of type float, dict, or \"dynamic\", but got %s" shown)

/// Parses MMEngine's `loss_scale`: exactly `"dynamic"`, a float, or a dict of GradScaler settings.
/// Anything else (another string, an int such as 512, None, a bool) is the TypeError MMEngine raises,
/// naming the value.
/// A static scale must also be usable: finite, above 0, within float32.
let parseLossScale (v: PyValue) : Result<LossScale, RuleError> =
    match v with
    | PyValue.Str "dynamic" -> Ok LossScale.Dynamic
    | PyValue.Float x ->
        match scaleProblem x with
        | Some m -> Error(RuleError.value ("loss_scale " + m))
        | None -> Ok(LossScale.Static x)
    | PyValue.Dict kvs -> parseSettings kvs |> Result.map LossScale.Custom
    | PyValue.Str s -> Error(invalidLossScale (s + Suggest.didYouMean s [ "dynamic" ]))
    | other -> Error(invalidLossScale (PyFormat.str other))

/// `parseLossScale` with every problem at its JSON path under `path` (normally `loss_scale`).
let checkLossScale (path: string) (v: PyValue) : Result<LossScale, ConfigError list> =
    match v with
    | PyValue.Dict kvs ->
        settingsProblems kvs
        |> Result.map LossScale.Custom
        |> Result.mapError (List.map (fun (k, e) -> ConfigError.ofRule (ConfigError.key path k) e))
    | other -> parseLossScale other |> Result.mapError (fun e -> [ ConfigError.ofRule path e ])
