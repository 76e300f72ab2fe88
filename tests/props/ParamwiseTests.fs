/// The pure param-group rules (Optim.Core.Paramwise): MMEngine's worked examples, the golden cases
/// replayed on the facts the golden files record, and the custom_keys precedence property.
module Optim.Tests.ParamwiseTests

open Expecto
open FsCheck
open FsCheck.FSharp
open Optim.Core
open Optim.Core.Paramwise
open Optim.Tests.GoldenFacts

let private f (x: float) = PyValue.Float x

let private fact prefix name kind ndim identity =
    { Prefix = prefix
      Name = name
      Kind = kind
      InDcnModule = false
      Ndim = ndim
      RequiresGrad = true
      Identity = identity }

/// MMEngine's test ExampleModel (with its DCN module, whose offset conv is a DCN child).
let exampleModel =
    [ fact "" "param1" ModuleKind.Other 1 0L
      fact "conv1" "weight" ModuleKind.Conv2d 4 1L
      fact "conv2" "weight" ModuleKind.Conv2d 4 2L
      fact "conv2" "bias" ModuleKind.Conv2d 1 3L
      fact "bn" "weight" ModuleKind.Norm 1 4L
      fact "bn" "bias" ModuleKind.Norm 1 5L
      fact "sub" "param1" ModuleKind.Other 1 6L
      fact "sub.conv1" "weight" ModuleKind.DepthwiseConv 4 7L
      fact "sub.conv1" "bias" ModuleKind.DepthwiseConv 1 8L
      fact "sub.gn" "weight" ModuleKind.Norm 1 9L
      fact "sub.gn" "bias" ModuleKind.Norm 1 10L
      fact "dcn" "weight" ModuleKind.Other 4 11L
      { fact "dcn.conv_offset" "weight" ModuleKind.Conv2d 4 12L with InDcnModule = true }
      { fact "dcn.conv_offset" "bias" ModuleKind.Conv2d 1 13L with InDcnModule = true } ]

let private settings (kvs: (string * PyValue) list) (baseWd: PyValue) =
    match settingsOf (PyValue.Dict kvs) baseWd with
    | Ok s -> s
    | Error es -> failwithf "unexpected settings errors: %A" es

let private planOk s baseLr baseWd facts =
    match plan s baseLr baseWd [] facts with
    | Ok p -> p
    | Error e -> failwithf "unexpected plan failure: %O" e.Error

/// (lr, weight_decay) of each group: the group's key when set, else the optimizer's base value.
let private lrWd (baseLr: float) (baseWd: float) (p: Plan) =
    p.Groups
    |> List.map (fun g ->
        let get k d =
            match PyValue.tryFind k g.Pairs with
            | Some v -> (PyNum.toDouble v).Value
            | None -> d
        g.Param.FullName, (get "lr" baseLr, get "weight_decay" baseWd))

let private standard =
    [ "bias_lr_mult", f 2.0
      "bias_decay_mult", f 0.5
      "norm_decay_mult", PyValue.Int 0L
      "dwconv_decay_mult", f 0.1
      "dcn_offset_lr_mult", f 0.1
      "flat_decay_mult", f 0.3 ]

let workedExamples =
    testList "worked examples" [
        test "ExampleModel with the standard multipliers (SPEC §6.4, _check_sgd_optimizer)" {
            let p = planOk (settings standard (f 0.9)) (f 0.01) (f 0.9) exampleModel
            let expected =
                [ "param1", (0.01, 0.9 * 0.3)
                  "conv1.weight", (0.01, 0.9)
                  "conv2.weight", (0.01, 0.9)
                  "conv2.bias", (0.01 * 2.0, 0.9 * 0.5)
                  "bn.weight", (0.01, 0.9 * 0.0)
                  "bn.bias", (0.01, 0.9 * 0.0)
                  "sub.param1", (0.01, 0.9 * 0.3)
                  "sub.conv1.weight", (0.01, 0.9 * 0.1)
                  "sub.conv1.bias", (0.01 * 2.0, 0.9 * 0.5)
                  "sub.gn.weight", (0.01, 0.0)
                  "sub.gn.bias", (0.01, 0.0)
                  "dcn.weight", (0.01, 0.9)
                  "dcn.conv_offset.weight", (0.01 * 0.1, 0.9)
                  "dcn.conv_offset.bias", (0.01 * 0.1, 0.9) ]
            Expect.sequenceEqual (lrWd 0.01 0.9 p) expected "(lr, wd) per group"
            Expect.equal (snd (snd (lrWd 0.01 0.9 p).[7])) 0.09000000000000001 "0.9*0.1 is not 0.09"
        }
        test "provenance names the rule behind each option" {
            let p = planOk (settings standard (f 0.9)) (f 0.01) (f 0.9) exampleModel
            let rules = p.Groups |> List.map (fun g -> g.Param.FullName, g.Options |> List.map (fun o -> o.Key, o.Rule))
            let expected =
                [ "param1", [ "weight_decay", Rule.FlatDecay ]
                  "conv1.weight", []
                  "conv2.weight", []
                  "conv2.bias", [ "lr", Rule.BiasLr; "weight_decay", Rule.BiasDecay ]
                  "bn.weight", [ "weight_decay", Rule.NormDecay ]
                  "bn.bias", [ "weight_decay", Rule.NormDecay ]
                  "sub.param1", [ "weight_decay", Rule.FlatDecay ]
                  "sub.conv1.weight", [ "weight_decay", Rule.DwconvDecay ]
                  "sub.conv1.bias", [ "lr", Rule.BiasLr; "weight_decay", Rule.BiasDecay ]
                  "sub.gn.weight", [ "weight_decay", Rule.NormDecay ]
                  "sub.gn.bias", [ "weight_decay", Rule.NormDecay ]
                  "dcn.weight", []
                  "dcn.conv_offset.weight", [ "lr", Rule.DcnOffsetLr ]
                  "dcn.conv_offset.bias", [ "lr", Rule.DcnOffsetLr ] ]
            Expect.sequenceEqual rules expected "rules"
        }
        test "the custom-key example (test_default_optimizer_constructor_custom_key)" {
            let ck =
                PyValue.Dict
                    [ "param1", PyValue.Dict [ "lr_mult", PyValue.Int 10L ]
                      "sub", PyValue.Dict [ "lr_mult", f 0.1; "decay_mult", PyValue.Int 0L ]
                      "sub.gn", PyValue.Dict [ "lr_mult", f 0.01 ]
                      "non_exist_key", PyValue.Dict [ "lr_mult", f 0.0 ] ]
            let s = settings [ "custom_keys", ck; "norm_decay_mult", f 0.5 ] (f 0.9)
            Expect.equal (sortedKeys (s.CustomKeys |> List.map fst)) [ "non_exist_key"; "param1"; "sub.gn"; "sub" ] "sorted keys"
            let p = planOk s (f 0.01) (f 0.9) (exampleModel |> List.take 11)
            let expected =
                [ "param1", (0.01 * 10.0, 0.9 * 1.0)
                  "conv1.weight", (0.01, 0.9)
                  "conv2.weight", (0.01, 0.9)
                  "conv2.bias", (0.01, 0.9)
                  "bn.weight", (0.01, 0.9 * 0.5)
                  "bn.bias", (0.01, 0.9 * 0.5)
                  "sub.param1", (0.01 * 10.0, 0.9 * 1.0)
                  "sub.conv1.weight", (0.01 * 0.1, 0.9 * 0.0)
                  "sub.conv1.bias", (0.01 * 0.1, 0.9 * 0.0)
                  "sub.gn.weight", (0.01 * 0.01, 0.9)
                  "sub.gn.bias", (0.01 * 0.01, 0.9) ]
            Expect.sequenceEqual (lrWd 0.01 0.9 p) expected "(lr, wd)"
            let infos = p.Logs |> List.map (fun l -> l.Message)
            Expect.sequenceEqual
                (infos |> List.take 4)
                [ "paramwise_options -- param1:lr=0.1"
                  "paramwise_options -- param1:weight_decay=0.9"
                  "paramwise_options -- param1:lr_mult=10"
                  "paramwise_options -- bn.weight:weight_decay=0.45" ]
                "log lines (custom entry keys follow lr and weight_decay; ints print as ints)"
            Expect.contains infos "paramwise_options -- sub.conv1.weight:decay_mult=0" "decay_mult logged"
            Expect.contains infos "paramwise_options -- sub.conv1.weight:weight_decay=0.0" "0.9 * 0 is the float 0.0"
            Expect.contains infos "paramwise_options -- sub.gn.bias:lr=0.0001" "lr of sub.gn"
        }
        test "without weight decay a custom key writes only lr (custom_key case 4)" {
            let s = settings [ "custom_keys", PyValue.Dict [ "param1", PyValue.Dict [ "lr_mult", PyValue.Int 10L ] ] ] PyValue.None
            let p = planOk s (f 0.01) PyValue.None (exampleModel |> List.take 11)
            let pairs = p.Groups |> List.map (fun g -> g.Param.FullName, g.Pairs)
            Expect.equal (snd pairs.[0]) [ "lr", f 0.1; "lr_mult", PyValue.Int 10L ] "param1"
            Expect.equal (snd pairs.[6]) [ "lr", f 0.1; "lr_mult", PyValue.Int 10L ] "sub.param1"
            Expect.isTrue (pairs |> List.forall (fun (n, kv) -> n = "param1" || n = "sub.param1" || kv.IsEmpty)) "others untouched"
        }
        test "tutorial ToyModel with norm_decay_mult=0 logs only the two bn lines (current MMEngine, not the seed's listing)" {
            let toy =
                [ fact "backbone.layer0" "weight" ModuleKind.Other 2 0L
                  fact "backbone.layer0" "bias" ModuleKind.Other 1 1L
                  fact "backbone.layer1" "weight" ModuleKind.Other 2 2L
                  fact "backbone.layer1" "bias" ModuleKind.Other 1 3L
                  fact "head.linear" "weight" ModuleKind.Other 2 4L
                  fact "head.linear" "bias" ModuleKind.Other 1 5L
                  fact "head.bn" "weight" ModuleKind.Norm 1 6L
                  fact "head.bn" "bias" ModuleKind.Norm 1 7L ]
            let p = planOk (settings [ "norm_decay_mult", PyValue.Int 0L ] (f 0.0001)) (f 0.01) (f 0.0001) toy
            Expect.equal
                p.Logs
                [ { Level = LogLevel.Info; Message = "paramwise_options -- head.bn.weight:weight_decay=0.0" }
                  { Level = LogLevel.Info; Message = "paramwise_options -- head.bn.bias:weight_decay=0.0" } ]
                "logs"
        }
        test "a custom entry's literal lr overrides the computed one in place; other keys are copied in order" {
            let ck = PyValue.Dict [ "head", PyValue.Dict [ "lr_mult", f 10.0; "momentum", f 0.5; "lr", f 0.3 ] ]
            let p = planOk (settings [ "custom_keys", ck ] (f 0.1)) (f 0.01) (f 0.1) [ fact "head" "weight" ModuleKind.Other 2 0L ]
            Expect.equal p.Groups.Head.Pairs [ "lr", f 0.3; "weight_decay", f 0.1; "lr_mult", f 10.0; "momentum", f 0.5 ] "group"
        }
        test "precedence: norm beats bias; bias beats dwconv; bias_decay reaches norm biases without norm_decay_mult" {
            let facts =
                [ fact "bn" "bias" ModuleKind.Norm 1 0L
                  fact "dw" "bias" ModuleKind.DepthwiseConv 1 1L
                  fact "dw" "weight" ModuleKind.DepthwiseConv 4 2L ]
            let both = planOk (settings [ "norm_decay_mult", f 0.2; "bias_decay_mult", f 0.5; "dwconv_decay_mult", f 0.1 ] (f 1.0)) (f 1.0) (f 1.0) facts
            Expect.equal (both.Groups |> List.map (fun g -> g.Options |> List.map (fun o -> o.Rule))) [ [ Rule.NormDecay ]; [ Rule.BiasDecay ]; [ Rule.DwconvDecay ] ] "rules"
            let biasOnly = planOk (settings [ "bias_decay_mult", f 0.5 ] (f 1.0)) (f 1.0) (f 1.0) facts
            Expect.equal (biasOnly.Groups.Head.Pairs) [ "weight_decay", f 0.5 ] "norm bias gets bias_decay_mult"
        }
        test "frozen and duplicate parameters are skipped with MMEngine's warnings" {
            let facts =
                [ fact "" "w" ModuleKind.Other 1 0L
                  { fact "a" "weight" ModuleKind.Other 2 1L with RequiresGrad = false }
                  fact "b.0" "weight" ModuleKind.Other 2 0L ]
            let p = planOk (settings [ "bypass_duplicate", PyValue.Bool true ] (f 0.1)) (f 0.01) (f 0.1) facts
            Expect.equal (p.Groups |> List.map (fun g -> g.Param.FullName)) [ "w" ] "only w is planned"
            Expect.equal
                p.Logs
                [ { Level = LogLevel.Warning; Message = "a.weight is skipped since its requires_grad=False" }
                  { Level = LogLevel.Warning; Message = "b.0 is duplicate. It is skipped since bypass_duplicate=True" } ]
                "warnings"
            let root = planOk (settings [ "flat_decay_mult", f 0.0 ] (f 0.1)) (f 0.01) (f 0.1) [ { fact "" "w" ModuleKind.Other 1 0L with RequiresGrad = false } ]
            Expect.equal root.Logs [ { Level = LogLevel.Warning; Message = ".w is skipped since its requires_grad=False" } ] "root warning has the leading dot"
            let noBypass = planOk (settings [ "flat_decay_mult", f 0.0 ] (f 0.1)) (f 0.01) (f 0.1) facts
            Expect.isTrue (hasDuplicates (noBypass.Groups |> List.map (fun g -> [ g.Param.Identity ]))) "the duplicate reaches the optimizer"
        }
        test "parameters placed before the call count for bypass_duplicate" {
            let p = planOk (settings [ "bypass_duplicate", PyValue.Bool true ] (f 0.1)) (f 0.01) (f 0.1) [ fact "m" "w" ModuleKind.Other 2 5L ]
            Expect.isNonEmpty p.Groups "not placed yet"
            match plan (settings [ "bypass_duplicate", PyValue.Bool true ] (f 0.1)) (f 0.01) (f 0.1) [ 5L ] [ fact "m" "w" ModuleKind.Other 2 5L ] with
            | Ok p -> Expect.isEmpty p.Groups "already placed"
            | Error e -> failwithf "%O" e.Error
        }
        test "a missing base lr fails where Python multiplies None, keeping what was logged" {
            let facts = [ fact "a" "bias" ModuleKind.Other 1 0L; fact "" "w" ModuleKind.Other 1 1L; fact "b" "bias" ModuleKind.Other 1 2L ]
            match plan (settings [ "bias_lr_mult", f 2.0; "flat_decay_mult", f 0.5 ] (f 0.1)) PyValue.None (f 0.1) [] facts with
            | Ok _ -> failtest "expected a TypeError"
            | Error e ->
                Expect.equal e.Error.Kind ErrorKind.Type "kind"
                Expect.stringContains e.Error.Message "unsupported operand type(s) for *: 'NoneType' and 'float'" "Python's message"
                Expect.isEmpty e.Partial.Groups "failed on the first parameter"
        }
        test "int multipliers on an int base stay ints, as in Python" {
            let p = planOk (settings [ "bias_lr_mult", PyValue.Int 2L ] PyValue.None) (PyValue.Int 1L) PyValue.None [ fact "a" "bias" ModuleKind.Other 1 0L ]
            Expect.equal p.Logs.Head.Message "paramwise_options -- a.bias:lr=2" "1 * 2 is the int 2"
        }
    ]

let validation =
    testList "validation (SPEC §6.1)" [
        test "paramwise_cfg must be a dict" {
            match settingsOf (PyValue.List [ PyValue.Str "error" ]) (f 0.1) with
            | Error [ e ] ->
                Expect.equal e.Kind ErrorKind.Type "kind"
                Expect.equal e.Message "paramwise_cfg should be None or a dict, but got <class 'list'>" "message"
            | other -> failwithf "%A" other
        }
        test "custom_keys must be a dict" {
            match settingsOf (PyValue.Dict [ "custom_keys", PyValue.List [ f 0.1; f 0.0001 ] ]) (f 0.1) with
            | Error [ e ] ->
                Expect.equal (e.Kind, e.Path) (ErrorKind.Type, "custom_keys") "kind and path"
                Expect.stringContains e.Message "If specified, custom_keys must be a dict" "message"
            | other -> failwithf "%A" other
        }
        test "decay multipliers need a base weight decay; flat_decay_mult does not; None values still count" {
            let errs kvs =
                match settingsOf (PyValue.Dict kvs) PyValue.None with
                | Ok _ -> []
                | Error es -> es |> List.map (fun e -> e.Kind, e.Path)
            Expect.equal (errs [ "bias_decay_mult", f 1.0; "norm_decay_mult", f 1.0 ]) [ ErrorKind.Value, "bias_decay_mult"; ErrorKind.Value, "norm_decay_mult" ] "both reported"
            Expect.equal (errs [ "dwconv_decay_mult", PyValue.None ]) [ ErrorKind.Value, "dwconv_decay_mult" ] "present as None"
            Expect.equal (errs [ "flat_decay_mult", f 0.0; "bias_lr_mult", f 2.0 ]) [] "flat and lr multipliers are fine"
            Expect.equal (errs [ "custom_keys", PyValue.Dict [ ".backbone", PyValue.Dict [ "decay_mult", f 0.5 ] ] ]) [ ErrorKind.Value, "custom_keys[\".backbone\"].decay_mult" ] "custom decay_mult"
            Expect.equal (errs [ "custom_keys", PyValue.Dict [ "x", PyValue.Dict [ "lr_mult", f 0.5 ] ]; "invalid_mult", PyValue.Int 1L ]) [] "unknown keys and lr_mult are fine"
        }
        test "multipliers must be numbers (MMEngine would fail later, at the multiplication)" {
            match settingsOf (PyValue.Dict [ "bias_lr_mult", PyValue.Str "2"; "custom_keys", PyValue.Dict [ "a", PyValue.Dict [ "lr_mult", PyValue.Str "x" ] ] ]) (f 0.1) with
            | Error es -> Expect.equal (es |> List.map (fun e -> e.Path)) [ "custom_keys.a.lr_mult"; "bias_lr_mult" ] "paths"
            | Ok _ -> failtest "expected errors"
        }
        test "the empty dict and None both select the single-group path; unknown keys do not" {
            Expect.isTrue (isEmpty (settings [] (f 0.1))) "{}"
            Expect.isTrue (match settingsOf PyValue.None PyValue.None with Ok s -> isEmpty s | _ -> false) "None"
            Expect.isFalse (isEmpty (settings [ "invalid_mult", PyValue.Int 1L ] (f 0.1))) "unknown key"
        }
    ]

// ---------------------------------------------------------------------------------------------
// Golden cases replayed on the recorded module facts (no TorchSharp: the walk is the facade's job).

let private goldenFiles = [ "paramgroups_toy.json"; "paramgroups_toy_frozen.json"; "paramgroups_toy_shared.json"; "paramgroups_resnet18.json" ]

let private levelOf (s: string) = if s = "WARNING" then LogLevel.Warning else LogLevel.Info

let private kindOf (s: string) =
    match s with
    | "ValueError" -> ErrorKind.Value
    | "TypeError" -> ErrorKind.Type
    | "KeyError" -> ErrorKind.Key
    | _ -> ErrorKind.Assertion

let goldenCore =
    testList "golden param groups on recorded facts" [
        for file in goldenFiles do
            let doc = Optim.Tests.Golden.load file
            let facts, canonical = factsOf doc["model"]
            let nameOf = Map.ofList [ for (fa, c) in facts -> fa.Identity, c ]
            for case in doc["cases"].AsArray() do
                let id = case["id"].GetValue<string>()
                test id {
                    let cfg =
                        match Config.parse (py case["build_optim_wrapper_cfg"]) with
                        | Ok c -> c
                        | Error es -> failwithf "config rejected: %A" es
                    let logs = [ for l in case["logs"].AsArray() -> { Level = levelOf (l["level"].GetValue<string>()); Message = l["msg"].GetValue<string>() } ]
                    match case["result"].GetValue<string>(), Config.defaultConstructorSettings cfg with
                    | "error", Error es ->
                        let e = case["error"]
                        Expect.equal es.Head.Kind (kindOf (e["type"].GetValue<string>())) "error kind"
                        Expect.stringContains es.Head.Message (e["message"].GetValue<string>()) "error message"
                        Expect.isEmpty logs "nothing logged before"
                    | "error", Ok(opt, s) ->
                        // The only other error: PyTorch rejecting a parameter in two groups.
                        let err = case["error"]
                        let golden = err["message"].GetValue<string>()
                        Expect.equal golden duplicateMessage "golden error"
                        match plan s opt.BaseLr opt.BaseWd [] (List.map fst facts) with
                        | Ok p ->
                            Expect.isTrue (hasDuplicates (p.Groups |> List.map (fun g -> [ g.Param.Identity ]))) "duplicate found"
                            Expect.sequenceEqual p.Logs logs "logs before the error"
                        | Error e -> failwithf "%O" e.Error
                    | _, Error es -> failwithf "unexpected errors %A" es
                    | _, Ok(opt, s) when isEmpty s ->
                        Expect.equal (case["num_groups"].GetValue<int>()) 1 "single group"
                        Expect.equal (strings (case["param_groups"][0]["params"])) canonical "all parameters, named_parameters order"
                        Expect.isEmpty logs "nothing logged"
                    | _, Ok(opt, s) ->
                        match plan s opt.BaseLr opt.BaseWd [] (List.map fst facts) with
                        | Error e -> failwithf "%O" e.Error
                        | Ok p ->
                            let groups = case["param_groups"].AsArray()
                            Expect.equal p.Groups.Length (case["num_groups"].GetValue<int>()) "number of groups"
                            for (g, golden) in Seq.zip p.Groups groups do
                                Expect.equal [ nameOf.[g.Param.Identity] ] (strings golden["params"]) "parameter"
                                Expect.equal (g.Options |> List.map (fun o -> o.Key)) (strings (golden["explicit_keys"])) "explicit keys"
                                for o in g.Options do
                                    Expect.equal o.Value (py (golden["options"][o.Key])) (sprintf "%s of %s" o.Key g.Param.FullName)
                            Expect.sequenceEqual p.Logs logs "log lines"
                            let inGroups = p.Groups |> List.map (fun g -> nameOf.[g.Param.Identity]) |> set
                            Expect.equal
                                (canonical |> List.filter (fun c -> not (inGroups.Contains c)))
                                (strings (case["params_not_in_optimizer"]))
                                "parameters left out"
                }
    ]

// ---------------------------------------------------------------------------------------------
// custom_keys precedence

/// Name parts from a tiny alphabet, so that keys and names overlap a lot.
let private part = Gen.elements [ "a"; "b"; "ab"; "ba"; "aa"; "b1"; "é"; "𝔞" ]

let private nameGen =
    gen {
        let! depth = Gen.choose (0, 3)
        let! segs = Gen.listOfLength depth (Gen.listOfLength 2 part |> Gen.map (String.concat ""))
        let! leaf = Gen.elements [ "weight"; "bias"; "a"; "ab" ]
        return String.concat "." segs, leaf
    }

let private keyGen =
    Gen.oneof
        [ part
          Gen.listOfLength 2 part |> Gen.map (String.concat "")
          Gen.listOfLength 2 part |> Gen.map (String.concat ".")
          part |> Gen.map (fun p -> "." + p)
          Gen.elements [ "weight"; "bias"; ".a"; "a.b"; "b.weight" ] ]

type private Case =
    { Names: (string * string) list
      Keys: (string * float) list
      Permutation: int list }

let private caseGen =
    gen {
        let! n = Gen.choose (1, 6)
        let! names = Gen.listOfLength n nameGen
        let! k = Gen.choose (0, 7)
        let! keys = Gen.listOfLength k keyGen
        let keys = List.distinct keys
        let! mults = Gen.listOfLength keys.Length (Gen.elements [ 0.0; 0.1; 0.5; 2.0; 3.0; 1e-3; 7.3 ])
        let! perm = Gen.shuffle [ 0 .. keys.Length - 1 ]
        return { Names = names; Keys = List.zip keys mults; Permutation = List.ofArray perm }
    }

/// The oracle: every key that is a substring of `.`-joined target; the longest wins; equal length →
/// the smallest in code-point order. Written without sorting the key list.
let private oracle (keys: string list) (target: string) =
    let codepoints (s: string) = s.EnumerateRunes() |> Seq.map (fun r -> r.Value) |> List.ofSeq
    let matches = keys |> List.filter (fun k -> target.Contains(k, System.StringComparison.Ordinal))
    if matches.IsEmpty then None
    else
        let longest = matches |> List.map (fun k -> (codepoints k).Length) |> List.max
        matches |> List.filter (fun k -> (codepoints k).Length = longest) |> List.minBy codepoints |> Some

let precedence =
    let config = { FsCheckConfig.defaultConfig with maxTest = 300 }
    testList "custom_keys precedence" [
        testPropertyWithConfig config "chosen key = brute-force oracle; independent of dict order; lr and wd are base * mult" <|
            Prop.forAll (Arb.fromGen caseGen) (fun case ->
                let facts =
                    case.Names |> List.mapi (fun i (prefix, name) -> fact prefix name ModuleKind.Other 2 (int64 i))
                let dict keys =
                    PyValue.Dict [ "custom_keys", PyValue.Dict [ for (k, m) in keys -> k, PyValue.Dict [ "lr_mult", f m; "decay_mult", f (m / 2.0) ] ] ]
                let baseLr, baseWd = 0.1, 0.03
                let run keys =
                    match settingsOf (dict keys) (f baseWd) with
                    | Error es -> failwithf "%A" es
                    | Ok s ->
                        match plan s (f baseLr) (f baseWd) [] facts with
                        | Ok p -> p
                        | Error e -> failwithf "%O" e.Error
                let p = run case.Keys
                let shuffled = run (case.Permutation |> List.map (fun i -> case.Keys.[i]))
                let keyNames = case.Keys |> List.map fst
                let mults = Map.ofList case.Keys
                let checks =
                    List.zip facts p.Groups
                    |> List.forall (fun (fa, g) ->
                        match oracle keyNames (fa.Prefix + "." + fa.Name) with
                        | None -> g.Options.IsEmpty
                        | Some k ->
                            let m = mults.[k]
                            g.Options |> List.forall (fun o -> o.Rule = Rule.CustomKey k)
                            && PyValue.tryFind "lr" g.Pairs = Some(f (baseLr * m))
                            && PyValue.tryFind "weight_decay" g.Pairs = Some(f (baseWd * (m / 2.0))))
                checks && p = shuffled)
        test "equal length: ordinal-first wins, in either dict order (TESTS.md tie example)" {
            let fa = fact "aaa.bbb" "weight" ModuleKind.Other 2 0L
            for keys in [ [ "bbb"; "aaa" ]; [ "aaa"; "bbb" ] ] do
                Expect.equal (matchKey (sortedKeys keys) fa) (Some "aaa") (sprintf "%A" keys)
            Expect.equal (matchKey (sortedKeys [ "w"; ".w" ]) (fact "" "w" ModuleKind.Other 1 0L)) (Some ".w") "root target has the dot"
            Expect.equal (matchKey (sortedKeys [ "backbone.layer1" ]) (fact "backbone.layer10.0" "weight" ModuleKind.Other 2 0L)) (Some "backbone.layer1") "substring, not prefix"
        }
        test "code-point order, not UTF-16 order, beyond U+FFFF (as Python sorts str)" {
            // U+FF5E (one UTF-16 unit, 0xFF5E) vs U+1D51E (surrogates 0xD835...): Python puts U+FF5E first.
            Expect.equal (sortedKeys [ "𝔞"; "～" ]) [ "～"; "𝔞" ] "code point order; both have len 1"
            Expect.equal (sortedKeys [ "ab"; "𝔞" ]) [ "ab"; "𝔞" ] "len('𝔞') is 1 in Python"
        }
    ]

[<Tests>]
let tests = testList "paramwise" [ workedExamples; validation; goldenCore; precedence ]
