// The seed's first example in F# Interactive: plain TorchSharp SGD (1.1), the same loop with
// OptimWrapper (1.2), and get_lr/get_momentum printed as MMEngine prints them.
//   dotnet fsi build.fsx pack && dotnet fsi examples/scripts/quickstart.fsx
// (nuget.config beside this script adds ../../artifacts as a package source.)
#r "nuget: Optim, 0.1.0"
#r "nuget: libtorch-cpu-linux-x64, 2.10.0"   // the backend: pick the one for your machine

open TorchSharp
open Optim
type F = torch.nn.functional

torch.manual_seed 0L |> ignore
let inputs = List.replicate 10 (torch.zeros(10L, 1L, 1L))
let targets = List.replicate 10 (torch.ones(10L, 1L, 1L))
let model = torch.nn.Linear(1L, 1L)
let optimizer = torch.optim.SGD(model.parameters(), 0.01)

// 1.1 plain TorchSharp
optimizer.zero_grad()
let lossOf (input: torch.Tensor) (target: torch.Tensor) = F.l1_loss(model.forward input, target)
let before = (lossOf inputs[0] targets[0]).item<float32>()
for input, target in List.zip inputs targets do
    let loss = lossOf input target
    loss.backward()
    optimizer.step() |> ignore
    optimizer.zero_grad()

// 1.2 the same with OptimWrapper: update_params back-propagates, steps and zeroes the gradients.
let optim_wrapper = OptimWrapper(optimizer = optimizer)
for input, target in List.zip inputs targets do
    optim_wrapper.update_params(lossOf input target)
let after = (lossOf inputs[0] targets[0]).item<float32>()

let group0 = (OptimizerGroups.Of optimizer).[0]
printfn "%s" (Py.Repr group0.["lr"])                           // 0.01
printfn "%s" (Py.Repr group0.["momentum"])                     // 0
printfn "%O" (optim_wrapper.get_lr())                           // {'lr': [0.01]}
printfn "%O" (optim_wrapper.get_momentum())                     // {'momentum': [0]}
if not (after < before) then failwithf "quickstart: loss did not drop (%g -> %g)" before after
printfn "quickstart.fsx: l1 loss %.4f -> %.4f in 20 steps, get_lr() = %O" before after (optim_wrapper.get_lr())
