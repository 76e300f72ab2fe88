using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

// Generated shape, hand-kept: the optimizers without a libtorch fused kernel. Each keeps TorchSharp's class
// (groups, options, state, state dict) and replaces step() with PyTorch 2.x's per-tensor rule (PerTensor).
// Both implementations (foreach and the per-tensor loop) run that rule: TorchSharp binds no _foreach_
// kernels, and on the CPU a multi-tensor formulation gains nothing.

namespace Optim.Torch;

/// <summary>
/// PyTorch's <c>torch.optim.RMSprop</c> (plain, centered, with momentum; weight decay; maximize) on TorchSharp's <see cref="TorchSharp.Modules.RMSProp"/>, with its groups, options, per-parameter state (<c>step</c>, <c>square_avg</c>, <c>momentum_buffer</c>, <c>grad_avg</c>) and state dict. Class name as TorchSharp's, so TorchSharp state streams load; registered as <c>RMSprop</c>.
/// </summary>
public sealed class RMSProp : TorchSharp.Modules.RMSProp, IAmpScalingOptimizer, IImplementationChoice, IStepped
{
    private readonly GroupStepper<State, Options, Rule> _steps;

    /// <summary>One step (PyTorch's <c>optimizer.step(closure)</c>).</summary>
    public override Tensor step(Func<Tensor>? closure = null) => _steps.Step(closure, FusedNative.Scaling.None)!;

    /// <summary>One group over <paramref name="parameters"/> (PyTorch's argument names and defaults).</summary>
    /// <param name="parameters">The parameters to optimise.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="alpha">Smoothing constant of the squared-gradient average.</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="weight_decay">L2 penalty added to the gradient.</param>
    /// <param name="momentum">Momentum factor.</param>
    /// <param name="centered">Normalise by the centered second moment.</param>
    /// <param name="maximize">Maximise the objective.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused RMSprop).</param>
    public RMSProp(IEnumerable<Parameter> parameters, double lr = 1e-2, double alpha = 0.99, double eps = 1e-8, double weight_decay = 0, double momentum = 0, bool centered = false, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, alpha, eps, weight_decay, momentum, centered, maximize) => _steps = new(ImplementationChoice.PerTensor("RMSprop", @foreach, fused), _parameter_groups, h => _state[h]);

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <param name="parameters">The groups.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="alpha">Smoothing constant of the squared-gradient average.</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="weight_decay">L2 penalty added to the gradient.</param>
    /// <param name="momentum">Momentum factor.</param>
    /// <param name="centered">Normalise by the centered second moment.</param>
    /// <param name="maximize">Maximise the objective.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused RMSprop).</param>
    public RMSProp(IEnumerable<ParamGroup> parameters, double lr = 1e-2, double alpha = 0.99, double eps = 1e-8, double weight_decay = 0, double momentum = 0, bool centered = false, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, alpha, eps, weight_decay, momentum, centered, maximize) => _steps = new(ImplementationChoice.PerTensor("RMSprop", @foreach, fused), _parameter_groups, h => _state[h]);

    IStepper IStepped.Steps => _steps;

    /// <summary>The per-tensor rule; the group's options are read as they are at each step.</summary>
    private readonly struct Rule : IRule<State, Options>
    {
        public Options Read(OptimizerOptions options) => (Options)options;

        public void One(Parameter p, Tensor grad, State st, in Options o, double lr)
        {
            st.step += 1;
            PerTensor.RmsProp(p, grad, st.square_avg, st.grad_avg, st.momentum_buffer, lr, o.alpha!.Value, o.eps!.Value,
                o.weight_decay!.Value, o.momentum!.Value, o.centered!.Value, o.maximize!.Value);
        }
    }
}

/// <summary>
/// PyTorch's <c>torch.optim.Adamax</c> on TorchSharp's <see cref="TorchSharp.Modules.Adamax"/>, with its groups, options, per-parameter state (<c>step</c>, <c>exp_avg</c>, <c>exp_inf</c>) and state dict.
/// </summary>
public sealed class Adamax : TorchSharp.Modules.Adamax, IAmpScalingOptimizer, IImplementationChoice, IStepped
{
    private readonly GroupStepper<State, Options, Rule> _steps;

    /// <summary>One step (PyTorch's <c>optimizer.step(closure)</c>).</summary>
    public override Tensor step(Func<Tensor>? closure = null) => _steps.Step(closure, FusedNative.Scaling.None)!;

    /// <summary>One group over <paramref name="parameters"/> (PyTorch's argument names and defaults).</summary>
    /// <param name="parameters">The parameters to optimise.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="beta1">First moment decay (PyTorch's <c>betas[0]</c>).</param>
    /// <param name="beta2">Second moment or infinity-norm decay (PyTorch's <c>betas[1]</c>).</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="weight_decay">L2 penalty added to the gradient.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused Adamax).</param>
    public Adamax(IEnumerable<Parameter> parameters, double lr = 0.002, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weight_decay = 0, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, beta1, beta2, eps, weight_decay) => _steps = new(ImplementationChoice.PerTensor("Adamax", @foreach, fused), _parameter_groups, h => _state[h]);

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <param name="parameters">The groups.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="beta1">First moment decay (PyTorch's <c>betas[0]</c>).</param>
    /// <param name="beta2">Second moment or infinity-norm decay (PyTorch's <c>betas[1]</c>).</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="weight_decay">L2 penalty added to the gradient.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused Adamax).</param>
    public Adamax(IEnumerable<ParamGroup> parameters, double lr = 0.002, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weight_decay = 0, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, beta1, beta2, eps, weight_decay) => _steps = new(ImplementationChoice.PerTensor("Adamax", @foreach, fused), _parameter_groups, h => _state[h]);

    IStepper IStepped.Steps => _steps;

    /// <summary>The per-tensor rule; the group's options are read as they are at each step.</summary>
    private readonly struct Rule : IRule<State, Options>
    {
        public Options Read(OptimizerOptions options) => (Options)options;

        public void One(Parameter p, Tensor grad, State st, in Options o, double lr)
        {
            st.step += 1;
            PerTensor.Adamax(p, grad, st.exp_avg, st.exp_inf, st.step, lr, o.beta1!.Value, o.beta2!.Value, o.eps!.Value, o.weight_decay!.Value);
        }
    }
}

/// <summary>
/// PyTorch 2.x's <c>torch.optim.NAdam</c> on TorchSharp's <see cref="TorchSharp.Modules.NAdam"/>, with its groups, options, per-parameter state (<c>step</c>, <c>mu_product</c>, <c>exp_avg</c>, <c>exp_avg_sq</c>) and state dict. <c>mu_product</c> is float32-rounded as PyTorch's 0-dim tensor is, and the next-step product is <c>mu_product · mu_next</c> as in PyTorch 2.x (torch 1.13 multiplied by mu once more; Optim follows 2.x).
/// </summary>
public sealed class NAdam : TorchSharp.Modules.NAdam, IAmpScalingOptimizer, IImplementationChoice, IStepped
{
    private readonly GroupStepper<State, Options, Rule> _steps;

    /// <summary>One step (PyTorch's <c>optimizer.step(closure)</c>).</summary>
    public override Tensor step(Func<Tensor>? closure = null) => _steps.Step(closure, FusedNative.Scaling.None)!;

    /// <summary>One group over <paramref name="parameters"/> (PyTorch's argument names and defaults).</summary>
    /// <param name="parameters">The parameters to optimise.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="beta1">First moment decay (PyTorch's <c>betas[0]</c>).</param>
    /// <param name="beta2">Second moment or infinity-norm decay (PyTorch's <c>betas[1]</c>).</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="weight_decay">L2 penalty added to the gradient.</param>
    /// <param name="momentum_decay">Momentum decay (psi).</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused NAdam).</param>
    public NAdam(IEnumerable<Parameter> parameters, double lr = 0.002, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weight_decay = 0, double momentum_decay = 4e-3, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, beta1, beta2, eps, weight_decay, momentum_decay) => _steps = new(ImplementationChoice.PerTensor("NAdam", @foreach, fused), _parameter_groups, h => _state[h]);

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <param name="parameters">The groups.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="beta1">First moment decay (PyTorch's <c>betas[0]</c>).</param>
    /// <param name="beta2">Second moment or infinity-norm decay (PyTorch's <c>betas[1]</c>).</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="weight_decay">L2 penalty added to the gradient.</param>
    /// <param name="momentum_decay">Momentum decay (psi).</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused NAdam).</param>
    public NAdam(IEnumerable<ParamGroup> parameters, double lr = 0.002, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weight_decay = 0, double momentum_decay = 4e-3, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, beta1, beta2, eps, weight_decay, momentum_decay) => _steps = new(ImplementationChoice.PerTensor("NAdam", @foreach, fused), _parameter_groups, h => _state[h]);

    IStepper IStepped.Steps => _steps;

    /// <summary>The per-tensor rule; the group's options are read as they are at each step.</summary>
    private readonly struct Rule : IRule<State, Options>
    {
        public Options Read(OptimizerOptions options) => (Options)options;

        public void One(Parameter p, Tensor grad, State st, in Options o, double lr)
        {
            if (st.step == 0) st.mu_product = 1;
            st.step += 1;
            PerTensor.NAdam(p, grad, st.exp_avg, st.exp_avg_sq, ref st.mu_product, st.step, lr, o.beta1!.Value, o.beta2!.Value, o.eps!.Value,
                o.weight_decay!.Value, o.momentum_decay!.Value);
        }
    }
}

/// <summary>
/// PyTorch's <c>torch.optim.RAdam</c> on TorchSharp's <see cref="TorchSharp.Modules.RAdam"/>, with its groups, options, per-parameter state (<c>step</c>, <c>exp_avg</c>, <c>exp_avg_sq</c>) and state dict. Unlike TorchSharp 0.107's own step, the rectified update multiplies by the learning rate once.
/// </summary>
public sealed class RAdam : TorchSharp.Modules.RAdam, IAmpScalingOptimizer, IImplementationChoice, IStepped
{
    private readonly GroupStepper<State, Options, Rule> _steps;

    /// <summary>One step (PyTorch's <c>optimizer.step(closure)</c>).</summary>
    public override Tensor step(Func<Tensor>? closure = null) => _steps.Step(closure, FusedNative.Scaling.None)!;

    /// <summary>One group over <paramref name="parameters"/> (PyTorch's argument names and defaults).</summary>
    /// <param name="parameters">The parameters to optimise.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="beta1">First moment decay (PyTorch's <c>betas[0]</c>).</param>
    /// <param name="beta2">Second moment or infinity-norm decay (PyTorch's <c>betas[1]</c>).</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="weight_decay">L2 penalty added to the gradient.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused RAdam).</param>
    public RAdam(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weight_decay = 0, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, beta1, beta2, eps, weight_decay) => _steps = new(ImplementationChoice.PerTensor("RAdam", @foreach, fused), _parameter_groups, h => _state[h]);

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <param name="parameters">The groups.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="beta1">First moment decay (PyTorch's <c>betas[0]</c>).</param>
    /// <param name="beta2">Second moment or infinity-norm decay (PyTorch's <c>betas[1]</c>).</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="weight_decay">L2 penalty added to the gradient.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused RAdam).</param>
    public RAdam(IEnumerable<ParamGroup> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weight_decay = 0, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, beta1, beta2, eps, weight_decay) => _steps = new(ImplementationChoice.PerTensor("RAdam", @foreach, fused), _parameter_groups, h => _state[h]);

    IStepper IStepped.Steps => _steps;

    /// <summary>The per-tensor rule; the group's options are read as they are at each step.</summary>
    private readonly struct Rule : IRule<State, Options>
    {
        public Options Read(OptimizerOptions options) => (Options)options;

        public void One(Parameter p, Tensor grad, State st, in Options o, double lr)
        {
            st.step += 1;
            PerTensor.RAdam(p, grad, st.exp_avg, st.exp_avg_sq, st.step, lr, o.beta1!.Value, o.beta2!.Value, o.eps!.Value, o.weight_decay!.Value);
        }
    }
}

/// <summary>
/// PyTorch's <c>torch.optim.Adadelta</c> on TorchSharp's <see cref="TorchSharp.Modules.Adadelta"/>, with its groups, options, per-parameter state (<c>step</c>, <c>square_avg</c>, <c>acc_delta</c>) and state dict. Unlike TorchSharp 0.107's own step, <c>step</c> counts the updates.
/// </summary>
public sealed class Adadelta : TorchSharp.Modules.Adadelta, IAmpScalingOptimizer, IImplementationChoice, IStepped
{
    private readonly GroupStepper<State, Options, Rule> _steps;

    /// <summary>One step (PyTorch's <c>optimizer.step(closure)</c>).</summary>
    public override Tensor step(Func<Tensor>? closure = null) => _steps.Step(closure, FusedNative.Scaling.None)!;

    /// <summary>One group over <paramref name="parameters"/> (PyTorch's argument names and defaults).</summary>
    /// <param name="parameters">The parameters to optimise.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="rho">Decay of the running averages.</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="weight_decay">L2 penalty added to the gradient.</param>
    /// <param name="maximize">Maximise the objective.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused Adadelta).</param>
    public Adadelta(IEnumerable<Parameter> parameters, double lr = 1.0, double rho = 0.9, double eps = 1e-6, double weight_decay = 0, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, rho, eps, weight_decay, maximize) => _steps = new(ImplementationChoice.PerTensor("Adadelta", @foreach, fused), _parameter_groups, h => _state[h]);

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <param name="parameters">The groups.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="rho">Decay of the running averages.</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="weight_decay">L2 penalty added to the gradient.</param>
    /// <param name="maximize">Maximise the objective.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused Adadelta).</param>
    public Adadelta(IEnumerable<ParamGroup> parameters, double lr = 1.0, double rho = 0.9, double eps = 1e-6, double weight_decay = 0, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, rho, eps, weight_decay, maximize) => _steps = new(ImplementationChoice.PerTensor("Adadelta", @foreach, fused), _parameter_groups, h => _state[h]);

    IStepper IStepped.Steps => _steps;

    /// <summary>The per-tensor rule; the group's options are read as they are at each step.</summary>
    private readonly struct Rule : IRule<State, Options>
    {
        public Options Read(OptimizerOptions options) => (Options)options;

        public void One(Parameter p, Tensor grad, State st, in Options o, double lr)
        {
            st.step += 1;
            PerTensor.Adadelta(p, grad, st.square_avg, st.acc_delta, lr, o.rho!.Value, o.eps!.Value, o.weight_decay!.Value, o.maximize!.Value);
        }
    }
}

/// <summary>
/// PyTorch's <c>torch.optim.ASGD</c> on TorchSharp's <see cref="TorchSharp.Modules.ASGD"/>, with its groups, options, per-parameter state (<c>step</c>, <c>eta</c>, <c>mu</c>, <c>ax</c>) and state dict. <c>eta</c> and <c>mu</c> are float32-rounded as PyTorch's 0-dim tensors are, and a new lr takes effect one step late, as in PyTorch.
/// </summary>
public sealed class ASGD : TorchSharp.Modules.ASGD, IAmpScalingOptimizer, IImplementationChoice, IStepped
{
    private readonly GroupStepper<State, Options, Rule> _steps;

    /// <summary>One step (PyTorch's <c>optimizer.step(closure)</c>).</summary>
    public override Tensor step(Func<Tensor>? closure = null) => _steps.Step(closure, FusedNative.Scaling.None)!;

    /// <summary>One group over <paramref name="parameters"/> (PyTorch's argument names and defaults).</summary>
    /// <param name="parameters">The parameters to optimise.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="lambd">Decay term.</param>
    /// <param name="alpha">Smoothing constant of the squared-gradient average.</param>
    /// <param name="t0">Step at which averaging starts.</param>
    /// <param name="weight_decay">L2 penalty added to the gradient.</param>
    /// <param name="maximize">Maximise the objective.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused ASGD).</param>
    public ASGD(IEnumerable<Parameter> parameters, double lr = 0.01, double lambd = 1e-4, double alpha = 0.75, double t0 = 1e6, double weight_decay = 0, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, lambd, alpha, t0, weight_decay, maximize) => _steps = new(ImplementationChoice.PerTensor("ASGD", @foreach, fused), _parameter_groups, h => _state[h]);

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <param name="parameters">The groups.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="lambd">Decay term.</param>
    /// <param name="alpha">Smoothing constant of the squared-gradient average.</param>
    /// <param name="t0">Step at which averaging starts.</param>
    /// <param name="weight_decay">L2 penalty added to the gradient.</param>
    /// <param name="maximize">Maximise the objective.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused ASGD).</param>
    public ASGD(IEnumerable<ParamGroup> parameters, double lr = 0.01, double lambd = 1e-4, double alpha = 0.75, double t0 = 1e6, double weight_decay = 0, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, lambd, alpha, t0, weight_decay, maximize) => _steps = new(ImplementationChoice.PerTensor("ASGD", @foreach, fused), _parameter_groups, h => _state[h]);

    IStepper IStepped.Steps => _steps;

    /// <summary>The per-tensor rule; the group's options are read as they are at each step.</summary>
    private readonly struct Rule : IRule<State, Options>
    {
        public Options Read(OptimizerOptions options) => (Options)options;

        public void One(Parameter p, Tensor grad, State st, in Options o, double lr)
        {
            if (st.step == 0)
            {
                st.eta = (float)lr;
                st.mu = 1;
                st.ax.zero_();
            }
            st.step += 1;
            PerTensor.Asgd(p, grad, st.ax, ref st.eta, ref st.mu, st.step, lr, o.lambd!.Value, o.alpha!.Value, o.t0!.Value,
                o.weight_decay!.Value, o.maximize!.Value);
        }
    }
}

/// <summary>
/// PyTorch's <c>torch.optim.Rprop</c> on TorchSharp's <see cref="TorchSharp.Modules.Rprop"/>, with its groups, options, per-parameter state (<c>step</c>, <c>prev</c>, <c>step_size</c>) and state dict. The step sizes start at the group's lr at the first step (later lr changes have no effect, as in PyTorch).
/// </summary>
public sealed class Rprop : TorchSharp.Modules.Rprop, IAmpScalingOptimizer, IImplementationChoice, IStepped
{
    private readonly GroupStepper<State, Options, Rule> _steps;

    /// <summary>One step (PyTorch's <c>optimizer.step(closure)</c>).</summary>
    public override Tensor step(Func<Tensor>? closure = null) => _steps.Step(closure, FusedNative.Scaling.None)!;

    /// <summary>One group over <paramref name="parameters"/> (PyTorch's argument names and defaults).</summary>
    /// <param name="parameters">The parameters to optimise.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="etaminus">Step-size factor on a sign change (PyTorch's <c>etas[0]</c>).</param>
    /// <param name="etaplus">Step-size factor on sign agreement (PyTorch's <c>etas[1]</c>).</param>
    /// <param name="min_step">Smallest step size (PyTorch's <c>step_sizes[0]</c>).</param>
    /// <param name="max_step">Largest step size (PyTorch's <c>step_sizes[1]</c>).</param>
    /// <param name="maximize">Maximise the objective.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused Rprop).</param>
    public Rprop(IEnumerable<Parameter> parameters, double lr = 1e-2, double etaminus = 0.5, double etaplus = 1.2, double min_step = 1e-6, double max_step = 50, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, etaminus, etaplus, min_step, max_step, maximize) => _steps = new(ImplementationChoice.PerTensor("Rprop", @foreach, fused), _parameter_groups, h => _state[h]);

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <param name="parameters">The groups.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="etaminus">Step-size factor on a sign change (PyTorch's <c>etas[0]</c>).</param>
    /// <param name="etaplus">Step-size factor on sign agreement (PyTorch's <c>etas[1]</c>).</param>
    /// <param name="min_step">Smallest step size (PyTorch's <c>step_sizes[0]</c>).</param>
    /// <param name="max_step">Largest step size (PyTorch's <c>step_sizes[1]</c>).</param>
    /// <param name="maximize">Maximise the objective.</param>
    /// <param name="foreach">PyTorch's <c>foreach</c> (both implementations run PyTorch's per-tensor rule).</param>
    /// <param name="fused">PyTorch's <c>fused</c>: only false or null (libtorch has no fused Rprop).</param>
    public Rprop(IEnumerable<ParamGroup> parameters, double lr = 1e-2, double etaminus = 0.5, double etaplus = 1.2, double min_step = 1e-6, double max_step = 50, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, etaminus, etaplus, min_step, max_step, maximize) => _steps = new(ImplementationChoice.PerTensor("Rprop", @foreach, fused), _parameter_groups, h => _state[h]);

    IStepper IStepped.Steps => _steps;

    /// <summary>The per-tensor rule; the group's options are read as they are at each step.</summary>
    private readonly struct Rule : IRule<State, Options>
    {
        public Options Read(OptimizerOptions options) => (Options)options;

        public void One(Parameter p, Tensor grad, State st, in Options o, double lr)
        {
            if (st.step == 0)
            {
                st.prev.zero_();
                using var initialStep = lr.ToScalar();
                st.step_size.fill_(initialStep);
            }
            st.step += 1;
            PerTensor.Rprop(p, grad, st.prev, st.step_size, o.etaminus!.Value, o.etaplus!.Value, o.min_step!.Value, o.max_step!.Value, o.maximize!.Value);
        }
    }
}
