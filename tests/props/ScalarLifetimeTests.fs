/// Regression: TorchSharp 0.107's Scalar is a finalizable wrapper of a native c10::Scalar, not tracked by
/// DisposeScope. An implicit `double -> Scalar` at a call site is unreachable while TorchSharp's P/Invoke runs,
/// so a GC plus the finalizer thread could free it mid-call (libtorch then read a garbage dtype or value:
/// "Expected false to be true ... toFloat", "Unknown scalar type"). The per-tensor optimizer rules keep their
/// Scalars alive in `using` locals; this runs them while another thread forces collections and finalizers,
/// and expects the same bits as an undisturbed run.
module Optim.Tests.ScalarLifetimeTests

open System
open System.Collections.Generic
open System.Threading
open Expecto
open TorchSharp
open Optim

let private cases : (string * (string * obj) list) list =
    [ "RMSprop", [ "lr", box 0.01; "momentum", box 0.9; "centered", box true; "weight_decay", box 0.01 ]
      "Rprop", [ "lr", box 0.01 ]
      "Adadelta", [ "lr", box 1.0; "weight_decay", box 0.01 ]
      "NAdam", [ "lr", box 0.002; "weight_decay", box 0.01 ]
      "RAdam", [ "lr", box 0.001; "weight_decay", box 0.01 ]
      "Adamax", [ "lr", box 0.002; "weight_decay", box 0.01 ]
      "ASGD", [ "lr", box 0.01; "t0", box 5.0; "weight_decay", box 0.01 ]
      "Adagrad", [ "lr", box 0.01; "weight_decay", box 0.01 ]
      "SGD", [ "lr", box 0.01; "momentum", box 0.9; "weight_decay", box 0.01 ] ]

let private steps = 150
let private size = 4096

/// The parameter after `steps` steps of deterministic gradients.
let private run name (kwargs: (string * obj) list) : float32[] =
    let rng = Random(1234)
    let grads = Array.init steps (fun _ -> Array.init size (fun _ -> float32 (rng.NextDouble() * 2.0 - 1.0)))
    use init = torch.linspace(-1.0, 1.0, int64 size, dtype = torch.float32)
    let p = new Modules.Parameter(init.clone())
    let kw = Dictionary<string, obj>()
    for k, v in kwargs do kw.[k] <- v
    kw.["foreach"] <- box false
    let optimizer = BuiltinOptimizers.Create(name, [| PlainParamGroup([], [| p |]) :> IParamGroup |], kw)
    for s in 0 .. steps - 1 do
        use scope = torch.NewDisposeScope()
        optimizer.zero_grad()
        use g = torch.tensor(grads.[s])
        (p * g).sum().backward()
        optimizer.step() |> ignore
    let result = p.data<float32>().ToArray()
    optimizer.Dispose()
    result

[<Tests>]
let tests =
    testSequenced <| testList "scalar lifetime under GC pressure" [
        test "per-tensor optimizer steps give the same bits while another thread forces GCs and finalizers" {
            let undisturbed = cases |> List.map (fun (n, kw) -> n, run n kw)
            use stop = new CancellationTokenSource(TimeSpan.FromSeconds 60.0) // bounded even if the steps hang
            let collector =
                Thread((fun () ->
                    while not stop.IsCancellationRequested do
                        GC.Collect()
                        GC.WaitForPendingFinalizers()), IsBackground = true)
            collector.Start()
            try
                for (n, kw), (_, expected) in List.zip cases undisturbed do
                    let actual = run n kw
                    Expect.isTrue (Array.forall2 (fun (a: float32) (e: float32) -> BitConverter.SingleToInt32Bits a = BitConverter.SingleToInt32Bits e) actual expected)
                        (sprintf "%s: same bits with and without forced GCs" n)
            finally
                stop.Cancel()
                collector.Join()
        }
    ]
