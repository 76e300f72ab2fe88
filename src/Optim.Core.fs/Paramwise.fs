/// MMEngine's `DefaultOptimWrapperConstructor` parameter-group rules (SPEC §6), as data in, data out:
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

/// Validates a `paramwise_cfg` value against the optimizer's base weight decay (SPEC §6.1), and
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
/// equal lengths in ascending code-point order.
let sortedKeys (keys: string list) : string list =
    keys
    |> List.sortWith PyStr.compare
    |> List.sortWith (fun a b -> compare (PyStr.length b) (PyStr.length a)) // List.sortWith is stable

/// The custom key that applies to a parameter: the first of `sorted` that is a substring of its
/// match target (`prefix.name`, with the dot even at the root).
let matchKey (sorted: string list) (fact: ParamFact) : string option =
    sorted |> List.tryFind (fun k -> PyStr.contains k fact.MatchTarget)

let private isSet (o: PyValue option) =
    match o with
    | Some v when v <> PyValue.None -> true
    | _ -> false

let private setOption key value rule (opts: PlannedOption list) =
    if opts |> List.exists (fun o -> o.Key = key) then
        opts |> List.map (fun o -> if o.Key = key then { Key = key; Value = value; Rule = rule } else o)
    else
        opts @ [ { Key = key; Value = value; Rule = rule } ]

/// `add_params` (SPEC §6.4) over `facts` in walk order. `alreadyPlaced` are the identities of
/// parameters already in the caller's `params` list (they count for `bypass_duplicate`).
/// Products are Python's `base * mult`, computed once in that order.
let plan
    (settings: Settings)
    (baseLr: PyValue)
    (baseWd: PyValue)
    (alreadyPlaced: int64 seq)
    (facts: ParamFact seq)
    : Result<Plan, PlanFailure> =
    let sorted = sortedKeys (settings.CustomKeys |> List.map fst)
    let entries = Map.ofList settings.CustomKeys
    let placed = System.Collections.Generic.HashSet<int64>(alreadyPlaced)
    let groups = ResizeArray<GroupPlan>()
    let logs = ResizeArray<LogLine>()
    let partial () = { Groups = List.ofSeq groups; Logs = List.ofSeq logs }
    let product (fact: ParamFact) (what: string) a b =
        match PyNum.mul a b with
        | Ok v -> Ok v
        | Error msg ->
            Error
                { Error = RuleError.typeError (sprintf "%s (computing %s of %s)" msg what fact.FullName)
                  Partial = partial () }
    let hasWd = baseWd <> PyValue.None
    let rec loop (facts: ParamFact list) =
        match facts with
        | [] -> Ok(partial ())
        | fact :: rest ->
            if settings.BypassDuplicate && placed.Contains fact.Identity then
                logs.Add
                    { Level = LogLevel.Warning
                      Message = sprintf "%s is duplicate. It is skipped since bypass_duplicate=True" fact.Prefix }
                loop rest
            elif not fact.RequiresGrad then
                logs.Add
                    { Level = LogLevel.Warning
                      Message = sprintf "%s.%s is skipped since its requires_grad=False" fact.Prefix fact.Name }
                loop rest
            else
                let options =
                    match matchKey sorted fact with
                    | Some key ->
                        let entry = entries.[key]
                        let rule = Rule.CustomKey key
                        let lrMult = PyValue.tryFind "lr_mult" entry |> Option.defaultValue (PyValue.Float 1.0)
                        product fact "lr" baseLr lrMult
                        |> Result.bind (fun lr ->
                            let opts = [ { Key = "lr"; Value = lr; Rule = rule } ]
                            if hasWd then
                                let decayMult =
                                    PyValue.tryFind "decay_mult" entry |> Option.defaultValue (PyValue.Float 1.0)
                                product fact "weight_decay" baseWd decayMult
                                |> Result.map (fun wd -> opts @ [ { Key = "weight_decay"; Value = wd; Rule = rule } ])
                            else
                                Ok opts)
                        |> Result.map (fun opts -> (opts, entry) ||> List.fold (fun acc (k, v) -> setOption k v rule acc))
                    | None ->
                        let isNorm = fact.Kind = ModuleKind.Norm
                        let isBias = fact.Name = "bias"
                        let lrStep =
                            if isBias && not (isNorm || fact.InDcnModule) && isSet settings.BiasLrMult then
                                product fact "lr" baseLr settings.BiasLrMult.Value
                                |> Result.map (fun lr -> [ { Key = "lr"; Value = lr; Rule = Rule.BiasLr } ])
                            else
                                Ok []
                        let dcnStep (opts: PlannedOption list) =
                            let isConv2d = fact.Kind = ModuleKind.Conv2d || fact.Kind = ModuleKind.DepthwiseConv
                            if fact.Prefix.Contains("conv_offset", System.StringComparison.Ordinal)
                               && fact.InDcnModule
                               && isSet settings.DcnOffsetLrMult
                               && isConv2d then
                                product fact "lr" baseLr settings.DcnOffsetLrMult.Value
                                |> Result.map (fun lr -> setOption "lr" lr Rule.DcnOffsetLr opts)
                            else
                                Ok opts
                        let decayStep (opts: PlannedOption list) =
                            if not hasWd then
                                Ok opts
                            else
                                let rule =
                                    if isNorm && isSet settings.NormDecayMult then
                                        Some(Rule.NormDecay, settings.NormDecayMult.Value)
                                    elif isBias && not fact.InDcnModule && isSet settings.BiasDecayMult then
                                        Some(Rule.BiasDecay, settings.BiasDecayMult.Value)
                                    elif fact.Kind = ModuleKind.DepthwiseConv && isSet settings.DwconvDecayMult then
                                        Some(Rule.DwconvDecay, settings.DwconvDecayMult.Value)
                                    elif fact.Ndim = 1 && not fact.InDcnModule && isSet settings.FlatDecayMult then
                                        Some(Rule.FlatDecay, settings.FlatDecayMult.Value)
                                    else
                                        None
                                match rule with
                                | None -> Ok opts
                                | Some(r, mult) ->
                                    product fact "weight_decay" baseWd mult
                                    |> Result.map (fun wd -> setOption "weight_decay" wd r opts)
                        lrStep |> Result.bind dcnStep |> Result.bind decayStep
                match options with
                | Error failure -> Error failure
                | Ok opts ->
                    groups.Add { Param = fact; Options = opts }
                    placed.Add fact.Identity |> ignore
                    for o in opts do
                        logs.Add
                            { Level = LogLevel.Info
                              Message = sprintf "paramwise_options -- %s:%s=%s" fact.FullName o.Key (PyFormat.str o.Value) }
                    loop rest
    loop (List.ofSeq facts)

/// True when some parameter (by identity) is in more than one group — PyTorch then raises
/// ValueError "some parameters appear in more than one parameter group".
let hasDuplicates (groups: int64 list list) =
    let all = groups |> List.concat
    (List.distinct all).Length <> all.Length

/// PyTorch's message for `hasDuplicates`.
let duplicateMessage = "some parameters appear in more than one parameter group"
