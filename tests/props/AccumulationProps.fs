/// FsCheck properties of gradient accumulation.
module Optim.Tests.AccumulationProps

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Optim
open Optim.Core
open Optim.Tests.TestSupport

/// An oracle written apart from the rule: iterations are cut into windows aligned at multiples of k
/// and clipped at the run's end M; an iteration's loss is divided by the size of its window, and the
/// update happens at the end of each window. Without a known M every window has k iterations.
let oracleFactor k (maxCounts: int option) i =
    let start = (i / k) * k
    let stop = match maxCounts with Some m -> min (start + k) m | None -> start + k
    stop - start

let oracleUpdates k (maxCounts: int option) i =
    let start = (i / k) * k
    let stop = match maxCounts with Some m -> min (start + k) m | None -> start + k
    i + 1 = stop

type FactorCase = { K: int; Init: int option; Max: int }

let factorCases =
    gen {
        let! k = Gen.choose (1, 6)
        let! max = Gen.choose (1, 40)
        let! initialised = Gen.elements [ true; false ]
        let! init = Gen.choose (0, max - 1)
        return { K = k; Init = (if initialised then Some init else None); Max = max }
    }
    |> Arb.fromGen

type Arbs =
    static member FactorCase() = factorCases

[<Tests>]
let factorProps =
    testList "accumulation rule" [
        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 300; arbitrary = [ typeof<Arbs> ] } "loss factors and updates equal the window oracle" <| fun (c: FactorCase) ->
            let counts = Accumulation.create c.K |> Result.defaultWith (fun e -> failwith e.Message)
            let start, counts, maxOpt =
                match c.Init with
                | Some i -> i, fst (Accumulation.initialize false i c.Max counts), Some c.Max
                | None -> 0, counts, None
            let last = match maxOpt with Some m -> m - 1 | None -> start + 3 * c.K + 2
            let mutable cs = counts
            [ for i in start..last do
                let factor = Accumulation.lossFactor cs |> Result.defaultWith (fun e -> failwith e.Message)
                cs <- Accumulation.afterBackward cs
                yield factor = (if c.K = 1 then 1 else oracleFactor c.K maxOpt i) && Accumulation.shouldUpdate cs = oracleUpdates c.K maxOpt i ]
            |> List.forall id
        test "past the known end with no remainder the factor is an assertion" {
            let c = Accumulation.create 3 |> Result.defaultWith (fun e -> failwith e.Message)
            let c, _ = Accumulation.initialize false 9 9 c
            Expect.isError (Accumulation.lossFactor c) "factor 0"
        }
    ]

/// A random accumulation experiment: model sizes, data seed, optimizer, k and a run length that is
/// not a multiple of k (so the remainder tail is exercised).
type Experiment = { Seed: int; Inputs: int; Hidden: int; K: int; Max: int; Batch: int; Optimizer: int }

let optimizerNames = [| "SGD"; "SGD-nesterov"; "SGD-wd"; "Adam"; "AdamW"; "RMSprop"; "Adagrad" |]

let experiments =
    gen {
        let! seed = Gen.choose (0, 100000)
        let! inputs = Gen.choose (1, 4)
        let! hidden = Gen.choose (1, 4)
        let! k = Gen.choose (1, 6)
        let! windows = Gen.choose (1, 3)
        let! tail = if k = 1 then Gen.constant 0 else Gen.choose (1, k - 1)
        let! batch = Gen.choose (1, 3)
        let! opt = Gen.choose (0, optimizerNames.Length - 1)
        return { Seed = seed; Inputs = inputs; Hidden = hidden; K = k; Max = windows * k + tail; Batch = batch; Optimizer = opt }
    }
    |> Arb.fromGen

let makeOptimizer (name: string) (ps: Modules.Parameter list) : torch.optim.Optimizer =
    match name with
    | "SGD" -> torch.optim.SGD(ps, 0.05, momentum = 0.9)
    | "SGD-nesterov" -> torch.optim.SGD(ps, 0.05, momentum = 0.9, nesterov = true)
    | "SGD-wd" -> torch.optim.SGD(ps, 0.05, momentum = 0.5, weight_decay = 0.01)
    | "Adam" -> torch.optim.Adam(ps, 0.01)
    | "AdamW" -> torch.optim.AdamW(ps, 0.01)
    | "RMSprop" -> torch.optim.RMSProp(ps, 0.01)
    | _ -> torch.optim.Adagrad(ps, 0.05)

let private mlp seed inputs hidden =
    torch.manual_seed (int64 seed) |> ignore
    torch.nn.Sequential(torch.nn.Linear(int64 inputs, int64 hidden), torch.nn.Tanh(), torch.nn.Linear(int64 hidden, 1L))

/// Trains with micro-batches through OptimWrapper and with whole batches by hand; returns the
/// parameters after every update of each.
let runBoth (wrongTail: bool) (e: Experiment) =
    use _ = torch.NewDisposeScope()
    torch.manual_seed (int64 e.Seed + 1L) |> ignore
    let xs = [ for _ in 1..e.Max -> torch.randn(int64 e.Batch, int64 e.Inputs) ]
    let ys = [ for _ in 1..e.Max -> torch.randn(int64 e.Batch, 1L) ]
    let snapshot (m: torch.nn.Module) = m.parameters() |> Seq.map valuesOf |> Array.concat
    // Micro-batches through the wrapper.
    let a = mlp e.Seed e.Inputs e.Hidden
    let wrapper = OptimWrapper(makeOptimizer optimizerNames.[e.Optimizer] (parametersOf a |> List.ofSeq), e.K)
    wrapper.initialize_count_status(a, 0, e.Max)
    let micro = ResizeArray()
    for i in 0 .. e.Max - 1 do
        let loss = torch.nn.functional.mse_loss(a.forward xs.[i], ys.[i])
        wrapper.update_params loss
        if wrapper.should_update() then micro.Add(snapshot a)
    // One batch per update, made of the same micro-batches, mean loss, plain TorchSharp.
    let b = mlp e.Seed e.Inputs e.Hidden
    let opt = makeOptimizer optimizerNames.[e.Optimizer] (parametersOf b |> List.ofSeq)
    let whole = ResizeArray()
    for start in 0 .. e.K .. e.Max - 1 do
        let stop = min (start + e.K) e.Max
        let x = torch.cat([| for i in start .. stop - 1 -> xs.[i] |], 0L)
        let y = torch.cat([| for i in start .. stop - 1 -> ys.[i] |], 0L)
        opt.zero_grad()
        let loss = torch.nn.functional.mse_loss(b.forward x, y)
        // wrongTail: what dividing the tail's micro-batch losses by k (not by their count) would give.
        let loss = if wrongTail then loss * (float (stop - start) / float e.K) else loss
        loss.backward()
        opt.step() |> ignore
        whole.Add(snapshot b)
    List.ofSeq micro, List.ofSeq whole

type ExperimentArb =
    static member Experiments() = experiments

[<Tests>]
let equivalence =
    testList "accumulation equivalence" [
        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 100; arbitrary = [ typeof<ExperimentArb> ] } "k micro-batches per update equal one batch of them, remainder tail included" <| fun (e: Experiment) ->
            let micro, whole = runBoth false e
            micro.Length = whole.Length
            && List.forall2 (fun (m: float32[]) (w: float32[]) -> Golden.allClose 1e-5 1e-4 m w) micro whole
        test "the comparison can fail: a tail divided by k instead of its size is told apart" {
            let e = { Seed = 7; Inputs = 3; Hidden = 2; K = 3; Max = 4; Batch = 2; Optimizer = 0 }
            let micro, whole = runBoth false e
            let _, wrong = runBoth true e
            Expect.equal micro.Length 2 "two updates"
            Expect.isTrue (Golden.allClose 1e-5 1e-4 micro.[1] whole.[1]) "tail update matches the whole batch"
            Expect.isFalse (Golden.allClose 1e-5 1e-4 micro.[1] wrong.[1]) "and differs from the wrong tail"
        }
    ]
