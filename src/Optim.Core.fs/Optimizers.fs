/// The optimizers TorchSharp provides, described as PyTorch describes them: hyper-parameters under
/// PyTorch's names, with PyTorch's defaults (including their Python types), in PyTorch's order.
/// This order is what `defaults`, `base_param_settings` and reprs show.
module Optim.Core.Optimizers

/// One hyper-parameter: its PyTorch name and default (`PyValue.None` for "required", e.g. SGD's lr).
type HyperParameter = { Name: string; Default: PyValue }

let private hp name dflt = { Name = name; Default = dflt }
let private f (x: float) = PyValue.Float x
let private i (x: int64) = PyValue.Int x
let private b (x: bool) = PyValue.Bool x
let private pair (x: float) (y: float) = PyValue.Tuple [ PyValue.Float x; PyValue.Float y ]

/// PyTorch's optimizers that TorchSharp implements, by PyTorch class name, with the hyper-parameters
/// TorchSharp supports (torch-only switches such as `foreach` and `differentiable` are left out).
let all : (string * HyperParameter list) list =
    [ "SGD", [ hp "lr" PyValue.None; hp "momentum" (i 0L); hp "dampening" (i 0L); hp "weight_decay" (i 0L); hp "nesterov" (b false); hp "maximize" (b false) ]
      "Adam", [ hp "lr" (f 0.001); hp "betas" (pair 0.9 0.999); hp "eps" (f 1e-08); hp "weight_decay" (i 0L); hp "amsgrad" (b false); hp "maximize" (b false) ]
      "AdamW", [ hp "lr" (f 0.001); hp "betas" (pair 0.9 0.999); hp "eps" (f 1e-08); hp "weight_decay" (f 0.01); hp "amsgrad" (b false); hp "maximize" (b false) ]
      "Adagrad", [ hp "lr" (f 0.01); hp "lr_decay" (i 0L); hp "weight_decay" (i 0L); hp "initial_accumulator_value" (i 0L); hp "eps" (f 1e-10) ]
      "Adadelta", [ hp "lr" (f 1.0); hp "rho" (f 0.9); hp "eps" (f 1e-06); hp "weight_decay" (i 0L); hp "maximize" (b false) ]
      "Adamax", [ hp "lr" (f 0.002); hp "betas" (pair 0.9 0.999); hp "eps" (f 1e-08); hp "weight_decay" (i 0L) ]
      "ASGD", [ hp "lr" (f 0.01); hp "lambd" (f 0.0001); hp "alpha" (f 0.75); hp "t0" (f 1000000.0); hp "weight_decay" (i 0L); hp "maximize" (b false) ]
      "NAdam", [ hp "lr" (f 0.002); hp "betas" (pair 0.9 0.999); hp "eps" (f 1e-08); hp "weight_decay" (i 0L); hp "momentum_decay" (f 0.004) ]
      "RAdam", [ hp "lr" (f 0.001); hp "betas" (pair 0.9 0.999); hp "eps" (f 1e-08); hp "weight_decay" (i 0L) ]
      "RMSprop", [ hp "lr" (f 0.01); hp "alpha" (f 0.99); hp "eps" (f 1e-08); hp "weight_decay" (i 0L); hp "momentum" (i 0L); hp "centered" (b false); hp "maximize" (b false) ]
      "Rprop", [ hp "lr" (f 0.01); hp "etas" (pair 0.5 1.2); hp "step_sizes" (pair 1e-06 50.0); hp "maximize" (b false) ]
      "LBFGS", [ hp "lr" (i 1L); hp "max_iter" (i 20L); hp "max_eval" PyValue.None; hp "tolerance_grad" (f 1e-07); hp "tolerance_change" (f 1e-09); hp "history_size" (i 100L); hp "line_search_fn" PyValue.None ] ]

/// The PyTorch class names, in the order above.
let names = all |> List.map fst

/// The hyper-parameters of an optimizer by PyTorch class name.
let tryHyperParameters (name: string) = all |> List.tryFind (fun (n, _) -> n = name) |> Option.map snd

/// The hyper-parameter order of an optimizer (`lr` first), or [] for an unknown name.
let order (name: string) =
    tryHyperParameters name |> Option.map (List.map (fun h -> h.Name)) |> Option.defaultValue []

/// The momentum MMEngine reports for a param group (`get_momentum`): `momentum` if the group has it,
/// else `betas[0]` if it has betas, else 0.
let momentumOf (tryGet: string -> PyValue option) : PyValue =
    match tryGet "momentum" with
    | Some m -> m
    | Option.None ->
        match tryGet "betas" with
        | Some (PyValue.Tuple (b0 :: _)) | Some (PyValue.List (b0 :: _)) -> b0
        | _ -> PyValue.Int 0L

/// A hyper-parameter value with PyTorch's Python type: TorchSharp keeps every number as a double,
/// so a value still equal to an integer default (SGD's `momentum=0`) is reported as that int, as
/// PyTorch would print it (`{'momentum': [0]}`).
let pythonTyped (optimizerName: string) (key: string) (value: PyValue) : PyValue =
    let intDefault =
        tryHyperParameters optimizerName
        |> Option.bind (List.tryFind (fun h -> h.Name = key))
        |> Option.bind (fun h -> match h.Default with PyValue.Int i -> Some i | _ -> Option.None)
    match intDefault, value with
    | Some i, PyValue.Float f when f = float i -> PyValue.Int i
    | _ -> value

/// How an optimizer's `step` runs (PyTorch's `foreach` and `fused` switches).
[<RequireQualifiedAccess>]
type Implementation =
    /// libtorch's `_fused_<name>_` kernel: one call per bucket of tensors (same device, dtype, hyper-parameters).
    | Fused
    /// The multi-tensor path: PyTorch's per-tensor arithmetic run bucket by bucket (device, dtype, hyper-parameters).
    | Foreach
    /// PyTorch's per-tensor loop, group by group, parameter by parameter.
    | ForLoop

/// The optimizers libtorch has a fused kernel for (PyTorch's `fused=True` ones).
let fusedCapable = [ "SGD"; "Adam"; "AdamW"; "Adagrad" ]

/// Whether `name` has a fused kernel.
let hasFused (name: string) = List.contains name fusedCapable

/// The implementation for PyTorch's `foreach` and `fused` arguments (None = not given):
/// `fused=True` is the fused kernel (an error for optimizers without one, or with `foreach=True`);
/// `foreach=True` the multi-tensor path; `foreach=False` (fused not True) the per-tensor loop;
/// neither given: the fastest implementation proven equal to PyTorch's, which is the fused kernel
/// where one exists, else the multi-tensor path; `fused=False` alone: the multi-tensor path.
let implementation (name: string) (foreach: bool option) (fused: bool option) : Result<Implementation, string> =
    match foreach, fused with
    | Some true, Some true -> Error "`fused` and `foreach` cannot be `True` together."
    | _, Some true when not (hasFused name) -> Error(sprintf "`fused=True` is not supported for %s (libtorch has fused kernels for %s)" name (String.concat ", " fusedCapable))
    | _, Some true -> Ok Implementation.Fused
    | Some true, _ -> Ok Implementation.Foreach
    | Some false, _ -> Ok Implementation.ForLoop
    | None, Some false -> Ok Implementation.Foreach
    | None, None -> Ok(if hasFused name then Implementation.Fused else Implementation.Foreach)
