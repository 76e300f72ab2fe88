/// Builds a TorchSharp module tree from a golden `model.spec` (see golden/README.md): containers
/// `Module`/`ModuleDict` (own params first, then children in order), `Sequential`, torch.nn leaves
/// with PyTorch's constructor arguments, `ties` (shared parameters) and `frozen` parameters.
/// The result reproduces PyTorch's named_parameters names and order.
module Optim.Cli.ModelSpec

open System
open System.Text.Json.Nodes
open TorchSharp
open TorchSharp.Modules
open type TorchSharp.torch.nn

/// A container with parameters and children registered in the order given (PyTorch's nn.Module / ModuleDict).
type SpecContainer(name: string) =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>(name)
    member this.AddChild(childName: string, m: torch.nn.Module) = this.register_module(childName, m)
    member this.AddParameter(paramName: string, p: Parameter) = this.register_parameter(paramName, p)
    override this.forward(x) =
        this.named_children() |> Seq.fold (fun (acc: torch.Tensor) struct (_, m) ->
            match m with
            | :? torch.nn.Module<torch.Tensor, torch.Tensor> as f -> f.forward acc
            | _ -> acc) x

let private arg (node: JsonNode) (name: string) = node.["args"].[name]
let private int64Arg node name = (arg node name).GetValue<int64>()
let private doubleArg node name = (arg node name).GetValue<double>()
let private boolArg node name = (arg node name).GetValue<bool>()
let private optional (node: JsonNode) (name: string) (dflt: 'T) (read: JsonNode -> 'T) =
    match node.["args"] with
    | null -> dflt
    | a -> match a.[name] with null -> dflt | v -> read v

let rec private buildNode (node: JsonNode) : torch.nn.Module =
    let typ = node.["type"].GetValue<string>()
    let name = node.["name"].GetValue<string>()
    let children () =
        match node.["children"] with
        | null -> []
        | c -> [ for ch in c.AsArray() -> ch.["name"].GetValue<string>(), buildNode ch ]
    match typ with
    | "Module" | "ModuleDict" ->
        let m = new SpecContainer(if name = "" then "root" else name)
        match node.["params"] with
        | null -> ()
        | ps ->
            for p in ps.AsArray() do
                let shape = p.["shape"].AsArray() |> Seq.map (fun x -> x.GetValue<int64>()) |> Array.ofSeq
                m.AddParameter(p.["name"].GetValue<string>(), Parameter(torch.randn(shape)))
        for (n, c) in children () do m.AddChild(n, c)
        m :> torch.nn.Module
    | "Sequential" ->
        Sequential(children () |> List.map (fun (n, c) -> struct (n, c :?> torch.nn.Module<torch.Tensor, torch.Tensor>)) |> Array.ofList) :> torch.nn.Module
    | "Linear" -> Linear(int64Arg node "in_features", int64Arg node "out_features", hasBias = boolArg node "bias") :> torch.nn.Module
    | "Conv2d" ->
        let k = arg node "kernel_size"
        let kernel = match k with :? JsonArray as a -> a.[0].GetValue<int64>() | v -> v.GetValue<int64>()
        let stride = optional node "stride" 1L (fun v -> match v with :? JsonArray as a -> a.[0].GetValue<int64>() | v -> v.GetValue<int64>())
        let padding = optional node "padding" 0L (fun v -> match v with :? JsonArray as a -> a.[0].GetValue<int64>() | v -> v.GetValue<int64>())
        Conv2d(int64Arg node "in_channels", int64Arg node "out_channels", kernel, stride = stride, padding = padding,
               groups = optional node "groups" 1L (fun v -> v.GetValue<int64>()), bias = optional node "bias" true (fun v -> v.GetValue<bool>())) :> torch.nn.Module
    | "BatchNorm1d" | "BatchNorm2d" | "BatchNorm3d" ->
        let n, eps, mom = int64Arg node "num_features", doubleArg node "eps", doubleArg node "momentum"
        let affine, track = boolArg node "affine", boolArg node "track_running_stats"
        match typ with
        | "BatchNorm1d" -> BatchNorm1d(n, eps, mom, affine, track) :> torch.nn.Module
        | "BatchNorm2d" -> BatchNorm2d(n, eps, mom, affine, track) :> torch.nn.Module
        | _ -> BatchNorm3d(n, eps, mom, affine, track) :> torch.nn.Module
    | "GroupNorm" -> GroupNorm(int64Arg node "num_groups", int64Arg node "num_channels", doubleArg node "eps", boolArg node "affine") :> torch.nn.Module
    | "LayerNorm" ->
        let shape = (arg node "normalized_shape").AsArray() |> Seq.map (fun x -> x.GetValue<int64>()) |> Array.ofSeq
        LayerNorm(shape, doubleArg node "eps", boolArg node "elementwise_affine") :> torch.nn.Module
    | "Embedding" -> Embedding(int64Arg node "num_embeddings", int64Arg node "embedding_dim") :> torch.nn.Module
    | "ReLU" -> ReLU() :> torch.nn.Module
    | other -> failwithf "model spec: unsupported module type '%s' at '%s'" other name

/// The module at a dotted path below `root` ("" is the root itself).
let rec moduleAt (root: torch.nn.Module) (path: string) : torch.nn.Module =
    if path = "" then root
    else
        let head, rest = match path.IndexOf '.' with -1 -> path, "" | i -> path.Substring(0, i), path.Substring(i + 1)
        let child = root.named_children() |> Seq.tryPick (fun struct (n, m) -> if n = head then Some m else None)
        match child with
        | Some c -> moduleAt c rest
        | None -> failwithf "model spec: no module '%s'" head

/// The named parameters (PyTorch order, deduplicated) of a module.
let namedParameters (m: torch.nn.Module) = m.named_parameters() |> Seq.map (fun struct (n, p) -> n, p) |> List.ofSeq

/// Builds the module tree of a spec (`{root, ties, frozen}`).
let build (spec: JsonNode) : torch.nn.Module =
    let root = buildNode spec.["root"]
    let named = namedParameters root |> dict
    for tie in (match spec.["ties"] with null -> JsonArray() | t -> t.AsArray()) do
        let target = tie.["param"].GetValue<string>()
        let shared = named.[tie.["shares"].GetValue<string>()]
        let owner, attr = match target.LastIndexOf '.' with -1 -> "", target | i -> target.Substring(0, i), target.Substring(i + 1)
        let m = moduleAt root owner
        // Leaves expose their weights as properties; setting one registers the shared Parameter object.
        match m.GetType().GetProperty(attr) with
        | null -> m.register_parameter(attr, shared)
        | prop -> prop.SetValue(m, shared)
    let named = namedParameters root |> dict
    for f in (match spec.["frozen"] with null -> JsonArray() | t -> t.AsArray()) do
        named.[f.GetValue<string>()].requires_grad <- false
    root
