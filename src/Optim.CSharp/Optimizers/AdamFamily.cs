using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using ParamGroup = TorchSharp.Modules.ParamGroup;

namespace Optim.Torch;

/// <summary>
/// PyTorch's <c>torch.optim.Adam</c> (weight decay, amsgrad, maximize) on TorchSharp's
/// <see cref="TorchSharp.Modules.Adam"/>: the same groups, options, per-parameter state
/// (<c>step</c>, <c>exp_avg</c>, <c>exp_avg_sq</c>, <c>max_exp_avg_sq</c>) and state dict. By default each
/// bucket (same device, dtype and hyper-parameters, across groups) is one call of libtorch's
/// <c>_fused_adam_</c>, within a few float32 ulps of the per-tensor rule.
/// </summary>
public sealed class Adam : TorchSharp.Modules.Adam, IAmpScalingOptimizer, IImplementationChoice, IStepped
{
    private readonly BucketStepper<OptimizerState, AdamHyper, AdamRule> _steps;

    /// <summary>One group over <paramref name="parameters"/>.</summary>
    /// <param name="parameters">The parameters to optimise.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="beta1">First moment decay (PyTorch's <c>betas[0]</c>).</param>
    /// <param name="beta2">Second moment decay (PyTorch's <c>betas[1]</c>).</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="weight_decay">L2 penalty added to the gradient.</param>
    /// <param name="amsgrad">Use the running maximum of the second moment.</param>
    /// <param name="maximize">Maximise the objective.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c>: true for the multi-tensor path, false for the per-tensor loop.</param>
    /// <param name="fused">PyTorch's <c>fused</c>: true for libtorch's fused kernel (the default when neither switch is given).</param>
    public Adam(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0, bool amsgrad = false, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize) => _steps = AdamRule.Stepper("Adam", @foreach, fused, parameters, _parameter_groups, h => _state[h]);

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <inheritdoc cref="Adam(IEnumerable{Parameter}, double, double, double, double, double, bool, bool, bool?, bool?)"/>
    public Adam(IEnumerable<ParamGroup> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0, bool amsgrad = false, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize) => _steps = AdamRule.Stepper("Adam", @foreach, fused, base.parameters(), _parameter_groups, h => _state[h]);

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

/// <summary>
/// PyTorch's <c>torch.optim.AdamW</c> (decoupled weight decay: <c>p ← p·(1 − lr·wd)</c> before the Adam
/// update; amsgrad, maximize) on TorchSharp's <see cref="TorchSharp.Modules.AdamW"/>, with its groups,
/// options, state and state dict. By default each bucket is one call of libtorch's <c>_fused_adamw_</c>.
/// </summary>
public sealed class AdamW : TorchSharp.Modules.AdamW, IAmpScalingOptimizer, IImplementationChoice, IStepped
{
    private readonly BucketStepper<OptimizerState, AdamHyper, AdamRule> _steps;

    /// <summary>One group over <paramref name="parameters"/>.</summary>
    /// <inheritdoc cref="Adam(IEnumerable{Parameter}, double, double, double, double, double, bool, bool, bool?, bool?)"/>
    public AdamW(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0.01, bool amsgrad = false, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize) => _steps = AdamRule.Stepper("AdamW", @foreach, fused, parameters, _parameter_groups, h => _state[h]);

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <inheritdoc cref="Adam(IEnumerable{Parameter}, double, double, double, double, double, bool, bool, bool?, bool?)"/>
    public AdamW(IEnumerable<ParamGroup> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0.01, bool amsgrad = false, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize) => _steps = AdamRule.Stepper("AdamW", @foreach, fused, base.parameters(), _parameter_groups, h => _state[h]);

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

/// <summary>Adam's and AdamW's hyper-parameters of a group, other than lr.</summary>
internal readonly record struct AdamHyper(double Beta1, double Beta2, double Eps, double WeightDecay, bool Amsgrad, bool Maximize);

/// <summary>
/// The rule of Adam and of AdamW (<see cref="Decoupled"/>): state <c>step</c>, <c>exp_avg</c>, <c>exp_avg_sq</c>,
/// <c>max_exp_avg_sq</c> (amsgrad); per bucket one <c>_fused_adam(w)_</c> call per step count the kernel sees.
/// TorchSharp's Adam and AdamW states and options are separate types with the same fields: both are read here.
/// </summary>
internal readonly struct AdamRule(bool decoupled) : IFusedRule<OptimizerState, AdamHyper>
{
    /// <summary>AdamW's decoupled weight decay.</summary>
    public bool Decoupled => decoupled;

    internal static BucketStepper<OptimizerState, AdamHyper, AdamRule> Stepper(string name, bool? @foreach, bool? fused,
        IEnumerable<Parameter> parameters, IList<TorchSharp.Modules.ParamGroup> groups, Func<IntPtr, OptimizerState> stateOf) =>
        new(name, new AdamRule(decoupled: name == "AdamW"), ImplementationChoice.For(name, @foreach, fused, parameters), groups, stateOf);

    public AdamHyper Read(OptimizerOptions options) => options switch
    {
        TorchSharp.Modules.Adam.Options a => new(a.beta1!.Value, a.beta2!.Value, a.eps!.Value, a.weight_decay!.Value, a.amsgrad!.Value, a.maximize!.Value),
        TorchSharp.Modules.AdamW.Options w => new(w.beta1!.Value, w.beta2!.Value, w.eps!.Value, w.weight_decay!.Value, w.amsgrad!.Value, w.maximize!.Value),
        _ => throw new InvalidCastException($"not Adam's or AdamW's options: {options.GetType()}"),
    };

    private static ref long Step(OptimizerState s) => ref s is TorchSharp.Modules.Adam.State a ? ref a.step : ref ((TorchSharp.Modules.AdamW.State)s).step;
    private static Tensor ExpAvg(OptimizerState s) => s is TorchSharp.Modules.Adam.State a ? a.exp_avg : ((TorchSharp.Modules.AdamW.State)s).exp_avg;
    private static Tensor ExpAvgSq(OptimizerState s) => s is TorchSharp.Modules.Adam.State a ? a.exp_avg_sq : ((TorchSharp.Modules.AdamW.State)s).exp_avg_sq;
    private static ref Tensor MaxExpAvgSq(OptimizerState s) =>
        ref s is TorchSharp.Modules.Adam.State a ? ref a.max_exp_avg_sq : ref ((TorchSharp.Modules.AdamW.State)s).max_exp_avg_sq;

    public void One(Parameter p, Tensor grad, OptimizerState st, in AdamHyper h, double lr)
    {
        ref var step = ref Step(st);
        step += 1;
        Prepare(p, grad, st, h);
        PerTensor.Adam(decoupled, p, grad, ExpAvg(st), ExpAvgSq(st), MaxExpAvgSq(st), step, lr, h.Beta1, h.Beta2, h.Eps, h.WeightDecay, h.Amsgrad, h.Maximize);
    }

    public int Slots => 3;

    public bool StepTensors => true;

    public long Batch(OptimizerState st, in AdamHyper h) => Step(st) + 1;

    public Tensor? State(OptimizerState st, int slot, in AdamHyper h) => slot switch
    {
        0 => ExpAvg(st),
        1 => ExpAvgSq(st),
        _ => h.Amsgrad ? MaxExpAvgSq(st) : null,
    };

    public void Prepare(Parameter p, Tensor grad, OptimizerState st, in AdamHyper h)
    {
        ref var max = ref MaxExpAvgSq(st);
        if (h.Amsgrad && max is null) max = torch.zeros_like(p).DetachFromDisposeScope();
    }

    public void Launch(IntPtr[][] lists, int count, long batch, in AdamHyper h, double lr, FusedNative.Scaling scaling) =>
        FusedNative.Adam(decoupled, lists[0], lists[1], lists[2], lists[3], lists[4], lists[5], count, lr, h.Beta1, h.Beta2, h.WeightDecay, h.Eps,
            h.Amsgrad, h.Maximize, scaling);

    public void Advance(OptimizerState st, long batch) => Step(st) = batch;
}
