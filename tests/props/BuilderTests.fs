/// MMEngine's test_optimizer.py (TestBuilder, CPU) and test_optimizer_wrapper_dict.py, ported, plus
/// the seed's OptimWrapperDict and ToyModel paramwise examples. Deformable convs are simulated with a
/// module implementing IDeformableConv, so the DCN branches (skipped upstream without mmcv) run here.
module Optim.Tests.BuilderTests

open System
open System.Collections.Generic
open Expecto
open Microsoft.Extensions.Logging
open TorchSharp
open TorchSharp.Modules
open Optim
open Optim.Core
open Optim.Tests.TestSupport

let baseLr, momentum, baseWd = 0.01, 0.0001, 0.9

/// mmcv's DeformConv2dPack(3, 4, 3) as far as parameters go: `weight`, and an offset Conv2d child.
type FakeDeformConv() as this =
    inherit ModelSpec.SpecContainer("DeformConv2dPack")
    do
        this.AddParameter("weight", new Parameter(torch.randn(4L, 3L, 3L, 3L)))
        this.AddChild("conv_offset", torch.nn.Conv2d(3L, 18L, 3L, padding = 1L))
    interface IDeformableConv

let private subModel () =
    let sub = new ModelSpec.SpecContainer("SubModel")
    sub.AddChild("conv1", torch.nn.Conv2d(2L, 2L, 1L, groups = 2L))
    sub.AddChild("gn", torch.nn.GroupNorm(2L, 2L))
    sub.AddParameter("param1", new Parameter(torch.ones(1L)))
    sub

/// MMEngine's ExampleModel, with its DCN module (14 parameters).
let exampleModel () : torch.nn.Module =
    let m = new ModelSpec.SpecContainer("ExampleModel")
    m.AddParameter("param1", new Parameter(torch.ones(1L)))
    m.AddChild("conv1", torch.nn.Conv2d(3L, 4L, 1L, bias = false))
    m.AddChild("conv2", torch.nn.Conv2d(4L, 2L, 1L))
    m.AddChild("bn", torch.nn.BatchNorm2d(2L))
    m.AddChild("sub", subModel ())
    m.AddChild("dcn", new FakeDeformConv())
    m

/// MMEngine's ExampleDuplicateModel: conv3's only conv is the same module object as conv1's.
let exampleDuplicateModel () : torch.nn.Module * torch.nn.Module =
    let m = new ModelSpec.SpecContainer("ExampleDuplicateModel")
    m.AddParameter("param1", new Parameter(torch.ones(1L)))
    let conv1 = torch.nn.Conv2d(3L, 4L, 1L, bias = false)
    m.AddChild("conv1", torch.nn.Sequential(conv1))
    m.AddChild("conv2", torch.nn.Sequential(torch.nn.Conv2d(4L, 2L, 1L)))
    m.AddChild("bn", torch.nn.BatchNorm2d(2L))
    m.AddChild("sub", subModel ())
    m.AddChild("conv3", torch.nn.Sequential(conv1))
    m.AddChild("dcn", new FakeDeformConv())
    m, conv1

/// MMEngine's PseudoDataParallel: a module holding the model as `module`.
type PseudoDataParallel(inner: torch.nn.Module) as this =
    inherit torch.nn.Module("PseudoDataParallel")
    do this.register_module("module", inner)
    interface IModelWrapper with
        member _.``module`` = inner

let private names (model: torch.nn.Module) = ModuleFacts.NamedParameters model |> Seq.map (fun struct (n, _) -> n) |> List.ofSeq
let private paramsOf (model: torch.nn.Module) = ModuleFacts.NamedParameters model |> Seq.map (fun struct (_, p) -> p) |> List.ofSeq
let private num (v: obj) = Convert.ToDouble v
let private sameParams (a: Parameter seq) (b: Parameter seq) =
    Seq.length a = Seq.length b && Seq.forall2 (fun (x: Parameter) (y: Parameter) -> ModuleFacts.Identity x = ModuleFacts.Identity y) a b

let private sgdCfg (extra: string) =
    sprintf """{"type": "OptimWrapper", "optimizer": {"type": "SGD", "lr": %g, "weight_decay": %g, "momentum": %g}%s}""" baseLr baseWd momentum extra

/// The standard multipliers of the MMEngine tests.
let standardParamwise =
    """, "paramwise_cfg": {"bias_lr_mult": 2, "bias_decay_mult": 0.5, "norm_decay_mult": 0, "dwconv_decay_mult": 0.1, "dcn_offset_lr_mult": 0.1, "flat_decay_mult": 0.3}"""

/// `_check_default_optimizer`: SGD with the test's defaults and a single group with every parameter.
let checkDefaultOptimizer (optimizer: torch.optim.Optimizer) (model: torch.nn.Module) =
    Expect.equal (OptimizerGroups.PyTorchName optimizer) "SGD" "SGD"
    let d = OptimizerGroups.Defaults optimizer
    Expect.equal (num d.["lr"], num d.["momentum"], num d.["weight_decay"]) (baseLr, momentum, baseWd) "defaults"
    let groups = OptimizerGroups.Of optimizer
    Expect.equal groups.Count 1 "one group"
    Expect.isTrue (sameParams groups.[0].Params (paramsOf model)) "every parameter, in named_parameters order"

type Mults =
    { BiasLr: float; BiasDecay: float; NormDecay: float; DwconvDecay: float; DcnOffsetLr: float; FlatDecay: float }

let ones = { BiasLr = 1.0; BiasDecay = 1.0; NormDecay = 1.0; DwconvDecay = 1.0; DcnOffsetLr = 1.0; FlatDecay = 1.0 }
let standard = { BiasLr = 2.0; BiasDecay = 0.5; NormDecay = 0.0; DwconvDecay = 0.1; DcnOffsetLr = 0.1; FlatDecay = 0.3 }

/// `_check_sgd_optimizer`: one group per parameter, group i holding parameter i, with MMEngine's (lr, wd).
let checkSgdOptimizer (optimizer: torch.optim.Optimizer) (model: torch.nn.Module) (m: Mults) =
    Expect.equal (OptimizerGroups.PyTorchName optimizer) "SGD" "SGD"
    let d = OptimizerGroups.Defaults optimizer
    Expect.equal (num d.["lr"], num d.["momentum"], num d.["weight_decay"]) (baseLr, momentum, baseWd) "defaults"
    let groups = OptimizerGroups.Of optimizer
    let named = ModuleFacts.NamedParameters model |> List.ofSeq
    Expect.equal groups.Count named.Length "one group per parameter"
    for (g, struct (name, p)) in Seq.zip groups named do
        Expect.isTrue (sameParams g.Params [ p ]) (sprintf "group of %s" name)
        Expect.equal (num g.["momentum"]) momentum (sprintf "momentum of %s" name)
        // ExampleDuplicateModel nests conv1/conv2 in Sequentials; MMEngine's check is positional.
        let expected =
            match name.Replace("conv1.0.", "conv1.").Replace("conv2.0.", "conv2.") with
            | "param1" | "sub.param1" -> baseLr, baseWd * m.FlatDecay
            | "conv1.weight" | "conv2.weight" | "dcn.weight" -> baseLr, baseWd
            | "conv2.bias" | "sub.conv1.bias" -> baseLr * m.BiasLr, baseWd * m.BiasDecay
            | "bn.weight" | "bn.bias" | "sub.gn.weight" | "sub.gn.bias" -> baseLr, baseWd * m.NormDecay
            | "sub.conv1.weight" -> baseLr, baseWd * m.DwconvDecay
            | "dcn.conv_offset.weight" | "dcn.conv_offset.bias" -> baseLr * m.DcnOffsetLr, baseWd
            | other -> failwithf "unexpected parameter %s" other
        Expect.equal (num g.["lr"], num g.["weight_decay"]) expected (sprintf "(lr, wd) of %s" name)

let private configErrors (f: unit -> unit) =
    let e = throws<OptimConfigException> f "config error"
    e.Errors |> List.ofSeq

/// MMEngine's test custom constructor: one group per named parameter of the inner model, lr × conv1_lr_mult
/// for names starting with conv1, and a bare SGD (not a wrapper) as the result.
type MyOptimizerConstructor(cfg: Config.OptimWrapperConfig) =
    inherit DefaultOptimWrapperConstructor(cfg)
    override this.Invoke(model) =
        let model = ModuleFacts.Unwrap model
        let mult = num this.paramwise_cfg.["conv1_lr_mult"]
        let groups =
            [ for struct (name, p) in ModuleFacts.NamedParameters model ->
                let options = if name.StartsWith "conv1" then [ KeyValuePair<string, obj>("lr", box (this.base_lr.Value * mult)) ] else []
                PlainParamGroup(options, [| p |]) :> IParamGroup ]
        let sgd = Registries.OPTIMIZERS.get "SGD"
        box (sgd.Invoke(groups, this.optimizer_kwargs))

let testBuilder =
    testList "TestBuilder (test_optimizer.py)" [
        test "test_torch_optimizers" {
            let expected = [ "ASGD"; "Adadelta"; "Adagrad"; "Adam"; "AdamW"; "Adamax"; "LBFGS"; "NAdam"; "RAdam"; "RMSprop"; "Rprop"; "SGD" ]
            for n in expected do
                Expect.contains Registries.TORCH_OPTIMIZERS n n
                Expect.isTrue (Registries.OPTIMIZERS.contains n) (n + " registered")
        }
        test "every registered TorchSharp optimizer builds from a config and steps" {
            for n in Registries.TORCH_OPTIMIZERS do
                use _ = torch.NewDisposeScope()
                let model = torch.nn.Linear(2L, 1L)
                let w = Builder.build_optim_wrapper (model, sprintf """{"optimizer": {"type": "%s", "lr": 0.01}}""" n)
                Expect.equal (OptimizerGroups.PyTorchName w.optimizer) n "type"
                Expect.equal (num (w.defaults.["lr"])) 0.01 "lr"
                let loss = model.forward(torch.ones(3L, 2L)).sum()
                if n = "LBFGS" then
                    w.backward loss
                    w.optimizer.step (fun () -> model.forward(torch.ones(3L, 2L)).sum()) |> ignore
                else w.update_params loss
        }
        test "test_build_optimizer" {
            let model = exampleModel ()
            let w = Builder.build_optim_wrapper (model, sgdCfg "")
            checkDefaultOptimizer w.optimizer model
            let noType = Builder.build_optim_wrapper (model, sgdCfg "" |> fun s -> s.Replace("\"type\": \"OptimWrapper\", ", ""))
            Expect.equal (noType.GetType()) typeof<OptimWrapper> "OptimWrapper by default"
            checkDefaultOptimizer noType.optimizer model
            let invalid = configErrors (fun () -> Builder.build_optim_wrapper (model, sgdCfg ", \"constructor\": \"INVALID_CONSTRUCTOR\"") |> ignore)
            Expect.equal (invalid |> List.map (fun e -> e.Path, e.Kind)) [ "constructor", ErrorKind.Key ] "unknown constructor"
            let withParamwise =
                configErrors (fun () ->
                    Builder.build_optim_wrapper (model, sgdCfg ", \"constructor\": \"INVALID_CONSTRUCTOR\", \"paramwise_cfg\": {\"invalid_mult\": 1}") |> ignore)
            Expect.equal (withParamwise |> List.map (fun e -> e.Kind)) [ ErrorKind.Key ] "still the constructor's KeyError"
            let empty = configErrors (fun () -> Builder.build_optim_wrapper (model, "{}") |> ignore)
            Expect.equal empty.Head.Kind ErrorKind.Assertion "AssertionError"
            Expect.stringContains empty.Head.Message "`optim_wrapper_cfg` must contain" "message"
        }
        test "test_build_default_optimizer_constructor" {
            let model = exampleModel ()
            let cfg = Builder.ParseConfig(sgdCfg standardParamwise)
            let constructor = Registries.OPTIM_WRAPPER_CONSTRUCTORS.get("DefaultOptimWrapperConstructor").Invoke(cfg)
            let w = constructor.Invoke model :?> OptimWrapper
            checkSgdOptimizer w.optimizer model standard
        }
        test "test_build_custom_optimizer_constructor" {
            Registries.register_constructor<MyOptimizerConstructor>()
            let model = exampleModel ()
            let cfg = sgdCfg """, "constructor": "MyOptimizerConstructor", "paramwise_cfg": {"conv1_lr_mult": 5}"""
            let optimizer = Builder.build_optim_wrapper<torch.optim.Optimizer>(model, cfg)
            Expect.equal (OptimizerGroups.PyTorchName optimizer) "SGD" "a bare SGD"
            let d = OptimizerGroups.Defaults optimizer
            Expect.equal (num d.["lr"], num d.["momentum"], num d.["weight_decay"]) (baseLr, momentum, baseWd) "defaults"
            let groups = OptimizerGroups.Of optimizer
            for (g, p) in Seq.zip groups (paramsOf model) do
                Expect.isTrue (sameParams g.Params [ p ]) "group i holds parameter i"
                Expect.equal (num g.["momentum"]) momentum "momentum"
            Expect.equal (num groups.[1].["lr"]) (baseLr * 5.0) "conv1.weight lr"
            Expect.equal (num groups.[1].["weight_decay"]) baseWd "conv1.weight wd"
            Expect.isTrue (Registries.OPTIM_WRAPPER_CONSTRUCTORS.remove "MyOptimizerConstructor") "unregistered"
        }
        test "test_default_optimizer_constructor" {
            let model = exampleModel ()
            let e1 = configErrors (fun () -> DefaultOptimWrapperConstructor("[]") |> ignore)
            Expect.equal e1.Head.Kind ErrorKind.Type "a list is not a config"
            let e2 =
                configErrors (fun () ->
                    DefaultOptimWrapperConstructor("""{"optimizer": {"type": "SGD", "lr": 0.0001, "weight_decay": null}, "paramwise_cfg": ["error"]}""") |> ignore)
            Expect.equal (e2 |> List.map (fun e -> e.Kind)) [ ErrorKind.Type ] "paramwise_cfg must be a dict"
            let e3 =
                configErrors (fun () ->
                    DefaultOptimWrapperConstructor(
                        """{"optimizer": {"type": "SGD", "lr": 0.0001, "weight_decay": null}, "paramwise_cfg": {"bias_decay_mult": 1, "norm_decay_mult": 1}}""") |> ignore)
            Expect.isTrue (e3 |> List.forall (fun e -> e.Kind = ErrorKind.Value && e.Message.Contains "base_wd should not be None")) "ValueError at construction"
            let w = DefaultOptimWrapperConstructor(sgdCfg "").Invoke(model) :?> OptimWrapper
            checkDefaultOptimizer w.optimizer model
            // A user optimizer (MMEngine's CustomOptimizer(SGD) in a child registry; no scopes here).
            Registries.OPTIMIZERS.register_module("CustomOptimizer", OptimizerFactory(fun groups kwargs ->
                BuiltinOptimizers.Create("SGD", groups, kwargs))) |> ignore
            try
                let built = Builder.build_optim_wrapper (model, """{"optimizer": {"type": "CustomOptimizer", "lr": 0.1}}""")
                Expect.equal (num (built.get_lr().["lr"].[0])) 0.1 "built"
            finally
                Registries.OPTIMIZERS.remove "CustomOptimizer" |> ignore
        }
        test "test_default_optimizer_constructor_with_model_wrapper" {
            let model = exampleModel ()
            let wrapped = new PseudoDataParallel(model)
            let w = DefaultOptimWrapperConstructor(sgdCfg "").Invoke(wrapped) :?> OptimWrapper
            checkDefaultOptimizer w.optimizer model
            let w2 = DefaultOptimWrapperConstructor(sgdCfg standardParamwise).Invoke(wrapped) :?> OptimWrapper
            checkSgdOptimizer w2.optimizer model standard
            let r = Inspection.inspect (wrapped, sgdCfg standardParamwise)
            Expect.equal (GoldenFacts.strings (r["param_groups"].[0]["params"])) [ "param1" ] "names without a module. prefix"
        }
        test "test_default_optimizer_constructor_with_empty_paramwise_cfg" {
            let model = exampleModel ()
            let w = DefaultOptimWrapperConstructor(sgdCfg ", \"paramwise_cfg\": {}").Invoke(model) :?> OptimWrapper
            checkDefaultOptimizer w.optimizer model
            for p in paramsOf model do p.requires_grad <- false
            let frozen = DefaultOptimWrapperConstructor(sgdCfg ", \"paramwise_cfg\": {}").Invoke(model) :?> OptimWrapper
            checkDefaultOptimizer frozen.optimizer model
            Expect.equal (OptimizerGroups.Of(frozen.optimizer).[0].Params.Count) 14 "all 14 parameters, frozen too"
        }
        test "test_default_optimizer_constructor_with_paramwise_cfg" {
            let model = exampleModel ()
            let w = DefaultOptimWrapperConstructor(sgdCfg standardParamwise).Invoke(model) :?> OptimWrapper
            checkSgdOptimizer w.optimizer model standard
        }
        test "test_default_optimizer_constructor_no_grad" {
            let model = exampleModel ()
            let conv1 = ModelSpec.moduleAt model "conv1"
            for p in conv1.parameters() do p.requires_grad <- false
            let cfg = sgdCfg """, "paramwise_cfg": {"bias_lr_mult": 2, "bias_decay_mult": 0.5, "norm_decay_mult": 0, "dwconv_decay_mult": 0.1, "dcn_offset_lr_mult": 0.1}"""
            let w = DefaultOptimWrapperConstructor(cfg).Invoke(model) :?> OptimWrapper
            let inGroups = w.param_groups |> Seq.collect (fun g -> g.Params) |> Seq.map ModuleFacts.Identity |> set
            let byName = ModuleFacts.NamedParameters model |> Seq.map (fun struct (n, p) -> n, ModuleFacts.Identity p) |> dict
            Expect.isFalse (inGroups.Contains byName.["conv1.weight"]) "conv1.weight left out"
            Expect.isTrue (inGroups.Contains byName.["conv2.weight"]) "conv2.weight present"
        }
        test "test_default_optimizer_constructor_bypass_duplicate" {
            let model, conv1 = exampleDuplicateModel ()
            Expect.equal (paramsOf model).Length 14 "parameters() deduplicates"
            let noBypass = sgdCfg """, "paramwise_cfg": {"bias_lr_mult": 2, "bias_decay_mult": 0.5, "norm_decay_mult": 0, "dwconv_decay_mult": 0.1}"""
            let e = throws<ArgumentException> (fun () -> DefaultOptimWrapperConstructor(noBypass).Invoke(model) |> ignore) "duplicate"
            Expect.stringContains e.Message "some parameters appear in more than one parameter group" "PyTorch's message"
            let bypass = sgdCfg (standardParamwise.Replace("}", ", \"bypass_duplicate\": true}"))
            let provider, scope = captureLogs ()
            inside scope (fun () ->
                let w = DefaultOptimWrapperConstructor(bypass).Invoke(model) :?> OptimWrapper
                let warnings = provider.Records |> List.filter (fun r -> r.Level = LogLevel.Warning)
                Expect.isGreaterThanOrEqual warnings.Length 1 "a warning"
                Expect.equal warnings.Head.Message "conv3.0 is duplicate. It is skipped since bypass_duplicate=True" "MMEngine's text"
                Expect.equal (OptimizerGroups.Of w.optimizer).Count 14 "one group per distinct parameter"
                checkSgdOptimizer w.optimizer model standard
                provider.Clear()
                for p in conv1.parameters() do p.requires_grad <- false
                let w2 = DefaultOptimWrapperConstructor(bypass).Invoke(model) :?> OptimWrapper
                let warnings2 = provider.Records |> List.filter (fun r -> r.Level = LogLevel.Warning) |> List.map (fun r -> r.Message)
                Expect.equal warnings2 [ "conv1.0.weight is skipped since its requires_grad=False"; "conv3.0.weight is skipped since its requires_grad=False" ] "skipped twice"
                Expect.equal (OptimizerGroups.Of w2.optimizer).Count 13 "13 groups")
        }
        test "test_default_optimizer_constructor_custom_key" {
            let model = exampleModel ()
            let e1 = configErrors (fun () -> DefaultOptimWrapperConstructor(sgdCfg ", \"paramwise_cfg\": {\"custom_keys\": [0.1, 0.0001]}") |> ignore)
            Expect.equal (e1 |> List.map (fun e -> e.Kind, e.Path)) [ ErrorKind.Type, "paramwise_cfg.custom_keys" ] "custom_keys must be a dict"
            let e2 =
                configErrors (fun () ->
                    DefaultOptimWrapperConstructor("""{"optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.0001}, "paramwise_cfg": {"custom_keys": {".backbone": {"decay_mult": 0.5}}}}""") |> ignore)
            Expect.equal (e2 |> List.map (fun e -> e.Kind)) [ ErrorKind.Value ] "decay_mult without weight decay"
            let cfg =
                sgdCfg """, "paramwise_cfg": {"custom_keys": {"param1": {"lr_mult": 10}, "sub": {"lr_mult": 0.1, "decay_mult": 0}, "sub.gn": {"lr_mult": 0.01}, "non_exist_key": {"lr_mult": 0.0}}, "norm_decay_mult": 0.5}"""
            let w = DefaultOptimWrapperConstructor(cfg).Invoke(model) :?> OptimWrapper
            let d = OptimizerGroups.Defaults w.optimizer
            Expect.equal (num d.["lr"], num d.["momentum"], num d.["weight_decay"]) (baseLr, momentum, baseWd) "defaults"
            let groups = OptimizerGroups.Of w.optimizer
            Expect.equal groups.Count 14 "one group per parameter"
            for (g, struct (name, p)) in Seq.zip groups (ModuleFacts.NamedParameters model) do
                Expect.isTrue (sameParams g.Params [ p ]) name
                let expected =
                    match name with
                    | "param1" | "sub.param1" -> baseLr * 10.0, momentum, baseWd
                    | "sub.gn.weight" | "sub.gn.bias" -> baseLr * 0.01, momentum, baseWd
                    | "sub.conv1.weight" | "sub.conv1.bias" -> baseLr * 0.1, momentum, 0.0
                    | "bn.weight" | "bn.bias" -> baseLr, momentum, baseWd * 0.5
                    | _ -> baseLr, momentum, baseWd
                Expect.equal (num g.["lr"], num g.["momentum"], num g.["weight_decay"]) expected name
            let noWd = """{"optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.0001}, "paramwise_cfg": {"custom_keys": {"param1": {"lr_mult": 10}}}}"""
            let w2 = DefaultOptimWrapperConstructor(noWd).Invoke(model) :?> OptimWrapper
            Expect.equal (num (OptimizerGroups.Defaults w2.optimizer).["weight_decay"]) 0.0 "SGD's default weight decay"
            for (g, struct (name, _)) in Seq.zip (OptimizerGroups.Of w2.optimizer) (ModuleFacts.NamedParameters model) do
                let lr = if name = "param1" || name = "sub.param1" then baseLr * 10.0 else baseLr
                Expect.equal (num g.["lr"], num g.["momentum"], num g.["weight_decay"]) (lr, momentum, 0.0) name
        }
        test "test_ger_lr through the constructor (test_optimizer_wrapper.py)" {
            let model = new ToyModel()
            let w = Builder.build_optim_wrapper (model, """{"type": "OptimWrapper", "optimizer": {"type": "SGD", "lr": 0.1}, "paramwise_cfg": {"custom_keys": {"conv1.weight": {"lr_mult": 0.1}}}}""")
            Expect.equal (string (w.get_lr())) (sprintf "{'base_lr': [0.1], 'lr': [%s, 0.1, 0.1, 0.1, 0.1, 0.1]}" (PyFormat.float (0.1 * 0.1))) "get_lr"
        }
        test "a bad config reports every problem at once, with JSON paths, and builds nothing" {
            let model = exampleModel ()
            let cfg = """{"type": "OptimWraper", "optimizer": {"type": "SDG", "lr": "0.1", "betas": [0.9]}, "paramwise_cfg": {"norm_decay_mult": "0"}, "accumulative_counts": 0}"""
            let e = throws<OptimConfigException> (fun () -> Builder.build_optim_wrapper (model, cfg) |> ignore) "invalid"
            let lines = e.Errors |> Seq.map string |> List.ofSeq
            Expect.equal
                (List.take 3 lines)
                [ "optimizer.lr: expected a number, got a string"
                  "optimizer.betas: expected two numbers, got 1"
                  "accumulative_counts: _accumulative_counts at least greater than or equal to 1 (got 0)" ]
                "parse errors first"
            // Then what the rest of the config breaks (checked with the bad keys left out).
            let rest = e.Errors |> Seq.skip 3 |> Seq.map (fun x -> x.Path) |> List.ofSeq
            Expect.equal rest [ "paramwise_cfg.norm_decay_mult"; "optimizer.type"; "type" ] "names and paramwise too, in the same exception"
            let cfg2 = """{"type": "OptimWraper", "optimizer": {"type": "SDG", "lr": 0.1, "weight_decay": 0.1}, "paramwise_cfg": {"norm_decay_mult": "0"}}"""
            let e2 = throws<OptimConfigException> (fun () -> Builder.build_optim_wrapper (model, cfg2) |> ignore) "invalid"
            let lines2 = e2.Errors |> Seq.map string |> List.ofSeq
            Expect.equal lines2.Length 3 (sprintf "three problems: %A" lines2)
            Expect.stringStarts lines2.[0] "paramwise_cfg.norm_decay_mult: expected a number or null" "paramwise"
            Expect.stringStarts lines2.[1] "optimizer.type: SDG is not in the optimizer registry. Did you mean 'SGD'?" "optimizer name"
            Expect.stringStarts lines2.[2] "type: OptimWraper is not in the optim_wrapper registry. Did you mean 'OptimWrapper'?" "wrapper name"
            Expect.stringContains e2.Message "3 problems" "one exception lists them all"
            let e3 = throws<OptimConfigException> (fun () -> Builder.build_optim_wrapper (model, """{"optimizer": {"type": "SGD", "lr": 0.1, "betas": [0.9, 0.99]}}""") |> ignore) "betas on SGD"
            Expect.stringContains (string e3.Errors.[0]) "optimizer.betas: SGD.__init__() got an unexpected keyword argument 'betas'" "unknown keyword for SGD"
        }
        test "the config is not mutated (JSON node and dictionary inputs)" {
            let model = exampleModel ()
            let node = Text.Json.Nodes.JsonNode.Parse(sgdCfg standardParamwise)
            let before = node.ToJsonString()
            Builder.build_optim_wrapper (model, node) |> ignore
            Expect.equal (node.ToJsonString()) before "JSON node unchanged"
            let clip = Dictionary<string, obj>(dict [ "type", box "norm"; "max_norm", box 1.0 ])
            let cfg = Dictionary<string, obj>(dict [ "optimizer", box (Dictionary<string, obj>(dict [ "type", box "SGD"; "lr", box 0.1 ])); "clip_grad", box clip ])
            let w = Builder.build_optim_wrapper (model, cfg :> IReadOnlyDictionary<string, obj>)
            Expect.isTrue (clip.ContainsKey "type") "clip_grad keeps its type (MMEngine pops it)"
            Expect.isTrue (not (isNull (box w.ClipGrad))) "clipping configured"
        }
        test "the seed's ToyModel with norm_decay_mult=0 logs the two bn lines of current MMEngine" {
            let toy = new ModelSpec.SpecContainer("ToyModel")
            let backbone = new ModelSpec.SpecContainer("backbone")
            backbone.AddChild("layer0", torch.nn.Linear(1L, 1L))
            backbone.AddChild("layer1", torch.nn.Linear(1L, 1L))
            toy.AddChild("backbone", backbone)
            toy.AddChild("head", torch.nn.Sequential(struct ("linear", torch.nn.Linear(1L, 1L) :> torch.nn.Module<_, _>), struct ("bn", torch.nn.BatchNorm1d(1L) :> torch.nn.Module<_, _>)))
            let provider, scope = captureLogs ()
            inside scope (fun () ->
                Builder.build_optim_wrapper (toy, """{"optimizer": {"type": "SGD", "lr": 0.01, "weight_decay": 0.0001}, "paramwise_cfg": {"norm_decay_mult": 0}}""") |> ignore
                Expect.equal
                    (provider.Records |> List.map (fun r -> r.Level, r.Message))
                    [ LogLevel.Information, "paramwise_options -- head.bn.weight:weight_decay=0.0"
                      LogLevel.Information, "paramwise_options -- head.bn.bias:weight_decay=0.0" ]
                    "log lines")
        }
        test "a multiplier applied to a missing base lr is MMEngine's TypeError, after the lines logged so far" {
            let cfg = """{"optimizer": {"type": "Adam"}, "paramwise_cfg": {"bias_lr_mult": 2}}"""
            let e = throws<OptimConfigException> (fun () -> Builder.build_optim_wrapper (exampleModel (), cfg) |> ignore) "no lr"
            Expect.equal e.Errors.[0].Kind ErrorKind.Type "TypeError"
            Expect.stringContains e.Message "unsupported operand type(s) for *: 'NoneType' and 'int' (computing lr of conv2.bias)" "message"
            let r = Inspection.inspect (exampleModel (), cfg)
            let first = r["errors"].AsArray().[0]
            Expect.equal (first["kind"].GetValue<string>()) "TypeError" "inspection keeps the kind"
        }
        test "LBFGS takes no per-parameter groups, as in PyTorch" {
            let e = throws<ArgumentException> (fun () -> Builder.build_optim_wrapper (exampleModel (), """{"optimizer": {"type": "LBFGS", "lr": 1}, "paramwise_cfg": {"bias_lr_mult": 2}}""") |> ignore) "LBFGS"
            Expect.stringContains e.Message "LBFGS doesn't support per-parameter options" "message"
        }
        test "registries: force, aliases, unknown names, user wrappers" {
            let e = throws<ArgumentException> (fun () -> Registries.OPTIMIZERS.register_module("SGD", BuiltinOptimizers.Factory "SGD") |> ignore) "duplicate"
            Expect.stringContains e.Message "SGD is already registered in optimizer" "KeyError text"
            Registries.OPTIMIZERS.register_module("SGD", BuiltinOptimizers.Factory "SGD", force = true) |> ignore
            let missing = throws<KeyNotFoundException> (fun () -> Registries.OPTIMIZERS.get "adamw" |> ignore) "unknown"
            Expect.stringContains missing.Message "Did you mean 'AdamW'?" "suggestion"
            Expect.stringContains missing.Message "Registered: SGD, Adam, AdamW" "listing"
            // A user wrapper, registered under two names.
            Registries.OPTIM_WRAPPERS.register_module([ "CountingWrapper"; "Counting" ], OptimWrapperFactory(fun opt kwargs ->
                WrapperArgs.Check("CountingWrapper", kwargs, "accumulative_counts", "note")
                OptimWrapper(opt, WrapperArgs.Int(kwargs, "accumulative_counts", 1)))) |> ignore
            try
                let w = Builder.build_optim_wrapper (new ToyModel(), """{"type": "Counting", "optimizer": {"type": "SGD", "lr": 0.1}, "accumulative_counts": 2, "note": "x"}""")
                Expect.equal w.accumulative_counts 2 "extra wrapper keys reach the factory"
                let bad = throws<ArgumentException> (fun () -> Builder.build_optim_wrapper (new ToyModel(), """{"optimizer": {"type": "SGD", "lr": 0.1}, "note": "x"}""") |> ignore) "OptimWrapper rejects note"
                Expect.stringContains bad.Message "unexpected keyword argument 'note'" "message"
            finally
                Registries.OPTIM_WRAPPERS.remove "CountingWrapper" |> ignore
                Registries.OPTIM_WRAPPERS.remove "Counting" |> ignore
        }
    ]

let private linear () = torch.nn.Linear(1L, 1L)

let private fixture () =
    let model1, model2 = linear (), linear ()
    let w1 = OptimWrapper(torch.optim.SGD(parametersOf model1, 0.1, momentum = 0.8))
    let w2 = OptimWrapper(torch.optim.SGD(parametersOf model2, 0.2, momentum = 0.9))
    model1, model2, w1, w2, OptimWrapperDict(struct ("optim1", w1), struct ("optim2", w2))

let testOptimWrapperDict =
    testList "TestOptimWrapperDict (test_optimizer_wrapper_dict.py)" [
        test "test_init" {
            let _, _, w1, w2, d = fixture ()
            Expect.sequenceEqual (d.optim_wrappers |> Seq.map (fun kv -> kv.Key, kv.Value)) [ "optim1", w1; "optim2", w2 ] "optim_wrappers"
            let raw = [ KeyValuePair<string, obj>("optim1", box (torch.optim.SGD(parametersOf (linear ()), 0.1))) ]
            let e = throws<ArgumentException> (fun () -> OptimWrapperDict(raw) |> ignore) "raw optimizer"
            Expect.stringContains e.Message "`OptimWrapperDict` only accept" "message"
        }
        test "test_update_params, test_backward, test_step" {
            let _, _, _, _, d = fixture ()
            let e1 = throws<NotImplementedException> (fun () -> d.update_params(torch.tensor 1.0f)) "update_params"
            Expect.stringContains e1.Message "`update_params` should be called" "update_params"
            let e2 = throws<NotImplementedException> (fun () -> d.backward(torch.tensor 1.0f)) "backward"
            Expect.stringContains e2.Message "`backward` should be called" "backward"
            let e3 = throws<NotImplementedException> (fun () -> d.step()) "step"
            Expect.stringContains e3.Message "`step` should be called" "step"
        }
        test "test_zero_grad" {
            let model1, model2, _, _, d = fixture ()
            for m in [ model1; model2 ] do m.forward(torch.ones(1L, 1L)).sum().backward()
            Expect.isNotNull model1.weight.grad "grad before"
            d.zero_grad(set_to_none = false) // the argument is not forwarded, as in MMEngine
            Expect.isNull model1.weight.grad "model1 grad is None"
            Expect.isNull model2.weight.grad "model2 grad is None"
        }
        test "test_optim_context (a real assertion, unlike the upstream generator test)" {
            let model1, _, _, _, d = fixture ()
            let e = throws<NotImplementedException> (fun () -> (d.optim_context model1).Dispose()) "optim_context"
            Expect.stringContains e.Message "`optim_context` should be called" "message"
        }
        test "test_initialize_count_status" {
            let model1, _, w1, _, d = fixture ()
            d.initialize_count_status(model1, 1, 1)
            Expect.equal w1.inner_count 0 "not forwarded"
        }
        test "test_param_groups" {
            let _, _, w1, w2, d = fixture ()
            Expect.isTrue (Seq.forall2 (fun a b -> obj.ReferenceEquals(a, b)) d.param_groups.["optim1"] w1.param_groups) "optim1"
            Expect.isTrue (Seq.forall2 (fun a b -> obj.ReferenceEquals(a, b)) d.param_groups.["optim2"] w2.param_groups) "optim2"
        }
        test "test_get_lr and test_get_momentum" {
            let _, _, _, _, d = fixture ()
            Expect.equal (List.ofSeq (d.get_lr().["optim1.lr"])) [ 0.1 ] "optim1.lr"
            Expect.equal (List.ofSeq (d.get_lr().["optim2.lr"])) [ 0.2 ] "optim2.lr"
            Expect.equal (List.ofSeq (d.get_momentum().["optim1.momentum"])) [ 0.8 ] "optim1.momentum"
            Expect.equal (List.ofSeq (d.get_momentum().["optim2.momentum"])) [ 0.9 ] "optim2.momentum"
        }
        test "get_lr puts name.base_lr first for a multi-group wrapper" {
            let model = new ToyModel()
            let multi = Builder.build_optim_wrapper (model, """{"optimizer": {"type": "SGD", "lr": 0.1}, "paramwise_cfg": {"bias_lr_mult": 2}}""")
            let d = OptimWrapperDict(struct ("gen", multi))
            Expect.sequenceEqual (d.get_lr().Keys) [ "gen.base_lr"; "gen.lr" ] "keys"
        }
        test "test_state_dict and test_load_state_dict" {
            let _, _, w1, w2, d = fixture ()
            let sd = d.state_dict()
            Expect.equal (sd.["optim1"].ToJson()) (w1.state_dict().ToJson()) "optim1"
            Expect.equal (sd.["optim2"].ToJson()) (w2.state_dict().ToJson()) "optim2"
            let fresh = OptimWrapperDict(struct ("optim1", OptimWrapper(torch.optim.SGD(parametersOf (linear ()), 0.1))),
                                         struct ("optim2", OptimWrapper(torch.optim.SGD(parametersOf (linear ()), 0.1))))
            fresh.load_state_dict(sd)
            let after = fresh.state_dict()
            for k in [ "optim1"; "optim2" ] do
                Expect.equal (after.[k].ToJson()) (sd.[k].ToJson()) (k + " equal after load")
            Expect.equal (List.ofSeq (fresh.get_lr().["optim2.lr"])) [ 0.2 ] "lr copied"
            Expect.equal (List.ofSeq (fresh.get_momentum().["optim2.momentum"])) [ 0.9 ] "momentum copied"
            let unknown = OrderedDictionary<string, OptimStateDict>()
            unknown.["unknown"] <- sd.["optim1"]
            let e = throws<KeyNotFoundException> (fun () -> fresh.load_state_dict(unknown)) "unknown name"
            Expect.stringContains e.Message "Mismatched `state_dict`!" "message"
        }
        test "test_items, test_values, test_keys, test_getitem, test_len, test_contain, test_repr" {
            let _, _, w1, w2, d = fixture ()
            Expect.sequenceEqual (d.items() |> Seq.map (fun kv -> kv.Key, kv.Value)) [ "optim1", w1; "optim2", w2 ] "items"
            Expect.sequenceEqual (d.values()) [ w1; w2 ] "values"
            Expect.sequenceEqual (d.keys()) [ "optim1"; "optim2" ] "keys"
            Expect.isTrue (obj.ReferenceEquals(d.["optim1"], w1) && obj.ReferenceEquals(d.["optim2"], w2)) "getitem"
            Expect.equal d.Count 2 "len"
            Expect.isTrue (d.ContainsKey "optim1") "contains"
            Expect.stringContains (string d) "name: optim1" "repr"
            let e = throws<KeyNotFoundException> (fun () -> d.["missing"] |> ignore) "missing"
            Expect.stringContains e.Message "Cannot find missing in OptimWrapperDict" "message"
            Expect.equal (string (OptimWrapperDict())) "" "empty repr"
        }
        test "the seed's example prints MMEngine's dicts" {
            let gen, disc = linear (), linear ()
            let d =
                OptimWrapperDict(struct ("gen", OptimWrapper(torch.optim.SGD(parametersOf gen, 0.01))),
                                 struct ("disc", OptimWrapper(torch.optim.SGD(parametersOf disc, 0.01))))
            Expect.equal (string (d.get_lr())) "{'gen.lr': [0.01], 'disc.lr': [0.01]}" "get_lr"
            Expect.equal (string (d.get_momentum())) "{'gen.momentum': [0], 'disc.momentum': [0]}" "get_momentum"
        }
    ]

let semantics =
    testList "optimizer semantics of the built groups" [
        test "groups with only some keys train exactly like fully specified TorchSharp groups" {
            let build () =
                torch.manual_seed 7L |> ignore
                let m = new ModelSpec.SpecContainer("Net")
                m.AddChild("fc", torch.nn.Linear(2L, 2L))
                m.AddChild("ln", torch.nn.LayerNorm([| 2L |]))
                m
            let x = torch.tensor([| 1.0f; -2.0f; 0.5f; 3.0f |]).reshape(2L, 2L)
            let train (model: ModelSpec.SpecContainer) (stepOnce: torch.Tensor -> unit) =
                for _ in 1 .. 3 do
                    let y = model.forward x
                    stepOnce ((y * y).sum())
                ModuleFacts.NamedParameters model |> Seq.map (fun struct (n, p) -> n, valuesOf (p.detach())) |> List.ofSeq
            let ours = build ()
            let w =
                Builder.build_optim_wrapper (
                    ours,
                    """{"optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
                        "paramwise_cfg": {"bias_lr_mult": 2, "norm_decay_mult": 0, "flat_decay_mult": 0.5}}""")
            let got = train ours w.update_params
            let reference = build ()
            let ps = ModuleFacts.NamedParameters reference |> Seq.map (fun struct (n, p) -> n, p) |> dict
            let group name lr wd = SGD.ParamGroup([ ps.[name] ], lr = lr, momentum = 0.9, weight_decay = wd)
            let sgd =
                torch.optim.SGD(
                    [ group "fc.weight" 0.1 0.01
                      group "fc.bias" (0.1 * 2.0) (0.01 * 0.5)
                      group "ln.weight" 0.1 (0.01 * 0.0)
                      group "ln.bias" 0.1 (0.01 * 0.0) ],
                    0.1, momentum = 0.9, weight_decay = 0.01)
            let expected = train reference (fun loss -> loss.backward(); sgd.step() |> ignore; sgd.zero_grad())
            Expect.equal got expected "bit-identical parameters after three steps"
        }
    ]

let layerDecay =
    testList "examples/LayerDecay" [
        test "the seed's LayerDecayOptimWrapperConstructor, registered and built from JSON, logs one lr per depth" {
            Registries.register_constructor<LayerDecay.LayerDecayOptimWrapperConstructor>(force = true)
            let model = new LayerDecay.ToyModel()
            let provider, scope = captureLogs ()
            inside scope (fun () ->
                let cfg =
                    """{"optimizer": {"type": "SGD", "lr": 0.01, "weight_decay": 0.0001}, "paramwise_cfg": {"decay_factor": 0.5},
                        "constructor": "LayerDecayOptimWrapperConstructor"}"""
                let w = Builder.build_optim_wrapper (model, cfg)
                Expect.equal
                    (provider.Records |> List.map (fun r -> r.Category, r.Level, r.Message))
                    [ for line in [ "layer.linear.weight : lr=0.0025"; "layer.linear.bias : lr=0.0025"; "linear.weight : lr=0.005"; "linear.bias : lr=0.005" ] ->
                        "LayerDecayOptimWrapperConstructor", LogLevel.Information, line ]
                    "the seed's log lines"
                Expect.equal (string (w.get_lr())) "{'base_lr': [0.01], 'lr': [0.0025, 0.0025, 0.005, 0.005]}" "one group per parameter"
                Expect.equal (num (w.param_groups.[0].["weight_decay"])) 0.0001 "weight decay from the optimizer defaults")
        }
    ]

let inspection =
    testList "inspection entry point" [
        test "a custom key's provenance, readable JSON text" {
            let text =
                Inspection.inspect_json (
                    new ToyModel(),
                    """{"optimizer": {"type": "SGD", "lr": 0.1}, "paramwise_cfg": {"custom_keys": {"conv1": {"lr_mult": 0.5}}}}""")
            Expect.stringContains text "\"provenance\": {\n        \"lr\": \"custom_keys[\\\"conv1\\\"]\"" "provenance names the key"
            let r = Text.Json.Nodes.JsonNode.Parse text
            let groups = r["param_groups"].AsArray()
            let g0, g2 = groups.[0], groups.[2]
            Expect.equal (GoldenFacts.strings (g0["explicit_keys"])) [ "lr"; "lr_mult" ] "explicit keys"
            let options = g0["options"]
            Expect.equal (options["lr"].GetValue<double>()) (0.1 * 0.5) "lr"
            Expect.equal (g2["explicit_keys"].AsArray().Count) 0 "conv2 untouched"
            Expect.equal (r["logs"].AsArray().Count) 4 "two keys for each conv1 parameter"
        }
        test "a custom constructor's groups are reported with the constructor as their source" {
            Registries.register_constructor<LayerDecay.LayerDecayOptimWrapperConstructor>(force = true)
            let r =
                Inspection.inspect (
                    new LayerDecay.ToyModel(),
                    """{"optimizer": {"type": "SGD", "lr": 0.01}, "paramwise_cfg": {"decay_factor": 0.5}, "constructor": "LayerDecayOptimWrapperConstructor"}""")
            let g = r["param_groups"].[0]
            Expect.equal (GoldenFacts.strings (g["params"])) [ "layer.linear.weight" ] "name"
            Expect.equal (g["provenance"].["lr"].GetValue<string>()) "LayerDecayOptimWrapperConstructor.add_params" "source"
            Expect.equal (r["logs"].[0].["msg"].GetValue<string>()) "layer.linear.weight : lr=0.0025" "log line"
        }
        test "an invalid config is reported as every error, with kinds and paths" {
            let r = Inspection.inspect (new ToyModel(), """{"optimizer": {"type": "Adamm", "lr": 0.1, "betas": [1, 2, 3]}}""")
            Expect.equal (r["result"].GetValue<string>()) "error" "error"
            let e = r["errors"].[0]
            Expect.equal (e["path"].GetValue<string>(), e["kind"].GetValue<string>(), e["message"].GetValue<string>()) ("optimizer.betas", "TypeError", "expected two numbers, got 3") "first error"
            let r2 = Inspection.inspect (new ToyModel(), """{"optimizer": {"type": "Adamm", "lr": 0.1}}""")
            let e2 = r2["errors"].AsArray().[0]
            Expect.equal (e2["kind"].GetValue<string>()) "KeyError" "unknown optimizer"
            Expect.stringContains (e2["message"].GetValue<string>()) "Did you mean 'Adam'?" "suggestion"
        }
    ]

[<Tests>]
let tests = testList "builder" [ testBuilder; testOptimWrapperDict; semantics; layerDecay; inspection ]
