/// Logger factories are per build: what a build_optim_wrapper call, a wrapper or a scheduler logs goes to
/// the factory it was given (or its build's), never to another build's or the process-wide fallback.
module Optim.Tests.LoggingTests

open System
open System.Threading.Tasks
open Expecto
open Microsoft.Extensions.Logging
open TorchSharp
open Optim
open Optim.Tests.TestSupport

let private factoryWith (provider: CapturingProvider) =
    LoggerFactory.Create(fun b -> b.SetMinimumLevel(LogLevel.Trace).AddProvider(provider) |> ignore)

/// A model with a BatchNorm (accumulation warns about it) and parameters named `a.*` and `b.*`.
let private model () =
    torch.nn.Sequential(("a", torch.nn.Linear(4L, 4L) :> torch.nn.Module<torch.Tensor, torch.Tensor>),
                        ("b", torch.nn.BatchNorm1d(4L) :> torch.nn.Module<torch.Tensor, torch.Tensor>))

let private cfg key =
    sprintf """{"optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
                "paramwise_cfg": {"custom_keys": {"%s": {"lr_mult": 0.5}, "nothing_matches_this": {"lr_mult": 2}}}}""" key

let private messages (p: CapturingProvider) = p.Records |> List.map (fun r -> r.Message)

[<Tests>]
let tests =
    testList "logging per build" [
        test "a build's factory receives the build's, the wrapper's and its schedulers' lines; the fallback none" {
            let fallback, scope = captureLogs ()
            inside scope (fun () ->
                let mine = new CapturingProvider()
                use factory = factoryWith mine
                let m = model ()
                let w = Builder.build_optim_wrapper (m, cfg "a", factory)
                Expect.isTrue (obj.ReferenceEquals(w.LoggerFactory, factory)) "the wrapper keeps the build's factory"
                let built = messages mine
                Expect.exists built (fun l -> l.Contains "a.weight" && l.Contains "lr=0.05") "paramwise lines reach the build's factory"
                Expect.exists built (fun l -> l.Contains "nothing_matches_this") "the unmatched-key warning too"
                mine.Clear()
                w.initialize_count_status (m, 0, 10) // accumulation 1: no warning; use a wrapper that accumulates
                let acc = OptimWrapper(torch.optim.SGD(m.parameters(), 0.1), accumulative_counts = 2, loggerFactory = factory)
                acc.initialize_count_status (m, 0, 3)
                Expect.exists (messages mine) (fun l -> l.Contains "BatchNorm" || l.Contains "batch") "the accumulation warning reaches the given factory"
                mine.Clear()
                let s = StepLR(w, step_size = 1L, gamma = 0.5, verbose = true)
                w.step ()
                s.step ()
                Expect.contains (messages mine) "Adjusting parameter value of group 0 to 2.5000e-02." "the scheduler logs through its wrapper's factory"
                Expect.isEmpty (messages fallback) "nothing reached the process-wide fallback")
        }
        test "an AMP wrapper's loss scaler logs through the wrapper's factory" {
            let fallback, scope = captureLogs ()
            inside scope (fun () ->
                let mine = new CapturingProvider()
                use factory = factoryWith mine
                let m = torch.nn.Linear(3L, 1L)
                let w = AmpOptimWrapper(torch.optim.SGD(m.parameters(), 0.1), loss_scale = "dynamic", dtype = "bfloat16", loggerFactory = factory)
                use _ = w.optim_context m
                let loss = m.forward(torch.ones(2L, 3L)).sum()
                w.backward loss
                for p in m.parameters() do p.grad.fill_(Double.PositiveInfinity) |> ignore
                w.step ()
                Expect.exists mine.Records (fun r -> r.Category = "GradScaler") "the skipped step is logged by the wrapper's scaler"
                Expect.isEmpty (messages fallback) "nothing reached the fallback")
        }
        test "two builds on two threads each log only to their own factory" {
            let fallback, scope = captureLogs ()
            inside scope (fun () ->
                let run key =
                    Task.Run(fun () ->
                        let p = new CapturingProvider()
                        use f = factoryWith p
                        for _ in 1 .. 5 do Builder.build_optim_wrapper (model (), cfg key, f) |> ignore
                        p)
                let ta, tb = run "a", run "b"
                let pa, pb = ta.Result, tb.Result
                let mentions (p: CapturingProvider) key = messages p |> List.filter (fun l -> l.Contains(sprintf "%s.weight" key) && l.Contains "lr=0.05")
                Expect.equal (mentions pa "a").Length 5 "build a's lines, once per build"
                Expect.isEmpty (mentions pa "b") "none of build b's lines in a's factory"
                Expect.equal (mentions pb "b").Length 5 "build b's lines"
                Expect.isEmpty (mentions pb "a") "none of build a's lines in b's factory"
                Expect.isEmpty (messages fallback) "nothing reached the fallback")
        }
        test "without a factory, objects log to the fallback, also right after a build that had one" {
            let fallback, scope = captureLogs ()
            inside scope (fun () ->
                let mine = new CapturingProvider()
                use factory = factoryWith mine
                Builder.build_optim_wrapper (model (), cfg "a", factory) |> ignore
                mine.Clear()
                let w = Builder.build_optim_wrapper (model (), cfg "a")
                Expect.isEmpty (messages mine) "the earlier build's factory is not left behind"
                Expect.exists (messages fallback) (fun l -> l.Contains "a.weight") "the build without a factory logs to the fallback"
                Expect.isTrue (obj.ReferenceEquals(w.LoggerFactory, OptimLogging.LoggerFactory)) "its wrapper keeps the fallback")
        }
        test "an object built without a factory follows the fallback as it is when it logs" {
            let w = OptimWrapper(torch.optim.SGD((model ()).parameters(), 0.1))
            let fallback, scope = captureLogs () // set after the wrapper was built
            inside scope (fun () ->
                let s = StepLR(w, step_size = 1L, gamma = 0.5, verbose = true)
                w.step ()
                s.step ()
                Expect.contains (messages fallback) "Adjusting parameter value of group 0 to 5.0000e-02." "the later fallback receives the line")
            let s2 = StepLR(w, step_size = 1L, gamma = 0.5, verbose = true) // the capture's factory is disposed now
            s2.step ()
        }
    ]
