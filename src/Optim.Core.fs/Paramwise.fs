/// MMEngine's `DefaultOptimWrapperConstructor` parameter-group rules, as data in, data out:
/// parameter facts + `paramwise_cfg` + the base lr/weight decay → the ordered group plans, each
/// option with the rule that set it, and the log lines MMEngine prints. No tensors here: the facade
/// walks the module tree into facts and builds the optimizer from the plans.
module Optim.Core.Paramwise

open Optim.Core

/// What kind of module directly owns a parameter, as far as the rules care.
[<RequireQualifiedAccess>]
type ModuleKind =
    /// BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm1d/2d/3d, GroupNorm, LayerNorm.
    | Norm
    /// A `Conv2d` whose `in_channels == groups` (so `Conv2d(1, 3, 1)` counts).
    | DepthwiseConv
    /// Any other `Conv2d` (matters for the DCN offset rule).
    | Conv2d
    | Other

/// One parameter as `add_params` meets it: pre-order walk, a module's own parameters
/// (`named_parameters(recurse=False)`) then its children (`named_children()`), so a parameter
/// shared by two modules is met twice, with the same `Identity`.
type ParamFact =
    { /// The owning module's prefix (`backbone.layer0.bn`; empty at the root).
      Prefix: string
      /// The parameter's attribute name on its module (`weight`).
      Name: string
      Kind: ModuleKind
      /// The owning module's parent is a deformable-conv (DCN) module (MMEngine's `is_dcn_module`).
      InDcnModule: bool
      Ndim: int
      RequiresGrad: bool
      /// Equal for the same parameter object met under two names (weight tying, shared modules).
      Identity: int64 }

    /// `prefix.name`, or `name` at the root: the name MMEngine prints in `paramwise_options` lines.
    member this.FullName = if this.Prefix = "" then this.Name else this.Prefix + "." + this.Name

    /// `prefix.name` always with the dot (`.cls_token` at the root): what custom keys are matched in.
    member this.MatchTarget = this.Prefix + "." + this.Name

/// The rule that wrote an option into a group.
[<RequireQualifiedAccess>]
type Rule =
    /// A `custom_keys` entry (its key): `lr`, `weight_decay`, and every key copied from the entry.
    | CustomKey of string
    | BiasLr
    | DcnOffsetLr
    | NormDecay
    | BiasDecay
    | DwconvDecay
    | FlatDecay

    /// The paramwise_cfg option behind the rule (`custom_keys["head"]`, `bias_lr_mult`, ...).
    member this.Source =
        match this with
        | CustomKey k -> "custom_keys[" + ConfigError.quote k + "]"
        | BiasLr -> "bias_lr_mult"
        | DcnOffsetLr -> "dcn_offset_lr_mult"
        | NormDecay -> "norm_decay_mult"
        | BiasDecay -> "bias_decay_mult"
        | DwconvDecay -> "dwconv_decay_mult"
        | FlatDecay -> "flat_decay_mult"

/// One key MMEngine sets in a group, in insertion order.
type PlannedOption = { Key: string; Value: PyValue; Rule: Rule }

/// One param group MMEngine passes to the optimizer: one parameter and the keys set for it (empty
/// when no rule applied; the optimizer's defaults fill everything else).
type GroupPlan =
    { Param: ParamFact
      Options: PlannedOption list }

    /// The options as an ordered dict.
    member this.Pairs = this.Options |> List.map (fun o -> o.Key, o.Value)

[<RequireQualifiedAccess>]
type LogLevel =
    | Info
    | Warning

/// One record MMEngine prints through `print_log` (message without the timestamp prefix).
type LogLine = { Level: LogLevel; Message: string }

/// A validated `paramwise_cfg`. Multipliers keep Python semantics: `None` = absent, `Some PyValue.None`
/// = present with the value None (which still triggers the `base_wd` check, as in MMEngine).
type Settings =
    { /// The dict as given, every key (user constructors read their own keys from here).
      Raw: (string * PyValue) list
      /// `custom_keys` in the given order: key → its entry (an ordered dict).
      CustomKeys: (string * (string * PyValue) list) list
      BiasLrMult: PyValue option
      BiasDecayMult: PyValue option
      NormDecayMult: PyValue option
      DwconvDecayMult: PyValue option
      FlatDecayMult: PyValue option
      DcnOffsetLrMult: PyValue option
      BypassDuplicate: bool }

/// The outcome of `plan`: the groups in order and every log line in the order printed.
type Plan = { Groups: GroupPlan list; Logs: LogLine list }

/// `plan` failed part way (MMEngine raises there): the error and what had been planned and logged.
type PlanFailure = { Error: RuleError; Partial: Plan }

/// No paramwise_cfg (None or `{}`): MMEngine then passes `model.parameters()` as one group and logs
/// nothing. Any key at all, even an unknown one, selects the per-parameter path.
let emptySettings =
    { Raw = []
      CustomKeys = []
      BiasLrMult = None
      BiasDecayMult = None
      NormDecayMult = None
      DwconvDecayMult = None
      FlatDecayMult = None
      DcnOffsetLrMult = None
      BypassDuplicate = false }

/// True when MMEngine would take the single-group path (`if not paramwise_cfg`).
let isEmpty (s: Settings) = s.Raw.IsEmpty

let private multiplierKeys =
    [ "bias_lr_mult"; "bias_decay_mult"; "norm_decay_mult"; "dwconv_decay_mult"; "flat_decay_mult"; "dcn_offset_lr_mult" ]

let private decayKeys = [ "bias_decay_mult"; "norm_decay_mult"; "dwconv_decay_mult" ]

let private baseWdMissing =
    "base_wd should not be None (the optimizer has no weight_decay, so there is nothing to multiply)"

/// Validates a `paramwise_cfg` value against the optimizer's base weight decay, and
/// the value types MMEngine would only trip over later (a multiplier that is not a number). Errors
/// come in MMEngine's check order (the first is what MMEngine raises); paths are relative to
/// `paramwise_cfg`.
let settingsOf (paramwise: PyValue) (baseWd: PyValue) : Result<Settings, ConfigError list> =
    match paramwise with
    | PyValue.None -> Ok emptySettings
    | PyValue.Dict raw ->
        let errors = ResizeArray<ConfigError>()
        let customKeys =
            match PyValue.tryFind "custom_keys" raw with
            | None -> []
            | Some(PyValue.Dict entries) ->
                entries
                |> List.choose (fun (k, entry) ->
                    let path = ConfigError.key "custom_keys" k
                    match entry with
                    | PyValue.Dict kvs ->
                        for mk in [ "lr_mult"; "decay_mult" ] do
                            match PyValue.tryFind mk kvs with
                            | Some v when not (PyNum.isNumber v) ->
                                errors.Add(
                                    ConfigError.at (ConfigError.key path mk) ErrorKind.Type
                                        (sprintf "expected a number, got %s" (PyValue.kind v)))
                            | _ -> ()
                        if kvs |> List.exists (fun (x, _) -> x = "params") then
                            errors.Add(
                                ConfigError.at (ConfigError.key path "params") ErrorKind.Value
                                    "a custom_keys entry cannot set `params`")
                        Some(k, kvs)
                    | other ->
                        errors.Add(
                            ConfigError.at path ErrorKind.Type
                                (sprintf "each custom_keys entry must be a dict, but got %s" (PyNum.typeRepr other)))
                        None)
            | Some other ->
                errors.Add(
                    ConfigError.at "custom_keys" ErrorKind.Type
                        (sprintf "If specified, custom_keys must be a dict, but got %s" (PyNum.typeRepr other)))
                []
        if baseWd = PyValue.None then
            for (k, kvs) in customKeys do
                if kvs |> List.exists (fun (x, _) -> x = "decay_mult") then
                    errors.Add(
                        ConfigError.at (ConfigError.key (ConfigError.key "custom_keys" k) "decay_mult") ErrorKind.Value
                            baseWdMissing)
            for k in decayKeys do
                if raw |> List.exists (fun (x, _) -> x = k) then
                    errors.Add(ConfigError.at k ErrorKind.Value baseWdMissing)
        let mult k =
            match PyValue.tryFind k raw with
            | Some v when v <> PyValue.None && not (PyNum.isNumber v) ->
                errors.Add(
                    ConfigError.at k ErrorKind.Type (sprintf "expected a number or null, got %s" (PyValue.kind v)))
                Some PyValue.None
            | o -> o
        let mults = multiplierKeys |> List.map (fun k -> k, mult k) |> Map.ofList
        let bypass =
            match PyValue.tryFind "bypass_duplicate" raw with
            | None | Some PyValue.None -> false
            | Some(PyValue.Bool b) -> b
            | Some other ->
                errors.Add(
                    ConfigError.at "bypass_duplicate" ErrorKind.Type
                        (sprintf "expected true or false, got %s" (PyValue.kind other)))
                false
        if errors.Count > 0 then
            Error(List.ofSeq errors)
        else
            Ok
                { Raw = raw
                  CustomKeys = customKeys
                  BiasLrMult = mults.["bias_lr_mult"]
                  BiasDecayMult = mults.["bias_decay_mult"]
                  NormDecayMult = mults.["norm_decay_mult"]
                  DwconvDecayMult = mults.["dwconv_decay_mult"]
                  FlatDecayMult = mults.["flat_decay_mult"]
                  DcnOffsetLrMult = mults.["dcn_offset_lr_mult"]
                  BypassDuplicate = bypass }
    | other ->
        Error
            [ ConfigError.at "" ErrorKind.Type
                  (sprintf "paramwise_cfg should be None or a dict, but got %s" (PyNum.typeRepr other)) ]

/// MMEngine's custom-key order: `sorted(sorted(keys), key=len, reverse=True)` — longest first,
/// equal lengths in ascending code-point order. Each key's code points are read once (not per
/// comparison), so sorting a thousand keys takes well under a millisecond.
let sortedKeys (keys: string list) : string list =
    let codePoints (s: string) = [| for r in s.EnumerateRunes() -> r.Value |]
    let rec compareFrom (a: int[]) (b: int[]) i =
        if i = a.Length || i = b.Length then compare a.Length b.Length
        elif a.[i] <> b.[i] then compare a.[i] b.[i]
        else compareFrom a b (i + 1)
    keys
    |> List.map (fun k -> k, codePoints k)
    // len(k) is the number of code points; List.sortWith is stable.
    |> List.sortWith (fun (_, a) (_, b) -> if a.Length <> b.Length then compare b.Length a.Length else compareFrom a b 0)
    |> List.map fst

/// The custom key that applies to a parameter: the first of `sorted` that is a substring of its
/// match target (`prefix.name`, with the dot even at the root). The rule as stated, one key at a
/// time; `plan` finds the same key in one pass over the name with a `KeyMatch.Matcher`.
let matchKey (sorted: string list) (fact: ParamFact) : string option =
    sorted |> List.tryFind (fun k -> PyStr.contains k fact.MatchTarget)

/// `matchKey` for many parameters: the matcher of `sortedKeys keys`, built once.
let keyMatcher (keys: string list) : KeyMatch.Matcher = KeyMatch.create (sortedKeys keys)

/// `matchKey (sortedKeys keys) fact` with the matcher of `keyMatcher keys`, in time linear in the
/// name's length whatever the number of keys, allocating nothing.
let matchKeyWith (matcher: KeyMatch.Matcher) (fact: ParamFact) : string option =
    KeyMatch.findIn matcher fact.Prefix fact.Name

/// Parameter facts with the custom keys matched against them, once: which key applies to each
/// parameter (`plan` reads it) and which keys apply to none (the lint reads that). Built by
/// `matchFacts` in one automaton pass over each match target.
type MatchedFacts =
    private
        { /// The facts in walk order.
          FactList: ParamFact list
          /// The custom keys in MMEngine's order (`sortedKeys`); ranks index this.
          Sorted: string list
          /// The settings' custom keys they were sorted from (to know them again without sorting).
          From: (string * (string * PyValue) list) list
          Scan: KeyMatch.Scan }

    /// The facts, in walk order.
    member this.Facts = this.FactList

    /// The custom keys that are a substring of no fact's match target, in `keys` order.
    member this.Unmatched(keys: string list) : string list =
        let occurring =
            Seq.zip this.Sorted this.Scan.Occurs |> Seq.filter snd |> Seq.map fst |> Set.ofSeq
        keys |> List.filter (fun k -> not (occurring.Contains k))

/// The custom keys of `settings` matched against every fact's match target: one automaton for the
/// keys, one pass over each target (no `prefix.name` string built), so the cost is the total length
/// of the names and keys, not names × keys.
let matchFacts (settings: Settings) (facts: ParamFact seq) : MatchedFacts =
    let facts = List.ofSeq facts
    let sorted = sortedKeys (settings.CustomKeys |> List.map fst)
    let scan = KeyMatch.scanTargets (KeyMatch.create sorted) (facts |> Seq.map (fun f -> struct (f.Prefix, f.Name)))
    { FactList = facts; Sorted = sorted; From = settings.CustomKeys; Scan = scan }

let private isSet (o: PyValue option) =
    match o with
    | Some v when v <> PyValue.None -> true
    | _ -> false

/// An option as `plan` sets it: the option and the tail of its log line (`:key=value`), both
/// computed once per rule, not once per parameter.
type private Setting = { Option: PlannedOption; LogTail: string }

let private setting key value rule =
    { Option = { Key = key; Value = value; Rule = rule }
      LogTail = ":" + key + "=" + PyFormat.str value }

/// Python's `a * b` computed once for every parameter the rule applies to, or the TypeError
/// MMEngine raises at the first such parameter: its message and what was being computed.
type private Product = Result<Setting, string * string>

let private product (what: string) key rule a b : Product =
    match PyNum.mul a b with
    | Ok v -> Ok(setting key v rule)
    | Error msg -> Error(msg, what)

/// The error MMEngine raises for `fact` when a product failed.
let private typeError (fact: ParamFact) (msg: string, what: string) =
    RuleError.typeError (sprintf "%s (computing %s of %s)" msg what fact.FullName)

/// Sets an option in an ordered dict of options: replaced in place when the key is there, else appended.
let private setOption (s: Setting) (opts: Setting list) =
    if opts |> List.exists (fun o -> o.Option.Key = s.Option.Key) then
        opts |> List.map (fun o -> if o.Option.Key = s.Option.Key then s else o)
    else
        opts @ [ s ]

/// The options a custom key sets: lr, weight_decay (when the optimizer has one), then every key of
/// its entry as given (MMEngine's `param_group.update(...)` order).
let private customKeySettings baseLr baseWd (key: string) (entry: (string * PyValue) list) =
    let rule = Rule.CustomKey key
    let mult k = PyValue.tryFind k entry |> Option.defaultValue (PyValue.Float 1.0)
    product "lr" "lr" rule baseLr (mult "lr_mult")
    |> Result.bind (fun lr ->
        if baseWd <> PyValue.None then
            product "weight_decay" "weight_decay" rule baseWd (mult "decay_mult") |> Result.map (fun wd -> [ lr; wd ])
        else
            Ok [ lr ])
    |> Result.map (fun opts -> (opts, entry) ||> List.fold (fun acc (k, v) -> setOption (setting k v rule) acc))

/// Every product the rules can need, computed once per `plan` call.
type private Rules =
    { Settings: Settings
      /// By custom-key rank (`sortedKeys` order): the options that key sets.
      CustomKeys: Result<Setting list, string * string> list
      BiasLr: Product
      DcnOffsetLr: Product
      NormDecay: Product
      BiasDecay: Product
      DwconvDecay: Product
      FlatDecay: Product
      HasWd: bool }

let private rulesOf (settings: Settings) (sorted: string list) baseLr baseWd =
    let entries = Map.ofList settings.CustomKeys
    let multiplied what key rule baseValue (mult: PyValue option) =
        product what key rule baseValue (Option.defaultValue PyValue.None mult)
    { Settings = settings
      CustomKeys = sorted |> List.map (fun k -> customKeySettings baseLr baseWd k entries.[k])
      BiasLr = multiplied "lr" "lr" Rule.BiasLr baseLr settings.BiasLrMult
      DcnOffsetLr = multiplied "lr" "lr" Rule.DcnOffsetLr baseLr settings.DcnOffsetLrMult
      NormDecay = multiplied "weight_decay" "weight_decay" Rule.NormDecay baseWd settings.NormDecayMult
      BiasDecay = multiplied "weight_decay" "weight_decay" Rule.BiasDecay baseWd settings.BiasDecayMult
      DwconvDecay = multiplied "weight_decay" "weight_decay" Rule.DwconvDecay baseWd settings.DwconvDecayMult
      FlatDecay = multiplied "weight_decay" "weight_decay" Rule.FlatDecay baseWd settings.FlatDecayMult
      HasWd = baseWd <> PyValue.None }

/// The options the type-based rules set when no custom key matched: bias lr, then the DCN offset
/// lr, then one weight-decay rule (norm > bias > depth-wise conv > flat).
let private typeRuleSettings (r: Rules) (fact: ParamFact) : Result<Setting list, string * string> =
    let settings = r.Settings
    let isNorm = fact.Kind = ModuleKind.Norm
    let isBias = fact.Name = "bias"
    let lrStep =
        if isBias && not (isNorm || fact.InDcnModule) && isSet settings.BiasLrMult then
            r.BiasLr |> Result.map List.singleton
        else
            Ok []
    let dcnStep (opts: Setting list) =
        let isConv2d = fact.Kind = ModuleKind.Conv2d || fact.Kind = ModuleKind.DepthwiseConv
        if fact.Prefix.Contains("conv_offset", System.StringComparison.Ordinal)
           && fact.InDcnModule
           && isSet settings.DcnOffsetLrMult
           && isConv2d then
            r.DcnOffsetLr |> Result.map (fun lr -> setOption lr opts)
        else
            Ok opts
    let decayStep (opts: Setting list) =
        if not r.HasWd then
            Ok opts
        else
            let rule =
                if isNorm && isSet settings.NormDecayMult then Some r.NormDecay
                elif isBias && not fact.InDcnModule && isSet settings.BiasDecayMult then Some r.BiasDecay
                elif fact.Kind = ModuleKind.DepthwiseConv && isSet settings.DwconvDecayMult then Some r.DwconvDecay
                elif fact.Ndim = 1 && not fact.InDcnModule && isSet settings.FlatDecayMult then Some r.FlatDecay
                else None
            match rule with
            | None -> Ok opts
            | Some wd -> wd |> Result.map (fun wd -> setOption wd opts)
    lrStep |> Result.bind dcnStep |> Result.bind decayStep

/// Where `plan` is: what was placed (identities, for `bypass_duplicate`), and the groups and log
/// lines so far, newest first.
type private Progress =
    { Placed: Set<int64>
      Groups: GroupPlan list
      Logs: LogLine list }

let private planned (p: Progress) = { Groups = List.rev p.Groups; Logs = List.rev p.Logs }

let private warning message = { Level = LogLevel.Warning; Message = message }

/// `paramwise_options -- name:key=value`, one line per option set, newest first onto `logs`.
let private optionLines (fact: ParamFact) (opts: Setting list) (logs: LogLine list) =
    let head = "paramwise_options -- " + fact.FullName
    (logs, opts)
    ||> List.fold (fun logs o -> { Level = LogLevel.Info; Message = head + o.LogTail } :: logs)

/// `add_params` over the facts of `matched` in walk order. `alreadyPlaced` are the
/// identities of parameters already in the caller's `params` list (they count for
/// `bypass_duplicate`). Products are Python's `base * mult`; each rule's is computed once per call
/// (a failing one is raised at the first parameter that needs it, as MMEngine raises it). The
/// custom key of each parameter is read from `matched` (one automaton pass per name, shared with
/// the lint); keys matched for other settings are matched again.
let planMatched
    (settings: Settings)
    (baseLr: PyValue)
    (baseWd: PyValue)
    (alreadyPlaced: int64 seq)
    (matched: MatchedFacts)
    : Result<Plan, PlanFailure> =
    let matched =
        if obj.ReferenceEquals(matched.From, settings.CustomKeys)
           || matched.Sorted = sortedKeys (settings.CustomKeys |> List.map fst) then matched
        else matchFacts settings matched.FactList
    let rules = rulesOf settings matched.Sorted baseLr baseWd
    let customKeys = Array.ofList rules.CustomKeys
    let best = matched.Scan.Best
    let rec loop (progress: Progress) (index: int) (facts: ParamFact list) =
        match facts with
        | [] -> Ok(planned progress)
        | fact :: rest ->
            if settings.BypassDuplicate && progress.Placed.Contains fact.Identity then
                let line = warning (fact.Prefix + " is duplicate. It is skipped since bypass_duplicate=True")
                loop { progress with Logs = line :: progress.Logs } (index + 1) rest
            elif not fact.RequiresGrad then
                let line = warning (fact.Prefix + "." + fact.Name + " is skipped since its requires_grad=False")
                loop { progress with Logs = line :: progress.Logs } (index + 1) rest
            else
                let options =
                    match best.[index] with
                    | -1 -> typeRuleSettings rules fact
                    | rank -> customKeys.[rank]
                match options with
                | Error e -> Error { Error = typeError fact e; Partial = planned progress }
                | Ok opts ->
                    loop
                        { Placed = if settings.BypassDuplicate then progress.Placed.Add fact.Identity else progress.Placed
                          Groups = { Param = fact; Options = opts |> List.map (fun o -> o.Option) } :: progress.Groups
                          Logs = optionLines fact opts progress.Logs }
                        (index + 1)
                        rest
    let placed = if settings.BypassDuplicate then Set.ofSeq alreadyPlaced else Set.empty
    loop { Placed = placed; Groups = []; Logs = [] } 0 matched.FactList

/// `planMatched` over `facts` (matched here). Custom keys are matched by one automaton built per
/// call, so the cost is linear in the total length of the names and keys, not in names × keys.
let plan
    (settings: Settings)
    (baseLr: PyValue)
    (baseWd: PyValue)
    (alreadyPlaced: int64 seq)
    (facts: ParamFact seq)
    : Result<Plan, PlanFailure> =
    planMatched settings baseLr baseWd alreadyPlaced (matchFacts settings facts)

/// True when some parameter (by identity) is in more than one group — PyTorch then raises
/// ValueError "some parameters appear in more than one parameter group".
let hasDuplicates (groups: int64 list list) =
    let all = groups |> List.concat
    (List.distinct all).Length <> all.Length

/// `hasDuplicates` over every group's identities in one sequence, without building lists.
let hasDuplicateIdentities (identities: int64 seq) =
    let all = Array.ofSeq identities
    (Array.distinct all).Length <> all.Length

/// PyTorch's message for `hasDuplicates`.
let duplicateMessage = "some parameters appear in more than one parameter group"
