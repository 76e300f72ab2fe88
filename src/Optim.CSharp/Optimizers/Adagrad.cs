using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Implementation = Optim.Core.Optimizers.Implementation;

namespace Optim.Torch;

/// <summary>
/// PyTorch's <c>torch.optim.Adagrad</c> (lr decay, weight decay, initial accumulator) on TorchSharp's
/// <see cref="TorchSharp.Modules.Adagrad"/>, with its groups, options, per-parameter state
/// (<c>step</c>, <c>sum</c>) and state dict. By default each bucket is one call of libtorch's
/// <c>_fused_adagrad_</c>.
/// </summary>
public sealed class Adagrad : TorchSharp.Modules.Adagrad, IAmpScalingOptimizer, IImplementationChoice
{
    private const int Width = 5;
    private readonly ParamBuckets<State> _buckets;

    /// <summary>One group over <paramref name="parameters"/>.</summary>
    /// <param name="parameters">The parameters to optimise.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="lr_decay">Learning-rate decay: step k uses lr / (1 + (k − 1)·lr_decay).</param>
    /// <param name="weight_decay">L2 penalty.</param>
    /// <param name="initial_accumulator_value">Start value of the squared-gradient sum.</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c>: true for the multi-tensor path, false for the per-tensor loop.</param>
    /// <param name="fused">PyTorch's <c>fused</c>: true for libtorch's fused kernel (the default when neither switch is given).</param>
    public Adagrad(IEnumerable<Parameter> parameters, double lr = 1e-2, double lr_decay = 0, double weight_decay = 0,
        double initial_accumulator_value = 0, double eps = 1e-10, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, lr_decay, weight_decay, initial_accumulator_value, eps)
    {
        _buckets = new ParamBuckets<State>(Width, Signature, h => _state[h]);
        Implementation = Implementations.Resolve("Adagrad", @foreach, fused);
        if (fused == true) Implementations.CheckFusedParams("Adagrad", parameters);
        (this.@foreach, this.fused) = (@foreach, fused);
    }

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <inheritdoc cref="Adagrad(IEnumerable{Parameter}, double, double, double, double, double, bool?, bool?)"/>
    public Adagrad(IEnumerable<ParamGroup> parameters, double lr = 1e-2, double lr_decay = 0, double weight_decay = 0,
        double initial_accumulator_value = 0, double eps = 1e-10, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, lr_decay, weight_decay, initial_accumulator_value, eps)
    {
        _buckets = new ParamBuckets<State>(Width, Signature, h => _state[h]);
        Implementation = Implementations.Resolve("Adagrad", @foreach, fused);
        if (fused == true) Implementations.CheckFusedParams("Adagrad", base.parameters());
        (this.@foreach, this.fused) = (@foreach, fused);
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
        s[1] = o.lr_decay!.Value;
        s[2] = o.weight_decay!.Value;
        s[3] = o.eps!.Value;
        s[4] = o.initial_accumulator_value!.Value;
    }

    /// <inheritdoc />
    public override void add_param_group(TorchSharp.Modules.ParamGroup param_group)
    {
        base.add_param_group(param_group);
        _buckets?.Invalidate();
        // PyTorch refuses non-floating parameters for fused=True; groups added after construction too.
        if (fused == true) Implementations.CheckFusedParams("Adagrad", param_group.Parameters);
    }

    /// <summary>One Adagrad step (PyTorch's <c>optimizer.step(closure)</c>).</summary>
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
        if (grad.is_sparse) throw new NotImplementedException("Adagrad over sparse gradients");
        st.step += 1;
        PerTensor.Adagrad(p, grad, st.sum, st.step, lr, o.lr_decay!.Value, o.weight_decay!.Value, o.eps!.Value, maximize: false);
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
        var n = b.Params.Count;
        IntPtr[] ps = b.ScratchArray(0, n), gs = b.ScratchArray(1, n), sums = b.ScratchArray(2, n), steps = b.ScratchArray(3, n);
        var batch = new StepBatches(n);
        for (int j = 0; j < n; j++)
        {
            var p = b.Params[j];
            var grad = p.grad;
            if (grad is null) continue;
            var st = b.States[j];
            if (!StepSupport.FusableGrad(grad, b.Dtype, b.Device) || !b.StateFits(0, j, st.sum))
            {
                One(p, grad, st, o, b.Lr, scaling);
                continue;
            }
            batch.Add(j, grad, st.step + 1);
        }
        batch.Run((members, grads, step) =>
        {
            using var stepTensor = torch.tensor((float)step, ScalarType.Float32, b.Device);
            var stepImpl = FusedNative.Impl(stepTensor);
            for (int k = 0; k < members.Count; k++)
            {
                ps[k] = FusedNative.Impl(b.Params[members[k]]);
                gs[k] = FusedNative.Impl(grads[k]);
                sums[k] = FusedNative.Impl(b.States[members[k]].sum);
                steps[k] = stepImpl;
            }
            FusedNative.Adagrad(ps, gs, sums, steps, members.Count, b.Lr, o.lr_decay!.Value, o.weight_decay!.Value, o.eps!.Value, false, scaling);
            foreach (var m in members) b.States[m].step = step;
        });
    }
}
