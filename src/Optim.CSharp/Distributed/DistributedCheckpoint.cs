using TorchSharp;

namespace Optim.Distributed;

/// <summary>
/// Checkpoints of a data-parallel run: written once, by rank 0 (every rank holds the same
/// parameters and optimizer state), and read by every rank. The model is saved without the
/// data-parallel wrapper (an <see cref="IModelWrapper"/> is unwrapped), so the files load into a
/// plain single-process model too.
/// </summary>
public static class DistributedCheckpoint
{
    /// <summary>The model's file inside a checkpoint folder (TorchSharp's <c>Module.save</c> format).</summary>
    public const string ModelFile = "model.bin";
    /// <summary>The optimizer wrapper's file inside a checkpoint folder (<see cref="OptimStateDict.save(string)"/>).</summary>
    public const string OptimFile = "optim.bin";

    /// <summary>
    /// Rank 0 writes <paramref name="model"/>'s parameters and buffers and, when given, the
    /// wrapper's state into the folder <paramref name="directory"/>; every rank returns once the
    /// files are complete (a barrier). Call it on every rank.
    /// </summary>
    public static void Save(IProcessGroup group, string directory, torch.nn.Module model, OptimWrapper? optim_wrapper = null)
    {
        ArgumentNullException.ThrowIfNull(group);
        Exception? failure = null;
        if (group.rank == 0)
        {
            try
            {
                Directory.CreateDirectory(directory);
                ModuleFacts.Unwrap(model).save(Path.Combine(directory, ModelFile));
                optim_wrapper?.state_dict().save(Path.Combine(directory, OptimFile));
            }
            catch (Exception ex) { failure = ex; }
        }
        // Every rank learns whether rank 0 succeeded, so none continues believing a checkpoint exists.
        var failed = group.all_gather([failure is null ? 0L : 1L]);
        if (failure is not null) throw failure;
        if (failed[0] != 0) throw new DistributedException($"rank 0 failed to write the checkpoint to {directory}");
    }

    /// <summary>
    /// Every rank loads the checkpoint in <paramref name="directory"/> into <paramref name="model"/>
    /// (unwrapped) and, when given, <paramref name="optim_wrapper"/>. Call it on every rank.
    /// </summary>
    /// <exception cref="StateDictException">The optimizer state does not fit the wrapper (it is left unchanged).</exception>
    public static void Load(IProcessGroup group, string directory, torch.nn.Module model, OptimWrapper? optim_wrapper = null)
    {
        ArgumentNullException.ThrowIfNull(group);
        ModuleFacts.Unwrap(model).load(Path.Combine(directory, ModelFile));
        optim_wrapper?.load_state_dict(OptimStateDict.load(Path.Combine(directory, OptimFile)));
        group.barrier();
    }
}
