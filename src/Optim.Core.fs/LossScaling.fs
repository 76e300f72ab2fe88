/// Dynamic loss scaling (SPEC §3): the state machine of torch's GradScaler, as data and total
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
      Enabled: bool }

/// torch's defaults: 2**16, 2.0, 0.5, 2000, enabled.
let defaults =
    { InitScale = 65536.0
      GrowthFactor = 2.0
      BackoffFactor = 0.5
      GrowthInterval = 2000L
      Enabled = true }

/// The live state of a scaler: what `state_dict` holds, plus whether it is enabled.
/// `Tracker` counts consecutive non-overflow updates since the last change (an int32 in the kernel).
type State =
    { Scale: float32
      GrowthFactor: float
      BackoffFactor: float
      GrowthInterval: int64
      Tracker: int
      Enabled: bool }

/// Checks the settings as torch does (only when enabled; NaN factors fail the checks).
let validate (s: Settings) : Result<Settings, RuleError> =
    if not s.Enabled then Ok s
    elif not (s.GrowthFactor > 1.0) then Error(RuleError.assertion "The growth factor must be > 1.0.")
    elif not (s.BackoffFactor < 1.0) then Error(RuleError.assertion "The backoff factor must be < 1.0.")
    else Ok s

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

let private settingsKeys = [ "init_scale"; "growth_factor"; "backoff_factor"; "growth_interval"; "enabled" ]

/// GradScaler(**kwargs): the settings a `loss_scale` dict describes, validated.
let parseSettings (kvs: (string * PyValue) list) : Result<Settings, RuleError> =
    let folder (acc: Result<Settings, RuleError>) (key: string, v: PyValue) =
        acc
        |> Result.bind (fun s ->
            let number () =
                match PyValue.tryNumber v with
                | Some x -> Ok x
                | None -> Error(RuleError.typeError (sprintf "loss_scale['%s'] should be a number, got %s" key (PyFormat.repr v)))
            match key, v with
            | "init_scale", _ -> number () |> Result.map (fun x -> { s with InitScale = x })
            | "growth_factor", _ -> number () |> Result.map (fun x -> { s with GrowthFactor = x })
            | "backoff_factor", _ -> number () |> Result.map (fun x -> { s with BackoffFactor = x })
            | "growth_interval", PyValue.Int i -> Ok { s with GrowthInterval = i }
            | "growth_interval", other ->
                Error(RuleError.typeError (sprintf "loss_scale['growth_interval'] should be an integer, got %s" (PyFormat.repr other)))
            | "enabled", PyValue.Bool b -> Ok { s with Enabled = b }
            | "enabled", other -> Error(RuleError.typeError (sprintf "loss_scale['enabled'] should be a boolean, got %s" (PyFormat.repr other)))
            | unknown, _ ->
                Error(
                    RuleError.typeError (
                        sprintf "GradScaler got an unexpected keyword argument '%s' (accepted: %s)" unknown (String.Join(", ", settingsKeys))
                    )
                ))
    kvs |> List.fold folder (Ok defaults) |> Result.bind validate

/// The TypeError for a `loss_scale` of a kind that has no Python counterpart (shown as given).
let invalidLossScale (shown: string) =
    RuleError.typeError (sprintf "loss_scale must be of type float, dict, or \"dynamic\", but got %s" shown)

/// Parses MMEngine's `loss_scale`: exactly `"dynamic"`, a float, or a dict of GradScaler settings.
/// Anything else (another string, an int such as 512, None, a bool) is the TypeError MMEngine raises,
/// naming the value.
let parseLossScale (v: PyValue) : Result<LossScale, RuleError> =
    match v with
    | PyValue.Str "dynamic" -> Ok LossScale.Dynamic
    | PyValue.Float x -> Ok(LossScale.Static x)
    | PyValue.Dict kvs -> parseSettings kvs |> Result.map LossScale.Custom
    | other -> Error(invalidLossScale (PyFormat.str other))
