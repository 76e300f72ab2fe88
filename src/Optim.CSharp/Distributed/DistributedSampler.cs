using System.Collections;
using Optim.Core;
using TorchSharp;

namespace Optim.Distributed;

/// <summary>
/// PyTorch's <c>DistributedSampler</c>: the indices of one rank's shard of a data set, reshuffled
/// every epoch from <c>seed + epoch</c> (the same permutation on every rank, so the shards are
/// disjoint and cover the data set). Without <c>drop_last</c> the data set is padded by wrapping
/// around so every rank gets <see cref="num_samples"/> indices; with it the tail is dropped.
/// </summary>
/// <example>
/// <code>
/// var sampler = new DistributedSampler(dataset.Count, group, shuffle: true, seed: 42);
/// for (int epoch = 0; epoch &lt; epochs; epoch++) {
///     sampler.set_epoch(epoch);                         // a new order each epoch, the same on every rank
///     foreach (var batch in sampler.Chunk(batchSize)) Train(dataset.Gather(batch));
/// }
/// </code>
/// </example>
public sealed class DistributedSampler : IEnumerable<long>
{
    /// <summary>A sampler for rank <paramref name="rank"/> of <paramref name="num_replicas"/>.</summary>
    /// <exception cref="ArgumentException">A negative length, fewer than one replica, or a rank outside [0, num_replicas).</exception>
    public DistributedSampler(int dataset_length, int num_replicas, int rank, bool shuffle = true, long seed = 0, bool drop_last = false)
    {
        if (dataset_length < 0) throw new ArgumentOutOfRangeException(nameof(dataset_length), dataset_length, "dataset_length must not be negative");
        var check = DataParallel.shard([], num_replicas, rank, drop_last);
        if (check.IsError) throw new ArgumentException(check.ErrorValue, num_replicas < 1 ? nameof(num_replicas) : nameof(rank));
        this.dataset_length = dataset_length;
        this.num_replicas = num_replicas;
        this.rank = rank;
        this.shuffle = shuffle;
        this.seed = seed;
        this.drop_last = drop_last;
    }

    /// <summary>A sampler for this process's rank of <paramref name="group"/>.</summary>
    public DistributedSampler(int dataset_length, IProcessGroup group, bool shuffle = true, long seed = 0, bool drop_last = false)
        : this(dataset_length, group.world_size, group.rank, shuffle, seed, drop_last) { }

    /// <summary>The data set's length.</summary>
    public int dataset_length { get; }
    /// <summary>The number of ranks.</summary>
    public int num_replicas { get; }
    /// <summary>This sampler's rank.</summary>
    public int rank { get; }
    /// <summary>Whether each epoch's order is a random permutation.</summary>
    public bool shuffle { get; }
    /// <summary>The seed of the permutations (the same on every rank).</summary>
    public long seed { get; }
    /// <summary>Whether the tail that does not divide evenly is dropped (else the data set wraps around).</summary>
    public bool drop_last { get; }
    /// <summary>The current epoch (set by <see cref="set_epoch"/>).</summary>
    public int Epoch { get; private set; }

    /// <summary>Indices per rank per epoch.</summary>
    public int num_samples => DataParallel.samplesPerRank(dataset_length, num_replicas, drop_last);

    /// <summary>Sets the epoch, which (with <see cref="seed"/>) determines the order.</summary>
    public void set_epoch(int epoch) => Epoch = epoch;

    /// <summary>This rank's indices for the current epoch.</summary>
    public long[] indices()
    {
        long[] order;
        if (shuffle)
        {
            using var generator = new torch.Generator(unchecked((ulong)(seed + Epoch)), torch.CPU);
            using var perm = torch.randperm(dataset_length, torch.int64, torch.CPU, false, generator);
            order = perm.data<long>().ToArray();
        }
        else order = Enumerable.Range(0, dataset_length).Select(i => (long)i).ToArray();
        var shard = DataParallel.shard(order, num_replicas, rank, drop_last);
        return shard.ResultValue;
    }

    /// <inheritdoc />
    public IEnumerator<long> GetEnumerator() => ((IEnumerable<long>)indices()).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
