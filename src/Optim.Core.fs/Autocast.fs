/// Autocast rules: which device and dtype an autocast scope uses, and
/// AmpOptimWrapper's `dtype` argument. The facade enters libtorch's autocast with the plan chosen here.
///
/// Extension over MMEngine (decided for libtorch 2.10): CPU autocast accepts float16 as well as
/// bfloat16. libtorch 2.10's CPU autocast casts its lower-precision op list to whatever dtype is set
/// (torch.autocast('cpu') lists bfloat16 and float16 as supported since torch 2.4), and its CPU
/// Linear/Conv2d kernels run in float16, forward and backward.
module Optim.Core.Autocast

/// The lower-precision dtypes a cast can target (MMEngine's `valid_dtypes`).
[<RequireQualifiedAccess>]
type CastDtype =
    | Float16
    | BFloat16
    | Float32
    | Float64

/// The names AmpOptimWrapper accepts for `dtype`, in MMEngine's order.
let dtypeNames =
    [ "float16", CastDtype.Float16
      "bfloat16", CastDtype.BFloat16
      "float32", CastDtype.Float32
      "float64", CastDtype.Float64 ]

/// The torch name of a dtype ("bfloat16").
let dtypeName (d: CastDtype) =
    dtypeNames |> List.find (fun (_, x) -> x = d) |> fst

let private validDtypes =
    "(" + (dtypeNames |> List.map (fun (n, _) -> "'" + n + "'") |> String.concat ", ") + ")"

/// The AssertionError for a `dtype` that is neither null, a name nor a torch dtype (shown as given).
let invalidDtypeKind (shown: string) =
    RuleError.assertion (sprintf "dtype should be None or instance of torch.dtype, got %s" shown)

/// Parses AmpOptimWrapper's `dtype`: null, or one of the names. Other strings and other values are
/// the AssertionErrors MMEngine raises, naming the value. (A torch dtype is mapped to its name by
/// the facade before it gets here.)
let parseDtype (v: PyValue) : Result<CastDtype option, RuleError> =
    match v with
    | PyValue.None -> Ok None
    | PyValue.Str s ->
        match dtypeNames |> List.tryFind (fun (n, _) -> n = s) with
        | Some(_, d) -> Ok(Some d)
        | None -> Error(RuleError.assertion (sprintf "dtype should be any of %s, got %s" validDtypes s))
    | other -> Error(invalidDtypeKind (PyFormat.str other))

/// Where an autocast scope acts.
[<RequireQualifiedAccess>]
type DeviceKind =
    | Cpu
    | Cuda

/// What entering an autocast scope does.
[<RequireQualifiedAccess>]
type Plan =
    /// Nothing at all (a disabled scope on a device type autocast does not know).
    | Passthrough
    /// libtorch's autocast on `Device`: enabled or not, with `Dtype` as the fast dtype
    /// (`None`: keep the device's current autocast dtype, float16 by default on CUDA).
    | Scope of Device: DeviceKind * Dtype: CastDtype option * Enabled: bool

/// `get_device()` for autocast: CUDA when it is available, else the CPU.
let defaultDeviceType (cudaAvailable: bool) = if cudaAvailable then "cuda" else "cpu"

/// mmengine.runner.amp.autocast(device_type, dtype, enabled): the scope to enter.
/// * device_type None → CUDA if available, else CPU.
/// * 'cuda': dtype None keeps CUDA's autocast dtype; any dtype is passed on.
/// * 'cpu': dtype None → bfloat16; bfloat16 and float16 are accepted; any other dtype is an
///   AssertionError, also when `enabled` is false (as in MMEngine).
/// * any other device type: disabled → no scope at all; enabled → ValueError.
let resolve (cudaAvailable: bool) (deviceType: string option) (dtype: CastDtype option) (enabled: bool) : Result<Plan, RuleError> =
    let device = deviceType |> Option.defaultValue (defaultDeviceType cudaAvailable)
    match device with
    | "cuda" -> Ok(Plan.Scope(DeviceKind.Cuda, dtype, enabled))
    | "cpu" ->
        match dtype with
        | None -> Ok(Plan.Scope(DeviceKind.Cpu, Some CastDtype.BFloat16, enabled))
        | Some(CastDtype.BFloat16 | CastDtype.Float16 as d) -> Ok(Plan.Scope(DeviceKind.Cpu, Some d, enabled))
        | Some d ->
            Error(
                RuleError.assertion (
                    sprintf "In CPU autocast, only support `torch.bfloat16` dtype (and `torch.float16` in Optim), got torch.%s" (dtypeName d)
                )
            )
    | _ when not enabled -> Ok Plan.Passthrough
    | other -> Error(RuleError.value (sprintf "User specified autocast device_type must be cuda or cpu, but got %s" other))

/// AmpOptimWrapper's `optim_context`: autocast on the parameters' device type with `cast_dtype`.
/// Unlike `resolve`, every cast dtype is allowed on the CPU too (as CUDA allows them): float32 makes
/// every autocast cast a no-op (an fp32 run through the AMP machinery), float64 casts up.
/// dtype None: bfloat16 on the CPU, the current CUDA autocast dtype (float16) on CUDA.
let forWrapper (deviceType: string) (dtype: CastDtype option) : Result<Plan, RuleError> =
    match deviceType, dtype with
    | "cpu", None -> Ok(Plan.Scope(DeviceKind.Cpu, Some CastDtype.BFloat16, true))
    | "cpu", d -> Ok(Plan.Scope(DeviceKind.Cpu, d, true))
    | "cuda", d -> Ok(Plan.Scope(DeviceKind.Cuda, d, true))
    | other, _ ->
        Error(RuleError.value (sprintf "AmpOptimWrapper: autocast is only available for parameters on cuda or cpu, but they are on %s" other))
