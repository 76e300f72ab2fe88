/// Autocast scopes over libtorch's autocast, on the CPU: dtypes inside and after a scope, nesting,
/// exceptions, the cache, threads; and MMEngine's tests/test_runner/test_amp.py (CPU branch).
module Optim.Tests.AutocastTests

open System
open System.Threading
open Expecto
open TorchSharp
open type TorchSharp.torch.nn
open Optim
open Optim.Tests.AmpHelpers

type private ST = torch.ScalarType

let private conv () =
    torch.manual_seed 0L |> ignore
    Conv2d(1L, 1L, 1L)

let private convOut (c: Module<torch.Tensor, torch.Tensor>) =
    use x = torch.randn(1L, 1L, 4L, 4L)
    c.call(x).dtype

let private autocastOff () =
    Expect.isFalse (Amp.is_autocast_enabled "cpu") "CPU autocast is off"
    Expect.equal (Amp.get_autocast_dtype "cpu") ST.BFloat16 "CPU autocast dtype is back to libtorch's default"

exception private Boom

[<Tests>]
let tests =
    testList "Autocast" [
        test "inside bfloat16 Linear and Conv2d give bfloat16, grads of float32 params are float32, after it float32" {
            torch.manual_seed 1L |> ignore
            let lin = Linear(4L, 3L)
            let c = conv ()
            let x = torch.randn(2L, 4L)
            let loss =
                use _scope = Amp.autocast("cpu", ST.BFloat16)
                Expect.isTrue (Amp.is_autocast_enabled "cpu") "enabled inside"
                let y = lin.call x
                Expect.equal y.dtype ST.BFloat16 "Linear output"
                Expect.equal (convOut c) ST.BFloat16 "Conv2d output"
                y.float().sum()
            loss.backward()
            Expect.equal lin.weight.grad.dtype ST.Float32 "weight grad"
            Expect.equal lin.bias.grad.dtype ST.Float32 "bias grad"
            Expect.equal lin.weight.dtype ST.Float32 "weights stay float32"
            Expect.equal (lin.call x).dtype ST.Float32 "Linear after the scope"
            Expect.equal (convOut c) ST.Float32 "Conv2d after the scope"
            autocastOff ()
        }
        test "nested enabled:false gives float32, and the outer scope resumes after it" {
            let c = conv ()
            use _outer = Amp.autocast("cpu")
            do
                use _inner = Amp.autocast(enabled = false)
                Expect.isFalse (Amp.is_autocast_enabled "cpu") "disabled inside"
                Expect.equal (convOut c) ST.Float32 "nested disabled"
            Expect.isTrue (Amp.is_autocast_enabled "cpu") "outer enabled again"
            Expect.equal (convOut c) ST.BFloat16 "outer"
        }
        test "a nested scope with another dtype restores the outer dtype" {
            let c = conv ()
            do
                use _outer = Amp.autocast("cpu", ST.BFloat16)
                do
                    use _inner = Amp.autocast("cpu", ST.Float16)
                    Expect.equal (convOut c) ST.Float16 "inner float16"
                Expect.equal (Amp.get_autocast_dtype "cpu") ST.BFloat16 "outer dtype restored"
                Expect.equal (convOut c) ST.BFloat16 "outer"
            autocastOff ()
        }
        test "an exception inside leaves autocast off" {
            let c = conv ()
            let run () =
                use _outer = Amp.autocast("cpu", ST.Float16)
                use _inner = Amp.autocast("cpu", ST.BFloat16)
                raise Boom
            Expect.throwsT<Boom> (fun () -> run () |> ignore) "the body's exception propagates"
            autocastOff ()
            Expect.equal (convOut c) ST.Float32 "float32 after"
        }
        test "float16 works on the CPU, forward and backward (libtorch 2.10; an extension over MMEngine)" {
            torch.manual_seed 2L |> ignore
            let lin = Linear(4L, 3L)
            let y =
                use _scope = Amp.autocast("cpu", ST.Float16)
                lin.call (torch.randn(2L, 4L))
            Expect.equal y.dtype ST.Float16 "float16 output"
            y.float().sum().backward()
            Expect.equal lin.weight.grad.dtype ST.Float32 "float32 grads"
        }
        test "closing the outermost scope clears the cache of cast weights" {
            torch.manual_seed 3L |> ignore
            // Conv2d weights go through libtorch's cast cache (Linear's, in TorchSharp, do not).
            let c = Conv2d(1L, 1L, 1L, bias = false)
            let x = torch.ones(1L, 1L, 1L, 1L)
            let run () = (c.call x).float().item<float32>()
            let first, stale =
                use _scope = Amp.autocast("cpu")
                let first = run ()
                do
                    use _ng = torch.no_grad()
                    c.weight.fill_(0.25f) |> ignore
                first, run ()
            Expect.equal stale first "inside one scope the cached cast is reused (libtorch's documented caveat)"
            let second =
                use _scope = Amp.autocast("cpu")
                run ()
            Expect.equal second 0.25f "a new outermost scope casts the new weight"
        }
        test "the state is per thread: another thread does not see the scope" {
            let c = conv ()
            use _scope = Amp.autocast("cpu")
            let mutable other = (true, ST.BFloat16)
            let t = Thread(fun () -> other <- (Amp.is_autocast_enabled "cpu", convOut c))
            t.Start()
            t.Join()
            Expect.equal other (false, ST.Float32) "other thread: off, float32"
            Expect.equal (convOut c) ST.BFloat16 "this thread: on"
        }
        test "disposing out of order or on another thread is refused" {
            let outer = Amp.autocast("cpu")
            let inner = Amp.autocast("cpu", enabled = false)
            throwsWith<InvalidOperationException> (fun () -> outer.Dispose()) "innermost first" "out of order"
            let mutable failure: exn = null
            let t = Thread(fun () -> try inner.Dispose() with e -> failure <- e)
            t.Start()
            t.Join()
            Expect.isNotNull failure "other thread"
            Expect.stringContains failure.Message "per thread" "message"
            inner.Dispose()
            outer.Dispose()
            outer.Dispose() // idempotent
            autocastOff ()
        }
        test "CPU dtypes other than bfloat16/float16 are refused, even disabled" {
            throwsWith<ArgumentException> (fun () -> Amp.autocast("cpu", ST.Float32) |> ignore) "In CPU autocast, only support `torch.bfloat16`" "float32"
            throwsWith<ArgumentException> (fun () -> Amp.autocast("cpu", ST.Float64, enabled = false) |> ignore) "In CPU autocast, only support" "disabled"
            throwsWith<ArgumentException> (fun () -> Amp.autocast("cpu", ST.Int32) |> ignore) "dtype should be any of" "int"
            autocastOff ()
        }

        // MMEngine tests/test_runner/test_amp.py::TestAmp::test_autocast, CPU-only branch (torch >= 1.10)
        // and the monkeypatched-device checks.
        testList "test_amp.py" [
            test "CPU: conv output is bfloat16 or float16; nested autocast(enabled=False) is float32" {
                let c = conv ()
                use _scope = Amp.autocast(device_type = "cpu")
                let res = convOut c
                Expect.contains [ ST.BFloat16; ST.Float16 ] res "autocast dtype"
                use _off = Amp.autocast(enabled = false)
                Expect.equal (convOut c) ST.Float32 "nested disabled"
            }
            test "an unsupported device type: disabled is a plain float32 conv, enabled a ValueError" {
                let c = conv ()
                do
                    use _off = Amp.autocast(device_type = "mps", enabled = false)
                    Expect.equal (convOut c) ST.Float32 "disabled"
                throwsWith<ArgumentException> (fun () -> Amp.autocast(device_type = "mps", enabled = true) |> ignore)
                    "User specified autocast device_type must be cuda or cpu" "enabled"
                autocastOff ()
            }
        ]
    ]
