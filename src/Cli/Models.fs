/// The models the CLI knows by name: its Fashion-MNIST CNN (the one `train` trains) and two
/// TorchVision classics for `inspect`.
module Optim.Cli.Models

open TorchSharp
open type TorchSharp.torch.nn

let private seq (children: (string * torch.nn.Module<torch.Tensor, torch.Tensor>) list) =
    Sequential(children |> List.map (fun (n, m) -> struct (n, m)) |> Array.ofList)

/// A small CNN for 28x28 grayscale images and 10 classes: a 3x3 conv stem, two depthwise-separable
/// blocks (3x3 depthwise conv then 1x1 pointwise conv, each with BatchNorm and ReLU), 2x2 max
/// pooling after each stage (28 -> 14 -> 7 -> 3), a hidden Linear layer and the Linear `head`
/// (about 85k parameters). Parameter names: `stem.conv.weight`, `stem.bn.weight`,
/// `block1.dw.conv.weight`, `block1.pw.bn.bias`, ..., `fc.linear.weight`, `head.weight`,
/// `head.bias` (what paramwise_cfg's custom_keys match).
let fashionCnn () : torch.nn.Module<torch.Tensor, torch.Tensor> =
    let stage (name: string) (layers: (string * torch.nn.Module<torch.Tensor, torch.Tensor>) list) =
        name, seq (layers @ [ "pool", MaxPool2d(2L) ]) :> torch.nn.Module<torch.Tensor, torch.Tensor>
    let convBnRelu (inC: int64) (outC: int64) (kernel: int64) (groups: int64) =
        [ "conv", Conv2d(inC, outC, kernel, padding = kernel / 2L, groups = groups, bias = false) :> torch.nn.Module<torch.Tensor, torch.Tensor>
          "bn", BatchNorm2d(outC)
          "relu", ReLU() ]
    let separable (inC: int64) (outC: int64) =
        [ "dw", seq (convBnRelu inC inC 3L inC) :> torch.nn.Module<torch.Tensor, torch.Tensor>
          "pw", seq (convBnRelu inC outC 1L 1L) ]
    seq [ stage "stem" (convBnRelu 1L 16L 3L 1L)
          stage "block1" (separable 16L 32L)
          stage "block2" (separable 32L 64L)
          "flatten", Flatten()
          "fc", seq [ "linear", Linear(64L * 3L * 3L, 128L); "relu", ReLU() ]
          "head", Linear(128L, 10L) ]

/// Names accepted by `--model`.
let names = [ "fashion_cnn"; "resnet18"; "mobilenet_v2" ]

/// The model called `name`, or None.
let byName (name: string) : torch.nn.Module option =
    match name with
    | "fashion_cnn" -> Some(fashionCnn () :> torch.nn.Module)
    | "resnet18" -> Some(torchvision.models.resnet18() :> torch.nn.Module)
    | "mobilenet_v2" -> Some(torchvision.models.mobilenet_v2() :> torch.nn.Module)
    | _ -> None
