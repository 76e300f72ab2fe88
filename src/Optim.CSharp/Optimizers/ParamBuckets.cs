using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using ParamGroup = TorchSharp.Modules.ParamGroup;

namespace Optim.Torch;

/// <summary>
/// An optimizer's parameters partitioned for one kernel call per bucket: same device, same dtype and
/// identical hyper-parameters, across param groups (so MMEngine's one-group-per-parameter layout steps
/// like one big group). The partition is cached; each step re-reads every group's options (a few field
/// reads per group, no allocation) and rebuilds only when a group, its parameter list or a non-lr
/// option changed. Learning rates written by a scheduler only update the buckets' lr, unless two groups
/// of one bucket now differ.
/// </summary>
/// <typeparam name="TState">The optimizer's per-parameter state type.</typeparam>
internal sealed class ParamBuckets<TState> where TState : OptimizerState
{
    /// <summary>Writes a group's hyper-parameters into the span: lr first, then the others (bools as 0/1).</summary>
    internal delegate void Signature(OptimizerOptions options, Span<double> into);

    internal sealed class Bucket
    {
        internal Bucket(int group, Device device, ScalarType dtype, bool fusable)
        {
            Group = group;
            Device = device;
            Dtype = dtype;
            Fusable = fusable;
        }

        /// <summary>The first group whose parameters are here: the bucket's options are that group's.</summary>
        public int Group { get; }
        /// <summary>Every group merged into the bucket.</summary>
        public List<int> Groups { get; } = new();
        public Device Device { get; }
        public ScalarType Dtype { get; }
        /// <summary>Floating dtype, contiguous parameters: the fused kernels can take them.</summary>
        public bool Fusable { get; }
        public List<Parameter> Params { get; } = new();
        public List<TState> States { get; } = new();
        /// <summary>The learning rate every group of the bucket has now.</summary>
        public double Lr { get; set; }
        /// <summary>Scratch arrays reused by the fused calls (impl pointers).</summary>
        internal IntPtr[][] Scratch = Array.Empty<IntPtr[]>();

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

        internal IntPtr[] ScratchArray(int slot, int length)
        {
            if (Scratch.Length <= slot) Array.Resize(ref Scratch, slot + 1);
            var a = Scratch[slot];
            if (a is null || a.Length < length) Scratch[slot] = a = new IntPtr[length];
            return a;
        }
    }

    private readonly int _width;
    private readonly Signature _signature;
    private readonly Func<IntPtr, OptimizerState> _stateOf;
    private List<Bucket> _buckets = new();
    private ParamGroup[] _groups = Array.Empty<ParamGroup>();
    private object?[] _paramLists = Array.Empty<object?>();
    private double[][] _signatures = Array.Empty<double[]>();
    private readonly double[] _scratch;
    private int[] _bucketOfGroup = Array.Empty<int>();

    /// <summary>How many times the partition was built (for tests and benchmarks).</summary>
    public int Rebuilds { get; private set; }

    internal ParamBuckets(int width, Signature signature, Func<IntPtr, OptimizerState> stateOf)
    {
        _width = width;
        _signature = signature;
        _stateOf = stateOf;
        _scratch = new double[width];
    }

    /// <summary>Drops the cached partition (after load_state_dict replaced states, or add_param_group).</summary>
    public void Invalidate() => _groups = Array.Empty<ParamGroup>();

    /// <summary>The buckets for the groups as they are now.</summary>
    public IReadOnlyList<Bucket> For(IList<ParamGroup> groups)
    {
        if (!Current(groups)) Rebuild(groups);
        return _buckets;
    }

    private bool Current(IList<ParamGroup> groups)
    {
        if (groups.Count != _groups.Length) return false;
        var lrChanged = false;
        Span<double> now = _scratch;
        for (int i = 0; i < groups.Count; i++)
        {
            var g = groups[i];
            if (!ReferenceEquals(g, _groups[i]) || !ReferenceEquals(g.Parameters, _paramLists[i])) return false;
            _signature(g.Options, now);
            var cached = _signatures[i];
            for (int k = 1; k < _width; k++)
                if (!now[k].Equals(cached[k])) return false;
            if (!now[0].Equals(cached[0])) { cached[0] = now[0]; lrChanged = true; }
        }
        if (!lrChanged) return true;
        // A scheduler moved learning rates: each bucket stays valid while its groups still agree.
        foreach (var b in _buckets)
        {
            var lr = _signatures[b.Group][0];
            foreach (var gi in b.Groups)
                if (!_signatures[gi][0].Equals(lr)) return false;
            b.Lr = lr;
        }
        return true;
    }

    private void Rebuild(IList<ParamGroup> groups)
    {
        Rebuilds++;
        var n = groups.Count;
        _groups = new ParamGroup[n];
        _paramLists = new object?[n];
        _signatures = new double[n][];
        _bucketOfGroup = new int[n];
        var buckets = new List<Bucket>();
        var index = new Dictionary<(DeviceType, int, ScalarType, bool, SignatureKey), Bucket>();
        for (int i = 0; i < n; i++)
        {
            var g = groups[i];
            _groups[i] = g;
            _paramLists[i] = g.Parameters;
            var sig = new double[_width];
            _signature(g.Options, sig);
            _signatures[i] = sig;
            var key = new SignatureKey(sig);
            foreach (var p in g.Parameters)
            {
                var dtype = p.dtype;
                var fusable = FusedNative.SupportsDtype(dtype) && p.is_contiguous() && !p.is_sparse;
                var k = (p.device_type, p.device_index, dtype, fusable, key);
                if (!index.TryGetValue(k, out var bucket))
                {
                    index[k] = bucket = new Bucket(i, p.device, dtype, fusable) { Lr = sig[0] };
                    buckets.Add(bucket);
                }
                if (bucket.Groups.Count == 0 || bucket.Groups[^1] != i) bucket.Groups.Add(i);
                bucket.Params.Add(p);
                bucket.States.Add((TState)_stateOf(p.Handle));
            }
        }
        _buckets = buckets;
    }

    /// <summary>Value equality over a signature (doubles compared with Equals, so NaN equals NaN).</summary>
    private readonly struct SignatureKey : IEquatable<SignatureKey>
    {
        private readonly double[] _values;
        public SignatureKey(double[] values) => _values = values;
        public bool Equals(SignatureKey other) => _values.AsSpan().SequenceEqual(other._values);
        public override bool Equals(object? obj) => obj is SignatureKey k && Equals(k);
        public override int GetHashCode()
        {
            var h = new HashCode();
            foreach (var v in _values) h.Add(v);
            return h.ToHashCode();
        }
    }
}

/// <summary>Shared pieces of Optim's optimizers' <c>step</c>.</summary>
internal static class StepSupport
{
    /// <summary>PyTorch's step frame: the closure (with grad) first, then the update without grad, temporaries disposed.</summary>
    internal static Tensor? Run(Func<Tensor>? closure, Action update)
    {
        Tensor? loss = null;
        if (closure is not null)
            using (torch.enable_grad())
                loss = closure();
        using (torch.no_grad())
        using (torch.NewDisposeScope())
            update();
        return loss;
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
