/// Issue 11: bad configs caught at build time with a path (a corpus of bad configs and a fuzzer),
/// loss scaling that cannot poison parameters, the opt-in non-finite guard, warnings for config that
/// does nothing, bounded nesting, and no native abort through Optim.
module Optim.Tests.BadInputTests

open System
open System.IO
open System.Collections.Generic
open System.Text.Json.Nodes
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Optim
open Optim.Core
open Optim.Tests.TestSupport

/// backbone = Sequential(Linear(4, 4), BatchNorm1d(4)), head = Linear(4, 2).
type Net() as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("Net")
    let backbone = torch.nn.Sequential(torch.nn.Linear(4L, 4L), torch.nn.BatchNorm1d(4L))
    let head = torch.nn.Linear(4L, 2L)
    do this.RegisterComponents()
    member _.Head = head
    override _.forward(x) = head.forward(backbone.forward x)

let private corpusDir = Path.Combine(AppContext.BaseDirectory, "data", "bad-configs")

let private corpus () =
    Directory.GetFiles(corpusDir, "*.json")
    |> Array.sort
    |> Array.map (fun f ->
        let doc = JsonNode.Parse(File.ReadAllText f)
        Path.GetFileNameWithoutExtension f, doc.["config"].ToJsonString(), string doc.["path"], string doc.["message"])

/// Builds, expecting exactly an OptimConfigException; returns its errors.
let private rejected (text: string) : IReadOnlyList<ConfigError> =
    let thrown =
        try
            Builder.build_optim_wrapper (new Net(), text) |> ignore
            None
        with e -> Some e
    match thrown with
    | Some(:? OptimConfigException as e) -> e.Errors
    | Some e -> failtestf "expected OptimConfigException, got %s: %s" (e.GetType().Name) e.Message
    | None -> failtest "expected OptimConfigException, the config was accepted"

// ---------------------------------------------------------------------------------------------
// The fuzzer: random JSON-like values and mutations of valid configs.

let private keyPool =
    [ "type"; "optimizer"; "lr"; "momentum"; "weight_decay"; "betas"; "eps"; "nesterov"; "paramwise_cfg"; "custom_keys"
      "lr_mult"; "decay_mult"; "bias_lr_mult"; "norm_decay_mult"; "clip_grad"; "max_norm"; "norm_type"; "clip_value"
      "loss_scale"; "init_scale"; "growth_factor"; "backoff_factor"; "growth_interval"; "accumulative_counts"; "dtype"
      "skip_nonfinite"; "max_consecutive"; "strict"; "bypass_duplicate"; "constructor"; "head"; "backbone"; "acumulative_counts"
      "initial_accumulator_value"; "rho"; "etas"; "step_sizes"; "max_iter"; "min_scale"; "max_scale"; "error_if_nonfinite"; "x" ]

let private numberPool =
    [ PyValue.Int 0L; PyValue.Int 1L; PyValue.Int -1L; PyValue.Int Int64.MaxValue; PyValue.Int Int64.MinValue; PyValue.Int 4L
      PyValue.Float 0.0; PyValue.Float -0.0; PyValue.Float 0.5; PyValue.Float -1.0; PyValue.Float 1e308; PyValue.Float 1e39
      PyValue.Float Double.PositiveInfinity; PyValue.Float Double.NegativeInfinity; PyValue.Float Double.NaN
      PyValue.Float 1e-45; PyValue.Float 2.0; PyValue.Float 1.5 ]

let private stringPool =
    [ "SGD"; "Adam"; "AdamW"; "Adagrad"; "LBFGS"; "Rprop"; "OptimWrapper"; "AmpOptimWrapper"; "dynamic"; "norm"; "value"; "nan"; "inf"
      "bfloat16"; "float8"; ""; "DefaultOptimWrapperConstructor"; "sgd"; "💥"; "a.b" ]

let rec private genValue (depth: int) : Gen<PyValue> =
    let leaf =
        Gen.oneof
            [ Gen.elements numberPool
              Gen.elements stringPool |> Gen.map PyValue.Str
              Gen.elements [ PyValue.None; PyValue.Bool true; PyValue.Bool false ]
              ArbMap.defaults |> ArbMap.generate<float> |> Gen.map PyValue.Float
              ArbMap.defaults |> ArbMap.generate<int> |> Gen.map (int64 >> PyValue.Int) ]
    if depth <= 0 then leaf
    else
        Gen.frequency
            [ 3, leaf
              1, Gen.listOfLength 2 (genValue (depth - 1)) |> Gen.map PyValue.List
              2,
              gen {
                  let! n = Gen.choose (0, 4)
                  let! keys = Gen.listOfLength n (Gen.elements keyPool)
                  let! values = Gen.listOfLength n (genValue (depth - 1))
                  return PyValue.Dict(List.zip keys values |> List.distinctBy fst)
              } ]

let private valid =
    [ """{"optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001}}"""
      """{"type": "AmpOptimWrapper", "optimizer": {"type": "AdamW", "lr": 0.001}, "loss_scale": {"init_scale": 1024.0}, "dtype": "bfloat16", "clip_grad": {"max_norm": 1.0}}"""
      """{"optimizer": {"type": "SGD", "lr": 0.1, "weight_decay": 0.0001}, "paramwise_cfg": {"norm_decay_mult": 0, "bias_lr_mult": 2.0, "custom_keys": {"head": {"lr_mult": 0.1, "decay_mult": 0.5}}}}"""
      """{"optimizer": {"type": "Adagrad", "lr": 0.1, "initial_accumulator_value": 0.1}, "accumulative_counts": 2, "skip_nonfinite": {"max_consecutive": 3}}"""
      """{"optimizer": {"type": "Rprop", "lr": 0.01, "etas": [0.5, 1.2]}, "clip_grad": {"type": "value", "clip_value": 0.5}}""" ]
    |> List.map (fun t -> match Config.parseJson t with Ok v -> v | Error e -> failwithf "%O" e)

/// Replaces, removes or adds one node somewhere in the tree.
let rec private mutate (v: PyValue) : Gen<PyValue> =
    match v with
    | PyValue.Dict kvs when not kvs.IsEmpty ->
        gen {
            let! i = Gen.choose (0, kvs.Length - 1)
            let! what = Gen.choose (0, 5)
            let k, x = kvs.[i]
            match what with
            | 0 -> return PyValue.Dict(List.removeAt i kvs)
            | 1 ->
                let! nk = Gen.elements keyPool
                let! nv = genValue 2
                return PyValue.Dict(PyValue.set nk nv kvs)
            | 2 ->
                let! nv = genValue 2
                return PyValue.Dict(List.updateAt i (k, nv) kvs)
            | 3 ->
                let! typo = Gen.elements [ k + "s"; k.Substring(0, max 0 (k.Length - 1)); k.ToUpperInvariant(); "_" + k ]
                return PyValue.Dict(List.updateAt i (typo, x) kvs)
            | _ ->
                let! nx = mutate x
                return PyValue.Dict(List.updateAt i (k, nx) kvs)
        }
    | PyValue.List xs when not xs.IsEmpty ->
        gen {
            let! i = Gen.choose (0, xs.Length - 1)
            let! nx = mutate xs.[i]
            return PyValue.List(List.updateAt i nx xs)
        }
    | _ -> Gen.oneof [ Gen.elements numberPool; genValue 1 ]

let private fuzzCase : Gen<PyValue> =
    Gen.frequency
        [ 1, genValue 4
          3,
          gen {
              let! baseCfg = Gen.elements valid
              let! times = Gen.choose (1, 3)
              let rec go n v = if n = 0 then Gen.constant v else mutate v |> Gen.bind (go (n - 1))
              return! go times baseCfg
          } ]

type FuzzCounts = { mutable Accepted: int; mutable Rejected: int; mutable Built: int; mutable BuildRejected: int }

let fuzzCounts = { Accepted = 0; Rejected = 0; Built = 0; BuildRejected = 0 }

[<Tests>]
let tests =
    testList "bad input (issue 11)" [
        test "the corpus holds at least 120 bad configs, each naming its path and message" {
            let cases = corpus ()
            Expect.isGreaterThanOrEqual cases.Length 120 "corpus size"
            for (_, _, path, msg) in cases do
                Expect.isNotNull path "path"
                Expect.isNotEmpty msg "message fragment"
        }
        testList "corpus" [
            for (name, text, path, msg) in corpus () ->
                test name {
                    let errors = rejected text
                    let hit = errors |> Seq.exists (fun e -> e.Path = path && e.Message.Contains(msg, StringComparison.Ordinal))
                    if not hit then
                        failtestf "no error at %s containing %A; got:\n%s" path msg (String.Join("\n", errors |> Seq.map string))
                }
        ]
        test "a config with four problems reports all four, each at its path" {
            let errors =
                rejected
                    """{"optimizer": {"type": "SGD", "lr": -0.1, "momentum": "x"}, "acumulative_counts": 2,
                        "clip_grad": {"max_norm": -1}, "paramwise_cfg": {"custom_keys": {"head": {"lr_mult": -1}}}}"""
            let paths = errors |> Seq.map (fun e -> e.Path) |> set
            for p in [ "optimizer.lr"; "optimizer.momentum"; "acumulative_counts"; "clip_grad.max_norm" ] do
                Expect.contains paths p (sprintf "error at %s among %A" p paths)
        }
        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 10000; arbitrary = [] } "fuzz: parsing and validating 10,000 random and mutated configs returns errors as values, never throws" <|
            (Prop.forAll (Arb.fromGen fuzzCase) (fun cfg ->
                let text = PyJson.write false cfg
                match (try Ok(Builder.ParseConfig text) with :? OptimConfigException as e -> Error e) with
                | Error e ->
                    fuzzCounts.Rejected <- fuzzCounts.Rejected + 1
                    not (isNull e.Message) && e.Errors.Count > 0
                | Ok parsed ->
                    let errors = Builder.Validate parsed
                    if errors.Count = 0 then fuzzCounts.Accepted <- fuzzCounts.Accepted + 1 else fuzzCounts.Rejected <- fuzzCounts.Rejected + 1
                    true))
        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 400 } "fuzz: building 400 mutated configs on a model succeeds or throws OptimConfigException, nothing else" <|
            (Prop.forAll (Arb.fromGen fuzzCase) (fun cfg ->
                let text = PyJson.write false cfg
                try
                    let w = Builder.build_optim_wrapper (new Net(), text)
                    fuzzCounts.Built <- fuzzCounts.Built + 1
                    w.optimizer.Dispose()
                    true
                with :? OptimConfigException ->
                    fuzzCounts.BuildRejected <- fuzzCounts.BuildRejected + 1
                    true))
        test "fuzz outcome counts (printed for the issue note)" {
            printfn "fuzz outcomes: parse+validate accepted %d, rejected %d; build succeeded %d, rejected %d"
                fuzzCounts.Accepted fuzzCounts.Rejected fuzzCounts.Built fuzzCounts.BuildRejected
        }
        test "an IReadOnlyDictionary nested 10,000 deep is an error with a path, not a stack overflow" {
            let mutable d : obj = box 1
            for _ in 1 .. 10000 do
                let x = Dictionary<string, obj>()
                x.["a"] <- d
                d <- box x
            let cfg = Dictionary<string, obj>()
            cfg.["optimizer"] <- box (dict [ "type", box "SGD"; "lr", box 0.1; "deep", d ])
            let e = throws<OptimConfigException> (fun () -> Builder.build_optim_wrapper (new Net(), cfg :> IReadOnlyDictionary<string, obj>) |> ignore) "deep"
            Expect.stringContains e.Errors.[0].Path "optimizer.deep.a.a" "path"
            Expect.stringContains e.Errors.[0].Message "nested more than 64 levels" "message"
        }
        test "JSON text nested 10,000 deep is an OptimConfigException (invalid JSON), not a JsonException" {
            let text = String.replicate 10000 "{\"a\": " + "1" + String.replicate 10000 "}"
            let e = throws<OptimConfigException> (fun () -> Builder.build_optim_wrapper (new Net(), text) |> ignore) "deep text"
            Expect.stringContains e.Errors.[0].Message "invalid JSON" "message"
        }
        test "a dictionary that contains itself, and a value with no Python counterpart, are errors with paths" {
            let cyclic = Dictionary<string, obj>()
            cyclic.["self"] <- box cyclic
            let cfg = Dictionary<string, obj>()
            cfg.["optimizer"] <- box (dict [ "type", box "SGD"; "lr", box 0.1; "when", box DateTime.Now ])
            cfg.["paramwise_cfg"] <- box cyclic
            let e = throws<OptimConfigException> (fun () -> Builder.ParseConfig(cfg :> IReadOnlyDictionary<string, obj>) |> ignore) "bad"
            let paths = e.Errors |> Seq.map (fun x -> x.Path) |> List.ofSeq
            Expect.contains paths "optimizer.when" "no counterpart"
            Expect.isTrue (paths |> List.exists (fun p -> p.StartsWith "paramwise_cfg.self.self")) "cycle"
        }
        test "a JsonNode nested 10,000 deep is an OptimConfigException, not JsonException/InvalidOperationException" {
            let mutable n = JsonObject() :> JsonNode
            for _ in 1 .. 10000 do
                let o = JsonObject()
                o.["a"] <- n
                n <- o
            let cfg = JsonObject()
            cfg.["paramwise_cfg"] <- n
            let e = throws<OptimConfigException> (fun () -> Builder.build_optim_wrapper (new Net(), cfg) |> ignore) "deep node"
            Expect.stringStarts e.Errors.[0].Path "paramwise_cfg.a" "path"
        }
        test "Adagrad with initial_accumulator_value 1e308 is rejected before TorchSharp; a GC afterwards does not abort" {
            let errors = rejected """{"optimizer": {"type": "Adagrad", "lr": 0.1, "initial_accumulator_value": 1e308}}"""
            Expect.equal errors.[0].Path "optimizer.initial_accumulator_value" "path"
            GC.Collect()
            GC.WaitForPendingFinalizers()
            GC.Collect()
        }
        test "the same value is accepted for float64 parameters (the limit follows the parameters' dtype)" {
            let m = torch.nn.Linear(2L, 2L)
            m.``to``(torch.float64) |> ignore
            let w = Builder.build_optim_wrapper (m, """{"optimizer": {"type": "SGD", "lr": 0.1, "momentum": 1e300}}""")
            Expect.equal (w.optimizer.ParamGroups |> Seq.length) 1 "built"
        }
        test "a custom optimizer constructed directly through the factory is range-checked too" {
            let p = torch.nn.Linear(2L, 2L)
            let groups = [ PlainParamGroup([ KeyValuePair("lr", box -1.0) ], List<Modules.Parameter>(p.parameters())) :> IParamGroup ]
            let e = throws<OptimConfigException> (fun () -> BuiltinOptimizers.Create("SGD", groups, readOnlyDict [ "lr", box 0.1 ]) |> ignore) "group lr"
            Expect.equal e.Errors.[0].Path "param_groups[0].lr" "path"
        }
    ]
