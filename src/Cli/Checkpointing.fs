/// The one place `optim train` saves and restores its training state: the library's training
/// checkpoint (model, optimizer wrapper with pending gradients, schedulers, RNG and the run's
/// metadata in one atomic, checksummed file). In a data-parallel run rank 0 writes the file and
/// every rank reads it (DistributedCheckpoint).
module Optim.Cli.Checkpointing

open System.Text.Json.Nodes
open TorchSharp
open Optim
open Optim.Distributed

/// Saves the whole training state to `path` (atomically). With a process group every rank calls it
/// and rank 0 writes (mid-accumulation, the ranks' partial gradients are averaged first: see
/// DistributedCheckpoint.Save).
let save (group: IProcessGroup option) (path: string) (model: torch.nn.Module) (wrapper: OptimWrapper) (schedulers: ParamScheduler list) (metadata: JsonObject) : unit =
    match group with
    | None -> Checkpoint.Save(path, model, wrapper, schedulers, metadata)
    | Some g -> DistributedCheckpoint.Save(g, path, model, wrapper, schedulers, metadata)

/// Restores a training state saved by `save` into the given objects (all or nothing; with a process
/// group, on every rank); returns its metadata. Raises `CheckpointException` naming what does not fit.
let load (group: IProcessGroup option) (path: string) (model: torch.nn.Module) (wrapper: OptimWrapper) (schedulers: ParamScheduler list) : JsonObject =
    match group with
    | None -> Checkpoint.Load(path, model, wrapper, schedulers)
    | Some g -> DistributedCheckpoint.Load(g, path, model, wrapper, schedulers)
