using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Torch;

/// <summary>
/// PyTorch's <c>torch.optim.Adagrad</c> (lr decay, weight decay, initial accumulator) on TorchSharp's
/// <see cref="TorchSharp.Modules.Adagrad"/>, with its groups, options, per-parameter state
/// (<c>step</c>, <c>sum</c>) and state dict. By default each bucket is one call of libtorch's
/// <c>_fused_adagrad_</c>.
/// </summary>
public sealed class Adagrad : TorchSharp.Modules.Adagrad, IAmpScalingOptimizer, IImplementationChoice, IStepped
{
    private readonly BucketStepper<State, AdagradHyper, AdagradRule> _steps;

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
        : base(parameters, lr, lr_decay, weight_decay, initial_accumulator_value, eps) => _steps = new("Adagrad", default, ImplementationChoice.For("Adagrad", @foreach, fused, parameters), _parameter_groups, h => _state[h]);

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <inheritdoc cref="Adagrad(IEnumerable{Parameter}, double, double, double, double, double, bool?, bool?)"/>
    public Adagrad(IEnumerable<ParamGroup> parameters, double lr = 1e-2, double lr_decay = 0, double weight_decay = 0,
        double initial_accumulator_value = 0, double eps = 1e-10, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, lr_decay, weight_decay, initial_accumulator_value, eps) => _steps = new("Adagrad", default, ImplementationChoice.For("Adagrad", @foreach, fused, base.parameters()), _parameter_groups, h => _state[h]);

    /// <summary>One step (PyTorch's <c>optimizer.step(closure)</c>).</summary>
    public override Tensor step(Func<Tensor>? closure = null) => _steps.Step(closure, FusedNative.Scaling.None)!;

    IStepper IStepped.Steps => _steps;

    /// <inheritdoc />
    public override void add_param_group(TorchSharp.Modules.ParamGroup param_group)
    {
        base.add_param_group(param_group);
        _steps?.Added(param_group);
    }
}

/// <summary>Adagrad's hyper-parameters of a group that its step reads, other than lr.</summary>
internal readonly record struct AdagradHyper(double LrDecay, double WeightDecay, double Eps);

/// <summary>Adagrad's rule: state <c>step</c> and <c>sum</c>; per bucket one <c>_fused_adagrad_</c> call per step count.</summary>
internal readonly struct AdagradRule : IFusedRule<TorchSharp.Modules.Adagrad.State, AdagradHyper>
{
    public AdagradHyper Read(OptimizerOptions options)
    {
        var o = (TorchSharp.Modules.Adagrad.Options)options;
        return new(o.lr_decay!.Value, o.weight_decay!.Value, o.eps!.Value);
    }

    public void One(Parameter p, Tensor grad, TorchSharp.Modules.Adagrad.State st, in AdagradHyper h, double lr)
    {
        if (grad.is_sparse) throw new NotImplementedException("Adagrad over sparse gradients");
        st.step += 1;
        PerTensor.Adagrad(p, grad, st.sum, st.step, lr, h.LrDecay, h.WeightDecay, h.Eps, maximize: false);
    }

    public int Slots => 1;

    public bool StepTensors => true;

    public long Batch(TorchSharp.Modules.Adagrad.State st, in AdagradHyper h) => st.step + 1;

    public Tensor? State(TorchSharp.Modules.Adagrad.State st, int slot, in AdagradHyper h) => st.sum;

    public void Prepare(Parameter p, Tensor grad, TorchSharp.Modules.Adagrad.State st, in AdagradHyper h) { }

    public void Launch(IntPtr[][] lists, int count, long batch, in AdagradHyper h, double lr, FusedNative.Scaling scaling) =>
        FusedNative.Adagrad(lists[0], lists[1], lists[2], lists[3], count, lr, h.LrDecay, h.WeightDecay, h.Eps, false, scaling);

    public void Advance(TorchSharp.Modules.Adagrad.State st, long batch) => st.step = batch;
}
