/// The C# schedulers on real TorchSharp optimizers: golden parity with MMEngine including the
/// training steps, bare optimizers, Adam's betas, resume, JSON configs with paths, the hook, logs.
module Optim.Tests.SchedulerTests

open System
open System.Collections.Generic
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Optim
open Optim.Tests.TestSupport

// ---------------------------------------------------------------------------------------------
// Golden: schedulers_sgd_adamw.json, the whole protocol

/// |a − b| ≤ 1e-12·|b| (the issue's bar for scheduled values).
let private rel12 (expected: float) (actual: float) = abs (expected - actual) <= 1e-12 * abs expected

let private numberOf (n: JsonNode) : float option =
    match n with
    | null -> None
    | n when n.GetValueKind() = Text.Json.JsonValueKind.Number -> Some(n.GetValue<double>())
    | _ -> None

let private inside' (scope: IDisposable) (body: unit -> 'a) = try body () finally scope.Dispose()

let private goldenCase (file: JsonNode) (case: JsonNode) =
    use _ = torch.NewDisposeScope()
    torch.set_num_threads 1
    let id = case.["id"].GetValue<string>()
    let model = ModelSpec.build file.["model"].["spec"]
    ModelSpec.loadState model file.["model"].["initial_state_dict"]
    let names = ModelSpec.namedParameters model
    // The protocol's first line: ow = build_optim_wrapper(model, cfg) (with its paramwise log lines).
    let provider, scope = captureLogs ()
    let wrapper = inside' scope (fun () -> Builder.build_optim_wrapper (model, case.["build_optim_wrapper_cfg"]))
    let expectedLogs = case.["logs"].AsArray() |> Seq.map (fun l -> l.["msg"].GetValue<string>()) |> List.ofSeq
    Expect.equal (provider.Records |> List.map (fun r -> r.Message)) expectedLogs "build_optim_wrapper's log lines"
    let schedulersJson = case.["schedulers"].ToJsonString()
    if case.["result"].GetValue<string>() = "error" then
        let e = throws<ParamSchedulerException> (fun () -> ParamSchedulers.build_list(schedulersJson, wrapper) |> ignore) id
        Expect.equal e.PythonType (case.["error"].["type"].GetValue<string>()) "error type"
        Expect.equal e.PythonMessage (case.["error"].["message"].GetValue<string>()) "error message"
    else
        Expect.equal wrapper.param_groups.Count (case.["optim_wrapper_param_groups_len"].GetValue<int>()) "param_groups, pseudo group included"
        let schedulers = ParamSchedulers.build_list(schedulersJson, wrapper)
        let inputs = Golden.tensor file.["data"].["inputs"]
        let forward = model :?> torch.nn.Module<torch.Tensor, torch.Tensor>
        let perIter = case.["per_iter"].AsArray() |> Seq.toArray
        let check (i: int) =
            let expected = perIter.[i]
            let where key = sprintf "%s iter %d %s" id i key
            // get_lr / get_momentum, keys and values
            let lr = wrapper.get_lr()
            let expLr = expected.["get_lr"].AsObject()
            Expect.sequenceEqual lr.Keys (expLr |> Seq.map (fun kv -> kv.Key)) (where "get_lr keys")
            for kv in expLr do
                let values = kv.Value.AsArray() |> Seq.map (fun x -> x.GetValue<double>()) |> Seq.toList
                List.iter2 (fun e a -> if not (rel12 e a) then failtestf "%s: expected %.17g got %.17g" (where kv.Key) e a) values (List.ofSeq lr.[kv.Key])
            let moms = expected.["get_momentum"].["momentum"].AsArray() |> Seq.map (fun x -> x.GetValue<double>()) |> Seq.toList
            List.iter2 (fun e a -> if not (rel12 e a) then failtestf "%s: expected %.17g got %.17g" (where "momentum") e a) moms (List.ofSeq (wrapper.get_momentum().["momentum"]))
            // every recorded numeric key of every group (lr, momentum, initial_lr, initial_momentum, ...)
            let groups = OptimizerGroups.Of(wrapper.optimizer)
            let expGroups = expected.["param_groups"].AsArray() |> Seq.toList
            Expect.equal groups.Count expGroups.Length (where "groups")
            for (g, eg) in Seq.zip groups expGroups do
                for kv in eg.AsObject() do
                    match numberOf kv.Value with
                    | Some e ->
                        let a = Convert.ToDouble(g.[kv.Key])
                        if not (rel12 e a) then failtestf "%s: expected %.17g got %.17g" (where kv.Key) e a
                        // Python's type too (issue 11): a float in MMEngine is a float here, an int an int.
                        let goldenFloat = kv.Value.ToJsonString().IndexOfAny([| '.'; 'e'; 'E' |]) >= 0
                        let oursFloat = g.[kv.Key] :? float
                        if goldenFloat <> oursFloat then
                            failtestf "%s: MMEngine has %s (%s), ours %A" (where kv.Key) (if goldenFloat then "a float" else "an int") (kv.Value.ToJsonString()) g.[kv.Key]
                    | None -> ()
            match expected.["base_param_settings"] with
            | null -> Expect.isNull wrapper.base_param_settings (where "no base_param_settings")
            | bps ->
                let b = wrapper.base_param_settings
                for kv in bps.AsObject() do
                    match numberOf kv.Value with
                    | Some e when b.ContainsKey kv.Key ->
                        let a = Convert.ToDouble(b.[kv.Key])
                        if not (rel12 e a) then failtestf "%s: expected %.17g got %.17g" (where ("base " + kv.Key)) e a
                    | Some _ when kv.Key = "initial_lr" || kv.Key = "lr" || kv.Key = "momentum" -> failtestf "%s missing" (where ("base " + kv.Key))
                    | _ -> () // torch-only keys (foreach, differentiable, ...)
        for i in 0 .. 29 do
            check i
            use loss = forward.forward(inputs.[int64 (i % 10)]).sum()
            wrapper.update_params loss
            ParamSchedulerHook.after_train_iter schedulers
        check 30
        let ints (name: string) = case.[name].AsArray() |> Seq.map (fun x -> x.GetValue<int64>()) |> Seq.toList
        Expect.equal (schedulers |> List.ofSeq |> List.map (fun s -> s.last_step)) (ints "scheduler_last_step") "last_step"
        Expect.equal (schedulers |> List.ofSeq |> List.map (fun s -> s.GlobalStep)) (ints "scheduler_global_step") "_global_step"
        for (n, p) in names do
            let expected, _ = Golden.tensorValues case.["final_params"].[n]
            let actual = p.data<float32>().ToArray()
            if not (Golden.allClose 1e-6 1e-5 actual expected) then failtestf "%s final %s: got %A expected %A" id n actual expected

let goldenTests =
    let file = Golden.load "schedulers_sgd_adamw.json"
    testList "golden schedulers (facade, with training)" [
        for case in file.["cases"].AsArray() -> test (case.["id"].GetValue<string>()) { goldenCase file case }
    ]

// ---------------------------------------------------------------------------------------------
// Behaviour on real optimizers

let private mlp () =
    torch.manual_seed 0L |> ignore
    torch.nn.Sequential(torch.nn.Linear(4L, 3L), torch.nn.ReLU(), torch.nn.Linear(3L, 1L))

let private lrOf (o: torch.optim.Optimizer) = OptimizerGroups.Of(o) |> Seq.map (fun g -> Convert.ToDouble g.["lr"]) |> List.ofSeq

let facadeTests =
    testList "schedulers on TorchSharp" [
        test "a bare TorchSharp optimizer: StepLR changes the group TorchSharp steps with" {
            let m = mlp ()
            let sgd = torch.optim.SGD(m.parameters(), 0.1, momentum = 0.9)
            let s = StepLR(SchedulerTarget.Of sgd, step_size = 2L, gamma = 0.5)
            Expect.equal (lrOf sgd) [ 0.1 ] "after construction"
            s.step(); s.step()
            Expect.equal (lrOf sgd) [ 0.05 ] "halved at step 2"
            let options = (sgd.ParamGroups |> Seq.head :?> Modules.ParamGroup).Options
            Expect.equal options.LearningRate (Nullable 0.05) "TorchSharp's own option"
            Expect.equal (OptimizerGroups.Of(sgd).[0].["initial_lr"]) (box 0.1) "initial_lr kept as an extra key"
        }
        test "AdamW: a momentum scheduler writes betas[0] (TorchSharp's beta1) and get_momentum follows" {
            let m = mlp ()
            let w = OptimWrapper(torch.optim.AdamW(m.parameters(), 0.001, beta1 = 0.9, beta2 = 0.999))
            let s = CosineAnnealingMomentum(w, T_max = 10L, eta_min = 0.5)
            for _ in 1 .. 5 do s.step()
            let expected = 0.5 + (0.9 - 0.5) * (1.0 + Math.Cos(Math.PI * 5.0 / 10.0)) / 2.0
            let g = w.param_groups.[0]
            let struct (b0, b1) = g.["betas"] :?> struct (float * float)
            Expect.floatClose Accuracy.veryHigh b0 expected "betas[0]"
            Expect.equal b1 0.999 "betas[1] untouched"
            Expect.equal (Convert.ToDouble g.["momentum"]) b0 "momentum mirrors betas[0]"
            Expect.equal (List.ofSeq (w.get_momentum().["momentum"])) [ b0 ] "get_momentum"
            let options = (w.optimizer.ParamGroups |> Seq.head :?> Modules.ParamGroup).Options :?> Modules.AdamW.Options
            Expect.equal options.beta1 (Nullable b0) "TorchSharp's beta1"
        }
        test "a momentum scheduler on an optimizer without momentum is MMEngine's ValueError" {
            let m = mlp ()
            let e = throws<ParamSchedulerException> (fun () -> CosineAnnealingMomentum(SchedulerTarget.Of(torch.optim.Adagrad(m.parameters(), 0.01)), T_max = 10L) |> ignore) "adagrad"
            Expect.equal e.PythonMessage "optimizer must support momentum when using momentum scheduler" "message"
        }
        test "several groups: base_lr (the pseudo group) follows the schedule" {
            let m = mlp ()
            let ps = m.parameters() |> List.ofSeq
            let groups = ps |> List.mapi (fun i p -> let o = Modules.SGD.Options() in (if i % 2 = 1 then o.LearningRate <- 0.2); Modules.SGD.ParamGroup([ p ], o))
            let w = OptimWrapper(torch.optim.SGD(groups, 0.1, momentum = 0.9))
            let s = ExponentialLR(w, gamma = 0.5)
            s.step()
            Expect.equal (List.ofSeq (w.get_lr().["base_lr"])) [ 0.05 ] "base_lr"
            Expect.equal (List.ofSeq (w.get_lr().["lr"])) [ 0.05; 0.1; 0.05; 0.1 ] "lr"
            Expect.equal (List.ofSeq (s.get_last_value())) [ 0.05; 0.1; 0.05; 0.1; 0.05 ] "get_last_value includes the pseudo group"
            Expect.equal (List.ofSeq (w.get_momentum().["momentum"])) [ 0.9; 0.9; 0.9; 0.9 ] "groups filled from defaults"
        }
        test "a member of an OptimWrapperDict is scheduled on its own" {
            let gen = mlp ()
            let disc = mlp ()
            let dict =
                OptimWrapperDict(
                    struct ("generator", OptimWrapper(torch.optim.SGD(gen.parameters(), 0.1))),
                    struct ("discriminator", OptimWrapper(torch.optim.Adam(disc.parameters(), 0.001, beta1 = 0.9, beta2 = 0.999))))
            let s = StepLR(dict.["generator"], step_size = 1L, gamma = 0.5)
            let m = StepMomentum(dict.["discriminator"], step_size = 1L, gamma = 0.5)
            s.step(); m.step()
            Expect.equal (List.ofSeq (dict.get_lr().["generator.lr"])) [ 0.05 ] "generator lr"
            Expect.equal (List.ofSeq (dict.get_lr().["discriminator.lr"])) [ 0.001 ] "discriminator lr untouched"
            Expect.equal (List.ofSeq (dict.get_momentum().["discriminator.momentum"])) [ 0.45 ] "discriminator betas[0]"
        }
        test "JSON config errors name their path" {
            let m = mlp ()
            let w = OptimWrapper(torch.optim.SGD(m.parameters(), 0.1))
            let json = """[{"type": "LinearLR", "start_factor": 0.1, "end": 5, "by_epoch": false},
                           {"type": "OneCycleLR", "max_lr": 0.1, "by_epoch": false}]"""
            let e = throws<ParamSchedulerException> (fun () -> ParamSchedulers.build_list(json, w) |> ignore) "max_lr"
            Expect.equal e.Path "param_scheduler[1].max_lr" "path"
            Expect.equal e.PythonType "TypeError" "type"
            let e2 = throws<KeyNotFoundException> (fun () -> ParamSchedulers.build_list("""{"type": "WarmupLR"}""", w) |> ignore) "unknown"
            Expect.stringContains e2.Message "WarmupLR is not in the mmengine::parameter scheduler registry" "KeyError text"
            let e3 =
                throws<ParamSchedulerException>
                    (fun () -> ParamSchedulers.build_list("""[{"type": "OneCycleLR", "eta_max": [0.1, 0.2], "total_steps": 10}]""", w) |> ignore)
                    "eta_max list"
            Expect.equal (e3.Path, e3.PythonMessage) ("param_scheduler[0]", "expected 1 values for max_lr, got 2") "group-dependent error located too"
        }
        test "registry: every MMEngine name, build by name, custom registration" {
            let registry = Registries.PARAM_SCHEDULERS
            for n in [ "LinearLR"; "CosineAnnealingLR"; "StepLR"; "MultiStepLR"; "ExponentialLR"; "ConstantLR"; "PolyLR"; "OneCycleLR"
                       "CosineRestartLR"; "ReduceOnPlateauLR"; "ConstantMomentum"; "CosineAnnealingMomentum"; "ExponentialMomentum"
                       "LinearMomentum"; "MultiStepMomentum"; "StepMomentum"; "PolyMomentum"; "CosineRestartMomentum"; "ReduceOnPlateauMomentum"
                       "StepParamScheduler"; "OneCycleParamScheduler"; "ReduceOnPlateauParamScheduler" ] do
                Expect.isTrue (registry.contains n) n
            Expect.equal registry.names.Count 29 "10 generic + 10 LR + 9 momentum"
            Expect.isFalse (registry.contains "OneCycleMomentum") "MMEngine has no OneCycleMomentum"
            let m = mlp ()
            let w = OptimWrapper(torch.optim.SGD(m.parameters(), 0.1))
            let s = ParamSchedulers.build(readOnlyDict [ "type", box "CosineAnnealingLR"; "T_max", box 10L ], w)
            Expect.isTrue (s :? CosineAnnealingLR) "the registered class"
            let name = "ConstantHalfLR" + string (Guid.NewGuid().ToString("N"))
            try
                registry.register_module(name, ParamSchedulerFactory(fun target _ _ -> ConstantLR(target, factor = 0.5) :> ParamScheduler)) |> ignore
                let c = ParamSchedulers.build_list(sprintf """{"type": "%s"}""" name, w)
                Expect.equal (lrOf w.optimizer) [ 0.05 ] "custom factory ran (on top of the cosine's first step)"
                Expect.equal c.Count 1 "one"
                throws<ArgumentException> (fun () -> registry.register_module(name, ParamSchedulerFactory(fun t _ _ -> ConstantLR(t) :> ParamScheduler)) |> ignore) "duplicate" |> ignore
            finally
                registry.remove name |> ignore
        }
        test "check reports every bad entry without an optimizer" {
            let errors =
                ParamSchedulers.check """[{"type": "LinearLR", "start_factor": 2.0}, {"type": "StepLR", "step_size": 2}, {"type": "OneCycleLR", "max_lr": 0.1}]"""
            Expect.equal [ for e in errors -> e.Path, e.PythonType ] [ "param_scheduler[0].start_factor", "ValueError"; "param_scheduler[2].max_lr", "TypeError" ] "errors"
        }
        test "the hook: iteration-based every iteration, epoch-based every epoch, plateau with metrics" {
            let m = mlp ()
            let w = OptimWrapper(torch.optim.SGD(m.parameters(), 0.1, momentum = 0.9))
            let schedulers : ParamScheduler list =
                [ LinearLR(w, start_factor = 0.5, ``end`` = 4L, by_epoch = false)
                  StepMomentum(w, step_size = 1L, gamma = 0.5)
                  ReduceOnPlateauLR(w, monitor = "loss", patience = 0L, factor = 0.5) ]
            let lrs = ResizeArray()
            for epoch in 0 .. 1 do
                for _ in 0 .. 2 do
                    lrs.Add(lrOf w.optimizer |> List.head)
                    ParamSchedulerHook.after_train_iter schedulers
                ParamSchedulerHook.after_train_epoch schedulers
                ParamSchedulerHook.after_val_epoch(schedulers, readOnlyDict [ "loss", 1.0 ])
            Expect.isTrue (List.forall2 (fun e a -> abs (e - a) < 1e-15) [ 0.05; 0.05 * (1.0 + 0.5 / 1.5); 0.05 * (1.0 + 0.5 / 1.5) * (1.0 + 0.5 / 2.0); 0.1; 0.1; 0.1 ] (List.ofSeq lrs)) (sprintf "%A" lrs)
            Expect.equal (List.ofSeq (w.get_momentum().["momentum"])) [ 0.9 * 0.5 * 0.5 ] "momentum halved after each epoch"
            // first validation: best = 1.0 (better than INF); second: no improvement, patience 0 → halved
            // (the warm-up reaches 0.1 by recurrence, so only to the last bit)
            Expect.floatClose Accuracy.veryHigh (lrOf w.optimizer |> List.head) 0.05 "plateau halved the lr after the second validation"
        }
        test "verbose schedulers log MMEngine's line through ILogger" {
            let provider, scope = captureLogs ()
            inside scope (fun () ->
                let m = mlp ()
                let w = OptimWrapper(torch.optim.SGD(m.parameters(), 0.1))
                let s = StepLR(w, step_size = 1L, gamma = 0.5, verbose = true)
                w.step () // in MMEngine's order, so no order warning joins the lines
                s.step ())
            let lines = provider.Records |> List.map (fun r -> r.Message)
            Expect.equal lines [ "Adjusting parameter value of group 0 to 1.0000e-01."; "Adjusting parameter value of group 0 to 5.0000e-02." ] "log lines"
        }
        test "state_dict has MMEngine's keys; load_state_dict resumes the same curve and the same training" {
            let run (interruptAt: int option) =
                torch.manual_seed 1L |> ignore
                let data = torch.randn(20L, 8L, 4L)
                let build () =
                    let m = mlp ()
                    let ps = m.parameters() |> List.ofSeq
                    let groups = ps |> List.mapi (fun i p -> let o = Modules.SGD.Options() in (if i % 2 = 1 then o.LearningRate <- 0.02); Modules.SGD.ParamGroup([ p ], o))
                    let w = OptimWrapper(torch.optim.SGD(groups, 0.01, momentum = 0.9))
                    let s =
                        ParamSchedulers.build_list(
                            """[{"type": "LinearLR", "start_factor": 0.1, "begin": 0, "end": 5, "by_epoch": false},
                                {"type": "CosineAnnealingLR", "T_max": 15, "begin": 5, "end": 20, "eta_min": 1e-5, "by_epoch": false},
                                {"type": "CosineAnnealingMomentum", "T_max": 20, "eta_min": 0.5, "by_epoch": false}]""", w)
                    m, w, s
                let m, w, s = build ()
                let seen = ResizeArray<float list>()
                let mutable m, w, s = m, w, s
                for i in 0 .. 19 do
                    match interruptAt with
                    | Some k when k = i ->
                        let wsd = w.state_dict()
                        let ssd = s |> Seq.map (fun x -> x.state_dict()) |> List.ofSeq
                        let msd = m.state_dict()
                        let m2, w2, s2 = build ()
                        m2.load_state_dict(msd) |> ignore
                        w2.load_state_dict wsd
                        Seq.iter2 (fun (x: ParamScheduler) sd -> x.load_state_dict sd) s2 ssd
                        m <- m2; w <- w2; s <- s2
                    | _ -> ()
                    seen.Add(List.ofSeq (w.get_lr().["base_lr"]) @ List.ofSeq (w.get_lr().["lr"]) @ List.ofSeq (w.get_momentum().["momentum"]))
                    let fwd = m :> torch.nn.Module<torch.Tensor, torch.Tensor>
                    use out = fwd.forward(data.[int64 i])
                    use loss = (out * out).sum()
                    w.update_params loss
                    ParamSchedulerHook.after_train_iter s
                List.ofSeq seen, m.parameters() |> Seq.map (fun p -> p.data<float32>().ToArray()) |> List.ofSeq
            let curve, parameters = run None
            for k in [ 3; 5; 11 ] do
                let curve2, parameters2 = run (Some k)
                Expect.equal curve2 curve (sprintf "the same hyper-parameters after resuming at %d" k)
                Expect.equal parameters2 parameters (sprintf "the same parameters after resuming at %d" k)
            let m = mlp ()
            let s = LinearLR(SchedulerTarget.Of(torch.optim.SGD(m.parameters(), 0.1)), start_factor = 0.5, ``end`` = 5L)
            Expect.sequenceEqual (s.state_dict().Keys)
                [ "start_factor"; "end_factor"; "total_iters"; "param_name"; "begin"; "end"; "by_epoch"; "base_values"; "last_step"; "_global_step"; "verbose"; "_last_value" ]
                "MMEngine's attribute names"
        }
        test "OneCycleLR stepped past total_steps is MMEngine's ValueError (InvalidOperationException)" {
            let m = mlp ()
            let s = OneCycleLR(SchedulerTarget.Of(torch.optim.SGD(m.parameters(), 0.1)), eta_max = 0.1, total_steps = 2L)
            s.step(); s.step()
            let e = throws<InvalidOperationException> (fun () -> s.step()) "past the end"
            Expect.stringContains e.Message "Tried to step 4 times. The specified number of total steps is 2" "message"
        }
    ]

[<Tests>]
let tests = testList "schedulers (facade)" [ goldenTests; facadeTests ]
