/// `paramwise_cfg` keys that do nothing or would corrupt training, found before anything is built:
/// errors for multipliers that are not finite non-negative numbers and for custom_keys entries whose
/// values PyTorch would reject; warnings (with "did you mean") for unknown paramwise_cfg keys,
/// unknown keys inside custom_keys entries (MMEngine copies them into the group, where nothing reads
/// them) and custom keys that match no parameter. `"strict": true` in paramwise_cfg turns the
/// warnings into errors. Paths are from the optim_wrapper root.
module Optim.Core.ConfigLint

open Optim.Core

/// Config that is accepted but does nothing: where, and why.
type ConfigWarning =
    { Path: string
      Message: string }

    override this.ToString() = this.Path + ": " + this.Message

/// What linting found.
type Lint = { Errors: ConfigError list; Warnings: ConfigWarning list }

let empty = { Errors = []; Warnings = [] }

let combine (a: Lint) (b: Lint) = { Errors = a.Errors @ b.Errors; Warnings = a.Warnings @ b.Warnings }

/// The keys DefaultOptimWrapperConstructor reads from paramwise_cfg (and `strict`).
let paramwiseKeys =
    [ "custom_keys"; "bias_lr_mult"; "bias_decay_mult"; "norm_decay_mult"; "dwconv_decay_mult"; "flat_decay_mult"
      "dcn_offset_lr_mult"; "bypass_duplicate"; "strict" ]

let private multiplierKeys = [ "bias_lr_mult"; "bias_decay_mult"; "norm_decay_mult"; "dwconv_decay_mult"; "flat_decay_mult"; "dcn_offset_lr_mult" ]

let private root = "paramwise_cfg"

/// A multiplier's problem: not finite, or negative (a negative lr or weight decay).
let private multiplierProblem (v: PyValue) : string option =
    match PyValue.tryNumber v with
    | Some x when System.Double.IsNaN x || System.Double.IsInfinity x -> Some(sprintf "must be a finite number, got %s" (PyFormat.float x))
    | Some x when x < 0.0 -> Some(sprintf "must be at least 0 (it multiplies a learning rate or weight decay), got %s" (PyFormat.repr v))
    | _ -> None

/// `paramwise_cfg.strict`: true turns the warnings into errors.
let isStrict (paramwise: PyValue) =
    match paramwise with
    | PyValue.Dict kvs -> PyValue.tryFind "strict" kvs = Some(PyValue.Bool true)
    | _ -> false

/// The static checks of a paramwise_cfg for an optimizer whose hyper-parameter names are
/// `hyperNames` (None for a user optimizer: entry keys are then not judged). `limit` is the largest
/// magnitude the parameters hold (`OptimizerRules.float32Limit` when unknown).
let paramwise (limit: float) (optimizer: (string * string list) option) (paramwise: PyValue) : Lint =
    match paramwise with
    | PyValue.Dict raw ->
        let unknown =
            [ for (k, _) in raw do
                  if not (List.contains k paramwiseKeys) then
                      yield
                          { Path = ConfigError.key root k
                            Message =
                              sprintf "unknown paramwise_cfg key '%s' is ignored%s" k (Suggest.didYouMean k paramwiseKeys) } ]
        let strictType =
            match PyValue.tryFind "strict" raw with
            | None | Some(PyValue.Bool _) | Some PyValue.None -> []
            | Some other -> [ ConfigError.at (ConfigError.key root "strict") ErrorKind.Type (sprintf "expected true or false, got %s" (PyValue.kind other)) ]
        let multipliers =
            [ for k in multiplierKeys do
                  match PyValue.tryFind k raw |> Option.bind multiplierProblem with
                  | Some m -> yield ConfigError.at (ConfigError.key root k) ErrorKind.Value m
                  | None -> () ]
        let entries =
            match PyValue.tryFind "custom_keys" raw with
            | Some(PyValue.Dict entries) -> entries
            | _ -> []
        let entryLint =
            entries
            |> List.map (fun (key, entry) ->
                let path = ConfigError.key (ConfigError.key root "custom_keys") key
                match entry with
                | PyValue.Dict kvs ->
                    let mults =
                        [ for mk in [ "lr_mult"; "decay_mult" ] do
                              match PyValue.tryFind mk kvs |> Option.bind multiplierProblem with
                              | Some m -> yield ConfigError.at (ConfigError.key path mk) ErrorKind.Value m
                              | None -> () ]
                    match optimizer with
                    | None -> { Errors = mults; Warnings = [] }
                    | Some(name, hyper) ->
                        let known = "lr_mult" :: "decay_mult" :: hyper
                        let hyperGiven = kvs |> List.filter (fun (k, _) -> List.contains k hyper)
                        let ranges =
                            OptimizerRules.check limit name (OptimizerRules.effective name [ hyperGiven ]) (List.map fst hyperGiven)
                            |> List.map (fun (k, e) -> ConfigError.ofRule (ConfigError.key path k) e)
                        let warnings =
                            [ for (k, _) in kvs do
                                  if not (List.contains k known) && k <> "params" then
                                      yield
                                          { Path = ConfigError.key path k
                                            Message =
                                              sprintf "'%s' is not lr_mult, decay_mult or a hyper-parameter of %s: it is copied into the group and nothing reads it%s"
                                                  k name (Suggest.didYouMean k known) } ]
                        { Errors = mults @ ranges; Warnings = warnings }
                | _ -> empty)
            |> List.fold combine empty
        combine { Errors = strictType @ multipliers; Warnings = unknown } entryLint
    | _ -> empty

/// The most key–name pairs compared for "did you mean" suggestions of unmatched custom keys.
let suggestionBudget = 200_000L

/// Custom keys that are a substring of no parameter's `prefix.name` (they do nothing), read from the
/// matches `plan` used (`Paramwise.matchFacts`: one automaton pass over each name, so the cost does
/// not grow with keys × names). "Did you mean" compares each unmatched key with every distinct name,
/// so it is offered only while that stays small (`suggestionBudget` key–name pairs); past it the
/// warnings come without a suggestion. The names are listed only when some key is unmatched.
let unmatchedKeysOf (settings: Paramwise.Settings) (matched: Paramwise.MatchedFacts) : ConfigWarning list =
    match matched.Unmatched(settings.CustomKeys |> List.map fst) with
    | [] -> []
    | unmatched ->
        let names = matched.Facts |> Seq.map (fun f -> f.MatchTarget) |> Seq.distinct |> Seq.map (fun t -> t.TrimStart '.') |> Array.ofSeq
        let suggest = int64 unmatched.Length * int64 names.Length <= suggestionBudget
        let candidates = Suggest.candidates (if suggest then names else [||])
        [ for key in unmatched ->
              { Path = ConfigError.key (ConfigError.key root "custom_keys") key
                Message = "custom key '" + key + "' matches no parameter name." + (if suggest then Suggest.didYouMeanIn candidates key else "") } ]

/// `unmatchedKeysOf` for facts not matched yet.
let unmatchedCustomKeys (settings: Paramwise.Settings) (facts: Paramwise.ParamFact seq) : ConfigWarning list =
    unmatchedKeysOf settings (Paramwise.matchFacts settings facts)

/// The warnings as errors when `strict` (paramwise_cfg `"strict": true`).
let escalate (strict: bool) (lint: Lint) : Lint =
    if not strict then lint
    else
        { Errors = lint.Errors @ (lint.Warnings |> List.map (fun w -> ConfigError.at w.Path ErrorKind.Value (w.Message + " (paramwise_cfg.strict is true)")))
          Warnings = [] }

/// The hyper-parameters each planned group would give the optimizer `name`, checked as PyTorch
/// would (`OptimizerRules.check`) before TorchSharp sees them: a custom key's `lr_mult` that makes an
/// lr beyond float32, a `momentum` in an entry PyTorch rejects, ... Each problem once, at the
/// paramwise rule that set the value (`paramwise_cfg.custom_keys["head"]`), naming the first
/// parameter it hit.
let planValues (limit: float) (name: string) (kwargs: (string * PyValue) list) (plan: Paramwise.GroupPlan seq) : ConfigError list =
    plan
    |> Seq.filter (fun g -> not g.Options.IsEmpty)
    // Groups with the same options give the same problems, and only the first group's are kept:
    // each distinct set of options is checked once (a handful per model, not one per parameter).
    |> Seq.distinctBy (fun g -> g.Options)
    |> Seq.collect (fun g ->
        let given = g.Options |> List.map (fun o -> o.Key)
        OptimizerRules.check limit name (OptimizerRules.effective name [ kwargs; g.Pairs ]) given
        |> List.choose (fun (key, e) ->
            g.Options
            |> List.tryFind (fun o -> o.Key = key)
            |> Option.map (fun o ->
                (o.Rule.Source, key),
                ConfigError.at (root + "." + o.Rule.Source) e.Kind
                    (sprintf "gives %s=%s for %s: %s" key (PyFormat.str o.Value) g.Param.FullName e.Message))))
    |> Seq.distinctBy fst
    |> Seq.map snd
    |> List.ofSeq
