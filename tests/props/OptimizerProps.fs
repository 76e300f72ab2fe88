/// Optim's optimizers against an independent reference: PyTorch 2.x's per-tensor algorithms
/// (torch/optim/*.py, `_single_tensor_*`) written here element by element in float32, one rounding
/// per PyTorch tensor operation. FsCheck draws the shapes (sizes around the kernels' vector width),
/// hyper-parameters, gradients, step counts and group layouts; every implementation (fused kernel,
/// multi-tensor path, per-tensor loop) is run through BuiltinOptimizers (the registry's factory).
module Optim.Tests.OptimizerProps

open System
open System.Collections.Generic
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Optim

// ---------------------------------------------------------------------------------------------
// The reference: one element at a time, float32 arithmetic (each PyTorch op rounds once).

let inline private f (x: float) = float32 x

/// PyTorch's lerp(start, end, weight) for a scalar weight.
let private lerp (a: float32) (b: float32) (w: float32) =
    if abs w < 0.5f then a + w * (b - a) else b - (b - a) * (1.0f - w)

/// Per-element state of one parameter, by PyTorch's state names.
type RefState = Dictionary<string, float32[]>

/// Hyper-parameters of a case, by PyTorch's names (numbers as floats; flags as 0/1).
type Hyper = Map<string, float>

/// One step of `name` on one parameter (arrays updated in place); `step` is the count after this step.
let referenceStep (name: string) (h: Hyper) (p: float32[]) (g0: float32[]) (st: RefState) (step: int) (scalars: Dictionary<string, float>) =
    let hv k = h.[k]
    let flag k = h.[k] <> 0.0
    let lr = hv "lr"
    let arr k = match st.TryGetValue k with | true, a -> a | _ -> (let a = Array.zeroCreate p.Length in st.[k] <- a; a)
    let n = p.Length
    match name with
    | "SGD" ->
        let mom, damp, wd = hv "momentum", hv "dampening", hv "weight_decay"
        let first = not (st.ContainsKey "momentum_buffer")
        let buf = arr "momentum_buffer"
        for i in 0 .. n - 1 do
            let mutable g = if flag "maximize" then -g0.[i] else g0.[i]
            if wd <> 0.0 then g <- g + f wd * p.[i]
            if mom <> 0.0 then
                buf.[i] <- if first then g else buf.[i] * f mom + f (1.0 - damp) * g
                g <- if flag "nesterov" then g + f mom * buf.[i] else buf.[i]
            p.[i] <- p.[i] + f (-lr) * g
    | "Adam" | "AdamW" ->
        let b1, b2, eps, wd = hv "beta1", hv "beta2", hv "eps", hv "weight_decay"
        let m, v, vmax = arr "exp_avg", arr "exp_avg_sq", arr "max_exp_avg_sq"
        let bc1 = 1.0 - Math.Pow(b1, float step)
        let bc2 = 1.0 - Math.Pow(b2, float step)
        let stepSize = lr / bc1
        let bc2Sqrt = sqrt bc2
        for i in 0 .. n - 1 do
            let mutable g = if flag "maximize" then -g0.[i] else g0.[i]
            if wd <> 0.0 then
                if name = "AdamW" then p.[i] <- p.[i] * f (1.0 - lr * wd)
                else g <- g + f wd * p.[i]
            m.[i] <- lerp m.[i] g (f (1.0 - b1))
            v.[i] <- v.[i] * f b2 + f (1.0 - b2) * (g * g)
            let second =
                if flag "amsgrad" then
                    vmax.[i] <- max vmax.[i] v.[i]
                    vmax.[i]
                else v.[i]
            let denom = sqrt second / f bc2Sqrt + f eps
            p.[i] <- p.[i] + f (-stepSize) * (m.[i] / denom)
    | "Adagrad" ->
        let lrDecay, wd, eps = hv "lr_decay", hv "weight_decay", hv "eps"
        let sum = match st.TryGetValue "sum" with | true, a -> a | _ -> (let a = Array.create n (f (hv "initial_accumulator_value")) in st.["sum"] <- a; a)
        let clr = lr / (1.0 + float (step - 1) * lrDecay)
        for i in 0 .. n - 1 do
            let mutable g = g0.[i]
            if wd <> 0.0 then g <- g + f wd * p.[i]
            sum.[i] <- sum.[i] + g * g
            let std = sqrt sum.[i] + f eps
            p.[i] <- p.[i] + f (-clr) * (g / std)
    | "RMSprop" ->
        let alpha, eps, wd, mom = hv "alpha", hv "eps", hv "weight_decay", hv "momentum"
        let sq, ga, buf = arr "square_avg", arr "grad_avg", arr "momentum_buffer"
        for i in 0 .. n - 1 do
            let mutable g = if flag "maximize" then -g0.[i] else g0.[i]
            if wd <> 0.0 then g <- g + f wd * p.[i]
            sq.[i] <- sq.[i] * f alpha + f (1.0 - alpha) * (g * g)
            let avg =
                if flag "centered" then
                    ga.[i] <- lerp ga.[i] g (f (1.0 - alpha))
                    sqrt (sq.[i] + -1.0f * (ga.[i] * ga.[i]))
                else sqrt sq.[i]
            let avg = avg + f eps
            if mom > 0.0 then
                buf.[i] <- buf.[i] * f mom + g / avg
                p.[i] <- p.[i] + f (-lr) * buf.[i]
            else
                p.[i] <- p.[i] + f (-lr) * (g / avg)
    | "Adamax" ->
        let b1, b2, eps, wd = hv "beta1", hv "beta2", hv "eps", hv "weight_decay"
        let m, u = arr "exp_avg", arr "exp_inf"
        let clr = lr / (1.0 - Math.Pow(b1, float step))
        for i in 0 .. n - 1 do
            let mutable g = g0.[i]
            if wd <> 0.0 then g <- g + f wd * p.[i]
            m.[i] <- lerp m.[i] g (f (1.0 - b1))
            u.[i] <- max (u.[i] * f b2) (abs g + f eps)
            p.[i] <- p.[i] + f (-clr) * (m.[i] / u.[i])
    | "NAdam" ->
        let b1, b2, eps, wd, psi = hv "beta1", hv "beta2", hv "eps", hv "weight_decay", hv "momentum_decay"
        let m, v = arr "exp_avg", arr "exp_avg_sq"
        let bc2 = 1.0 - Math.Pow(b2, float step)
        let mu = b1 * (1.0 - 0.5 * Math.Pow(0.96, float step * psi))
        let muNext = b1 * (1.0 - 0.5 * Math.Pow(0.96, float (step + 1) * psi))
        // PyTorch 2.x: mu_product is a float32 0-dim tensor; mu_product_next = mu_product * mu_next.
        let muProduct = float (float32 (match scalars.TryGetValue "mu_product" with | true, x -> x | _ -> 1.0) * f mu)
        scalars.["mu_product"] <- muProduct
        let muProductNext = muProduct * muNext
        for i in 0 .. n - 1 do
            let mutable g = g0.[i]
            if wd <> 0.0 then g <- g + f wd * p.[i]
            m.[i] <- lerp m.[i] g (f (1.0 - b1))
            v.[i] <- v.[i] * f b2 + f (1.0 - b2) * (g * g)
            let denom = sqrt (v.[i] / f bc2) + f eps
            p.[i] <- p.[i] + f (-lr * (1.0 - mu) / (1.0 - muProduct)) * (g / denom)
            p.[i] <- p.[i] + f (-lr * muNext / (1.0 - muProductNext)) * (m.[i] / denom)
    | "RAdam" ->
        let b1, b2, eps, wd = hv "beta1", hv "beta2", hv "eps", hv "weight_decay"
        let m, v = arr "exp_avg", arr "exp_avg_sq"
        let bc1 = 1.0 - Math.Pow(b1, float step)
        let bc2 = 1.0 - Math.Pow(b2, float step)
        let rhoInf = 2.0 / (1.0 - b2) - 1.0
        let rhoT = rhoInf - 2.0 * float step * Math.Pow(b2, float step) / bc2
        for i in 0 .. n - 1 do
            let mutable g = g0.[i]
            if wd <> 0.0 then g <- g + f wd * p.[i]
            m.[i] <- lerp m.[i] g (f (1.0 - b1))
            v.[i] <- v.[i] * f b2 + f (1.0 - b2) * (g * g)
            let corrected = m.[i] / f bc1
            if rhoT > 5.0 then
                let rect = Math.Pow((rhoT - 4.0) * (rhoT - 2.0) * rhoInf / ((rhoInf - 4.0) * (rhoInf - 2.0) * rhoT), 0.5)
                let adaptive = f (Math.Pow(bc2, 0.5)) / (sqrt v.[i] + f eps)
                p.[i] <- p.[i] + -1.0f * (corrected * f lr * adaptive * f rect)
            else
                p.[i] <- p.[i] + -1.0f * (corrected * f lr)
    | "Adadelta" ->
        let rho, eps, wd = hv "rho", hv "eps", hv "weight_decay"
        let sq, acc = arr "square_avg", arr "acc_delta"
        for i in 0 .. n - 1 do
            let mutable g = if flag "maximize" then -g0.[i] else g0.[i]
            if wd <> 0.0 then g <- g + f wd * p.[i]
            sq.[i] <- sq.[i] * f rho + f (1.0 - rho) * (g * g)
            let std = sqrt (sq.[i] + f eps)
            let delta = sqrt (acc.[i] + f eps) / std * g
            acc.[i] <- acc.[i] * f rho + f (1.0 - rho) * (delta * delta)
            p.[i] <- p.[i] + f (-lr) * delta
    | "ASGD" ->
        let lambd, alpha, t0, wd = hv "lambd", hv "alpha", hv "t0", hv "weight_decay"
        let ax = arr "ax"
        // eta and mu: float32 0-dim tensors in PyTorch (eta starts at the float32 lr).
        let eta = match scalars.TryGetValue "eta" with | true, x -> x | _ -> float (f lr)
        let mu = match scalars.TryGetValue "mu" with | true, x -> x | _ -> 1.0
        for i in 0 .. n - 1 do
            let mutable g = if flag "maximize" then -g0.[i] else g0.[i]
            if wd <> 0.0 then g <- g + f wd * p.[i]
            p.[i] <- p.[i] * f (1.0 - lambd * eta)
            p.[i] <- p.[i] + f (-eta) * g
            ax.[i] <- if mu <> 1.0 then ax.[i] + (p.[i] - ax.[i]) * f mu else p.[i]
        scalars.["eta"] <- float (f (lr / Math.Pow(1.0 + lambd * lr * float step, alpha)))
        scalars.["mu"] <- float (f (1.0 / max 1.0 (float step - t0)))
    | "Rprop" ->
        let etaMinus, etaPlus, minStep, maxStep = hv "etaminus", hv "etaplus", hv "min_step", hv "max_step"
        let prev = arr "prev"
        let size = match st.TryGetValue "step_size" with | true, a -> a | _ -> (let a = Array.create n (f lr) in st.["step_size"] <- a; a)
        for i in 0 .. n - 1 do
            let g = if flag "maximize" then -g0.[i] else g0.[i]
            let s = sign (g * prev.[i])
            let factor = if s > 0 then f etaPlus elif s < 0 then f etaMinus else 1.0f
            size.[i] <- min (max (size.[i] * factor) (f minStep)) (f maxStep)
            let g = if factor = f etaMinus then 0.0f else g
            p.[i] <- p.[i] + -1.0f * (float32 (sign g) * size.[i])
            prev.[i] <- g
    | other -> failwithf "no reference for %s" other

// ---------------------------------------------------------------------------------------------
// Cases

/// A case: optimizer, implementation switches, tensor sizes, groups layout, steps, seed.
type Case =
    { Optimizer: string
      Foreach: bool option
      Fused: bool option
      Sizes: int list
      OneGroupPerTensor: bool
      Steps: int
      Hyper: Hyper
      Seed: int }

let private optimizers = [ "SGD"; "Adam"; "AdamW"; "Adagrad"; "RMSprop"; "Adamax"; "NAdam"; "RAdam"; "Adadelta"; "ASGD"; "Rprop" ]

/// Hyper-parameters in the ranges PyTorch accepts, drawn from `r`.
let private hyperFor (name: string) (r: Random) : Hyper =
    let u lo hi = lo + (hi - lo) * r.NextDouble()
    let pick (xs: float list) = xs.[r.Next xs.Length]
    let b () = if r.Next 2 = 0 then 0.0 else 1.0
    let wd () = pick [ 0.0; 0.0; 1e-4; 0.01; 0.1 ]
    match name with
    | "SGD" ->
        let mom = pick [ 0.0; 0.5; 0.9; 0.99 ]
        let nesterov = if mom > 0.0 then b () else 0.0
        let damp = if nesterov = 1.0 then 0.0 else pick [ 0.0; 0.0; 0.1; 0.5 ]
        Map [ "lr", u 1e-4 0.5; "momentum", mom; "dampening", damp; "weight_decay", wd (); "nesterov", nesterov; "maximize", b () ]
    | "Adam" | "AdamW" ->
        Map [ "lr", u 1e-4 0.1; "beta1", pick [ 0.0; 0.5; 0.9 ]; "beta2", pick [ 0.9; 0.99; 0.999 ]; "eps", pick [ 1e-8; 1e-6; 1e-3 ]
              "weight_decay", wd (); "amsgrad", b (); "maximize", b () ]
    | "Adagrad" ->
        Map [ "lr", u 1e-3 0.5; "lr_decay", pick [ 0.0; 0.01; 0.5 ]; "weight_decay", wd (); "initial_accumulator_value", pick [ 0.0; 0.1; 1.0 ]; "eps", pick [ 1e-10; 1e-6 ] ]
    | "RMSprop" ->
        Map [ "lr", u 1e-4 0.05; "alpha", pick [ 0.9; 0.99 ]; "eps", pick [ 1e-8; 1e-4 ]; "weight_decay", wd (); "momentum", pick [ 0.0; 0.5; 0.9 ]
              "centered", b (); "maximize", b () ]
    | "Adamax" -> Map [ "lr", u 1e-3 0.1; "beta1", pick [ 0.5; 0.9 ]; "beta2", pick [ 0.99; 0.999 ]; "eps", pick [ 1e-8; 1e-4 ]; "weight_decay", wd () ]
    | "NAdam" ->
        Map [ "lr", u 1e-3 0.1; "beta1", pick [ 0.5; 0.9 ]; "beta2", pick [ 0.99; 0.999 ]; "eps", pick [ 1e-8; 1e-4 ]; "weight_decay", wd ()
              "momentum_decay", pick [ 4e-3; 0.1 ] ]
    | "RAdam" -> Map [ "lr", u 1e-3 0.1; "beta1", pick [ 0.5; 0.9 ]; "beta2", pick [ 0.5; 0.9; 0.999 ]; "eps", pick [ 1e-8; 1e-4 ]; "weight_decay", wd () ]
    | "Adadelta" -> Map [ "lr", u 0.1 2.0; "rho", pick [ 0.5; 0.9 ]; "eps", pick [ 1e-6; 1e-3 ]; "weight_decay", wd (); "maximize", b () ]
    | "ASGD" ->
        Map [ "lr", u 1e-3 0.1; "lambd", pick [ 1e-4; 0.01 ]; "alpha", pick [ 0.5; 0.75 ]; "t0", pick [ 0.0; 1.0; 2.0; 1e6 ]; "weight_decay", wd (); "maximize", b () ]
    | "Rprop" ->
        Map [ "lr", u 1e-3 0.1; "etaminus", pick [ 0.3; 0.5 ]; "etaplus", pick [ 1.2; 1.5 ]; "min_step", pick [ 1e-6; 1e-3 ]; "max_step", pick [ 0.05; 50.0 ]; "maximize", b () ]
    | other -> failwithf "unknown %s" other

/// The implementations PyTorch's switches select for `name`: (foreach, fused).
let private switchesFor (name: string) =
    [ yield None, None
      yield Some false, None
      yield Some true, None
      if Core.Optimizers.hasFused name then yield None, Some true ]

type CaseArb =
    static member Case() : Arbitrary<Case> =
        gen {
            let! name = Gen.elements optimizers
            let! (fe, fu) = Gen.elements (switchesFor name)
            // Around the AVX2 vector width (8 floats): the kernels' vector body and scalar tail.
            let! sizes = Gen.listOfLength 3 (Gen.elements [ 1; 3; 7; 8; 9; 16; 17; 33; 64; 100 ]) |> Gen.map (List.truncate 3)
            let! nTensors = Gen.choose (1, 3)
            let! perTensor = Gen.elements [ true; false ]
            let! steps = Gen.choose (1, 7)
            let! seed = Gen.choose (0, Int32.MaxValue)
            return
                { Optimizer = name; Foreach = fe; Fused = fu; Sizes = List.truncate nTensors sizes; OneGroupPerTensor = perTensor
                  Steps = steps; Hyper = hyperFor name (Random seed); Seed = seed }
        }
        |> Arb.fromGen

/// The registry's keyword arguments for a case (PyTorch's names; betas/etas/step_sizes as pairs).
let private kwargsOf (c: Case) : IReadOnlyDictionary<string, obj> =
    let d = Dictionary<string, obj>()
    let flagKeys = set [ "nesterov"; "maximize"; "amsgrad"; "centered" ]
    for KeyValue(k, v) in c.Hyper do
        match k with
        | "beta1" -> d.["betas"] <- box (ValueTuple<float, float>(v, c.Hyper.["beta2"]))
        | "beta2" -> ()
        | "etaminus" -> d.["etas"] <- box (ValueTuple<float, float>(v, c.Hyper.["etaplus"]))
        | "etaplus" -> ()
        | "min_step" -> d.["step_sizes"] <- box (ValueTuple<float, float>(v, c.Hyper.["max_step"]))
        | "max_step" -> ()
        | k when flagKeys.Contains k -> d.[k] <- box (v <> 0.0)
        | k -> d.[k] <- box v
    c.Foreach |> Option.iter (fun b -> d.["foreach"] <- box b)
    c.Fused |> Option.iter (fun b -> d.["fused"] <- box b)
    d :> IReadOnlyDictionary<string, obj>

/// The bar where libtorch's arithmetic differs from the reference's one-rounding-per-op (FMA in
/// vectorised ops, the fused kernels' double-precision scalar tails): norm-wise relative error per
/// tensor, ‖a − e‖∞ ≤ 1e-6·max(‖e‖∞, ‖p₀‖∞, Σₜ‖Δpₜ‖∞) — rounding is relative to the magnitudes summed:
/// the initial values and the updates (element-wise relative error is meaningless for an element an
/// update drove near zero, or through RMSprop's centered cancellation; both seen).
let relTol = 1e-6

/// Runs a case through the library and the reference; returns (bit-identical elements, total, worst norm-wise relative deviation, errors).
let rec run (c: Case) : int * int * float * string list = runWithLr c None

/// `run`, optionally with a scheduler-style lr write before every step: `lrAt step k` is the lr of tensor k's
/// group at `step` (one group per tensor), written into the optimizer's groups and used by the reference.
and runWithLr (c: Case) (lrAt: (int -> int -> float) option) : int * int * float * string list =
    use _ = torch.NewDisposeScope()
    let r = Random c.Seed
    let values (n: int) = Array.init n (fun _ -> float32 (r.NextDouble() * 2.0 - 1.0))
    let initial = c.Sizes |> List.map values
    let ps = initial |> List.map (fun v -> new Modules.Parameter(torch.tensor(Array.copy v)))
    let groups : IParamGroup list =
        if c.OneGroupPerTensor then ps |> List.map (fun p -> PlainParamGroup([], [| p |]) :> IParamGroup)
        else [ PlainParamGroup([], Array.ofList ps) :> IParamGroup ]
    let optimizer = BuiltinOptimizers.Create(c.Optimizer, List.toArray groups, kwargsOf c)
    let refParams = initial |> List.map Array.copy
    let refStates = initial |> List.map (fun _ -> RefState())
    let refScalars = initial |> List.map (fun _ -> Dictionary<string, float>())
    let errors = ResizeArray<string>()
    let mutable exact, total, worst = 0, 0, 0.0
    // Per tensor, the reference's accumulated movement (sum over steps of max |Δp|): the updates' magnitude.
    let moved = Array.zeroCreate<float> initial.Length
    for step in 1 .. c.Steps do
        let grads = c.Sizes |> List.map values
        optimizer.zero_grad()
        for (p, g) in List.zip ps grads do
            use gt = torch.tensor(g)
            (p * gt).sum().backward()
        let hyperOf (k: int) =
            match lrAt with
            | Some lr -> c.Hyper |> Map.add "lr" (lr step k)
            | None -> c.Hyper
        match lrAt with
        | Some _ -> optimizer.ParamGroups |> Seq.iteri (fun k g -> g.LearningRate <- (hyperOf k).["lr"])
        | None -> ()
        optimizer.step() |> ignore
        List.iteri (fun i _ ->
            let before = Array.copy refParams.[i]
            referenceStep c.Optimizer (hyperOf i) refParams.[i] grads.[i] refStates.[i] step refScalars.[i]
            moved.[i] <- moved.[i] + (Array.map2 (fun (a: float32) (b: float32) -> abs (float a - float b)) before refParams.[i] |> Array.max)) ps
        for (k, p) in List.indexed ps do
            let actual = p.data<float32>().ToArray()
            let expected = refParams.[k]
            let norm = Array.append expected initial.[k] |> Array.fold (fun m e -> max m (abs (float e))) moved.[k]
            let mutable dev = 0.0
            for j in 0 .. actual.Length - 1 do
                let a, e = actual.[j], expected.[j]
                total <- total + 1
                if BitConverter.SingleToInt32Bits a = BitConverter.SingleToInt32Bits e then exact <- exact + 1
                dev <- max dev (abs (float a - float e))
            let rel = if norm = 0.0 then dev else dev / norm
            worst <- max worst rel
            if not (rel <= relTol) then
                errors.Add(sprintf "step %d tensor %d: norm-wise relative deviation %.3g (max |a - e| %.3g, ||e|| %.3g)" step k rel dev norm)
    optimizer.Dispose()
    exact, total, worst, List.ofSeq (Seq.truncate 5 errors)

/// Per optimizer and implementation: bit-identical share and worst relative deviation, for the note.
let private summary = Dictionary<string, int * int * float>()

[<Tests>]
let tests =
    testSequenced <| testList "optimizers vs PyTorch's per-tensor algorithm" [
        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 250; arbitrary = [ typeof<CaseArb> ] }
            "every optimizer and implementation stays within 1e-6 norm-wise relative of the float32 reference"
        <| fun (c: Case) ->
            let exact, total, worst, errors = run c
            let key = sprintf "%s %s" c.Optimizer (match c.Foreach, c.Fused with | _, Some true -> "fused=True" | Some true, _ -> "foreach=True" | Some false, _ -> "foreach=False" | _ -> "default")
            lock summary (fun () ->
                let e0, t0, w0 = match summary.TryGetValue key with | true, v -> v | _ -> (0, 0, 0.0)
                summary.[key] <- (e0 + exact, t0 + total, max w0 worst))
            if not errors.IsEmpty then failwithf "%A\n%s" c (String.Join("\n", errors))
        testPropertyWithConfig { FsCheckConfig.defaultConfig with maxTest = 100; arbitrary = [ typeof<CaseArb> ] }
            "one group per tensor with random per-group lr changes at every step stays within 1e-6 of the per-tensor reference"
        <| fun (c0: Case) ->
            // Per step: the lrs kept, one new lr written into every group, or each group its own of a few values
            // (so buckets split and merge again); the reference takes each tensor's lr at each step.
            let c = { c0 with OneGroupPerTensor = true }
            let r = Random c.Seed
            let lr0 = c.Hyper.["lr"]
            let choices = [| lr0; lr0 * 0.5; lr0 * 0.3 |]
            let n = c.Sizes.Length
            let table = Array.zeroCreate<float[]> (c.Steps + 1)
            table.[0] <- Array.create n lr0
            for step in 1 .. c.Steps do
                table.[step] <-
                    match r.Next 3 with
                    | 0 -> Array.copy table.[step - 1]
                    | 1 -> Array.create n choices.[r.Next choices.Length]
                    | _ -> Array.init n (fun _ -> choices.[r.Next choices.Length])
            let _, _, _, errors = runWithLr c (Some (fun step k -> table.[step].[k]))
            if not errors.IsEmpty then failwithf "%A\nlr per step: %A\n%s" c table (String.Join("\n", errors))
        test "summary of the property run (bit-identical share, worst relative deviation)" {
            for KeyValue(k, (e, t, w)) in summary |> Seq.sortBy (fun kv -> kv.Key) do
                printfn "optimizer exactness %-22s %6.2f%% bit-identical of %6d values, worst relative %.3g" k (100.0 * float e / float (max t 1)) t w
        }
        test "fused=True and foreach=True together are PyTorch's error" {
            let p = new Modules.Parameter(torch.ones(3L))
            let kwargs = dict [ "lr", box 0.1; "fused", box true; "foreach", box true ]
            Expect.throwsT<OptimConfigException> (fun () -> BuiltinOptimizers.Create("SGD", [| PlainParamGroup([], [| p |]) :> IParamGroup |], Dictionary(kwargs)) |> ignore) "both"
        }
    ]

/// The same parameters and gradients through one group and through one group per tensor: the buckets
/// make both one kernel call, and the results are the same bits. Scheduler-style lr writes keep the
/// cached partition; a group whose lr leaves its bucket's rebuilds it.
[<Tests>]
let bucketTests =
    testSequenced <| testList "optimizer buckets" [
        for name in [ "SGD"; "Adam"; "AdamW"; "Adagrad" ] do
            test (sprintf "%s: one group per tensor steps to the same bits as one group; lr writes do not rebuild" name) {
                use _ = torch.NewDisposeScope()
                let sizes = [ 5; 8; 17; 3 ]
                let make () = sizes |> List.map (fun n -> new Modules.Parameter(torch.linspace(-1.0, 1.0, int64 n)))
                let one, many = make (), make ()
                let kwargs = Dictionary<string, obj>(dict [ "lr", box 0.05 ])
                if name = "SGD" then kwargs.["momentum"] <- box 0.9
                let o1 = BuiltinOptimizers.Create(name, [| PlainParamGroup([], Array.ofList one) :> IParamGroup |], kwargs)
                let o2 = BuiltinOptimizers.Create(name, many |> List.map (fun p -> PlainParamGroup([], [| p |]) :> IParamGroup) |> Array.ofList, kwargs)
                for step in 1 .. 4 do
                    for (ps, o: torch.optim.Optimizer) in [ one, o1; many, o2 ] do
                        o.zero_grad()
                        for (k, p) in List.indexed ps do
                            use g = torch.full([| p.shape.[0] |], Scalar.op_Implicit (float (k + step) * 0.1))
                            (p * g).sum().backward()
                        // A scheduler writing the same new lr into every group.
                        for g in o.ParamGroups do g.LearningRate <- 0.05 / float step
                        o.step() |> ignore
                for (a, b) in List.zip one many do
                    Expect.sequenceEqual (b.data<float32>().ToArray()) (a.data<float32>().ToArray()) "same bits"
                let rebuilds (o: torch.optim.Optimizer) = (box o :?> Torch.IStepped).Steps.BucketRebuilds
                Expect.equal (rebuilds o2) 1 "built once, kept through four lr changes"
                // One group's lr departs from its bucket: the partition is rebuilt.
                (Seq.head o2.ParamGroups).LearningRate <- 0.5
                o2.step() |> ignore
                Expect.equal (rebuilds o2) 2 "rebuilt when a bucket's groups disagree"
                let buckets () = (box o2 :?> Torch.IStepped).Steps.BucketCount
                Expect.equal (buckets ()) 2 "the departed group has a bucket of its own"
                // It comes back to its bucket's lr: the groups are merged again.
                (Seq.head o2.ParamGroups).LearningRate <- (Seq.last o2.ParamGroups).LearningRate
                o2.step() |> ignore
                Expect.equal (rebuilds o2, buckets ()) (3, 1) "merged when the groups agree again"
            }
        for name in [ "SGD"; "Adam"; "AdamW"; "Adagrad"; "RMSprop"; "Adamax"; "NAdam"; "RAdam"; "Adadelta"; "ASGD"; "Rprop" ] do
          // Without a fused kernel both switches run the same group loop: one case is enough.
          for fe in (if Core.Optimizers.hasFused name then [ None; Some false; Some true ] else [ None ]) do
            test (sprintf "%s foreach=%A: a step allocates no managed memory per param group (one group per tensor vs one group)" name fe) {
                // The same 256 tensors in one group and in 256 groups, after warm-up steps; a step's managed
                // allocation (this thread) must not grow with the groups: whatever is per tensor (TorchSharp's
                // gradient wrappers, Scalars of the per-tensor rules) is the same in both layouts.
                use _ = torch.NewDisposeScope()
                let n = 256
                let bytesPerStep (perGroup: bool) (lrWrites: bool) =
                    let ps = List.init n (fun i -> new Modules.Parameter(torch.full([| 4L |], Scalar.op_Implicit (0.1 * float (i % 7 + 1)))))
                    for p in ps do (p * p).sum().backward()
                    let groups =
                        if perGroup then ps |> List.map (fun p -> PlainParamGroup([], [| p |]) :> IParamGroup) |> Array.ofList
                        else [| PlainParamGroup([], Array.ofList ps) :> IParamGroup |]
                    let kwargs = Dictionary<string, obj>(dict [ "lr", box 0.01 ])
                    fe |> Option.iter (fun b -> kwargs.["foreach"] <- box b)
                    use o = BuiltinOptimizers.Create(name, groups, kwargs)
                    let lrGroups = List.ofSeq o.ParamGroups
                    let step k =
                        if lrWrites then for g in lrGroups do g.LearningRate <- 0.01 / float (k % 3 + 1)
                        o.step() |> ignore
                    for k in 1 .. 3 do step k
                    let steps = 3
                    let before = GC.GetAllocatedBytesForCurrentThread()
                    for k in 4 .. 3 + steps do step k
                    (GC.GetAllocatedBytesForCurrentThread() - before) / int64 steps
                for lrWrites in [ false; true ] do
                    let one, many = bytesPerStep false lrWrites, bytesPerStep true lrWrites
                    // 8 bytes per group would be 2 KB: allow a constant, not a per-group cost.
                    Expect.isLessThanOrEqual (many - one) 512L (sprintf "lr writes %b: %d B per step with %d groups vs %d B with one" lrWrites many n one)
            }
        test "fused=True on an optimizer without a fused kernel is refused with PyTorch's meaning" {
            let errors = BuiltinOptimizers.Check("RMSprop", Dictionary<string, obj>(dict [ "lr", box 0.1; "fused", box true ]))
            Expect.equal (errors |> Seq.map string |> List.ofSeq) [ "fused: `fused=True` is not supported for RMSprop (libtorch has fused kernels for SGD, Adam, AdamW, Adagrad)" ] "message"
            Expect.isEmpty (BuiltinOptimizers.Check("RMSprop", Dictionary<string, obj>(dict [ "lr", box 0.1; "foreach", box true; "fused", box false ]))) "foreach and fused=False are fine"
        }
        test "the registry builds Optim's optimizers, honouring foreach and fused" {
            let p = new Modules.Parameter(torch.ones(3L))
            let build kw = BuiltinOptimizers.Create("Adam", [| PlainParamGroup([], [| p |]) :> IParamGroup |], Dictionary<string, obj>(dict kw))
            let impl (o: torch.optim.Optimizer) = (box o :?> Torch.IImplementationChoice).Implementation
            Expect.equal (impl (build [])) Core.Optimizers.Implementation.Fused "default: the fused kernel"
            Expect.equal (impl (build [ "foreach", box false ])) Core.Optimizers.Implementation.ForLoop "foreach=False: per-tensor loop"
            Expect.equal (impl (build [ "foreach", box true ])) Core.Optimizers.Implementation.Foreach "foreach=True"
            Expect.equal (impl (build [ "fused", box false ])) Core.Optimizers.Implementation.Foreach "fused=False alone: multi-tensor path"
            Expect.isTrue (box (build []) :? Torch.Adam) "Optim.Torch.Adam"
        }
    ]
