/// MMEngine's `optim_wrapper` config as data: JSON → Python-like values → a typed config, with every
/// problem reported as a value naming its JSON path and what was expected (all of them, not the
/// first). Keys are MMEngine's and PyTorch's names, so a Python config ports key for key.
module Optim.Core.Config

open System
open System.Text.Json
open Optim.Core
open Optim.Core.Validated

// ---------------------------------------------------------------------------------------------
// JSON → PyValue

/// Python's dict semantics on parsed JSON: a repeated key keeps its first position and its last
/// value (as `json.loads` builds dicts).
/// (In O(n log n) for n keys: a config may carry thousands of custom keys.)
let rec private pythonDicts (v: PyValue) =
    match v with
    | PyValue.Dict kvs ->
        let last = (Map.empty, kvs) ||> List.fold (fun m (k, x) -> Map.add k x m)
        let firsts =
            ((Set.empty, []), kvs)
            ||> List.fold (fun (seen: Set<string>, acc) (k, _) -> if seen.Contains k then seen, acc else seen.Add k, k :: acc)
            |> snd
            |> List.rev
        PyValue.Dict(firsts |> List.map (fun k -> k, pythonDicts last.[k]))
    | PyValue.List xs -> PyValue.List(List.map pythonDicts xs)
    | other -> other

/// Parses JSON text into a Python-like value (`PyJson`: ints stay ints; comments and trailing
/// commas allowed). Malformed JSON is an error value.
let parseJson (text: string) : Result<PyValue, ConfigError> =
    match PyJson.parse text with
    | Ok v -> Ok(pythonDicts v)
    | Error msg -> Error(ConfigError.at "" ErrorKind.Value ("invalid JSON: " + msg))

// ---------------------------------------------------------------------------------------------
// Hyper-parameters

/// The shape a known optimizer hyper-parameter must have.
[<RequireQualifiedAccess>]
type HyperKind =
    /// A number (int or float); null means "not given" (the optimizer's default applies).
    | Number
    | Flag
    /// true, false or null (PyTorch's `foreach`).
    | OptionalFlag
    /// Two numbers (`betas`, `etas`, `step_sizes`).
    | Pair
    | Integer
    /// An integer or null (LBFGS `max_eval`).
    | OptionalInteger
    /// A string or null (LBFGS `line_search_fn`).
    | OptionalString

/// Every hyper-parameter of PyTorch's optimizers that TorchSharp has, under PyTorch's names.
let knownHyperParameters : (string * HyperKind) list =
    [ "lr", HyperKind.Number
      "momentum", HyperKind.Number
      "dampening", HyperKind.Number
      "weight_decay", HyperKind.Number
      "nesterov", HyperKind.Flag
      "betas", HyperKind.Pair
      "eps", HyperKind.Number
      "amsgrad", HyperKind.Flag
      "alpha", HyperKind.Number
      "centered", HyperKind.Flag
      "rho", HyperKind.Number
      "lr_decay", HyperKind.Number
      "initial_accumulator_value", HyperKind.Number
      "lambd", HyperKind.Number
      "t0", HyperKind.Number
      "etas", HyperKind.Pair
      "step_sizes", HyperKind.Pair
      "momentum_decay", HyperKind.Number
      "decoupled_weight_decay", HyperKind.Flag
      "max_iter", HyperKind.Integer
      "max_eval", HyperKind.OptionalInteger
      "tolerance_grad", HyperKind.Number
      "tolerance_change", HyperKind.Number
      "history_size", HyperKind.Integer
      "line_search_fn", HyperKind.OptionalString
      "maximize", HyperKind.Flag
      "foreach", HyperKind.OptionalFlag
      "capturable", HyperKind.Flag
      "differentiable", HyperKind.Flag
      "fused", HyperKind.OptionalFlag ]

let private hyperKinds = Map.ofList knownHyperParameters

let private checkHyper (path: string) (kind: HyperKind) (v: PyValue) : ConfigError list =
    let err expected =
        [ ConfigError.at path ErrorKind.Type (sprintf "expected %s, got %s" expected (PyValue.kind v)) ]
    match kind, v with
    | HyperKind.Number, (PyValue.Int _ | PyValue.Float _ | PyValue.None) -> []
    | HyperKind.Number, _ -> err "a number"
    | HyperKind.Flag, PyValue.Bool _ -> []
    | HyperKind.Flag, _ -> err "true or false"
    | (HyperKind.OptionalFlag), (PyValue.Bool _ | PyValue.None) -> []
    | HyperKind.OptionalFlag, _ -> err "true, false or null"
    | HyperKind.Pair, (PyValue.List xs | PyValue.Tuple xs) ->
        if xs.Length <> 2 then
            [ ConfigError.at path ErrorKind.Type (sprintf "expected two numbers, got %d" xs.Length) ]
        else
            xs
            |> List.mapi (fun i x ->
                match x with
                | PyValue.Int _ | PyValue.Float _ -> []
                | other ->
                    [ ConfigError.at (ConfigError.index path i) ErrorKind.Type
                          (sprintf "expected a number, got %s" (PyValue.kind other)) ])
            |> List.concat
    | HyperKind.Pair, _ -> err "two numbers"
    | HyperKind.Integer, PyValue.Int _ -> []
    | HyperKind.Integer, _ -> err "an integer"
    | HyperKind.OptionalInteger, (PyValue.Int _ | PyValue.None) -> []
    | HyperKind.OptionalInteger, _ -> err "an integer or null"
    | HyperKind.OptionalString, (PyValue.Str _ | PyValue.None) -> []
    | HyperKind.OptionalString, _ -> err "a string or null"

// ---------------------------------------------------------------------------------------------
// Typed config

/// `optim_wrapper.optimizer`: the registered optimizer name and its keyword arguments.
type OptimizerConfig =
    { /// The OPTIMIZERS name (`SGD`, `AdamW`, ...); None when the config has no `type`.
      Type: string option
      /// Every other key in the given order, under PyTorch's names. Known hyper-parameters have been
      /// checked (`knownHyperParameters`); other keys are kept for user optimizers.
      Args: (string * PyValue) list }

    /// The value under `key`, or PyValue.None (Python's `cfg.get(key)`).
    member this.Get(key: string) = PyValue.tryFind key this.Args |> Option.defaultValue PyValue.None

    /// `base_lr` as MMEngine reads it: `optimizer_cfg.get('lr')`.
    member this.BaseLr = this.Get "lr"

    /// `base_wd` as MMEngine reads it: `optimizer_cfg.get('weight_decay')`.
    member this.BaseWd = this.Get "weight_decay"

    /// A numeric hyper-parameter as a double (None when absent or null).
    member this.Number(key: string) = PyNum.toDouble (this.Get key)

    /// A boolean hyper-parameter (None when absent or null).
    member this.Flag(key: string) =
        match this.Get key with
        | PyValue.Bool b -> Some b
        | _ -> None

    /// A pair hyper-parameter (`betas`, `etas`, `step_sizes`).
    member this.Pair(key: string) =
        match this.Get key with
        | PyValue.List [ a; b ]
        | PyValue.Tuple [ a; b ] ->
            match PyNum.toDouble a, PyNum.toDouble b with
            | Some x, Some y -> Some(x, y)
            | _ -> None
        | _ -> None

    member this.Lr = this.Number "lr"
    member this.WeightDecay = this.Number "weight_decay"
    member this.Momentum = this.Number "momentum"
    member this.Betas = this.Pair "betas"
    member this.Eps = this.Number "eps"

    /// The dict MMEngine holds as `optimizer_cfg` (type first).
    member this.ToPyValue() =
        PyValue.Dict(
            (match this.Type with
             | Some t -> [ "type", PyValue.Str t ]
             | None -> [])
            @ this.Args
        )

/// `loss_scale` of AmpOptimWrapper.
[<RequireQualifiedAccess>]
type LossScale =
    /// The string "dynamic": a GradScaler with its defaults.
    | Dynamic
    /// A float: static scaling by that constant.
    | Static of float
    /// A dict of GradScaler arguments (init_scale, growth_factor, backoff_factor, growth_interval, enabled).
    | Custom of (string * PyValue) list

    member this.ToPyValue() =
        match this with
        | Dynamic -> PyValue.Str "dynamic"
        | Static f -> PyValue.Float f
        | Custom kvs -> PyValue.Dict kvs

/// The whole `optim_wrapper` dict.
type OptimWrapperConfig =
    { /// OPTIM_WRAPPERS name; `OptimWrapper` when not given.
      Type: string
      /// Required by DefaultOptimWrapperConstructor (custom constructors may do without).
      Optimizer: OptimizerConfig option
      /// As given (None when absent); DefaultOptimWrapperConstructor validates it (`Paramwise.settingsOf`),
      /// custom constructors read their own keys from it.
      ParamwiseCfg: PyValue
      /// OPTIM_WRAPPER_CONSTRUCTORS name; `DefaultOptimWrapperConstructor` when not given.
      Constructor: string
      AccumulativeCounts: int option
      /// The clip_grad dict as given (with its `type`), checked by the wrapper.
      ClipGrad: (string * PyValue) list option
      LossScale: LossScale option
      /// `float16`, `bfloat16`, `float32` or `float64`.
      Dtype: string option
      /// `skip_nonfinite` (beyond MMEngine): skip steps with a non-finite loss or gradient.
      SkipNonfinite: NonFiniteGuard.Settings
      /// Every other wrapper keyword argument, in the given order (for user wrappers).
      Extra: (string * PyValue) list
      /// Which of the wrapper keys the config spelled out, in their order (`type` excluded).
      Given: string list }

    /// The keyword arguments the wrapper receives besides `optimizer` (the config minus `type`,
    /// `optimizer`, `constructor` and `paramwise_cfg`), in the config's order.
    member this.WrapperArgs: (string * PyValue) list =
        this.Given
        |> List.choose (fun k ->
            match k with
            | "accumulative_counts" -> this.AccumulativeCounts |> Option.map (fun a -> k, PyValue.Int(int64 a))
            | "clip_grad" -> Some(k, (this.ClipGrad |> Option.map PyValue.Dict |> Option.defaultValue PyValue.None))
            | "loss_scale" -> this.LossScale |> Option.map (fun l -> k, l.ToPyValue())
            | "dtype" -> Some(k, (this.Dtype |> Option.map PyValue.Str |> Option.defaultValue PyValue.None))
            | "skip_nonfinite" -> PyValue.tryFind k this.Extra |> Option.map (fun v -> k, v)
            | _ -> PyValue.tryFind k this.Extra |> Option.map (fun v -> k, v))

    /// The config as MMEngine's dict (type, optimizer, paramwise_cfg and constructor when given, then
    /// the wrapper arguments).
    member this.ToPyValue() =
        PyValue.Dict(
            [ "type", PyValue.Str this.Type ]
            @ (match this.Optimizer with
               | Some o -> [ "optimizer", o.ToPyValue() ]
               | None -> [])
            @ (if this.ParamwiseCfg = PyValue.None then [] else [ "paramwise_cfg", this.ParamwiseCfg ])
            @ [ "constructor", PyValue.Str this.Constructor ]
            @ this.WrapperArgs
        )

/// A config with the given optimizer and everything else default.
let ofOptimizer (optimizer: OptimizerConfig) : OptimWrapperConfig =
    { Type = "OptimWrapper"
      Optimizer = Some optimizer
      ParamwiseCfg = PyValue.None
      Constructor = "DefaultOptimWrapperConstructor"
      AccumulativeCounts = None
      ClipGrad = None
      LossScale = None
      Dtype = None
      SkipNonfinite = NonFiniteGuard.off
      Extra = []
      Given = [] }

/// Checks an `optimizer` dict (path `optimizer`): every problem at once.
let parseOptimizer (path: string) (v: PyValue) : Result<OptimizerConfig, ConfigError list> =
    match v with
    | PyValue.Dict kvs ->
        let typ =
            match PyValue.tryFind "type" kvs with
            | None -> Ok None
            | Some(PyValue.Str s) when s <> "" -> Ok(Some s)
            | Some other ->
                Validated.fail (
                    ConfigError.at (ConfigError.key path "type") ErrorKind.Type
                        (sprintf "expected the name of a registered optimizer, got %s" (PyValue.kind other))
                )
        let args = kvs |> List.filter (fun (k, _) -> k <> "type")
        let argErrors =
            args
            |> List.collect (fun (k, x) ->
                match Map.tryFind k hyperKinds with
                | Some kind -> checkHyper (ConfigError.key path k) kind x
                | None when k = "params" ->
                    [ ConfigError.at (ConfigError.key path k) ErrorKind.Value
                          "parameters come from the model; the config cannot list them" ]
                | None -> [])
        Validated.map2 (fun t () -> { Type = t; Args = args }) typ (Validated.ofErrors () argErrors)
    | other ->
        Error [ ConfigError.at path ErrorKind.Type (sprintf "expected an object, got %s" (PyValue.kind other)) ]

let private wrapperKeys = set [ "type"; "optimizer"; "paramwise_cfg"; "constructor"; "accumulative_counts"; "clip_grad"; "loss_scale"; "dtype" ]

let private ofRules (path: string) (r: Result<'a, (string * RuleError) list>) : Validated<'a> =
    r |> Result.mapError (List.map (fun (k, e) -> ConfigError.ofRule (if k = "" then path else ConfigError.key path k) e))

/// The typed `optim_wrapper` config of a Python-like dict, or every problem found.
let parse (v: PyValue) : Result<OptimWrapperConfig, ConfigError list> =
    match v with
    | PyValue.Dict kvs ->
        let name key fallback : Validated<string> =
            match PyValue.tryFind key kvs with
            | None -> Ok fallback
            | Some(PyValue.Str s) when s <> "" -> Ok s
            | Some other ->
                Validated.fail (ConfigError.at key ErrorKind.Type (sprintf "expected a registered name, got %s" (PyValue.kind other)))
        let optional key (f: PyValue -> Validated<'a option>) : Validated<'a option> =
            match PyValue.tryFind key kvs with
            | None -> Ok None
            | Some x -> f x
        let optimizer = optional "optimizer" (fun o -> parseOptimizer "optimizer" o |> Result.map Some)
        let acc =
            optional "accumulative_counts" (fun x ->
                match x with
                | PyValue.Int i when i <= int64 Int32.MaxValue && i >= int64 Int32.MinValue ->
                    match Accumulation.create (int i) with
                    | Ok _ -> Ok(Some(int i))
                    | Error e -> Validated.fail (ConfigError.ofRule "accumulative_counts" { e with Message = sprintf "%s (got %d)" e.Message i })
                | other ->
                    Validated.fail (
                        ConfigError.at "accumulative_counts" ErrorKind.Type
                            (sprintf "expected a positive integer, got %s" (PyValue.kind other))
                    ))
        // The wrappers' own rules (Clipping, LossScaling, Autocast, NonFiniteGuard), checked now so
        // that every error is reported at once, each at its path.
        let clip =
            optional "clip_grad" (fun x ->
                Clipping.check "clip_grad" x
                |> Result.map (fun parsed ->
                    match parsed, x with
                    | Some _, PyValue.Dict d -> Some d
                    | _ -> None))
        let lossScale =
            optional "loss_scale" (fun x ->
                match LossScaling.checkLossScale "loss_scale" x, x with
                | Ok LossScaling.LossScale.Dynamic, _ -> Ok(Some LossScale.Dynamic)
                | Ok(LossScaling.LossScale.Static f), _ -> Ok(Some(LossScale.Static f))
                | Ok(LossScaling.LossScale.Custom _), PyValue.Dict d -> Ok(Some(LossScale.Custom d))
                | Ok(LossScaling.LossScale.Custom _), _ -> Ok None
                | Error es, _ -> Error es)
        let dtype =
            optional "dtype" (fun x ->
                match Autocast.parseDtype x with
                | Ok d -> Ok(d |> Option.map Autocast.dtypeName)
                | Error e -> Validated.fail (ConfigError.ofRule "dtype" e))
        let guard =
            optional "skip_nonfinite" (fun x -> NonFiniteGuard.parse x |> ofRules "skip_nonfinite" |> Result.map Some)
        validated {
            let! typ = name "type" "OptimWrapper"
            and! constructor = name "constructor" "DefaultOptimWrapperConstructor"
            and! optimizer = optimizer
            and! acc = acc
            and! clip = clip
            and! lossScale = lossScale
            and! dtype = dtype
            and! guard = guard
            return
                { Type = typ
                  Optimizer = optimizer
                  ParamwiseCfg = PyValue.tryFind "paramwise_cfg" kvs |> Option.defaultValue PyValue.None
                  Constructor = constructor
                  AccumulativeCounts = acc
                  ClipGrad = clip
                  LossScale = lossScale
                  Dtype = dtype
                  SkipNonfinite = guard |> Option.defaultValue NonFiniteGuard.off
                  Extra = kvs |> List.filter (fun (k, _) -> not (wrapperKeys.Contains k))
                  Given =
                    kvs
                    |> List.map fst
                    |> List.filter (fun k -> k <> "type" && k <> "optimizer" && k <> "paramwise_cfg" && k <> "constructor") }
        }
    | other -> Error [ ConfigError.at "" ErrorKind.Type (sprintf "optim_wrapper config must be an object, got %s" (PyValue.kind other)) ]

/// The keyword arguments each built-in wrapper takes besides `optimizer`.
let wrapperKeywords : (string * string list) list =
    [ "OptimWrapper", [ "accumulative_counts"; "clip_grad"; "skip_nonfinite" ]
      "AmpOptimWrapper", [ "loss_scale"; "dtype"; "accumulative_counts"; "clip_grad"; "use_fsdp"; "skip_nonfinite" ] ]

/// Keyword arguments a built-in wrapper does not take (Python's "unexpected keyword argument"), with
/// "did you mean", each at its key; [] for a wrapper that is not built in.
let rec checkWrapperArgs (wrapper: string) (args: (string * PyValue) list) : ConfigError list =
    match List.tryFind (fun (n, _) -> n = wrapper) wrapperKeywords with
    | None -> []
    | Some(_, accepted) -> unexpectedKeywords wrapper accepted args

/// Keyword arguments not in `accepted` for the wrapper `wrapper` (built in or not), with "did you mean".
and unexpectedKeywords (wrapper: string) (accepted: string list) (args: (string * PyValue) list) : ConfigError list =
        [ for (k, v) in args do
              if not (List.contains k accepted) then
                  let hint =
                      match Suggest.closest k accepted with
                      | Some c -> sprintf " Did you mean '%s'?" c
                      | None ->
                          match wrapperKeywords |> List.tryFind (fun (n, ks) -> n <> wrapper && List.contains k ks) with
                          | Some(other, _) -> sprintf " ('%s' is an argument of %s)" k other
                          | None -> ""
                  yield
                      ConfigError.at k ErrorKind.Type
                          (sprintf "%s.__init__() got an unexpected keyword argument '%s' (it takes: %s)%s" wrapper k (String.Join(", ", accepted)) hint)
              elif k = "use_fsdp" && v = PyValue.Bool true then
                  yield ConfigError.at k ErrorKind.Value "use_fsdp=True needs FSDP's ShardedGradScaler, which TorchSharp does not have" ]

/// Parses JSON text straight to the typed config.
let parseText (text: string) : Result<OptimWrapperConfig, ConfigError list> =
    match parseJson text with
    | Ok v -> parse v
    | Error e -> Error [ e ]

/// Torch switches Optim has no counterpart for: accepted when off.
let torchOnlySwitches = [ "differentiable"; "capturable" ]

/// PyTorch's implementation switches, which Optim's optimizers honour (`Optimizers.implementation`).
let implementationSwitches = [ "foreach"; "fused" ]

let private optionalBoolArg (key: string) (args: (string * PyValue) list) =
    match PyValue.tryFind key args with
    | Some(PyValue.Bool b) -> Some b
    | _ -> None

/// The keyword arguments a PyTorch optimizer that TorchSharp provides (`Optimizers.all`) would not
/// take, relative to the `optimizer` dict: unknown keys (Python's "unexpected keyword argument"),
/// torch-only switches turned on, LBFGS's line search, and a missing required `lr` (SGD).
let checkOptimizerArgs (name: string) (args: (string * PyValue) list) : ConfigError list =
    match Optimizers.tryHyperParameters name with
    | None -> [ ConfigError.at "type" ErrorKind.Key (sprintf "%s is not an optimizer TorchSharp provides" name) ]
    | Some hyper ->
        let known = hyper |> List.map (fun h -> h.Name)
        [ for (k, v) in args do
              if List.contains k known then ()
              elif List.contains k implementationSwitches then
                  match v with
                  | PyValue.None | PyValue.Bool _ -> ()
                  | other -> yield ConfigError.at k ErrorKind.Type (sprintf "expected true, false or null, got %s" (PyValue.kind other))
              elif List.contains k torchOnlySwitches then
                  match v with
                  | PyValue.None | PyValue.Bool false -> ()
                  | _ ->
                      yield ConfigError.at k ErrorKind.Type
                          (sprintf "'%s' is a PyTorch-only switch that TorchSharp's %s does not have; only false/null are accepted" k name)
              else
                  yield ConfigError.at k ErrorKind.Type
                      (sprintf "%s.__init__() got an unexpected keyword argument '%s' (it takes: %s)%s" name k (String.Join(", ", known)) (Suggest.didYouMean k known))
          if name <> "LBFGS" then
              match Optimizers.implementation name (optionalBoolArg "foreach" args) (optionalBoolArg "fused" args) with
              | Ok _ -> ()
              | Error message -> yield ConfigError.at "fused" ErrorKind.Value message
          else
              for k in implementationSwitches do
                  match PyValue.tryFind k args with
                  | Some(PyValue.Bool true) -> yield ConfigError.at k ErrorKind.Value (sprintf "LBFGS has no '%s' implementation" k)
                  | _ -> ()
          if name = "LBFGS" then
              match PyValue.tryFind "line_search_fn" args with
              | Some(PyValue.Str _) ->
                  yield ConfigError.at "line_search_fn" ErrorKind.Value "TorchSharp's LBFGS has no line search; line_search_fn must be null"
              | _ -> ()
          for h in hyper do
              if h.Name = "lr" && h.Default = PyValue.None then
                  match PyValue.tryFind "lr" args with
                  | None | Some PyValue.None ->
                      yield ConfigError.at "lr" ErrorKind.Value "parameter group didn't specify a value of required optimization parameter lr"
                  | Some _ -> () ]

/// What DefaultOptimWrapperConstructor checks when it is created plus the optimizer
/// `type` it needs when called: the validated paramwise settings, or every problem (paths from the
/// config root).
let defaultConstructorSettings (cfg: OptimWrapperConfig) : Result<OptimizerConfig * Paramwise.Settings, ConfigError list> =
    match cfg.Optimizer with
    | None ->
        Error [ ConfigError.at "optimizer" ErrorKind.Assertion "`optim_wrapper_cfg` must contain \"optimizer\" config" ]
    | Some optimizer ->
        let typeErrors =
            match optimizer.Type with
            | Some _ -> []
            | None ->
                [ ConfigError.at "optimizer.type" ErrorKind.Key
                      "`cfg` or `default_args` must contain the key \"type\" (the name of a registered optimizer, e.g. \"SGD\")" ]
        match Paramwise.settingsOf cfg.ParamwiseCfg optimizer.BaseWd, typeErrors with
        | Ok settings, [] -> Ok(optimizer, settings)
        | Ok _, es -> Error es
        | Error pes, es -> Error((pes |> List.map (ConfigError.under "paramwise_cfg")) @ es)

/// The value checks of a config for the built-in optimizer `name` (None for a user optimizer), with
/// the parameters' largest magnitude `limit` (`OptimizerRules.float32Limit` unless a parameter is
/// float64): PyTorch's range checks and finiteness on `optimizer.*`, and `ConfigLint.paramwise`
/// (errors, and warnings that `paramwise_cfg.strict` turns into errors). Paths from the root.
let checkValues (limit: float) (name: string option) (cfg: OptimWrapperConfig) : ConfigLint.Lint =
    let optimizerErrors =
        match cfg.Optimizer, name with
        | Some o, Some n ->
            let given = o.Args |> List.filter (fun (_, v) -> v <> PyValue.None)
            OptimizerRules.check limit n (OptimizerRules.effective n [ given ]) (List.map fst given)
            |> List.map (fun (k, e) -> ConfigError.ofRule (ConfigError.key "optimizer" k) e)
        | _ -> []
    let hyper = name |> Option.map (fun n -> n, Optimizers.order n)
    let lint = ConfigLint.paramwise limit hyper cfg.ParamwiseCfg
    ConfigLint.escalate (ConfigLint.isStrict cfg.ParamwiseCfg) { lint with Errors = optimizerErrors @ lint.Errors }

/// The top-level key (and, under `optimizer`, the member) an error path points into: what to drop so
/// that the rest of the config can still be checked.
let private dropFor (path: string) (v: PyValue) : PyValue option =
    let segment (p: string) =
        let stop = p.IndexOfAny [| '.'; '[' |]
        if stop < 0 then p, "" else p.Substring(0, stop), p.Substring(stop)
    match v with
    | PyValue.Dict kvs when path <> "" ->
        let top, rest = segment path
        match PyValue.tryFind top kvs, rest with
        | Some(PyValue.Dict inner), r when top = "optimizer" && r.StartsWith "." ->
            let sub, _ = segment (r.Substring 1)
            if sub = "type" || not (inner |> List.exists (fun (k, _) -> k = sub)) then None
            else Some(PyValue.Dict(PyValue.set top (PyValue.Dict(PyValue.remove sub inner)) kvs))
        | Some _, _ -> Some(PyValue.Dict(PyValue.remove top kvs))
        | None, _ -> None
    | _ -> None

/// `parse`, and when it fails, the config that remains once the offending keys are dropped (so that
/// the value checks can report their problems in the same exception: all errors at once), if any.
let parseKeepingRest (v: PyValue) : Result<OptimWrapperConfig, ConfigError list * OptimWrapperConfig option> =
    match parse v with
    | Ok c -> Ok c
    | Error errors ->
        let rec retry (v: PyValue) (n: int) =
            match parse v with
            | Ok c -> Some c
            | Error es when n > 0 ->
                match es |> List.fold (fun acc e -> acc |> Option.bind (dropFor e.Path)) (Some v) with
                | Some smaller -> retry smaller (n - 1)
                | None -> None
            | Error _ -> None
        Error(errors, retry v 8)
