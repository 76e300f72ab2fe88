/// build_optim_wrapper stays linear: the model is walked once per build, the custom keys are matched
/// once (the lint reads the plan's matches), and what a build allocates grows no faster than the
/// model and the config. The unmatched-key lint, read from those matches, says what comparing every
/// key with every name says.
module Optim.Tests.BuildCostTests

open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open TorchSharp.Modules
open Optim
open Optim.Core
open Optim.Core.Paramwise

// ---------------------------------------------------------------------------------------------
// The lint against the rule as stated: every key against every name.

/// Pieces that overlap a lot, so keys are often substrings of names and of one another.
let private piece = Gen.elements [ "a"; "b"; "ab"; "ba"; "."; ".a"; "b."; "é"; "𝔞"; "x"; "conv"; "bn" ]

let private text maxPieces =
    gen {
        let! n = Gen.choose (0, maxPieces)
        let! parts = Gen.listOfLength n piece
        return String.concat "" parts
    }

let private factGen =
    gen {
        let! root = Gen.elements [ true; false; false; false ]
        let! prefix = if root then Gen.constant "" else text 5
        let! name = text 3
        let! frozen = Gen.elements [ false; false; false; true ]
        let! identity = Gen.choose (0, 30)
        return
            { Prefix = prefix
              Name = name
              Kind = ModuleKind.Other
              InDcnModule = false
              Ndim = 1
              RequiresGrad = not frozen
              Identity = int64 identity }
    }

/// A model's facts and custom keys (distinct, as in a dict): some cut from the names, some made up.
let private caseGen =
    gen {
        let! facts = Gen.listOf factGen
        let targets = facts |> List.map (fun f -> f.MatchTarget)
        let! cut =
            if targets.IsEmpty then Gen.constant []
            else
                Gen.listOf (
                    gen {
                        let! t = Gen.elements targets
                        let! start = Gen.choose (0, t.Length)
                        let! length = Gen.choose (0, t.Length - start)
                        return t.Substring(start, length)
                    })
        let! madeUp = Gen.listOf (text 4)
        let! keys = Gen.shuffle (cut @ madeUp |> List.distinct)
        return facts, List.ofArray keys
    }

let private settingsWith (keys: string list) =
    let entries = keys |> List.mapi (fun i k -> k, PyValue.Dict [ "lr_mult", PyValue.Float(1.0 + float i) ])
    match settingsOf (PyValue.Dict [ "custom_keys", PyValue.Dict entries ]) (PyValue.Float 1e-4) with
    | Ok s -> s
    | Error e -> failwithf "settings: %A" e

/// What the lint must say, worked out the slow way: a key is unmatched when it is in no parameter's
/// `prefix.name` (PyStr.contains, key by name); the suggestion is the closest distinct name (without
/// the root's leading dot) while unmatched keys × names stays within the budget.
let private naiveLint (keys: string list) (facts: ParamFact list) : ConfigLint.ConfigWarning list =
    let targets = facts |> List.map (fun f -> f.MatchTarget)
    let unmatched = keys |> List.filter (fun k -> not (targets |> List.exists (fun t -> PyStr.contains k t)))
    let names = targets |> List.distinct |> List.map (fun t -> t.TrimStart '.')
    let suggest = int64 unmatched.Length * int64 names.Length <= ConfigLint.suggestionBudget
    [ for k in unmatched ->
          { ConfigLint.ConfigWarning.Path = ConfigError.key "paramwise_cfg.custom_keys" k
            ConfigLint.ConfigWarning.Message =
              "custom key '" + k + "' matches no parameter name." + (if suggest then Suggest.didYouMean k names else "") } ]

/// Levenshtein distance, the textbook table.
let private levenshtein (a: string) (b: string) =
    let d = Array2D.init (a.Length + 1) (b.Length + 1) (fun i j -> if i = 0 then j elif j = 0 then i else 0)
    for i in 1 .. a.Length do
        for j in 1 .. b.Length do
            d.[i, j] <- List.min [ d.[i - 1, j] + 1; d.[i, j - 1] + 1; d.[i - 1, j - 1] + (if a.[i - 1] = b.[j - 1] then 0 else 1) ]
    d.[a.Length, b.Length]

// ---------------------------------------------------------------------------------------------
// Models for the facade: nodes that count how often the build asks them for their parameters
// and children.

/// A module with the given parameters and children that counts the calls of `named_parameters`
/// and `named_children` (the two ways into a module tree).
type private Node(parameters: (string * Parameter) list, children: (string * torch.nn.Module) list) as this =
    inherit torch.nn.Module("Node")
    let mutable parameterCalls = 0
    let mutable childrenCalls = 0
    do
        for (n, p) in parameters do this.register_parameter(n, p)
        for (n, c) in children do this.register_module(n, c)
    member _.ParameterCalls = parameterCalls
    member _.ChildrenCalls = childrenCalls
    override _.named_parameters(recurse: bool) =
        parameterCalls <- parameterCalls + 1
        base.named_parameters(recurse)
    override _.named_children() =
        childrenCalls <- childrenCalls + 1
        base.named_children()

let private param (shape: int64[]) = new Parameter(torch.zeros(shape))

/// `tensors` parameters in blocks of two (`stage{s}.block{b}.weight` 2-D, `.bias` 1-D) over 4 stages,
/// with every node; names like a real network's.
let private blocks (tensors: int) =
    let nodes = ResizeArray<Node>()
    let node ps cs =
        let n = new Node(ps, cs)
        nodes.Add n
        n
    let count = max 1 (tensors / 2)
    let stages =
        [ for s in 0..3 ->
              sprintf "stage%d" s,
              node [] [ for b in s .. 4 .. count - 1 -> sprintf "block%d" b, node [ "weight", param [| 2L; 2L |]; "bias", param [| 2L |] ] [] :> torch.nn.Module ]
              :> torch.nn.Module ]
    node [ "scale", param [| 1L |] ] stages, List.ofSeq nodes

/// A paramwise_cfg with `keys` custom keys: `block{i}.` for most (they match), every twentieth a
/// misspelt stage name that matches nothing (so the lint and its suggestions run), plus the
/// type-based multipliers.
let private configWith (keys: int) =
    let entries =
        [ for i in 0 .. keys - 1 ->
              if i % 20 = 19 then sprintf "\"stagge%d\": {\"lr_mult\": 0.5}" i
              else sprintf "\"block%d.\": {\"lr_mult\": %s}" i ((1.0 + float i * 1e-3).ToString("R", System.Globalization.CultureInfo.InvariantCulture)) ]
    "{\"optimizer\": {\"type\": \"SGD\", \"lr\": 0.01, \"momentum\": 0.9, \"weight_decay\": 1e-4}, "
    + "\"paramwise_cfg\": {\"bias_decay_mult\": 0.0, \"custom_keys\": {" + String.concat ", " entries + "}}}"

/// Bytes this thread allocates building the wrapper (after a warm-up build of the same size, so that
/// JIT work and first-use caches are not counted).
let private allocatedBuilding (tensors: int) (keys: int) =
    let model, _ = blocks tensors
    let config = configWith keys
    let build () =
        let wrapper = Builder.build_optim_wrapper (model, config)
        (wrapper.optimizer :> System.IDisposable).Dispose()
    build ()
    let before = System.GC.GetAllocatedBytesForCurrentThread()
    build ()
    let bytes = System.GC.GetAllocatedBytesForCurrentThread() - before
    model.Dispose()
    float bytes

[<Tests>]
let tests =
    let config = { FsCheckConfig.defaultConfig with maxTest = 500 }
    testList "build cost" [
        testPropertyWithConfig config "the unmatched-key lint (read from the plan's matches) = every key against every name with PyStr.contains, suggestions included" <|
            Prop.forAll (Arb.fromGen caseGen) (fun (facts, keys) ->
                let settings = settingsWith keys
                let expected = naiveLint keys facts
                let fromMatches = ConfigLint.unmatchedKeysOf settings (matchFacts settings facts)
                fromMatches = expected && ConfigLint.unmatchedCustomKeys settings facts = expected)

        testPropertyWithConfig config "one automaton pass over many names: each name's best key = the first of the ranked keys in it, and a key occurs = it is in some name" <|
            Prop.forAll (Arb.fromGen (Gen.zip (Gen.listOf (text 3)) (Gen.listOf (Gen.zip (text 4) (text 3))))) (fun (keys, names) ->
                let scan = KeyMatch.scanTargets (KeyMatch.create keys) (names |> Seq.map (fun (p, n) -> struct (p, n)))
                let targets = names |> List.map (fun (p, n) -> p + "." + n)
                let contains (k: string) (t: string) = t.Contains(k, System.StringComparison.Ordinal)
                let best = targets |> List.map (fun t -> keys |> List.tryFindIndex (fun k -> contains k t) |> Option.defaultValue -1)
                let occurs = keys |> List.map (fun k -> targets |> List.exists (contains k))
                List.ofSeq scan.Best = best && List.ofSeq scan.Occurs = occurs)

        testPropertyWithConfig config "\"did you mean\" (length-pruned, allocation-free) picks what sorting every candidate by (distance ignoring case, distance, order) picks" <|
            Prop.forAll (Arb.fromGen (Gen.zip (text 4) (Gen.listOf (Gen.oneof [ text 4; Gen.map (fun (t: string) -> t.ToUpperInvariant()) (text 4) ])))) (fun (name, known) ->
                let reference =
                    known
                    |> List.mapi (fun i c -> (levenshtein (name.ToLowerInvariant()) (c.ToLowerInvariant()), levenshtein name c, i), c)
                    |> List.sortBy fst
                    |> List.tryHead
                    |> Option.bind (fun ((d, _, _), c) -> if d <= max 2 (name.Length / 2) then Some c else None)
                Suggest.closest name known = reference)

        test "past the suggestion budget the lint still names every unmatched key, without suggestions, as the slow rule does" {
            let facts =
                [ for i in 0..999 ->
                      { Prefix = sprintf "layer%d" i; Name = "weight"; Kind = ModuleKind.Other; InDcnModule = false
                        Ndim = 2; RequiresGrad = true; Identity = int64 i } ]
            let keys = [ for i in 0..250 -> sprintf "layr%d" i ] @ [ "layer1"; "weight" ]
            let settings = settingsWith keys
            let lint = ConfigLint.unmatchedKeysOf settings (matchFacts settings facts)
            Expect.equal lint (naiveLint keys facts) "as every key against every name"
            Expect.equal lint.Length 251 "the misspelt keys"
            Expect.isTrue (lint |> List.forall (fun w -> not (w.Message.Contains "Did you mean"))) "no suggestion past the budget"
        }

        test "build_optim_wrapper asks each module for its parameters and children once (one walk, also for the value limits and the lint)" {
            let model, nodes = blocks 40
            let wrapper = Builder.build_optim_wrapper (model, configWith 20)
            (wrapper.optimizer :> System.IDisposable).Dispose()
            for n in nodes do
                Expect.equal (n.ParameterCalls, n.ChildrenCalls) (1, 1) "named_parameters and named_children once per module"
            model.Dispose()
        }

        test "a constructor invoked directly also walks the model once" {
            let model, nodes = blocks 40
            let ctor = DefaultOptimWrapperConstructor(configWith 20)
            let wrapper = ctor.Invoke(model) :?> OptimWrapper
            (wrapper.optimizer :> System.IDisposable).Dispose()
            for n in nodes do
                Expect.equal (n.ParameterCalls, n.ChildrenCalls) (1, 1) "named_parameters and named_children once per module"
            Expect.equal ctor.Warnings.Count 1 "the misspelt stage key is still reported"
            model.Dispose()
        }

        test "what a build allocates grows linearly: 2x tensors <= 2.3x, 2x keys <= 2.3x, 2x both <= 2.3x (a names x keys or a quadratic term would give 4x)" {
            torch.set_num_threads 1
            let baseline = allocatedBuilding 2_000 200
            let moreTensors = allocatedBuilding 4_000 200
            let moreKeys = allocatedBuilding 2_000 400
            let both = allocatedBuilding 4_000 400
            let ratio x = x / baseline
            let shown = sprintf "baseline %.1f MB; 2x tensors %.2fx, 2x keys %.2fx, both %.2fx" (baseline / 1e6) (ratio moreTensors) (ratio moreKeys) (ratio both)
            Expect.isLessThanOrEqual (ratio moreTensors) 2.3 shown
            Expect.isLessThanOrEqual (ratio moreKeys) 2.3 shown
            Expect.isLessThanOrEqual (ratio both) 2.3 shown
            printfn "build cost: %s" shown
        }
    ]
