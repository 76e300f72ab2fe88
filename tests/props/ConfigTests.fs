/// Config parsing (JSON → typed optim_wrapper config, errors as values with JSON paths) and the pure
/// registry semantics.
module Optim.Tests.ConfigTests

open Expecto
open Optim.Core

let private parse text =
    match Config.parseText text with
    | Ok c -> c
    | Error es -> failwithf "unexpected errors: %A" es

let private errors text =
    match Config.parseText text with
    | Ok _ -> failwith "expected errors"
    | Error es -> es |> List.map string

let config =
    testList "config" [
        test "JSON numbers keep Python's int/float distinction; objects keep order" {
            match Config.parseJson """{"b": 1, "a": 1.0, "c": 1e-5, "d": [true, null, "x"], "b": 2}""" with
            | Ok v ->
                Expect.equal
                    v
                    (PyValue.Dict
                        [ "b", PyValue.Int 2L
                          "a", PyValue.Float 1.0
                          "c", PyValue.Float 1e-5
                          "d", PyValue.List [ PyValue.Bool true; PyValue.None; PyValue.Str "x" ] ])
                    "value (a repeated key keeps its first place and last value)"
            | Error e -> failwithf "%O" e
        }
        test "defaults: type OptimWrapper, constructor DefaultOptimWrapperConstructor" {
            let c = parse """{"optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001}}"""
            Expect.equal c.Type "OptimWrapper" "type"
            Expect.equal c.Constructor "DefaultOptimWrapperConstructor" "constructor"
            let o = c.Optimizer.Value
            Expect.equal o.Type (Some "SGD") "optimizer type"
            Expect.equal (o.Lr, o.Momentum, o.WeightDecay) (Some 0.01, Some 0.9, Some 0.0001) "hyper-parameters"
            Expect.equal o.BaseLr (PyValue.Float 0.01) "base_lr"
            Expect.equal c.ParamwiseCfg PyValue.None "no paramwise_cfg"
            Expect.isEmpty c.WrapperArgs "no wrapper arguments"
        }
        test "every wrapper key is read; unknown keys are kept for user wrappers, in order" {
            let c =
                parse
                    """{"type": "AmpOptimWrapper", "optimizer": {"type": "AdamW", "lr": 1e-3, "betas": [0.9, 0.95], "my_opt_arg": 3},
                        "accumulative_counts": 4, "clip_grad": {"max_norm": 1.0}, "loss_scale": "dynamic", "dtype": "bfloat16",
                        "use_fsdp": false, "paramwise_cfg": {"norm_decay_mult": 0}}"""
            Expect.equal c.Type "AmpOptimWrapper" "type"
            Expect.equal c.AccumulativeCounts (Some 4) "accumulative_counts"
            Expect.equal c.ClipGrad (Some [ "max_norm", PyValue.Float 1.0 ]) "clip_grad"
            Expect.equal c.LossScale (Some Config.LossScale.Dynamic) "loss_scale"
            Expect.equal c.Dtype (Some "bfloat16") "dtype"
            Expect.equal c.Extra [ "use_fsdp", PyValue.Bool false ] "extra"
            Expect.equal (c.WrapperArgs |> List.map fst) [ "accumulative_counts"; "clip_grad"; "loss_scale"; "dtype"; "use_fsdp" ] "wrapper args in order"
            Expect.equal c.Optimizer.Value.Betas (Some(0.9, 0.95)) "betas"
            Expect.equal (c.Optimizer.Value.Get "my_opt_arg") (PyValue.Int 3L) "unknown optimizer args kept"
            Expect.equal c.ParamwiseCfg (PyValue.Dict [ "norm_decay_mult", PyValue.Int 0L ]) "paramwise_cfg as given"
        }
        test "loss_scale: a float is static, an int is a TypeError (as MMEngine), a dict is custom" {
            Expect.equal (parse """{"loss_scale": 512.0}""").LossScale (Some(Config.LossScale.Static 512.0)) "float"
            Expect.equal (parse """{"loss_scale": {"init_scale": 1}}""").LossScale (Some(Config.LossScale.Custom [ "init_scale", PyValue.Int 1L ])) "dict"
            Expect.equal (errors """{"loss_scale": 512}""") [ "loss_scale: loss_scale must be of type float, dict, or \"dynamic\", but got 512" ] "int"
        }
        test "all errors are collected, each with its JSON path and what was expected" {
            let es =
                errors
                    """{"type": 3, "optimizer": {"type": "Adam", "lr": "fast", "betas": [0.9, 0.99, 0.999], "amsgrad": 1, "etas": [0.5, "x"], "params": []},
                        "accumulative_counts": 0, "clip_grad": [], "dtype": "float8"}"""
            Expect.equal
                es
                [ "type: expected a registered name, got an integer"
                  "optimizer.lr: expected a number, got a string"
                  "optimizer.betas: expected two numbers, got 3"
                  "optimizer.amsgrad: expected true or false, got an integer"
                  "optimizer.etas[1]: expected a number, got a string"
                  "optimizer.params: parameters come from the model; the config cannot list them"
                  "accumulative_counts: _accumulative_counts at least greater than or equal to 1 (got 0)"
                  "clip_grad: If `clip_grad` is not None, it should be a `dict` which is the arguments of `torch.nn.utils.clip_grad_norm_` or clip_grad_value_`."
                  "dtype: dtype should be any of ('float16', 'bfloat16', 'float32', 'float64'), got float8" ]
                "errors"
        }
        test "malformed JSON and a non-object config are errors, not exceptions" {
            Expect.stringStarts (errors """{"optimizer": """).Head "invalid JSON" "malformed"
            Expect.equal (errors "[1]") [ "optim_wrapper config must be an object, got a list" ] "list"
            Expect.equal (errors """{"clip_grad": {"type": "norm", "max_norm": 1, "clip_value": 2}}""") [ "clip_grad.clip_value: unexpected argument 'clip_value' (accepted: max_norm, norm_type, error_if_nonfinite, foreach)" ] "the wrapper's clip_grad rules"
        }
        test "DefaultOptimWrapperConstructor's checks: optimizer required, then paramwise against base_wd" {
            let check text =
                match Config.defaultConstructorSettings (parse text) with
                | Ok _ -> []
                | Error es -> es |> List.map (fun e -> e.Kind, string e)
            Expect.equal (check "{}") [ ErrorKind.Assertion, "optimizer: `optim_wrapper_cfg` must contain \"optimizer\" config" ] "no optimizer"
            let nowd = check """{"optimizer": {"type": "SGD", "lr": 0.01, "weight_decay": null}, "paramwise_cfg": {"bias_decay_mult": 1, "norm_decay_mult": 1}}"""
            Expect.equal (nowd |> List.map fst) [ ErrorKind.Value; ErrorKind.Value ] "two ValueErrors"
            Expect.stringContains (snd nowd.Head) "paramwise_cfg.bias_decay_mult: base_wd should not be None" "path and message"
            Expect.equal (check """{"optimizer": {"type": "SGD", "lr": 0.1}, "paramwise_cfg": ["error"]}""") [ ErrorKind.Type, "paramwise_cfg: paramwise_cfg should be None or a dict, but got <class 'list'>" ] "list paramwise"
            Expect.equal (check """{"optimizer": {"lr": 0.1}}""" |> List.map fst) [ ErrorKind.Key ] "no optimizer type"
            Expect.equal (check """{"optimizer": {"type": "SGD", "lr": 0.1}, "paramwise_cfg": {}}""") [] "empty paramwise"
        }
        test "optimizer keyword arguments are checked against the optimizer's PyTorch signature" {
            let check name kvs = Config.checkOptimizerArgs name kvs |> List.map string
            Expect.equal (check "SGD" [ "lr", PyValue.Float 0.1; "momentum", PyValue.Float 0.9; "foreach", PyValue.Bool true ]) [] "fine (foreach is only a hint)"
            Expect.equal (check "SGD" [ "momentum", PyValue.Float 0.9 ]) [ "lr: parameter group didn't specify a value of required optimization parameter lr" ] "SGD's lr is required"
            Expect.equal (check "Adam" []) [] "Adam has a default lr"
            Expect.equal
                (check "SGD" [ "lr", PyValue.Float 0.1; "betas", PyValue.List [ PyValue.Float 0.9; PyValue.Float 0.99 ]; "differentiable", PyValue.Bool true ])
                [ "betas: SGD.__init__() got an unexpected keyword argument 'betas' (it takes: lr, momentum, dampening, weight_decay, nesterov, maximize)"
                  "differentiable: 'differentiable' is a PyTorch-only switch that TorchSharp's SGD does not have; only false/null are accepted" ]
                "unknown and unsupported"
            Expect.equal (check "LBFGS" [ "line_search_fn", PyValue.Str "strong_wolfe" ]) [ "line_search_fn: TorchSharp's LBFGS has no line search; line_search_fn must be null" ] "LBFGS"
        }
        test "the typed config writes back to the same JSON" {
            let text = """{"type":"OptimWrapper","optimizer":{"type":"SGD","lr":0.01,"betas":[0.9,0.999]},"paramwise_cfg":{"custom_keys":{"a.b":{"lr_mult":1e-05}}},"constructor":"DefaultOptimWrapperConstructor","accumulative_counts":2,"clip_grad":{"type":"value","clip_value":0.5}}"""
            Expect.equal (PyJson.write false ((parse text).ToPyValue())) text "round trip"
        }
    ]

let registry =
    testList "registry" [
        test "register, force, aliases, lookup" {
            let r0 : Registry.Registry<int> = Registry.create "optimizer"
            let r1 = Registry.register [ "SGD" ] false 1 r0 |> Result.defaultWith (fun e -> failwithf "%O" e)
            match Registry.register [ "SGD" ] false 2 r1 with
            | Error e ->
                Expect.equal e.Kind ErrorKind.Key "kind"
                Expect.equal e.Message "SGD is already registered in optimizer" "message"
            | Ok _ -> failtest "duplicate accepted"
            let r2 = Registry.register [ "SGD" ] true 2 r1 |> Result.defaultWith (fun e -> failwithf "%O" e)
            Expect.equal (Registry.find "SGD" r2) (Ok 2) "force overwrites"
            let r3 = Registry.register [ "Adam"; "AdamAlias" ] false 3 r2 |> Result.defaultWith (fun e -> failwithf "%O" e)
            Expect.equal (Registry.names r3) [ "SGD"; "Adam"; "AdamAlias" ] "names in registration order"
            Expect.equal (Registry.find "AdamAlias" r3) (Ok 3) "alias"
        }
        test "an unknown name lists the registered names and suggests the closest" {
            let r =
                [ "SGD"; "Adam"; "AdamW"; "RMSprop"; "Adagrad" ]
                |> List.fold (fun acc n -> Registry.register [ n ] false n acc |> Result.defaultWith (fun e -> failwithf "%O" e)) (Registry.create "optimizer")
            match Registry.find "SDG" r with
            | Error e ->
                Expect.equal e.Kind ErrorKind.Key "kind"
                Expect.equal e.Message "SDG is not in the optimizer registry. Did you mean 'SGD'? Registered: SGD, Adam, AdamW, RMSprop, Adagrad." "message"
            | Ok _ -> failtest "found"
            Expect.equal (Registry.closest "RMSProp" (Registry.names r)) (Some "RMSprop") "case differences are cheap"
            Expect.equal (Registry.closest "adamw" (Registry.names r)) (Some "AdamW") "AdamW over Adam"
            Expect.equal (Registry.closest "INVALID_CONSTRUCTOR" (Registry.names r)) None "nothing close"
            Expect.equal (Registry.editDistance "kitten" "sitting") 3 "Levenshtein"
        }
    ]

[<Tests>]
let tests = testList "config and registry" [ config; registry ]
