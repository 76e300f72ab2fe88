/// Builds a TorchSharp module tree from a golden `model.spec` (see golden/README.md): the builder is
/// the CLI's (`optim inspect --model-spec`), shared here; plus loading a golden state dict.
module Optim.Tests.ModelSpec

open System.Text.Json.Nodes
open TorchSharp

type SpecContainer = Optim.Cli.ModelSpec.SpecContainer

/// The module at a dotted path below `root` ("" is the root itself).
let moduleAt = Optim.Cli.ModelSpec.moduleAt

/// The named parameters (PyTorch order, deduplicated) of a module.
let namedParameters = Optim.Cli.ModelSpec.namedParameters

/// Builds the module tree of a spec (`{root, ties, frozen}`).
let build = Optim.Cli.ModelSpec.build

/// Copies a golden state dict (name -> tensor) into the module's parameters.
let loadState (m: torch.nn.Module) (state: JsonNode) =
    use _ = torch.no_grad()
    for (name, p) in namedParameters m do
        match state.[name] with
        | null -> ()
        | t -> p.copy_(Golden.tensor t) |> ignore
