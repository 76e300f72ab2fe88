/// MMEngine's TestOptimWrapper (CPU) ported, plus the extra OptimWrapper checks listed in TESTS.md.
module Optim.Tests.OptimWrapperTests

open System
open System.Collections.Generic
open System.IO
open Expecto
open Microsoft.Extensions.Logging
open TorchSharp
open Optim
open Optim.Tests.TestSupport

/// MMEngine's `_mock_method`: backward counts and records the loss it was given; step and zero_grad are recorded.
type MockedWrapper(optimizer, acc) =
    inherit OptimWrapper(optimizer, acc)
    member val ScaledLoss : torch.Tensor = null with get, set
    member val StepCalls = 0 with get, set
    member val ZeroGradCalls = 0 with get, set
    member this.SetInnerCount v = this.inner_count <- v
    override this.backward(loss) =
        this.ScaledLoss <- loss
        this.CountBackward()
    override this.step() = this.StepCalls <- this.StepCalls + 1
    override this.zero_grad(_setToNone) = this.ZeroGradCalls <- this.ZeroGradCalls + 1

let private sgd (m: torch.nn.Module) lr = torch.optim.SGD(parametersOf m, lr)
let private scalar (t: torch.Tensor) = float (t.item<float32>())

/// A module that records whether its forward ran inside no_sync (what DDP would do).
type NoSyncModel() as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("NoSyncModel")
    let conv = torch.nn.Conv2d(1L, 1L, 1L)
    do this.RegisterComponents()
    member val InsideNoSync = false with get, set
    member val NoSyncEntered = 0 with get, set
    override _.forward(x) = conv.forward x
    interface INoSyncModule with
        member this.no_sync() =
            this.InsideNoSync <- true
            this.NoSyncEntered <- this.NoSyncEntered + 1
            { new IDisposable with member _.Dispose() = this.InsideNoSync <- false }

[<Tests>]
let mmengineTests =
    testList "TestOptimWrapper" [
        test "test_init" {
            let model = new ToyModel()
            let optimizer = sgd model 0.1
            let hub = MessageHub.get_instance ("test_optim_wrapper_init-" + string (Guid.NewGuid()))
            let w = OptimWrapper(optimizer)
            Expect.isTrue (obj.ReferenceEquals(w.optimizer, optimizer)) "same optimizer object"
            Expect.isNull w.clip_grad_kwargs "no clipping"
            Expect.equal w.accumulative_counts 1 "accumulative_counts"
            Expect.isTrue (obj.ReferenceEquals(w.message_hub, hub)) "captures the current hub"
            Expect.equal w.inner_count 0 "inner_count"
            Expect.equal w.max_counts -1 "max_counts"
            Expect.equal w.remainder_counts -1 "remainder_counts"
            let ex = throws<ArgumentException> (fun () -> OptimWrapper(optimizer, clip_grad = kwargs []) |> ignore) "empty clip_grad"
            Expect.stringContains ex.Message "If `clip_grad` is not None" "message"
            Expect.throwsT<ArgumentException> (fun () -> OptimWrapper(optimizer, 0) |> ignore) "accumulative_counts 0"
        }
        test "test_update_params" {
            let model = new ToyModel()
            // (a) acc 1: scaled loss is the loss; step and zero_grad once each.
            let w = new MockedWrapper(sgd model 0.1, 1)
            w.update_params(torch.tensor 1.0f)
            Expect.equal (scalar w.ScaledLoss) 1.0 "scaled loss"
            Expect.equal (w.StepCalls, w.ZeroGradCalls) (1, 1) "step and zero_grad called"
            // (b) acc 3, fresh.
            let w = new MockedWrapper(sgd model 0.1, 3)
            w.update_params(torch.tensor 1.0f)
            Expect.equal (float32 (scalar w.ScaledLoss)) (1.0f / 3.0f) "1/3"
            Expect.equal (w.StepCalls, w.ZeroGradCalls) (0, 0) "no step yet"
            w.update_params(torch.tensor 1.0f)
            Expect.equal w.inner_count 2 "two backward"
            w.update_params(torch.tensor 1.0f)
            Expect.equal (w.StepCalls, w.ZeroGradCalls) (1, 1) "third call steps"
            // (c) inner count 99 without initialisation.
            let w = new MockedWrapper(sgd model 0.1, 3)
            w.SetInnerCount 99
            w.update_params(torch.tensor 1.0f)
            Expect.equal (w.StepCalls, w.ZeroGradCalls) (0, 0) "100 % 3 != 0: no step"
            Expect.equal (float32 (scalar w.ScaledLoss)) (1.0f / 3.0f) "1/3"
            // (d) init(99, 100): the last iteration is a remainder of 1 and steps.
            let w = new MockedWrapper(sgd model 0.1, 3)
            w.initialize_count_status(model, 99, 100)
            w.update_params(torch.tensor 1.0f)
            Expect.equal (w.StepCalls, w.ZeroGradCalls) (1, 1) "steps at max_counts"
            Expect.equal (scalar w.ScaledLoss) 1.0 "remainder factor 1"
            // (e) init(96, 100): two calls, no step.
            let w = new MockedWrapper(sgd model 0.1, 3)
            w.initialize_count_status(model, 96, 100)
            w.update_params(torch.tensor 1.0f)
            w.update_params(torch.tensor 1.0f)
            Expect.equal (w.StepCalls, w.ZeroGradCalls) (0, 0) "no step at 97, 98"
            Expect.equal (float32 (scalar w.ScaledLoss)) (1.0f / 3.0f) "1/3"
        }
        test "test_initialize_iter_status" {
            let model = new ToyModel()
            let provider, scope = captureLogs ()
            use _ = scope
            let w = OptimWrapper(sgd model 0.1, 3)
            w.initialize_count_status(model, 0, 100)
            Expect.equal w.remainder_counts 1 "100 % 3"
            Expect.isEmpty provider.Records "no warning at 0"
            let w = OptimWrapper(sgd model 0.1, 3)
            w.initialize_count_status(model, 2, 100)
            Expect.equal provider.Records.Length 1 "one record"
            Expect.stringContains provider.Records.[0].Message "Resumed iteration number" "resumed warning"
            Expect.equal provider.Records.[0].Level LogLevel.Warning "at WARNING"
            provider.Clear()
            let bn = torch.nn.BatchNorm2d(1L)
            let w = OptimWrapper(torch.optim.SGD(parametersOf bn, 0.1), 3)
            w.initialize_count_status(bn, 0, 99)
            Expect.equal provider.Records.Length 1 "one record"
            Expect.stringContains provider.Records.[0].Message "Gradient accumulative" "batchnorm warning"
        }
        test "test_get_lr" {
            let model = new ToyModel()
            Expect.equal (List.ofSeq (OptimWrapper(sgd model 0.1).get_lr().["lr"])) [ 0.1 ] "single group"
            // Six groups, the first with lr 0.1 * 0.1, as the custom_keys config of the MMEngine test builds them.
            let groups =
                parametersOf model |> Seq.mapi (fun i p ->
                    Modules.SGD.ParamGroup([ p ], lr = (if i = 0 then 0.1 * 0.1 else 0.1))) |> List.ofSeq
            let w = OptimWrapper(torch.optim.SGD(groups, 0.1))
            let lr = w.get_lr()
            Expect.sequenceEqual lr.Keys [ "base_lr"; "lr" ] "base_lr first"
            Expect.equal (List.ofSeq lr.["base_lr"]) [ 0.1 ] "base_lr"
            Expect.equal (List.ofSeq lr.["lr"]) [ 0.1 * 0.1; 0.1; 0.1; 0.1; 0.1; 0.1 ] "per group"
        }
        test "test_get_momentum" {
            let model = new ToyModel()
            Expect.equal (List.ofSeq (OptimWrapper(torch.optim.SGD(parametersOf model, 0.0, momentum = 0.8)).get_momentum().["momentum"])) [ 0.8 ] "sgd"
            Expect.equal (List.ofSeq (OptimWrapper(torch.optim.Adam(parametersOf model, 0.0, beta1 = 0.9, beta2 = 0.9)).get_momentum().["momentum"])) [ 0.9 ] "adam betas[0]"
        }
        test "test_backward" {
            let model = new ToyModel()
            let w = OptimWrapper(sgd model 0.1)
            let loss = model.forward(torch.ones(1L, 1L, 1L, 1L)).sum()
            w.backward loss
            Expect.isNotNull model.Conv1.weight.grad "loss.backward ran"
            Expect.equal w.inner_count 1 "counted"
        }
        test "test_zero_grad" {
            let model = new ToyModel()
            let w = OptimWrapper(sgd model 0.1)
            model.forward(torch.ones(1L, 1L, 1L, 1L)).sum().backward()
            w.zero_grad()
            Expect.isNull model.Conv1.weight.grad "set to None, as PyTorch 2"
            model.forward(torch.ones(1L, 1L, 1L, 1L)).sum().backward()
            w.zero_grad(set_to_none = false)
            Expect.equal (valuesOf model.Conv1.weight.grad) [| 0.0f |] "zeroed"
        }
        test "test_step" {
            let model = new ToyModel()
            let w = OptimWrapper(sgd model 0.1)
            let before = valuesOf model.Conv1.weight
            model.forward(torch.ones(1L, 1L, 1L, 1L)).sum().backward()
            w.step()
            Expect.notEqual (valuesOf model.Conv1.weight) before "optimizer.step ran"
        }
        test "test_clip_grads" {
            let model = new ToyModel()
            let hub = MessageHub.get_instance ("test_clip_grads-" + string (Guid.NewGuid()))
            let w = OptimWrapper(sgd model 0.1, clip_grad = kwargs [ "max_norm", box 35 ])
            model.forward(torch.ones(1L, 1L, 1L, 1L)).sum().backward()
            w.step()
            Expect.isTrue (hub.log_scalars.ContainsKey "train/grad_norm") "grad norm logged"
            let hub2 = MessageHub.get_instance ("test_clip_grads_value-" + string (Guid.NewGuid()))
            let w = OptimWrapper(sgd model 0.1, clip_grad = kwargs [ "type", box "value"; "clip_value", box 0.5 ])
            model.forward(torch.ones(1L, 1L, 1L, 1L)).sum().backward()
            w.step()
            Expect.isFalse (hub2.log_scalars.ContainsKey "train/grad_norm") "value clipping logs nothing"
        }
        test "test_state_dict" {
            let model = new ToyModel()
            let optimizer = torch.optim.SGD(parametersOf model, 0.1, momentum = 0.9)
            let w = OptimWrapper(optimizer)
            w.update_params(model.forward(torch.ones(1L, 1L, 1L, 1L)).sum())
            let sd = w.state_dict()
            use ms = new MemoryStream()
            (optimizer :> Modules.OptimizerHelper).save_state_dict(new BinaryWriter(ms))
            Expect.equal sd.optimizer_state (ms.ToArray()) "equals the optimizer's own state"
            Expect.isNull sd.base_param_settings "single group: no base_param_settings"
        }
        test "test_load_state_dict" {
            let model = new ToyModel()
            let other = OptimWrapper(torch.optim.SGD(parametersOf model, 0.1, momentum = 0.5))
            other.update_params(model.forward(torch.ones(1L, 1L, 1L, 1L)).sum())
            let model2 = new ToyModel()
            let w = OptimWrapper(torch.optim.SGD(parametersOf model2, 0.01))
            w.load_state_dict(other.state_dict())
            Expect.equal (w.state_dict().optimizer_state) (other.state_dict().optimizer_state) "optimizer states equal"
            Expect.equal (List.ofSeq (w.get_lr().["lr"])) [ 0.1 ] "lr loaded"
            Expect.equal (List.ofSeq (w.get_momentum().["momentum"])) [ 0.5 ] "momentum loaded"
        }
        test "test_param_groups" {
            let model = new ToyModel()
            let optimizer = sgd model 0.1
            let w = OptimWrapper(optimizer)
            Expect.sequenceEqual w.param_groups (OptimizerGroups.Of optimizer) "the same group views"
            Expect.sequenceEqual w.param_groups.[0].Params (parametersOf model) "same parameters"
        }
        test "test_optim_context" {
            // No DDP in TorchSharp: a module implementing INoSyncModule stands in for it.
            let model = new NoSyncModel()
            let w = OptimWrapper(torch.optim.SGD(parametersOf model, 0.1), 3)
            w.initialize_count_status(model, 0, 100)
            inside (w.optim_context model) (fun () -> Expect.isTrue model.InsideNoSync "(0+1) % 3 != 0: no_sync")
            Expect.isFalse model.InsideNoSync "scope closed"
            w.initialize_count_status(model, 2, 100)
            inside (w.optim_context model) (fun () -> Expect.isFalse model.InsideNoSync "(2+1) % 3 == 0: sync")
            let w1 = OptimWrapper(torch.optim.SGD(parametersOf model, 0.1))
            inside (w1.optim_context model) (fun () -> Expect.isFalse model.InsideNoSync "acc 1 always syncs")
        }
    ]

/// Runs n update_params calls with a constant loss on a mocked wrapper and returns (factor, stepped) per call.
let private protocol acc initCounts maxCounts n =
    let model = new ToyModel()
    let w = new MockedWrapper(sgd model 0.1, acc)
    match initCounts, maxCounts with
    | Some i, Some m -> w.initialize_count_status(model, i, m)
    | _ -> ()
    [ for _ in 1..n ->
        let steps = w.StepCalls
        w.update_params(torch.tensor 1.0f)
        round (1.0 / scalar w.ScaledLoss), w.StepCalls > steps ]

[<Tests>]
let extraTests =
    testList "OptimWrapper extra checks" [
        test "acc 3 over 10: factor 3 nine times then 1; updates after 3, 6, 9, 10" {
            let calls = protocol 3 (Some 0) (Some 10) 10
            Expect.equal (calls |> List.map fst) [ 3.; 3.; 3.; 3.; 3.; 3.; 3.; 3.; 3.; 1. ] "factors"
            Expect.equal (calls |> List.indexed |> List.filter (snd >> snd) |> List.map (fst >> (+) 1)) [ 3; 6; 9; 10 ] "updates"
        }
        test "acc 4 over 10: factor 4 eight times then 2; updates after 4, 8, 10" {
            let calls = protocol 4 (Some 0) (Some 10) 10
            Expect.equal (calls |> List.map fst) [ 4.; 4.; 4.; 4.; 4.; 4.; 4.; 4.; 2.; 2. ] "factors"
            Expect.equal (calls |> List.indexed |> List.filter (snd >> snd) |> List.map (fst >> (+) 1)) [ 4; 8; 10 ] "updates"
        }
        test "acc 3 without initialisation: always 3, steps every third, tail left accumulated" {
            let calls = protocol 3 None None 10
            Expect.isTrue (calls |> List.forall (fun (f, _) -> f = 3.0)) "factor 3"
            Expect.equal (calls |> List.filter snd |> List.length) 3 "3 updates"
        }
        test "acc 3 over 9 then a 10th call raises the loss_factor assertion" {
            let model = new ToyModel()
            let w = new MockedWrapper(sgd model 0.1, 3)
            w.initialize_count_status(model, 0, 9)
            for _ in 1..9 do w.update_params(torch.tensor 1.0f)
            let ex = throws<OptimAssertionException> (fun () -> w.update_params(torch.tensor 1.0f)) "10th call"
            Expect.stringContains ex.Message "loss_factor should be larger than zero!" "message"
        }
        test "should_sync before iterations 0..9 with acc 3 over 10" {
            let model = new ToyModel()
            let w = new MockedWrapper(sgd model 0.1, 3)
            w.initialize_count_status(model, 0, 10)
            let syncs = [ for _ in 1..10 -> let s = w.should_sync() in w.update_params(torch.tensor 1.0f); s ]
            Expect.equal syncs [ false; false; true; false; false; true; false; false; true; true ] "pattern"
        }
        test "clip_grad validation" {
            let model = new ToyModel()
            let onlyType = kwargs [ "type", box "norm" ]
            let ex = throws<ArgumentException> (fun () -> OptimWrapper(sgd model 0.1, clip_grad = onlyType) |> ignore) "only type"
            Expect.stringContains ex.Message "`clip_grad` should contain other arguments besides `type`" "message"
            let ex = throws<ArgumentException> (fun () -> OptimWrapper(sgd model 0.1, clip_grad = kwargs [ "type", box "foo"; "max_norm", box 1 ]) |> ignore) "foo"
            Expect.stringContains ex.Message "type of clip_grad should be \"norm\" or \"value\" but got foo" "message"
            // MMEngine fails only at the first clip for a misspelled key; Optim says so at construction.
            let ex = throws<ArgumentException> (fun () -> OptimWrapper(sgd model 0.1, clip_grad = kwargs [ "clip_value", box 0.2 ]) |> ignore) "no type"
            Expect.stringContains ex.Message "clip_value" "names the key"
            // Unlike MMEngine, the caller's dict keeps its `type`.
            let cfg = kwargs [ "type", box "norm"; "max_norm", box 1.0 ]
            OptimWrapper(sgd model 0.1, clip_grad = cfg) |> ignore
            Expect.isTrue (cfg.ContainsKey "type") "caller's dict unchanged"
        }
        test "norm clipping: grads (3, 4) with max_norm 1 become (0.6, 0.8) and 5 is reported" {
            let p = new Modules.Parameter(torch.zeros(2L))
            let hub = MessageHub.get_instance ("clip-norm-" + string (Guid.NewGuid()))
            let w = OptimWrapper(torch.optim.SGD([ p ], 0.0), clip_grad = kwargs [ "max_norm", box 1 ])
            let mutable reported = nan
            w.GradNormReported.Add(fun n -> reported <- n)
            p.grad <- floats [ 3.0f; 4.0f ]
            w.step()
            let g = valuesOf p.grad
            Expect.floatClose Accuracy.medium (float g.[0]) 0.6 "0.6"
            Expect.floatClose Accuracy.medium (float g.[1]) 0.8 "0.8"
            Expect.equal (List.ofSeq hub.log_scalars.["train/grad_norm"]) [ 5.0 ] "hub"
            Expect.equal reported 5.0 "event"
            Expect.equal w.LastGradNorm (Nullable 5.0) "property"
        }
        test "value clipping: (3, -4) with 0.5 becomes (0.5, -0.5), nothing reported" {
            let p = new Modules.Parameter(torch.zeros(2L))
            let hub = MessageHub.get_instance ("clip-value-" + string (Guid.NewGuid()))
            let w = OptimWrapper(torch.optim.SGD([ p ], 0.0), clip_grad = kwargs [ "type", box "value"; "clip_value", box 0.5 ])
            p.grad <- floats [ 3.0f; -4.0f ]
            w.step()
            Expect.equal (valuesOf p.grad) [| 0.5f; -0.5f |] "clamped"
            Expect.isEmpty hub.log_scalars "nothing logged"
        }
        test "norm clipping with error_if_nonfinite raises on an infinite norm and leaves grads alone" {
            let p = new Modules.Parameter(torch.zeros(2L))
            let w = OptimWrapper(torch.optim.SGD([ p ], 0.0), clip_grad = kwargs [ "max_norm", box 1; "error_if_nonfinite", box true ])
            p.grad <- floats [ infinityf; 1.0f ]
            let ex = throws<InvalidOperationException> (fun () -> w.step()) "non-finite"
            Expect.stringContains ex.Message "is non-finite, so it cannot be clipped" "message"
            Expect.equal (valuesOf p.grad) [| infinityf; 1.0f |] "untouched"
        }
        test "inf-norm clipping uses the max-abs norm" {
            let p = new Modules.Parameter(torch.zeros(3L))
            let hub = MessageHub.get_instance ("clip-inf-" + string (Guid.NewGuid()))
            let w = OptimWrapper(torch.optim.SGD([ p ], 0.0), clip_grad = kwargs [ "max_norm", box 2; "norm_type", box "inf" ])
            p.grad <- floats [ 1.0f; -8.0f; 4.0f ]
            w.step()
            Expect.equal (List.ofSeq hub.log_scalars.["train/grad_norm"]) [ 8.0 ] "max |g|"
            Expect.floatClose Accuracy.medium (float (valuesOf p.grad).[1]) -2.0 "scaled to max_norm"
        }
        test "get_lr and get_momentum print as the seed shows" {
            let model = torch.nn.Linear(1L, 1L)
            let optimizer = torch.optim.SGD(parametersOf model, 0.01)
            let w = OptimWrapper(optimizer)
            Expect.equal (Py.Repr(w.param_groups.[0].["lr"])) "0.01" "lr"
            Expect.equal (Py.Repr(w.param_groups.[0].["momentum"])) "0" "momentum left at PyTorch's int default"
            Expect.equal (string (w.get_lr())) "{'lr': [0.01]}" "get_lr"
            Expect.equal (string (w.get_momentum())) "{'momentum': [0]}" "get_momentum"
            let w2 = OptimWrapper(torch.optim.SGD(parametersOf model, 0.01, momentum = 0.9))
            Expect.equal (string (w2.get_momentum())) "{'momentum': [0.9]}" "a set momentum is a float"
        }
        test "repr is MMEngine's" {
            let p = new Modules.Parameter(torch.zeros(1L))
            let w = OptimWrapper(torch.optim.SGD([ p ], 0.1), 2)
            Expect.equal (string w)
                "Type: OptimWrapper\n_accumulative_counts: 2\noptimizer: \nSGD (\nParameter Group 0\n    dampening: 0\n    lr: 0.1\n    maximize: False\n    momentum: 0\n    nesterov: False\n    weight_decay: 0\n)\n"
                "repr"
        }
    ]
