// A short training run with everything a config can switch on, built from JSON as MMEngine builds it:
// AmpOptimWrapper (bf16 autocast, dynamic loss scaling), gradient accumulation, clipping by norm,
// custom_keys (the head learns at half the rate), and a LinearLR warm-up followed by CosineAnnealingLR.
//   dotnet fsi build.fsx pack && dotnet fsi examples/scripts/recipe.fsx
#r "nuget: Optim, 0.1.0"
#r "nuget: libtorch-cpu-linux-x64, 2.10.0"   // the backend: pick the one for your machine

open TorchSharp
open Optim

let optimWrapperCfg = """
{ "type": "AmpOptimWrapper", "dtype": "bfloat16",
  "optimizer": { "type": "SGD", "lr": 0.05, "momentum": 0.9 },
  "accumulative_counts": 2,
  "clip_grad": { "max_norm": 1.0 },
  "paramwise_cfg": { "custom_keys": { "head": { "lr_mult": 0.5 } } } }"""

let paramSchedulerCfg = """
[ { "type": "LinearLR", "start_factor": 0.1, "by_epoch": false, "begin": 0, "end": 10 },
  { "type": "CosineAnnealingLR", "T_max": 30, "eta_min": 0.001, "by_epoch": false, "begin": 10, "end": 40 } ]"""

torch.manual_seed 0L |> ignore
let x = torch.randn(128L, 8L)
let y = (x.matmul(torch.linspace(-1.0, 1.0, 8L).reshape(8L, 1L)) + 0.5).tanh()
let layer name (m: torch.nn.Module<torch.Tensor, torch.Tensor>) = name, m
let model = torch.nn.Sequential(layer "backbone" (torch.nn.Linear(8L, 32L)), layer "act" (torch.nn.ReLU()), layer "head" (torch.nn.Linear(32L, 1L)))

let optim_wrapper = Builder.build_optim_wrapper(model, optimWrapperCfg)
let schedulers = ParamSchedulers.build_list(paramSchedulerCfg, SchedulerTarget.Of optim_wrapper)
let iterations = 40
optim_wrapper.initialize_count_status(model, 0, iterations)
// One group per parameter (backbone.weight, backbone.bias, head.weight, head.bias): the head's lr is halved.
printfn "%O" optim_wrapper.param_groups.[2]
let lossAt () =
    use _ = torch.no_grad()
    torch.nn.functional.mse_loss(model.forward x, y).item<float32>()
let before = lossAt ()
let mutable warmedUp = Unchecked.defaultof<HyperParameterValues>
for i in 1 .. iterations do
    use scope = torch.NewDisposeScope()
    let output =
        use _ = optim_wrapper.optim_context model
        model.forward x
    optim_wrapper.update_params(torch.nn.functional.mse_loss(output.float(), y))
    for s in schedulers do s.step()
    if i = 10 then warmedUp <- optim_wrapper.get_lr()
let after = lossAt ()
let lrs = optim_wrapper.get_lr()
printfn "%O" warmedUp                           // after the warm-up: base lr 0.05, the head 0.025
if not (after < 0.5f * before) then failwithf "recipe: loss did not halve (%g -> %g)" before after
let warm = warmedUp.["lr"]
if abs (warm.[0] - 0.05) > 1e-9 || abs (warm.[2] - 0.025) > 1e-9 then failwithf "recipe: lr after warm-up should be 0.05 (backbone) and 0.025 (head): %O" warmedUp
if abs (lrs.["lr"].[0] - 0.001) > 1e-3 then failwithf "recipe: the cosine schedule should end near eta_min 0.001: %O" lrs
printfn "recipe.fsx: mse %.4f -> %.4f in %d iterations (bf16 AMP, accumulation 2, clip 1.0), lr after warm-up %.3f/%.4f (backbone/head), final %.5f" before after iterations warm.[0] warm.[2] lrs.["lr"].[0]
