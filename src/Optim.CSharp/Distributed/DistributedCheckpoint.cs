using System.Text.Json.Nodes;
using TorchSharp;

namespace Optim.Distributed;

/// <summary>
/// Checkpoints of a data-parallel run: one <see cref="Checkpoint"/> file, written once by rank 0
/// (every rank holds the same parameters and optimizer state) and read by every rank. The model is
/// saved without the data-parallel wrapper (an <see cref="IModelWrapper"/> is unwrapped), so the file
/// also loads into a plain single-process model with <see cref="Checkpoint.Load(string, torch.nn.Module, OptimWrapper, IEnumerable{ParamScheduler}?)"/>.
/// </summary>
public static class DistributedCheckpoint
{
    /// <summary>
    /// Rank 0 saves <paramref name="model"/> (unwrapped), <paramref name="optim_wrapper"/>,
    /// <paramref name="schedulers"/> and <paramref name="metadata"/> to the file <paramref name="path"/>
    /// with <see cref="Checkpoint.Save(string, torch.nn.Module, OptimWrapper, IEnumerable{ParamScheduler}?, JsonObject?)"/>
    /// (atomically: a failed save leaves the previous file intact). Every rank returns once the file is
    /// complete, and every rank throws if rank 0 failed. Call it on every rank.
    /// </summary>
    /// <remarks>
    /// Saved in the middle of a gradient accumulation, each rank holds its own partial gradients while the
    /// file holds one set: when <paramref name="model"/> is a <see cref="DistributedDataParallel{TInput, TOutput}"/>
    /// and any rank has gradients, they are first averaged over the ranks, so every rank and a run resumed
    /// from the file hold the same, and the update completing the accumulation is the same up to rounding
    /// (averaging is linear).
    /// </remarks>
    /// <exception cref="DistributedException">On ranks other than 0: rank 0 failed to write (rank 0 throws its own error).</exception>
    public static void Save(IProcessGroup group, string path, torch.nn.Module model, OptimWrapper optim_wrapper,
                            IEnumerable<ParamScheduler>? schedulers = null, JsonObject? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(group);
        if (group.world_size > 1 && model is IDistributedModule ddp
            && ddp.any_rank(ModuleFacts.Unwrap(model).parameters().Any(p => p.grad is not null)))
            ddp.SynchronizeGradients();
        Exception? failure = null;
        if (group.rank == 0)
        {
            try { Checkpoint.Save(path, ModuleFacts.Unwrap(model), optim_wrapper, schedulers, metadata); }
            catch (Exception ex) { failure = ex; }
        }
        // Every rank learns whether rank 0 succeeded, so none continues believing a checkpoint exists.
        var failed = group.all_gather([failure is null ? 0L : 1L]);
        if (failure is not null) throw failure;
        if (failed[0] != 0) throw new DistributedException($"rank 0 failed to write the checkpoint {path}");
    }

    /// <summary>
    /// Every rank loads the checkpoint file <paramref name="path"/> into <paramref name="model"/>
    /// (unwrapped), <paramref name="optim_wrapper"/> and <paramref name="schedulers"/> with
    /// <see cref="Checkpoint.Load(string, torch.nn.Module, OptimWrapper, IEnumerable{ParamScheduler}?)"/>
    /// (checksum and every part validated before anything is applied), then every rank learns whether
    /// all ranks succeeded. Returns the metadata given to Save. Call it on every rank.
    /// </summary>
    /// <exception cref="CheckpointException">This rank's file is missing a part, corrupt or does not fit (nothing was changed on this rank).</exception>
    /// <exception cref="DistributedException">This rank loaded the file but another rank failed to.</exception>
    public static JsonObject Load(IProcessGroup group, string path, torch.nn.Module model, OptimWrapper optim_wrapper,
                                  IEnumerable<ParamScheduler>? schedulers = null)
    {
        ArgumentNullException.ThrowIfNull(group);
        Exception? failure = null;
        JsonObject metadata = [];
        try { metadata = Checkpoint.Load(path, ModuleFacts.Unwrap(model), optim_wrapper, schedulers); }
        catch (Exception ex) { failure = ex; }
        // A rank that cannot read the file (another machine's disk, a corrupt copy) stops every rank.
        var failed = group.all_gather([failure is null ? 0L : 1L]);
        if (failure is not null) throw failure;
        var others = Enumerable.Range(0, failed.Length).Where(r => failed[r] != 0).ToList();
        if (others.Count > 0) throw new DistributedException($"rank(s) {string.Join(", ", others)} failed to load the checkpoint {path}");
        return metadata;
    }
}
