using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using ParamGroup = TorchSharp.Modules.ParamGroup;

namespace Optim.Torch;

/// <summary>
/// An optimizer's parameters partitioned for one kernel call per bucket: same device, same dtype and
/// identical hyper-parameters, across param groups (so MMEngine's one-group-per-parameter layout steps
/// like one big group). The partition is cached; each step compares every group with its snapshot (the
/// same group and parameter list objects, the same hyper-parameters: a few field reads per group, no
/// allocation) and rebuilds only when a group, its parameter list or a non-lr option changed. Learning
/// rates written by a scheduler only update the buckets' lr, unless two groups of one bucket now differ.
/// </summary>
/// <typeparam name="TState">The optimizer's per-parameter state type.</typeparam>
/// <typeparam name="THyper">A group's hyper-parameters other than lr (compared with <see cref="IEquatable{T}"/>: NaN equals NaN).</typeparam>
internal sealed class ParamBuckets<TState, THyper> where TState : OptimizerState where THyper : struct, IEquatable<THyper>
{
    internal sealed class Bucket
    {
        internal Bucket(int group, Device device, ScalarType dtype, bool fusable, THyper hyper, double lr, int lists)
        {
            Group = group;
            Device = device;
            Dtype = dtype;
            Fusable = fusable;
            Hyper = hyper;
            Lr = lr;
            _lists = lists;
        }

        /// <summary>The first group whose parameters are here.</summary>
        public int Group { get; }
        /// <summary>Every group merged into the bucket.</summary>
        public List<int> Groups { get; } = new();
        public Device Device { get; }
        public ScalarType Dtype { get; }
        /// <summary>Floating dtype, contiguous parameters: the fused kernels can take them.</summary>
        public bool Fusable { get; }
        public List<Parameter> Params { get; } = new();
        public List<TState> States { get; } = new();
        /// <summary>The hyper-parameters every group of the bucket has (a field: passed by reference).</summary>
        public readonly THyper Hyper;
        /// <summary>The learning rate every group of the bucket has now.</summary>
        public double Lr { get; set; }

        private readonly int _lists;
        private IntPtr[][]? _impls, _rows;
        private long[]? _batches;
        private bool[]? _done;

        /// <summary>Per kernel argument list, the impl pointers of the gathered parameters (reused across steps).</summary>
        internal IntPtr[][] Lists => _impls ??= NewLists();
        /// <summary>A second set of lists, for the calls of a bucket whose parameters' step counts differ.</summary>
        internal IntPtr[][] Rows => _rows ??= NewLists();
        /// <summary>Scratch reused across steps: the gathered parameters' batches and a done mark.</summary>
        internal long[] Batches => _batches ??= new long[Params.Count];
        internal bool[] Done => _done ??= new bool[Params.Count];

        private IntPtr[][] NewLists() => Enumerable.Range(0, _lists).Select(_ => new IntPtr[Params.Count]).ToArray();

        /// <summary>Per state slot, the state tensor objects already checked to fit the kernel (same dtype, device, contiguous).</summary>
        private Tensor?[][] _fitted = Array.Empty<Tensor?[]>();

        /// <summary>
        /// Whether state tensor <paramref name="t"/> of parameter <paramref name="j"/> (slot <paramref name="slot"/>)
        /// can go into a fused call: checked once per tensor object (TorchSharp state tensors are replaced, not
        /// mutated, when a state dict is loaded), so a steady-state step does no native calls for it.
        /// </summary>
        internal bool StateFits(int slot, int j, Tensor t)
        {
            if (_fitted.Length <= slot) Array.Resize(ref _fitted, slot + 1);
            var cache = _fitted[slot] ??= new Tensor?[Params.Count];
            if (ReferenceEquals(cache[j], t) && !t.IsInvalid) return true;
            var fits = StepSupport.FusableGrad(t, Dtype, Device);
            cache[j] = fits ? t : null;
            return fits;
        }
    }

    private readonly int _lists;
    private readonly Func<IntPtr, OptimizerState> _stateOf;
    private List<Bucket> _buckets = new();
    // The snapshot the partition was built from, per group: the group and parameter list objects, the
    // hyper-parameters and the lr last seen.
    private ParamGroup[] _groups = Array.Empty<ParamGroup>();
    private object?[] _paramLists = Array.Empty<object?>();
    private THyper[] _hyper = Array.Empty<THyper>();
    private double[] _lr = Array.Empty<double>();
    // Buckets that differ only in lr, per family of two or more (device, dtype, layout, hyper-parameters),
    // and a set reused to find two of them at the same lr.
    private List<List<Bucket>> _lrSiblings = new();
    private readonly HashSet<double> _seenLr = new();

    /// <summary>How many times the partition was built (for tests and benchmarks).</summary>
    public int Rebuilds { get; private set; }

    /// <summary>How many buckets the partition has.</summary>
    public int Count => _buckets.Count;

    /// <param name="lists">Argument lists per kernel call (parameters, gradients, state slots, step tensors).</param>
    /// <param name="stateOf">The optimizer's per-parameter state of a parameter handle.</param>
    internal ParamBuckets(int lists, Func<IntPtr, OptimizerState> stateOf)
    {
        _lists = lists;
        _stateOf = stateOf;
    }

    /// <summary>Drops the cached partition (after add_param_group).</summary>
    public void Invalidate() => _groups = Array.Empty<ParamGroup>();

    /// <summary>The buckets for the groups as they are now (<paramref name="rule"/> reads their hyper-parameters).</summary>
    public List<Bucket> For<TRule>(IList<ParamGroup> groups, in TRule rule) where TRule : struct, IRule<TState, THyper>
    {
        if (!Current(groups, rule)) Rebuild(groups, rule);
        return _buckets;
    }

    private bool Current<TRule>(IList<ParamGroup> groups, in TRule rule) where TRule : struct, IRule<TState, THyper>
    {
        var n = groups.Count;
        if (n != _groups.Length) return false;
        var lrChanged = false;
        for (int i = 0; i < n; i++)
        {
            var g = groups[i];
            if (!ReferenceEquals(g, _groups[i]) || !ReferenceEquals(g.Parameters, _paramLists[i])) return false;
            var o = g.Options;
            if (!rule.Read(o).Equals(_hyper[i])) return false;
            var lr = o.LearningRate!.Value;
            if (!lr.Equals(_lr[i])) { _lr[i] = lr; lrChanged = true; }
        }
        if (!lrChanged) return true;
        // A scheduler moved learning rates: each bucket stays valid while its groups still agree, and
        // while no two buckets that differ only in lr now have the same lr (they would be one bucket).
        foreach (var b in _buckets)
        {
            var lr = _lr[b.Group];
            foreach (var gi in b.Groups)
                if (!_lr[gi].Equals(lr)) return false;
            b.Lr = lr;
        }
        foreach (var family in _lrSiblings)
        {
            _seenLr.Clear();
            foreach (var b in family)
                if (!_seenLr.Add(b.Lr)) return false;
        }
        return true;
    }

    private void Rebuild<TRule>(IList<ParamGroup> groups, in TRule rule) where TRule : struct, IRule<TState, THyper>
    {
        Rebuilds++;
        var n = groups.Count;
        _groups = new ParamGroup[n];
        _paramLists = new object?[n];
        _hyper = new THyper[n];
        _lr = new double[n];
        var buckets = new List<Bucket>();
        var index = new Dictionary<(DeviceType, int, ScalarType, bool, THyper, double), Bucket>();
        for (int i = 0; i < n; i++)
        {
            var g = groups[i];
            _groups[i] = g;
            _paramLists[i] = g.Parameters;
            var hyper = _hyper[i] = rule.Read(g.Options);
            var lr = _lr[i] = g.Options.LearningRate!.Value;
            foreach (var p in g.Parameters)
            {
                var dtype = p.dtype;
                var fusable = FusedNative.SupportsDtype(dtype) && p.is_contiguous() && !p.is_sparse;
                var k = (p.device_type, p.device_index, dtype, fusable, hyper, lr);
                if (!index.TryGetValue(k, out var bucket))
                {
                    index[k] = bucket = new Bucket(i, p.device, dtype, fusable, hyper, lr, _lists);
                    buckets.Add(bucket);
                }
                if (bucket.Groups.Count == 0 || bucket.Groups[^1] != i) bucket.Groups.Add(i);
                bucket.Params.Add(p);
                bucket.States.Add((TState)_stateOf(p.Handle));
            }
        }
        _buckets = buckets;
        _lrSiblings = buckets.GroupBy(b => (b.Device.type, b.Device.index, b.Dtype, b.Fusable, b.Hyper))
            .Select(f => f.ToList()).Where(f => f.Count > 1).ToList();
    }
}

/// <summary>Shared pieces of Optim's optimizers' <c>step</c>.</summary>
internal static class StepSupport
{
    /// <summary>The closure of PyTorch's <c>step(closure)</c>, evaluated with grad enabled (the update then runs without).</summary>
    internal static Tensor? Closure(Func<Tensor>? closure)
    {
        if (closure is null) return null;
        using (torch.enable_grad())
            return closure();
    }

    /// <summary>Reads a one-element found-inf flag (a device synchronisation): true when it is non-zero.</summary>
    internal static bool Flagged(Tensor? foundInf) => foundInf is not null && foundInf.to_type(ScalarType.Float32).item<float>() != 0f;

    /// <summary>
    /// The scaling tensors the fused kernels read, checked (one-element float32) and on <paramref name="device"/>
    /// (moved there when the scale lives on another device, as PyTorch's fused optimizers do per device).
    /// </summary>
    internal static FusedNative.Scaling OnDevice(FusedNative.Scaling scaling, Device device)
    {
        return scaling.IsNone ? scaling : new(Move(scaling.GradScale, "grad_scale", device), Move(scaling.FoundInf, "found_inf", device));
        static Tensor? Move(Tensor? t, string name, Device device)
        {
            if (t is null) return null;
            if (t.numel() != 1 || t.dtype != ScalarType.Float32)
                throw new ArgumentException($"{name} must be a one-element float32 tensor", name);
            return t.device_type == device.type && t.device_index == device.index ? t : t.to(device);
        }
    }

    /// <summary>Whether a gradient can go into a fused call with its parameter's bucket.</summary>
    internal static bool FusableGrad(Tensor grad, ScalarType dtype, Device device) =>
        grad.dtype == dtype && grad.device_type == device.type && grad.device_index == device.index
        && !grad.is_sparse && grad.is_contiguous();
}
