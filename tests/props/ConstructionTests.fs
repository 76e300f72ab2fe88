/// Optim builds TorchSharp optimizers in linear time (LinearParamGroups): the result must be the
/// optimizer TorchSharp's own constructor builds from the same groups — same groups, options, states,
/// steps and saved state, bit for bit.
module Optim.Tests.ConstructionTests

open System.IO
open Expecto
open TorchSharp
open TorchSharp.Modules
open Optim
open Optim.Tests.TestSupport

/// Five parameters with fixed values (the same values every call, fresh tensors).
let private parameters () =
    [ for i in 0..4 ->
        let values = Array.init (3 + i) (fun j -> float32 (sin (float (7 * i + j))))
        new Parameter(torch.tensor(values)) ]

/// Three groups over the five parameters: two with their own lr, one with the defaults.
let private layout (ps: Parameter list) = [ [ ps.[0]; ps.[1] ], Some 0.05; [ ps.[2] ], None; [ ps.[3]; ps.[4] ], Some 0.02 ]

let private optimGroups (ps: Parameter list) : IParamGroup list =
    layout ps
    |> List.map (fun (members, lr) ->
        let options = match lr with Some v -> [ System.Collections.Generic.KeyValuePair("lr", box v) ] | None -> []
        PlainParamGroup(options, ResizeArray members) :> IParamGroup)

let private lrOf (lr: float option) = match lr with Some v -> System.Nullable v | None -> System.Nullable()

/// The class's own constructor (TorchSharp's quadratic add_param_group path) over the same layout (kwargs
/// lr 0.01), per optimizer type: the registry builds Optim's optimizers (Optim.Torch), so the reference is
/// the same class built the slow way.
let private reference (name: string) (ps: Parameter list) : torch.optim.Optimizer =
    let groups = layout ps
    match name with
    | "SGD" ->
        new Optim.Torch.SGD([ for (m, lr) in groups -> SGD.ParamGroup(m, SGD.Options(LearningRate = lrOf lr)) ], 0.01, momentum = 0.9)
    | "Adam" ->
        new Optim.Torch.Adam([ for (m, lr) in groups -> Adam.ParamGroup(m, Adam.Options(LearningRate = lrOf lr)) ], 0.01)
    | "Adagrad" ->
        new Optim.Torch.Adagrad([ for (m, lr) in groups -> Adagrad.ParamGroup(m, Adagrad.Options(LearningRate = lrOf lr)) ], 0.01, initial_accumulator_value = 0.3)
    | "Rprop" ->
        new Optim.Torch.Rprop([ for (m, lr) in groups -> Rprop.ParamGroup(m, Rprop.Options(LearningRate = lrOf lr)) ], 0.01)
    | "ASGD" ->
        new Optim.Torch.ASGD([ for (m, lr) in groups -> ASGD.ParamGroup(m, ASGD.Options(LearningRate = lrOf lr)) ], 0.01)
    | other -> failwithf "no reference for %s" other

let private kwargsFor (name: string) : System.Collections.Generic.IReadOnlyDictionary<string, obj> =
    let d = System.Collections.Generic.Dictionary<string, obj>()
    d.["lr"] <- box 0.01
    if name = "SGD" then d.["momentum"] <- box 0.9
    if name = "Adagrad" then d.["initial_accumulator_value"] <- box 0.3
    d

/// Three steps with the same gradients, then every parameter's values and the saved state.
let private run (optimizer: torch.optim.Optimizer) (ps: Parameter list) =
    for step in 1..3 do
        for (i, p) in List.indexed ps do
            p.grad <- torch.tensor(Array.init (int (p.numel())) (fun j -> float32 (cos (float (step * 11 + i * 5 + j)))))
        optimizer.step() |> ignore
    let values = ps |> List.map valuesOf
    use stream = new MemoryStream()
    use writer = new BinaryWriter(stream)
    (optimizer :?> OptimizerHelper).save_state_dict(writer)
    writer.Flush()
    values, stream.ToArray()

let private describe (optimizer: torch.optim.Optimizer) =
    OptimizerGroups.Of(optimizer)
    |> Seq.map (fun g -> (g.Params |> Seq.map ModuleFacts.Identity |> List.ofSeq).Length, [ for k in g.Keys -> k, sprintf "%A" g.[k] ])
    |> List.ofSeq

[<Tests>]
let tests =
    testList "linear optimizer construction" [
        for name in [ "SGD"; "Adam"; "Adagrad"; "Rprop"; "ASGD" ] do
            yield test (sprintf "%s: the same optimizer as TorchSharp's constructor (groups, options, 3 steps, saved state: bit for bit)" name) {
                torch.set_num_threads 1
                let ps = parameters ()
                let built = BuiltinOptimizers.Create(name, optimGroups ps, kwargsFor name)
                let qs = parameters ()
                let expected = reference name qs
                Expect.equal (describe built) (describe expected) "groups: sizes and options"
                let builtGroups = OptimizerGroups.Of(built)
                for (g, (members, _)) in Seq.zip builtGroups (layout ps) do
                    Expect.sequenceEqual (g.Params |> Seq.map ModuleFacts.Identity) (members |> Seq.map ModuleFacts.Identity) "the group's own parameters, in order"
                let valuesBuilt, savedBuilt = run built ps
                let valuesExpected, savedExpected = run expected qs
                Expect.equal valuesBuilt valuesExpected "parameters after 3 steps"
                Expect.equal savedBuilt savedExpected "save_state_dict bytes"
            }
        yield test "2,000 one-parameter groups from paramwise_cfg: every parameter has its state and steps as in one TorchSharp group" {
            torch.set_num_threads 1
            torch.manual_seed 7L |> ignore
            let make () = torch.nn.Sequential([| for i in 0..999 -> struct (sprintf "l%d" i, torch.nn.Linear(2L, 1L) :> torch.nn.Module<torch.Tensor, torch.Tensor>) |])
            let a = make ()
            let b = make ()
            for (pa, pb) in Seq.zip (a.parameters()) (b.parameters()) do
                use _ = torch.no_grad ()
                pb.copy_(pa) |> ignore
            let wrapper =
                Builder.build_optim_wrapper (a, """{"optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9}, "paramwise_cfg": {"custom_keys": {"l1.": {"lr_mult": 2.0}}}}""")
            Expect.equal (Seq.length wrapper.optimizer.ParamGroups) 2000 "one group per tensor"
            let plain = torch.optim.SGD(b.parameters(), 0.1, momentum = 0.9)
            for (p, q) in Seq.zip (a.parameters()) (b.parameters()) do
                p.grad <- torch.ones_like(p)
                q.grad <- torch.ones_like(q)
            wrapper.optimizer.step() |> ignore
            plain.step() |> ignore
            let names = ModuleFacts.NamedParameters a |> Seq.map (fun struct (n, _) -> n) |> List.ofSeq
            for (n, (p, q)) in Seq.zip names (Seq.zip (a.parameters()) (b.parameters())) do
                let delta = (p - q).abs().max().item<float32>()
                if n.StartsWith "l1." then Expect.isGreaterThan delta 0.0f (n + " has twice the lr")
                else Expect.equal delta 0.0f (n + " steps exactly as in one group")
        }
    ]
