using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Torch;

/// <summary>
/// PyTorch's <c>torch.optim.SGD</c> (momentum, dampening, weight decay, Nesterov, maximize) on
/// TorchSharp's <see cref="TorchSharp.Modules.SGD"/>: the same param groups, options, per-parameter
/// state (<c>momentum_buffer</c>) and state dict, with a faster <c>step</c>. By default each bucket of
/// parameters (same device, dtype and hyper-parameters, across groups) is updated by one call of
/// libtorch's <c>_fused_sgd_</c> kernel, bit-identical to the per-tensor rule.
/// </summary>
public sealed class SGD : TorchSharp.Modules.SGD, IAmpScalingOptimizer, IImplementationChoice, IStepped
{
    private readonly BucketStepper<State, SgdHyper, SgdRule> _steps;

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
        : base(parameters, lr, momentum, dampening, weight_decay, nesterov, maximize) => _steps = new("SGD", default, ImplementationChoice.For("SGD", @foreach, fused, parameters), _parameter_groups, h => _state[h]);

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <inheritdoc cref="SGD(IEnumerable{Parameter}, double, double, double, double, bool, bool, bool?, bool?)"/>
    public SGD(IEnumerable<ParamGroup> parameters, double lr, double momentum = 0, double dampening = 0, double weight_decay = 0,
        bool nesterov = false, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, momentum, dampening, weight_decay, nesterov, maximize) => _steps = new("SGD", default, ImplementationChoice.For("SGD", @foreach, fused, base.parameters()), _parameter_groups, h => _state[h]);

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

/// <summary>SGD's hyper-parameters of a group, other than lr.</summary>
internal readonly record struct SgdHyper(double Momentum, double Dampening, double WeightDecay, bool Nesterov, bool Maximize);

/// <summary>
/// SGD's rule: state <c>momentum_buffer</c> (the first gradient, then the running momentum); one
/// <c>_fused_sgd_</c> call for the parameters whose buffer exists and one, with <c>is_first_step</c>, for
/// those whose buffer the kernel fills.
/// </summary>
internal readonly struct SgdRule : IFusedRule<TorchSharp.Modules.SGD.State, SgdHyper>
{
    public SgdHyper Read(OptimizerOptions options)
    {
        var o = (TorchSharp.Modules.SGD.Options)options;
        return new(o.momentum!.Value, o.dampening!.Value, o.weight_decay!.Value, o.nesterov!.Value, o.maximize!.Value);
    }

    public void One(Parameter p, Tensor grad, TorchSharp.Modules.SGD.State st, in SgdHyper h, double lr)
    {
        var buf = st.momentum_buffer;
        PerTensor.Sgd(p, grad, ref buf, lr, h.Momentum, h.Dampening, h.WeightDecay, h.Nesterov, h.Maximize);
        st.momentum_buffer = buf;
    }

    public int Slots => 1;

    public bool StepTensors => false;

    public long Batch(TorchSharp.Modules.SGD.State st, in SgdHyper h) => h.Momentum != 0 && st.momentum_buffer is null ? 1 : 0;

    public Tensor? State(TorchSharp.Modules.SGD.State st, int slot, in SgdHyper h) => h.Momentum != 0 ? st.momentum_buffer : null;

    public void Prepare(Parameter p, Tensor grad, TorchSharp.Modules.SGD.State st, in SgdHyper h)
    {
        if (h.Momentum != 0 && st.momentum_buffer is null) st.momentum_buffer = torch.empty_like(grad).DetachFromDisposeScope();
    }

    public void Launch(IntPtr[][] lists, int count, long batch, in SgdHyper h, double lr, FusedNative.Scaling scaling) =>
        FusedNative.Sgd(lists[0], lists[1], lists[2], count, h.WeightDecay, h.Momentum, lr, h.Dampening, h.Nesterov, h.Maximize,
            isFirstStep: batch == 1, scaling);

    public void Advance(TorchSharp.Modules.SGD.State st, long batch) { }
}
