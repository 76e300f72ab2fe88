/// The platform itself: TorchSharp's native library loads (the GLIBCXX fix) and computes.
module Optim.Tests.PlatformTests

open Expecto
open TorchSharp

[<Tests>]
let tests =
    testList "platform" [
        test "TorchSharp loads its native library and computes a matmul" {
            use a = torch.tensor([| 1.0f; 2.0f; 3.0f; 4.0f |]).reshape(2L, 2L)
            use b = a.matmul(a)
            Expect.equal (b.data<float32>().ToArray()) [| 7.0f; 10.0f; 15.0f; 22.0f |] "matmul of [[1,2],[3,4]] with itself"
        }
        test "autograd runs through the native backend" {
            use x = torch.tensor([| 3.0f |], requires_grad = true)
            use y = (x * x).sum()
            y.backward()
            Expect.equal (x.grad.item<float32>()) 6.0f "d(x^2)/dx at 3"
        }
    ]
