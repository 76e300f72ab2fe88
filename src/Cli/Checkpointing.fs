/// The one place `optim train` saves and restores its training state: the library's training
/// checkpoint (model, optimizer wrapper with pending gradients, schedulers, RNG and the run's
/// metadata in one atomic, checksummed file).
module Optim.Cli.Checkpointing

open System.Text.Json.Nodes
open TorchSharp
open Optim

/// Saves the whole training state to `path` (atomically).
let save (path: string) (model: torch.nn.Module) (wrapper: OptimWrapper) (schedulers: ParamScheduler list) (metadata: JsonObject) : unit =
    Checkpoint.Save(path, model, wrapper, schedulers, metadata)

/// Restores a training state saved by `save` into the given objects (all or nothing); returns its metadata.
/// Raises `CheckpointException` naming what does not fit.
let load (path: string) (model: torch.nn.Module) (wrapper: OptimWrapper) (schedulers: ParamScheduler list) : JsonObject =
    Checkpoint.Load(path, model, wrapper, schedulers)
