using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Implementation = Optim.Core.Optimizers.Implementation;

namespace Optim.Torch;

/// <summary>
/// PyTorch's <c>torch.optim.SGD</c> (momentum, dampening, weight decay, Nesterov, maximize) on
/// TorchSharp's <see cref="TorchSharp.Modules.SGD"/>: the same param groups, options, per-parameter
/// state (<c>momentum_buffer</c>) and state dict, with a faster <c>step</c>. By default each bucket of
/// parameters (same device, dtype and hyper-parameters, across groups) is updated by one call of
/// libtorch's <c>_fused_sgd_</c> kernel, bit-identical to the per-tensor rule.
/// </summary>
public sealed class SGD : TorchSharp.Modules.SGD, IAmpScalingOptimizer, IImplementationChoice
{
    private const int Width = 6;
    private readonly ParamBuckets<State> _buckets;

    /// <summary>One group over <paramref name="parameters"/>.</summary>
    /// <param name="parameters">The parameters to optimise.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="momentum">Momentum factor.</param>
    /// <param name="dampening">Dampening for momentum.</param>
    /// <param name="weight_decay">L2 penalty.</param>
    /// <param name="nesterov">Nesterov momentum (needs momentum &gt; 0 and no dampening).</param>
    /// <param name="maximize">Maximise the objective instead of minimising it.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c>: true for the multi-tensor path, false for the per-tensor loop.</param>
    /// <param name="fused">PyTorch's <c>fused</c>: true for libtorch's fused kernel (the default when neither switch is given).</param>
    /// <exception cref="ArgumentException">Bad values, or <c>fused</c> and <c>foreach</c> both true.</exception>
    public SGD(IEnumerable<Parameter> parameters, double lr, double momentum = 0, double dampening = 0, double weight_decay = 0,
        bool nesterov = false, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, momentum, dampening, weight_decay, nesterov, maximize)
    {
        _buckets = new ParamBuckets<State>(Width, Signature, h => _state[h]);
        (this.@foreach, this.fused, Implementation) = Choose(@foreach, fused);
    }

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <inheritdoc cref="SGD(IEnumerable{Parameter}, double, double, double, double, bool, bool, bool?, bool?)"/>
    public SGD(IEnumerable<ParamGroup> parameters, double lr, double momentum = 0, double dampening = 0, double weight_decay = 0,
        bool nesterov = false, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, momentum, dampening, weight_decay, nesterov, maximize)
    {
        _buckets = new ParamBuckets<State>(Width, Signature, h => _state[h]);
        (this.@foreach, this.fused, Implementation) = Choose(@foreach, fused);
    }

    private (bool?, bool?, Implementation) Choose(bool? fe, bool? fu)
    {
        var impl = Implementations.Resolve("SGD", fe, fu);
        if (fu == true) Implementations.CheckFusedParams("SGD", parameters());
        return (fe, fu, impl);
    }

    /// <inheritdoc />
    public bool? @foreach { get; }

    /// <inheritdoc />
    public bool? fused { get; }

    /// <inheritdoc />
    public Implementation Implementation { get; }

    /// <summary>How often the bucket partition was rebuilt (it is cached across steps).</summary>
    public int BucketRebuilds => _buckets?.Rebuilds ?? 0;

    private static void Signature(OptimizerOptions options, Span<double> s)
    {
        var o = (Options)options;
        s[0] = o.LearningRate!.Value;
        s[1] = o.momentum!.Value;
        s[2] = o.dampening!.Value;
        s[3] = o.weight_decay!.Value;
        s[4] = o.nesterov!.Value ? 1 : 0;
        s[5] = o.maximize!.Value ? 1 : 0;
    }

    /// <inheritdoc />
    public override void add_param_group(TorchSharp.Modules.ParamGroup param_group)
    {
        base.add_param_group(param_group);
        _buckets?.Invalidate();
        // PyTorch refuses non-floating parameters for fused=True; groups added after construction too.
        if (fused == true) Implementations.CheckFusedParams("SGD", param_group.Parameters);
    }

    /// <summary>One SGD step (PyTorch's <c>optimizer.step(closure)</c>).</summary>
    public override Tensor step(Func<Tensor>? closure = null) => Step(closure, FusedNative.Scaling.None)!;

    /// <inheritdoc />
    public Tensor? step(Tensor? grad_scale, Tensor? found_inf, Func<Tensor>? closure = null) => Step(closure, new(grad_scale, found_inf));

    private Tensor? Step(Func<Tensor>? closure, FusedNative.Scaling scaling) => StepSupport.Run(closure, () =>
    {
        if (StepSupport.Flagged(scaling.FoundInf)) return;
        if (Implementation == Implementation.ForLoop)
        {
            foreach (var g in _parameter_groups)
            {
                var o = (Options)g.Options;
                foreach (var p in g.Parameters)
                    if (p.grad is { } grad) One(p, grad, (State)_state[p.Handle], o, o.LearningRate!.Value, scaling);
            }
            return;
        }
        foreach (var b in _buckets.For(_parameter_groups)) StepBucket(b, scaling);
    });

    private static void One(Parameter p, Tensor grad, State st, Options o, double lr, FusedNative.Scaling scaling)
    {
        if (scaling.GradScale is not null) grad.div_(scaling.GradScale);
        var buf = st.momentum_buffer;
        PerTensor.Sgd(p, grad, ref buf, lr, o.momentum!.Value, o.dampening!.Value, o.weight_decay!.Value, o.nesterov!.Value, o.maximize!.Value);
        st.momentum_buffer = buf;
    }

    private void StepBucket(ParamBuckets<State>.Bucket b, FusedNative.Scaling scaling)
    {
        var o = (Options)_parameter_groups[b.Group].Options;
        if (Implementation != Implementation.Fused || !b.Fusable)
        {
            for (int j = 0; j < b.Params.Count; j++)
                if (b.Params[j].grad is { } grad) One(b.Params[j], grad, b.States[j], o, b.Lr, scaling);
            return;
        }
        scaling = StepSupport.OnDevice(scaling, b.Device);
        var momentum = o.momentum!.Value;
        var n = b.Params.Count;
        // Slots 0-2: parameters stepped before (buffers exist); 3-5: first steps (the kernel fills the buffers).
        IntPtr[] ps = b.ScratchArray(0, n), gs = b.ScratchArray(1, n), bs = b.ScratchArray(2, n);
        IntPtr[] ps1 = b.ScratchArray(3, n), gs1 = b.ScratchArray(4, n), bs1 = b.ScratchArray(5, n);
        int count = 0, first = 0;
        for (int j = 0; j < n; j++)
        {
            var p = b.Params[j];
            var grad = p.grad;
            if (grad is null) continue;
            var st = b.States[j];
            if (!StepSupport.FusableGrad(grad, b.Dtype, b.Device) || (momentum != 0 && st.momentum_buffer is { } existing && !b.StateFits(0, j, existing)))
            {
                One(p, grad, st, o, b.Lr, scaling);
                continue;
            }
            if (momentum != 0 && st.momentum_buffer is null)
            {
                st.momentum_buffer = torch.empty_like(grad).DetachFromDisposeScope();
                ps1[first] = FusedNative.Impl(p);
                gs1[first] = FusedNative.Impl(grad);
                bs1[first++] = FusedNative.Impl(st.momentum_buffer);
            }
            else
            {
                ps[count] = FusedNative.Impl(p);
                gs[count] = FusedNative.Impl(grad);
                if (momentum != 0) bs[count] = FusedNative.Impl(st.momentum_buffer!);
                count++;
            }
        }
        var (wd, damp, nesterov, maximize) = (o.weight_decay!.Value, o.dampening!.Value, o.nesterov!.Value, o.maximize!.Value);
        if (count > 0) FusedNative.Sgd(ps, gs, bs, count, wd, momentum, b.Lr, damp, nesterov, maximize, false, scaling);
        if (first > 0) FusedNative.Sgd(ps1, gs1, bs1, first, wd, momentum, b.Lr, damp, nesterov, maximize, true, scaling);
        GC.KeepAlive(b);
    }
}
