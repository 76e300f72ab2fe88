using Microsoft.FSharp.Collections;
using Optim.Core;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Distributed;

/// <summary>
/// PyTorch's <c>DistributedDataParallel</c> for TorchSharp: wraps a module so that N processes
/// (ranks), each training on its own shard of every batch, keep identical parameters. At
/// construction the ranks check that they built the same model and take rank 0's parameters and
/// buffers; after each backward the gradients are averaged over the ranks by all-reduce, in buckets
/// (one flat tensor per device and dtype, at most <c>bucket_cap_mb</c> each).
/// </summary>
/// <remarks>
/// <para>When the gradients are synchronised: TorchSharp has no autograd hooks for a reducer, so
/// synchronisation is an explicit step after backward. With <see cref="OptimWrapper"/> it is
/// automatic: run the forward pass inside <c>optim_wrapper.optim_context(ddp)</c> and back-propagate
/// with <c>update_params</c> (or <c>backward</c>); on accumulation iterations the wrapper enters
/// <see cref="no_sync"/>, so the gradients are all-reduced once per update, and clipping and the
/// reported gradient norm see the averaged gradients on every rank. In a hand-written loop call
/// <see cref="finish_backward"/> after <c>loss.backward()</c>. A training-mode forward pass that
/// finds the previous one's gradients never synchronised throws, so a forgotten call cannot
/// silently let the ranks drift apart.</para>
/// <para>A parameter that requires grad but got no gradient on a rank contributes zeros, and
/// receives the averaged gradient (PyTorch's <c>find_unused_parameters</c> behaviour for a
/// parameter unused on some ranks).</para>
/// <para><see cref="module"/> is the wrapped model: give it (or this wrapper:
/// <c>build_optim_wrapper</c> unwraps <see cref="IModelWrapper"/>) to optimizer constructors, so
/// parameter names carry no <c>module.</c> prefix and paramwise rules match.</para>
/// <para>Devices: buckets live on the parameters' device; the MPI process group stages non-CPU
/// tensors through host memory.</para>
/// </remarks>
/// <example>
/// <code>
/// using var group = MpiProcessGroup.Init();                      // run under: mpirun -np 2 dotnet app.dll
/// var ddp = new DistributedDataParallel(model, group);
/// var wrapper = new OptimWrapper(torch.optim.SGD(ddp.module.parameters(), 0.1), accumulative_counts: 2);
/// foreach (var (x, y) in myShardOfTheBatches) {
///     Tensor loss;
///     using (wrapper.optim_context(ddp)) loss = lossFn(ddp.forward(x), y);
///     wrapper.update_params(loss);                                // all-reduce on update iterations only
/// }
/// </code>
/// </example>
public class DistributedDataParallel<TInput, TResult> : nn.Module<TInput, TResult>, INoSyncModule, IModelWrapper, IDistributedModule
{
    private sealed record Bucket(Tensor Flat, (Parameter Param, long Offset, long Numel)[] Members, string[] Names);

    private readonly nn.Module<TInput, TResult> _module;
    private readonly Tensor[] _buffers;
    private readonly Bucket[] _buckets;
    private bool _requireSync = true;
    private bool _pending;

    /// <summary>Wraps <paramref name="module"/>; every rank must call this with the same model.</summary>
    /// <param name="module">Any TorchSharp module, on any device.</param>
    /// <param name="process_group">The ranks (e.g. <see cref="MpiProcessGroup.Init"/>).</param>
    /// <param name="bucket_cap_mb">The largest all-reduce bucket, in MiB (PyTorch's default 25).</param>
    /// <param name="broadcast_buffers">Copy rank 0's buffers (BatchNorm statistics, ...) to every rank
    /// at the start of each training-mode forward pass, as PyTorch does by default.</param>
    /// <exception cref="DistributedException">The ranks' modules differ (count, shape or dtype of a
    /// parameter or buffer): raised on every rank, naming the first tensor that differs and each
    /// rank's view of it.</exception>
    /// <exception cref="ArgumentException"><paramref name="bucket_cap_mb"/> is not positive.</exception>
    public DistributedDataParallel(nn.Module<TInput, TResult> module, IProcessGroup process_group,
        double bucket_cap_mb = 25.0, bool broadcast_buffers = true)
        : base(nameof(DistributedDataParallel))
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(process_group);
        var capResult = DataParallel.capBytes(bucket_cap_mb);
        if (capResult.IsError) throw new ArgumentException(capResult.ErrorValue, nameof(bucket_cap_mb));
        _module = module;
        this.process_group = process_group;
        this.broadcast_buffers = broadcast_buffers;
        this.bucket_cap_mb = bucket_cap_mb;
        register_module("module", module);

        var parameters = ModuleFacts.NamedParameters(module);
        var seenBuffers = new HashSet<IntPtr>();
        var buffers = module.named_buffers().Where(b => seenBuffers.Add(b.buffer.Handle)).ToList();
        _buffers = buffers.Select(b => b.buffer).ToArray();
        CheckSameModelOnEveryRank(parameters, buffers);

        using (torch.no_grad())
        {
            foreach (var (_, p) in parameters) process_group.broadcast_(p, 0);
            foreach (var b in _buffers) process_group.broadcast_(b, 0);
        }
        _buckets = PlanBuckets(parameters.Where(np => np.Param.requires_grad).ToList(), capResult.ResultValue);
    }

    /// <summary>The wrapped model (PyTorch's <c>ddp.module</c>).</summary>
    public nn.Module<TInput, TResult> module => _module;

    nn.Module IModelWrapper.module => _module;

    /// <summary>The ranks the gradients are averaged over.</summary>
    public IProcessGroup process_group { get; }

    /// <summary>Whether rank 0's buffers are copied to every rank before each training-mode forward.</summary>
    public bool broadcast_buffers { get; }

    /// <summary>The largest bucket, in MiB.</summary>
    public double bucket_cap_mb { get; }

    /// <summary>The gradient buckets, each as its parameters' names, in all-reduce order.</summary>
    public IReadOnlyList<IReadOnlyList<string>> Buckets => _buckets.Select(b => (IReadOnlyList<string>)b.Names).ToList();

    /// <summary>How many times the gradients were synchronised (once per update with accumulation).</summary>
    public int SyncCount { get; private set; }

    /// <summary>How many bucket all-reduces were issued (<see cref="SyncCount"/> × the bucket count; none with one rank).</summary>
    public int AllReduceCount { get; private set; }

    /// <summary>Whether the next backward pass will synchronise (false inside <see cref="no_sync"/>).</summary>
    public bool require_backward_grad_sync => _requireSync;

    /// <summary>
    /// Runs the wrapped module. In training mode with autograd on: copies rank 0's buffers first
    /// (when <see cref="broadcast_buffers"/>), and marks the coming backward for synchronisation
    /// unless inside <see cref="no_sync"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The previous training forward's gradients were never synchronised.</exception>
    public override TResult forward(TInput input)
    {
        var tracking = training && torch.is_grad_enabled();
        if (tracking && _pending)
            throw new InvalidOperationException(
                "DistributedDataParallel: the gradients of the previous forward/backward were never averaged across ranks. " +
                "Run the forward inside optim_wrapper.optim_context(ddp) and back-propagate with optim_wrapper.update_params (or backward), " +
                "or call ddp.finish_backward() after loss.backward().");
        if (training && broadcast_buffers && _buffers.Length > 0 && process_group.world_size > 1)
            using (torch.no_grad())
                foreach (var b in _buffers) process_group.broadcast_(b, 0);
        var output = _module.call(input);
        if (tracking) _pending = _requireSync;
        return output;
    }

    /// <summary>A scope in which backward passes accumulate gradients locally, without all-reduce.</summary>
    public IDisposable no_sync()
    {
        var previous = _requireSync;
        _requireSync = false;
        return new Restore(() => _requireSync = previous);
    }

    /// <summary>
    /// Call after the backward pass of a training forward (OptimWrapper does): averages the
    /// gradients over the ranks unless that forward ran inside <see cref="no_sync"/>. Every rank
    /// must call it the same number of times.
    /// </summary>
    public void finish_backward()
    {
        if (!_pending) return;
        _pending = false;
        SynchronizeGradients();
    }

    /// <inheritdoc />
    public bool any_rank(bool flag)
    {
        if (process_group.world_size == 1) return flag;
        using var t = torch.tensor(flag ? 1L : 0L);
        process_group.all_reduce_(t, ReduceOp.MAX);
        return t.item<long>() != 0;
    }

    /// <summary>
    /// Averages every gradient over the ranks now: per bucket, copies the gradients into the flat
    /// tensor, all-reduces (sum), divides by the rank count and copies back. With one rank it only
    /// counts the synchronisation.
    /// </summary>
    public void SynchronizeGradients()
    {
        var world = process_group.world_size;
        // One rank: the gradients are already the average (and no copies are worth making).
        if (world == 1) { SyncCount++; return; }
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        foreach (var bucket in _buckets)
        {
            var flat = bucket.Flat;
            foreach (var (p, offset, numel) in bucket.Members)
            {
                var slice = flat.narrow(0, offset, numel);
                var g = p.grad;
                if (g is null) slice.zero_();
                else slice.copy_(g.reshape(-1));
            }
            process_group.all_reduce_(flat, ReduceOp.SUM);
            using (var worldSize = world.ToScalar()) flat.div_(worldSize);
            AllReduceCount++;
            foreach (var (p, offset, numel) in bucket.Members)
            {
                var averaged = flat.narrow(0, offset, numel).view(p.shape);
                var g = p.grad;
                if (g is null) p.grad = averaged.clone().DetachFromDisposeScope();
                else g.copy_(averaged);
            }
        }
        SyncCount++;
    }

    private void CheckSameModelOnEveryRank(List<(string Name, Parameter Param)> parameters, List<(string name, Tensor buffer)> buffers)
    {
        var counts = process_group.all_gather([parameters.Count, buffers.Count]);
        var tensors = parameters.Select(p => (p.Name, (Tensor)p.Param)).Concat(buffers.Select(b => (b.name, b.buffer))).ToList();
        var rankCounts = Enumerable.Range(0, process_group.world_size).Select(r => ((int)counts[2 * r], (int)counts[2 * r + 1])).ToArray();
        long[][] layouts;
        if (rankCounts.Distinct().Count() == 1)
        {
            var mine = tensors.SelectMany(t => DataParallel.encodeLayout((long)t.Item2.dtype, t.Item2.shape)).ToArray();
            var all = process_group.all_gather(mine);
            layouts = Enumerable.Range(0, process_group.world_size).Select(r => all.AsSpan(r * mine.Length, mine.Length).ToArray()).ToArray();
        }
        else layouts = [];
        var check = DataParallel.checkSameLayout(
            Microsoft.FSharp.Core.FuncConvert.FromFunc<long, string>(code => ((ScalarType)code).ToString().ToLowerInvariant()),
            tensors.Select(t => t.Item1).ToArray(), rankCounts.Select(c => Tuple.Create(c.Item1, c.Item2)).ToArray(), layouts);
        if (check.IsError) throw new DistributedException($"rank {process_group.rank}: {check.ErrorValue}");
    }

    private static Bucket[] PlanBuckets(List<(string Name, Parameter Param)> trainable, long capBytes)
    {
        var slots = trainable.Select((np, i) => new DataParallel.GradSlot(i, np.Param.numel(), (int)np.Param.element_size(),
            np.Param.device.ToString(), np.Param.dtype.ToString()));
        var plan = DataParallel.planBuckets(capBytes, ListModule.OfSeq(slots));
        return plan.Select(indices =>
        {
            var members = indices.Select(i => trainable[i]).ToArray();
            var first = members[0].Param;
            long offset = 0;
            var layout = members.Select(m => { var entry = (m.Param, offset, m.Param.numel()); offset += m.Param.numel(); return entry; }).ToArray();
            var flat = torch.zeros(offset, first.dtype, first.device).DetachFromDisposeScope();
            return new Bucket(flat, layout, members.Select(m => m.Name).ToArray());
        }).ToArray();
    }

    /// <summary>Frees the buckets' flat tensors (the wrapped module is disposed too, as a child).</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing) foreach (var b in _buckets ?? []) b.Flat.Dispose();
        base.Dispose(disposing);
    }

    private sealed class Restore(Action restore) : IDisposable
    {
        private Action? pending = restore;
        public void Dispose() { pending?.Invoke(); pending = null; }
    }
}

/// <summary>
/// <see cref="DistributedDataParallel{TInput, TResult}"/> for the common tensor-to-tensor module.
/// </summary>
public class DistributedDataParallel : DistributedDataParallel<Tensor, Tensor>
{
    /// <inheritdoc cref="DistributedDataParallel{TInput, TResult}(nn.Module{TInput, TResult}, IProcessGroup, double, bool)"/>
    public DistributedDataParallel(nn.Module<Tensor, Tensor> module, IProcessGroup process_group,
        double bucket_cap_mb = 25.0, bool broadcast_buffers = true)
        : base(module, process_group, bucket_cap_mb, broadcast_buffers) { }
}
