/// The pure loss-scaling and autocast rules of the core (no tensors): GradScaler's state machine,
/// its state dict, AmpOptimWrapper's `loss_scale` and `dtype` arguments, autocast's device/dtype plan.
module Optim.Tests.LossScalingTests

open Expecto
open FsCheck
open FsCheck.FSharp
open Optim.Core
open Optim.Core.LossScaling

let private fresh () =
    match init defaults with
    | Ok s -> s
    | Error e -> failwithf "defaults rejected: %s" e.Message

let private errorOf r =
    match r with
    | Ok v -> failwithf "expected an error, got %A" v
    | Error(e: RuleError) -> e

let private updates (flags: bool list) s = flags |> List.fold (fun s f -> update f s) s

[<Tests>]
let tests =
    testList "LossScaling" [
        testList "state machine (SPEC §3.5)" [
            test "fresh default state dict prints as torch's" {
                Expect.equal
                    (PyFormat.repr (toStateDict (fresh ())))
                    "{'scale': 65536.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 2000, '_growth_tracker': 0}"
                    "fresh GradScaler().state_dict()"
            }
            test "one overflow halves the scale and resets the tracker" {
                let s = fresh () |> updates [ false; false; true ]
                Expect.equal s.Scale 32768.0f "scale"
                Expect.equal s.Tracker 0 "tracker"
            }
            test "2000 clean updates double the scale; 1999 do not" {
                let s1999 = fresh () |> updates (List.replicate 1999 false)
                Expect.equal s1999.Scale 65536.0f "scale after 1999"
                Expect.equal s1999.Tracker 1999 "tracker after 1999"
                let s2000 = update false s1999
                Expect.equal s2000.Scale 131072.0f "scale after 2000"
                Expect.equal s2000.Tracker 0 "tracker after 2000"
            }
            test "an overflow restarts the streak" {
                let s = fresh () |> updates (List.replicate 1500 false @ [ true ] @ List.replicate 1999 false)
                Expect.equal s.Scale 32768.0f "scale"
                Expect.equal s.Tracker 1999 "tracker"
            }
            test "update with a new scale keeps the tracker" {
                let s = fresh () |> updates [ false; false; false ] |> updateWithScale 8.0
                Expect.equal s.Scale 8.0f "scale"
                Expect.equal s.Tracker 3 "tracker unchanged"
            }
            test "the scale never grows to inf, and the tracker still resets" {
                let big = { fresh () with Scale = 2.0f ** 127.0f; GrowthInterval = 1L }
                let s = update false big
                Expect.equal s.Scale (2.0f ** 127.0f) "scale kept"
                Expect.equal s.Tracker 0 "tracker reset"
            }
            test "products are taken in double and rounded to float32 once" {
                // 3 * 1.1 in double is 3.3000000000000003, which rounds to float32 3.3 (0x40533333).
                let s = { fresh () with Scale = 3.0f; GrowthFactor = 1.1; GrowthInterval = 1L } |> update false
                Expect.equal (System.BitConverter.SingleToInt32Bits s.Scale) 0x40533333 "float32(3 * 1.1)"
            }
            test "a disabled scaler never changes and has an empty state dict" {
                let s =
                    match init { defaults with Enabled = false; GrowthFactor = 0.5 } with
                    | Ok s -> s
                    | Error e -> failtest e.Message
                Expect.equal (update true s) s "update"
                Expect.equal (updateWithScale 3.0 s) s "update with scale"
                Expect.equal (toStateDict s) (PyValue.Dict []) "state dict"
            }
            test "invScale is float32(1 / double scale)" {
                Expect.equal (invScale { fresh () with Scale = 3.0f }) 0.333333343f "1/3"
                Expect.equal (invScale (fresh ())) (1.0f / 65536.0f) "2^-16"
            }
            testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 200 } "the tracker never reaches growth_interval and overflow always backs off"
                (fun (flags: bool list) (interval: PositiveInt) ->
                    let interval = int64 (min interval.Get 50)
                    let start = { fresh () with GrowthInterval = interval }
                    let states = flags |> List.scan (fun s f -> update f s) start
                    List.zip flags (List.tail states)
                    |> List.forall (fun (f, s) -> int64 s.Tracker < interval && (not f || s.Tracker = 0)))
        ]

        testList "settings validation (SPEC §3.1)" [
            test "growth_factor must be > 1" {
                let e = errorOf (init { defaults with GrowthFactor = 1.0 })
                Expect.equal e.Message "The growth factor must be > 1.0." "message"
                Expect.equal e.Kind ErrorKind.Assertion "kind"
            }
            test "backoff_factor must be < 1" {
                Expect.equal (errorOf (init { defaults with BackoffFactor = 1.0 })).Message "The backoff factor must be < 1.0." "message"
            }
            test "NaN factors fail the checks" {
                Expect.equal (errorOf (init { defaults with GrowthFactor = nan })).Message "The growth factor must be > 1.0." "growth"
                Expect.equal (errorOf (init { defaults with BackoffFactor = nan })).Message "The backoff factor must be < 1.0." "backoff"
            }
        ]

        testList "stages (SPEC §3.3–3.4)" [
            test "unscale_ twice, after step, step twice" {
                Expect.equal (beginUnscale Stage.Ready) (Ok()) "ready"
                let twice = errorOf (beginUnscale Stage.Unscaled)
                Expect.equal twice.Message "unscale_() has already been called on this optimizer since the last update()." "unscale twice"
                Expect.equal twice.Kind ErrorKind.Runtime "kind"
                Expect.equal (errorOf (beginUnscale Stage.Stepped)).Message "unscale_() is being called after step()." "after step"
                Expect.equal (beginStep Stage.Ready) (Ok true) "step unscales first"
                Expect.equal (beginStep Stage.Unscaled) (Ok false) "already unscaled"
                Expect.equal (errorOf (beginStep Stage.Stepped)).Message "step() has already been called since the last update()." "step twice"
            }
        ]

        testList "state dict (SPEC §3.6)" [
            test "load of {} is the empty-dict error" {
                let e = errorOf (ofStateDict (PyValue.Dict []) (fresh ()))
                Expect.equal e.Kind ErrorKind.Runtime "kind"
                Expect.stringStarts e.Message "The source state dict is empty" "message"
            }
            test "a missing entry is a key error naming it" {
                let sd = PyValue.Dict [ "scale", PyValue.Float 2.0; "growth_factor", PyValue.Float 2.0; "backoff_factor", PyValue.Float 0.5; "growth_interval", PyValue.Int 5L ]
                let e = errorOf (ofStateDict sd (fresh ()))
                Expect.equal e.Kind ErrorKind.Key "kind"
                Expect.stringContains e.Message "_growth_tracker" "names the key"
            }
            test "a disabled scaler ignores the dict" {
                let off = { fresh () with Enabled = false }
                Expect.equal (ofStateDict (PyValue.Dict []) off) (Ok off) "no-op"
            }
            test "extra entries are ignored; ints load as floats" {
                let sd =
                    PyValue.Dict [ "extra", PyValue.Str "x"; "scale", PyValue.Int 1024L; "growth_factor", PyValue.Int 3L
                                   "backoff_factor", PyValue.Float 0.25; "growth_interval", PyValue.Int 7L; "_growth_tracker", PyValue.Int 4L ]
                match ofStateDict sd (fresh ()) with
                | Ok s ->
                    Expect.equal (PyFormat.repr (toStateDict s))
                        "{'scale': 1024.0, 'growth_factor': 3.0, 'backoff_factor': 0.25, 'growth_interval': 7, '_growth_tracker': 4}" "loaded"
                | Error e -> failtest e.Message
            }
            testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 200 } "every valid state dict round-trips"
                (fun (scale: PositiveInt) (growthAbove1: PositiveInt) (backoffPct: PositiveInt) (interval: PositiveInt) (tracker: NonNegativeInt) ->
                    let s =
                        { fresh () with
                            Scale = float32 scale.Get / 8.0f
                            GrowthFactor = 1.0 + float growthAbove1.Get / 100.0
                            BackoffFactor = float (backoffPct.Get % 99 + 1) / 100.0
                            GrowthInterval = int64 interval.Get
                            Tracker = tracker.Get % interval.Get }
                    ofStateDict (toStateDict s) (fresh ()) = Ok s)
            testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 200 } "a state dict with one bad value is refused, naming the entry"
                (fun (which: NonNegativeInt) (pick: NonNegativeInt) ->
                    let good = [ "scale", PyValue.Float 1024.0; "growth_factor", PyValue.Float 2.0; "backoff_factor", PyValue.Float 0.5
                                 "growth_interval", PyValue.Int 10L; "_growth_tracker", PyValue.Int 3L ]
                    let bad =
                        [| "scale", [ 0.0; -1.0; nan; infinity; -infinity; 1e39 ] |> List.map PyValue.Float
                           "growth_factor", [ 1.0; 0.1; nan; infinity ] |> List.map PyValue.Float
                           "backoff_factor", [ 0.0; 1.0; 1.5; -0.5; nan ] |> List.map PyValue.Float
                           "growth_interval", [ 0L; -3L ] |> List.map PyValue.Int
                           "_growth_tracker", [ -1L; 10L; 11L ] |> List.map PyValue.Int |]
                    let key, values = bad.[which.Get % bad.Length]
                    let value = values.[pick.Get % values.Length]
                    match ofStateDict (PyValue.Dict(PyValue.set key value good)) (fresh ()) with
                    | Error e -> e.Kind = ErrorKind.Value && e.Message.Contains(sprintf "'%s'" key)
                    | Ok _ -> false)
        ]

        testList "loss_scale (SPEC §2.1)" [
            test "'dynamic' is a default GradScaler without an update parameter" {
                Expect.equal (parseLossScale (PyValue.Str "dynamic")) (Ok LossScale.Dynamic) "parsed"
                Expect.equal (scalerOf LossScale.Dynamic) (defaults, None) "scaler"
            }
            test "a float is a static scale passed to update" {
                Expect.equal (parseLossScale (PyValue.Float 512.0)) (Ok(LossScale.Static 512.0)) "parsed"
                let settings, param = scalerOf (LossScale.Static 512.0)
                Expect.equal settings.InitScale 512.0 "init_scale"
                Expect.equal param (Some 512.0) "_scale_update_param"
            }
            test "a dict is GradScaler(**dict)" {
                match parseLossScale (PyValue.Dict [ "init_scale", PyValue.Int 1L; "growth_factor", PyValue.Int 2L ]) with
                | Ok(LossScale.Custom s) ->
                    Expect.equal s { defaults with InitScale = 1.0; GrowthFactor = 2.0 } "settings"
                    Expect.equal (snd (scalerOf (LossScale.Custom s))) None "_scale_update_param"
                | other -> failtestf "got %A" other
            }
            test "anything else is a TypeError naming the value" {
                let cases =
                    [ PyValue.Int 512L, "512"; PyValue.Str "unknown", "unknown"; PyValue.None, "None"; PyValue.Bool true, "True"
                      PyValue.List [ PyValue.Float 1.0 ], "[1.0]" ]
                for v, shown in cases do
                    let e = errorOf (parseLossScale v)
                    Expect.equal e.Kind ErrorKind.Type "kind"
                    Expect.equal e.Message (sprintf "loss_scale must be of type float, dict, or \"dynamic\", but got %s" shown) "message"
            }
            test "a dict with bad settings fails like GradScaler" {
                Expect.equal (errorOf (parseLossScale (PyValue.Dict [ "growth_factor", PyValue.Float 0.9 ]))).Message
                    "The growth factor must be > 1.0." "factor"
                let unknown = errorOf (parseLossScale (PyValue.Dict [ "init_scal", PyValue.Float 2.0 ]))
                Expect.equal unknown.Kind ErrorKind.Type "kind"
                Expect.stringContains unknown.Message "'init_scal'" "names the key"
                Expect.stringContains (errorOf (parseLossScale (PyValue.Dict [ "growth_interval", PyValue.Float 2.0 ]))).Message
                    "growth_interval" "interval must be an int"
            }
        ]

        testList "dtype (SPEC §2.1)" [
            test "the four names and null" {
                Expect.equal (Autocast.parseDtype PyValue.None) (Ok None) "null"
                for name, d in [ "float16", Autocast.CastDtype.Float16; "bfloat16", Autocast.CastDtype.BFloat16
                                 "float32", Autocast.CastDtype.Float32; "float64", Autocast.CastDtype.Float64 ] do
                    Expect.equal (Autocast.parseDtype (PyValue.Str name)) (Ok(Some d)) name
            }
            test "another name is an AssertionError listing the valid ones" {
                let e = errorOf (Autocast.parseDtype (PyValue.Str "float8"))
                Expect.equal e.Kind ErrorKind.Assertion "kind"
                Expect.equal e.Message "dtype should be any of ('float16', 'bfloat16', 'float32', 'float64'), got float8" "message"
            }
            test "another type is an AssertionError naming the value" {
                Expect.equal (errorOf (Autocast.parseDtype (PyValue.Int 16L))).Message
                    "dtype should be None or instance of torch.dtype, got 16" "message"
            }
        ]

        testList "autocast plan (SPEC §4)" [
            let cpu d e = Ok(Autocast.Plan.Scope(Autocast.DeviceKind.Cpu, Some d, e))
            test "device None is CUDA when available, else the CPU (bfloat16)" {
                Expect.equal (Autocast.resolve false None None true) (cpu Autocast.CastDtype.BFloat16 true) "cpu"
                Expect.equal (Autocast.resolve true None None true) (Ok(Autocast.Plan.Scope(Autocast.DeviceKind.Cuda, None, true))) "cuda"
            }
            test "CPU accepts bfloat16 and float16, not float32 (even disabled)" {
                Expect.equal (Autocast.resolve false (Some "cpu") (Some Autocast.CastDtype.Float16) true) (cpu Autocast.CastDtype.Float16 true) "fp16"
                Expect.equal (Autocast.resolve false (Some "cpu") None false) (cpu Autocast.CastDtype.BFloat16 false) "disabled"
                let e = errorOf (Autocast.resolve false (Some "cpu") (Some Autocast.CastDtype.Float32) false)
                Expect.stringStarts e.Message "In CPU autocast, only support `torch.bfloat16`" "message"
                Expect.equal e.Kind ErrorKind.Assertion "kind"
            }
            test "unknown device: disabled is no scope, enabled is a ValueError" {
                Expect.equal (Autocast.resolve false (Some "mps") None false) (Ok Autocast.Plan.Passthrough) "disabled"
                let e = errorOf (Autocast.resolve false (Some "mps") None true)
                Expect.equal e.Message "User specified autocast device_type must be cuda or cpu, but got mps" "message"
                Expect.equal e.Kind ErrorKind.Value "kind"
            }
            test "the wrapper allows every cast dtype on the CPU" {
                for d in [ Autocast.CastDtype.Float16; Autocast.CastDtype.BFloat16; Autocast.CastDtype.Float32; Autocast.CastDtype.Float64 ] do
                    Expect.equal (Autocast.forWrapper "cpu" (Some d)) (cpu d true) (Autocast.dtypeName d)
                Expect.equal (Autocast.forWrapper "cpu" None) (cpu Autocast.CastDtype.BFloat16 true) "default"
                Expect.isError (Autocast.forWrapper "mps" None) "mps"
            }
        ]
    ]
