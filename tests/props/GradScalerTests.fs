/// GradScaler on real tensors: the core's rule against libtorch's `_amp_update_scale_` kernel, the
/// fused unscale-and-check, skipped steps, and the GradScaler checks listed at the end of TESTS.md.
module Optim.Tests.GradScalerTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open type TorchSharp.torch.nn
open Optim
open Optim.Core
open Optim.Tests.AmpHelpers

/// A small MLP on the CPU with a fixed seed.
let private mlp (seed: int64) =
    torch.manual_seed seed |> ignore
    Sequential(Linear(4L, 8L), ReLU(), Linear(8L, 2L)) :> Module<torch.Tensor, torch.Tensor>

let private paramsOf (m: Module<torch.Tensor, torch.Tensor>) = m.parameters() |> Seq.toList

/// Every parameter's bits (float32 as int32 words), for bit-identical comparisons.
let private snapshot (m: Module<torch.Tensor, torch.Tensor>) =
    paramsOf m |> List.map (fun p -> p.detach().clone().data<float32>().ToArray() |> Array.map bits)

let private lossOf (m: Module<torch.Tensor, torch.Tensor>) (seed: int64) =
    torch.manual_seed seed |> ignore
    let x = torch.randn(16L, 4L)
    let y = torch.randn(16L, 2L)
    functional.mse_loss(m.call x, y)

/// One GradScaler iteration: scale, backward, optional poison of one grad element, step, update.
let private iteration (scaler: GradScaler) (opt: torch.optim.Optimizer) (m: Module<torch.Tensor, torch.Tensor>) (seed: int64) (poison: (int * float32) option) =
    opt.zero_grad()
    let loss = lossOf m seed
    (scaler.scale loss).backward()
    match poison with
    | Some(i, v) ->
        let ps = paramsOf m
        let p = ps.[i % ps.Length]
        use g = p.grad
        use flat = g.view(-1L)
        flat.[0L] <- torch.tensor(v)
    | None -> ()
    scaler.step opt |> ignore
    scaler.update()

/// Inputs for the kernel comparison: a float32 initial scale over the whole exponent range,
/// growth/backoff factors (exact and inexact), small growth intervals, and a found_inf sequence.
type private KernelCase =
    { InitScale: float32
      Growth: float
      Backoff: float
      Interval: int64
      Flags: bool list }

let private kernelCase =
    gen {
        let! exponent = Gen.choose (-40, 127)
        let! mantissa = Gen.choose (0, (1 <<< 23) - 1)
        let initScale = BitConverter.Int32BitsToSingle(((exponent + 127) <<< 23) ||| mantissa)
        let! growth = Gen.oneof [ Gen.constant 2.0; Gen.choose (1, 3000000) |> Gen.map (fun i -> 1.0 + float i / 1e6) ]
        let! backoff = Gen.oneof [ Gen.constant 0.5; Gen.choose (0, 999999) |> Gen.map (fun i -> float i / 1e6) ]
        let! interval = Gen.choose (0, 6)
        let! length = Gen.choose (0, 80)
        let! flags = Gen.listOfLength length (Gen.frequency [ 4, Gen.constant false; 1, Gen.constant true ])
        return { InitScale = initScale; Growth = growth; Backoff = backoff; Interval = int64 interval; Flags = flags }
    }

/// Runs libtorch's `_amp_update_scale_` over the flags: the (scale bits, tracker) after each update.
let private kernelTrace (c: KernelCase) =
    use scale = torch.tensor(c.InitScale)
    use tracker = torch.tensor(0L, torch.ScalarType.Int32)
    use found = torch.zeros([||], torch.ScalarType.Float32)
    [ for f in c.Flags do
          found.fill_(if f then 1.0f else 0.0f) |> ignore
          AmpNative.UpdateScale(scale, tracker, found, c.Growth, c.Backoff, c.Interval)
          yield bits (scale.item<float32>()), tracker.item<int>() ]

let private coreTrace (c: KernelCase) =
    let start: LossScaling.State =
        { Scale = c.InitScale; GrowthFactor = c.Growth; BackoffFactor = c.Backoff
          GrowthInterval = c.Interval; Tracker = 0; Enabled = true }
    c.Flags
    |> List.scan (fun s f -> LossScaling.update f s) start
    |> List.tail
    |> List.map (fun s -> bits s.Scale, s.Tracker)

[<Tests>]
let tests =
    testList "GradScaler" [
        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 200 }
            "core scale/tracker sequence equals libtorch's _amp_update_scale_ kernel"
            (Prop.forAll (Arb.fromGen kernelCase) (fun c -> coreTrace c = kernelTrace c))

        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 40 }
            "a step with an inf/NaN gradient moves no parameter, halves the scale, resets the tracker"
            (Prop.forAll
                (Arb.fromGen (
                    gen {
                        let! seed = Gen.choose (0, 10000)
                        let! which = Gen.choose (0, 3)
                        let! value = Gen.elements [ Single.PositiveInfinity; Single.NegativeInfinity; Single.NaN ]
                        let! cleanFirst = Gen.choose (0, 3)
                        let! useAdam = Gen.elements [ false; true ]
                        return seed, which, value, cleanFirst, useAdam
                    }))
                (fun (seed, which, value, cleanFirst, useAdam) ->
                    let m = mlp (int64 seed)
                    let opt: torch.optim.Optimizer =
                        if useAdam then torch.optim.Adam(m.parameters(), lr = 0.01) else torch.optim.SGD(m.parameters(), 0.1, momentum = 0.9)
                    let scaler = GradScaler()
                    for i in 1..cleanFirst do
                        iteration scaler opt m (int64 (seed + i)) None
                    let before = snapshot m
                    let scaleBefore = scaler.get_scale()
                    Expect.equal (scaler.get_growth_tracker()) (int64 cleanFirst) "clean steps counted"
                    iteration scaler opt m (int64 seed) (Some(which, value))
                    snapshot m = before
                    && scaler.get_scale() = scaleBefore / 2.0
                    && scaler.get_growth_tracker() = 0L))

        test "fused unscale equals grad × float32(1/scale), per element, and flags nothing when finite" {
            let m = mlp 1L
            let opt = torch.optim.SGD(m.parameters(), 0.1)
            let scaler = GradScaler(init_scale = 3.0)
            (scaler.scale (lossOf m 2L)).backward()
            let scaled = paramsOf m |> List.map (fun p -> p.grad.clone())
            scaler.unscale_ opt
            let inv = torch.tensor(float32 (1.0 / 3.0))
            for p, g in List.zip (paramsOf m) scaled do
                let expected = (g * inv).data<float32>().ToArray() |> Array.map bits
                Expect.equal (p.grad.data<float32>().ToArray() |> Array.map bits) expected "unscaled bits"
            let before = snapshot m
            scaler.step opt |> ignore
            Expect.notEqual (snapshot m) before "a finite step moves the parameters"
        }

        test "gradients of several dtypes are grouped and all unscaled; bfloat16 grads are allowed" {
            let a = Parameter(torch.ones([| 3L |], torch.ScalarType.Float32))
            let b = Parameter(torch.ones([| 2L |], torch.ScalarType.Float64))
            let c = Parameter(torch.ones([| 2L |], torch.ScalarType.BFloat16))
            let opt = torch.optim.SGD([ a; b; c ], 0.0)
            let scaler = GradScaler(init_scale = 4.0)
            let loss = (a.sum() * 8.0) + (b.sum().to_type(torch.ScalarType.Float32) * 16.0) + (c.sum().to_type(torch.ScalarType.Float32) * 32.0)
            (scaler.scale loss).backward()
            scaler.unscale_ opt
            Expect.equal (a.grad.data<float32>().ToArray()) [| 8.0f; 8.0f; 8.0f |] "float32"
            Expect.equal (b.grad.data<float>().ToArray()) [| 16.0; 16.0 |] "float64"
            Expect.equal (c.grad.to_type(torch.ScalarType.Float32).data<float32>().ToArray()) [| 32.0f; 32.0f |] "bfloat16"
        }

        test "works when each iteration runs in its own TorchSharp DisposeScope" {
            let m = mlp 11L
            let opt = torch.optim.SGD(m.parameters(), 0.1)
            let scaler = GradScaler()
            for i in 1..3 do
                use _scope = torch.NewDisposeScope()
                opt.zero_grad()
                (scaler.scale (lossOf m (int64 i))).backward()
                scaler.unscale_ opt
                use _inner = torch.NewDisposeScope()
                scaler.step opt |> ignore
                scaler.update()
            Expect.equal (scaler.get_growth_tracker()) 3L "three clean steps"
        }

        testList "checks from TESTS.md" [
            test "fresh state_dict is torch's" {
                Expect.equal (Py.Repr(GradScaler().state_dict()))
                    "{'scale': 65536.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 2000, '_growth_tracker': 0}" "repr"
                Expect.equal (List.ofSeq (GradScaler().state_dict().Keys)) [ "scale"; "growth_factor"; "backoff_factor"; "growth_interval"; "_growth_tracker" ] "keys"
            }
            test "after one overflow update: scale 32768, tracker 0" {
                let m = mlp 3L
                let opt = torch.optim.SGD(m.parameters(), 0.1)
                let scaler = GradScaler()
                iteration scaler opt m 3L (Some(0, Single.PositiveInfinity))
                Expect.equal (scaler.get_scale()) 32768.0 "scale"
                Expect.equal (scaler.get_growth_tracker()) 0L "tracker"
            }
            test "1999 clean updates keep 65536 with tracker 1999; the 2000th doubles it" {
                let w = Parameter(torch.ones([| 1L |]))
                let opt = torch.optim.SGD([ w ], 0.0)
                let scaler = GradScaler()
                let once () =
                    opt.zero_grad()
                    (scaler.scale (w.sum())).backward()
                    scaler.step opt |> ignore
                    scaler.update()
                for _ in 1..1999 do once ()
                Expect.equal (scaler.get_scale()) 65536.0 "scale after 1999"
                Expect.equal (scaler.get_growth_tracker()) 1999L "tracker after 1999"
                once ()
                Expect.equal (scaler.get_scale()) 131072.0 "scale after 2000"
                Expect.equal (scaler.get_growth_tracker()) 0L "tracker after 2000"
                Expect.equal (Py.Repr(scaler.state_dict()))
                    "{'scale': 131072.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 2000, '_growth_tracker': 0}" "state dict"
            }
            test "update(new_scale=8.0) sets the scale and keeps the tracker" {
                let m = mlp 4L
                let opt = torch.optim.SGD(m.parameters(), 0.1)
                let scaler = GradScaler()
                iteration scaler opt m 4L None
                iteration scaler opt m 5L None
                (scaler.scale (lossOf m 6L)).backward()
                scaler.step opt |> ignore
                scaler.update 8.0
                Expect.equal (scaler.get_scale()) 8.0 "scale"
                Expect.equal (scaler.get_growth_tracker()) 2L "tracker unchanged"
                // and the next loss is scaled by 8
                use l = lossOf m 7L
                use s = scaler.scale l
                Expect.equal (s.item<float32>()) (l.item<float32>() * 8.0f) "scaled by 8"
            }
            test "update with a one-element tensor" {
                let m = mlp 12L
                let opt = torch.optim.SGD(m.parameters(), 0.1)
                let scaler = GradScaler()
                iteration scaler opt m 12L None
                (scaler.scale (lossOf m 13L)).backward()
                scaler.step opt |> ignore
                scaler.update(torch.tensor(4.0f))
                Expect.equal (scaler.get_scale()) 4.0 "scale"
                Expect.equal (scaler.get_growth_tracker()) 1L "tracker unchanged"
                throwsWith<OptimAssertionException> (fun () -> scaler.update(torch.tensor([| 1.0f; 2.0f |]))) "1-element" "two elements"
                throwsWith<OptimAssertionException> (fun () -> scaler.update(torch.tensor(2.0f, requires_grad = true))) "require grad" "requires grad"
            }
            test "optimizer.step is skipped when a grad is NaN" {
                let m = mlp 5L
                let opt = torch.optim.SGD(m.parameters(), 0.1)
                let scaler = GradScaler()
                let before = snapshot m
                opt.zero_grad()
                (scaler.scale (lossOf m 5L)).backward()
                use g = (paramsOf m).[2].grad
                g.fill_(Single.NaN) |> ignore
                let r = scaler.step opt
                Expect.isNull r "skipped step returns null"
                Expect.equal (snapshot m) before "no parameter moved"
            }
            test "unscale_ twice is a runtime error" {
                let m = mlp 6L
                let opt = torch.optim.SGD(m.parameters(), 0.1)
                let scaler = GradScaler()
                (scaler.scale (lossOf m 6L)).backward()
                scaler.unscale_ opt
                throwsWith<InvalidOperationException> (fun () -> scaler.unscale_ opt) "unscale_() has already been called on this optimizer since the last update()." "twice"
                scaler.step opt |> ignore
                throwsWith<InvalidOperationException> (fun () -> scaler.unscale_ opt) "unscale_() is being called after step()." "after step"
            }
            test "step twice without update is a runtime error" {
                let m = mlp 7L
                let opt = torch.optim.SGD(m.parameters(), 0.1)
                let scaler = GradScaler()
                (scaler.scale (lossOf m 7L)).backward()
                scaler.step opt |> ignore
                throwsWith<InvalidOperationException> (fun () -> scaler.step opt |> ignore) "step() has already been called since the last update()." "twice"
                scaler.update()
                (scaler.scale (lossOf m 8L)).backward()
                scaler.step opt |> ignore
            }
            test "load_state_dict of {} is a runtime error; a missing key a KeyNotFoundException" {
                let scaler = GradScaler()
                throwsWith<InvalidOperationException> (fun () -> scaler.load_state_dict(Collections.Generic.OrderedDictionary<string, obj>())) "The source state dict is empty" "empty"
                let partial = Collections.Generic.OrderedDictionary<string, obj>()
                partial.["scale"] <- box 2.0
                throwsWith<Collections.Generic.KeyNotFoundException> (fun () -> scaler.load_state_dict partial) "growth_factor" "missing"
                Expect.equal (scaler.get_scale()) 65536.0 "unchanged after failed loads"
            }
            test "state_dict round-trips into another scaler, and the loaded scale is used" {
                let m = mlp 9L
                let opt = torch.optim.SGD(m.parameters(), 0.1)
                let a = GradScaler(init_scale = 1024.0, growth_factor = 4.0, backoff_factor = 0.25, growth_interval = 3L)
                iteration a opt m 9L None
                iteration a opt m 10L (Some(1, Single.NaN))
                iteration a opt m 11L None
                let b = GradScaler()
                use l0 = lossOf m 1L
                b.scale l0 |> ignore
                b.load_state_dict(a.state_dict())
                Expect.equal (Py.Repr(b.state_dict()))
                    "{'scale': 256.0, 'growth_factor': 4.0, 'backoff_factor': 0.25, 'growth_interval': 3, '_growth_tracker': 1}" "loaded"
                use l = lossOf m 12L
                use s = b.scale l
                Expect.equal (s.item<float32>()) (l.item<float32>() * 256.0f) "scaled by the loaded scale"
            }
            test "fp16 gradients cannot be unscaled" {
                let w = Parameter(torch.ones([| 2L |], torch.ScalarType.Float16))
                let opt = torch.optim.SGD([ w ], 0.1)
                let scaler = GradScaler()
                (scaler.scale (w.to_type(torch.ScalarType.Float32).sum())).backward()
                throwsWith<ArgumentException> (fun () -> scaler.unscale_ opt) "Attempting to unscale FP16 gradients." "fp16"
            }
            test "use before scale(), without grads, and update without checks are assertion errors" {
                let w = Parameter(torch.ones([| 2L |]))
                let opt = torch.optim.SGD([ w ], 0.1)
                let scaler = GradScaler()
                throwsWith<OptimAssertionException> (fun () -> scaler.unscale_ opt) "Attempted unscale_ but _scale is None." "unscale"
                throwsWith<OptimAssertionException> (fun () -> scaler.step opt |> ignore) "Attempted step but _scale is None." "step"
                throwsWith<OptimAssertionException> (fun () -> scaler.update()) "Attempted update but _scale is None." "update"
                use l = scaler.scale (w.sum())
                throwsWith<OptimAssertionException> (fun () -> scaler.step opt |> ignore) "No inf checks were recorded for this optimizer." "no grads"
                throwsWith<OptimAssertionException> (fun () -> scaler.update()) "No inf checks were recorded prior to update." "no checks"
            }
            test "growth_factor <= 1 and backoff_factor >= 1 are rejected at construction" {
                throwsWith<ArgumentException> (fun () -> GradScaler(growth_factor = 1.0) |> ignore) "The growth factor must be > 1.0." "growth"
                throwsWith<ArgumentException> (fun () -> GradScaler(backoff_factor = 1.5) |> ignore) "The backoff factor must be < 1.0." "backoff"
            }
            test "a disabled scaler passes everything through" {
                let m = mlp 10L
                let opt = torch.optim.SGD(m.parameters(), 0.1)
                let scaler = GradScaler(enabled = false, growth_factor = 0.5)
                let loss = lossOf m 10L
                Expect.isTrue (Object.ReferenceEquals(scaler.scale loss, loss)) "scale returns the loss"
                loss.backward()
                let before = snapshot m
                scaler.unscale_ opt
                scaler.step opt |> ignore
                scaler.update()
                Expect.notEqual (snapshot m) before "stepped"
                Expect.equal (scaler.state_dict().Count) 0 "empty state dict"
                Expect.equal (scaler.get_scale()) 1.0 "scale 1"
            }
        ]
    ]
