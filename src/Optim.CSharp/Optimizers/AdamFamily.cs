using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Implementation = Optim.Core.Optimizers.Implementation;
using ParamGroup = TorchSharp.Modules.ParamGroup;

namespace Optim.Torch;

/// <summary>Adam's hyper-parameters for one bucket.</summary>
internal readonly record struct AdamHyper(double Beta1, double Beta2, double Eps, double WeightDecay, bool Amsgrad, bool Maximize);

/// <summary>Reaches the fields of TorchSharp's Adam and AdamW states, which are separate types with the same fields.</summary>
internal abstract class AdamAccess<TState> where TState : OptimizerState
{
    public abstract ref long Step(TState s);
    public abstract Tensor ExpAvg(TState s);
    public abstract Tensor ExpAvgSq(TState s);
    public abstract ref Tensor? MaxExpAvgSq(TState s);
    public abstract AdamHyper Hyper(OptimizerOptions o);
    public abstract void Signature(OptimizerOptions o, Span<double> s);
}

/// <summary>
/// The step shared by <see cref="Adam"/> and <see cref="AdamW"/> (<paramref name="decoupled"/>): per bucket,
/// one <c>_fused_adam(w)_</c> call per distinct step count (normally one), with the per-tensor rule for
/// what the kernel cannot take.
/// </summary>
internal sealed class AdamStepper<TState>(bool decoupled, AdamAccess<TState> access, Func<IntPtr, OptimizerState> stateOf)
    where TState : OptimizerState
{
    internal const int Width = 7;
    internal readonly ParamBuckets<TState> Buckets = new(Width, access.Signature, stateOf);

    internal Tensor? Step(Implementation impl, IList<ParamGroup> groups, Func<Tensor>? closure, FusedNative.Scaling scaling) =>
        StepSupport.Run(closure, () =>
        {
            if (StepSupport.Flagged(scaling.FoundInf)) return;
            if (impl == Implementation.ForLoop)
            {
                foreach (var g in groups)
                {
                    var h = access.Hyper(g.Options);
                    foreach (var p in g.Parameters)
                        if (p.grad is { } grad) One(p, grad, (TState)stateOf(p.Handle), h, g.Options.LearningRate!.Value, scaling);
                }
                return;
            }
            foreach (var b in Buckets.For(groups)) StepBucket(impl, b, groups, scaling);
        });

    private void One(Parameter p, Tensor grad, TState st, AdamHyper h, double lr, FusedNative.Scaling scaling)
    {
        if (scaling.GradScale is not null) grad.div_(scaling.GradScale);
        ref var step = ref access.Step(st);
        step += 1;
        ref var max = ref access.MaxExpAvgSq(st);
        if (h.Amsgrad && max is null) max = torch.zeros_like(p).DetachFromDisposeScope();
        PerTensor.Adam(decoupled, p, grad, access.ExpAvg(st), access.ExpAvgSq(st), max, step, lr, h.Beta1, h.Beta2, h.Eps, h.WeightDecay, h.Amsgrad, h.Maximize);
    }

    private void StepBucket(Implementation impl, ParamBuckets<TState>.Bucket b, IList<ParamGroup> groups, FusedNative.Scaling scaling)
    {
        var h = access.Hyper(groups[b.Group].Options);
        if (impl != Implementation.Fused || !b.Fusable)
        {
            for (int j = 0; j < b.Params.Count; j++)
                if (b.Params[j].grad is { } grad) One(b.Params[j], grad, b.States[j], h, b.Lr, scaling);
            return;
        }
        scaling = StepSupport.OnDevice(scaling, b.Device);
        var n = b.Params.Count;
        IntPtr[] ps = b.ScratchArray(0, n), gs = b.ScratchArray(1, n), ms = b.ScratchArray(2, n),
            vs = b.ScratchArray(3, n), vmax = b.ScratchArray(4, n), steps = b.ScratchArray(5, n);
        var batch = new StepBatches(n);
        for (int j = 0; j < n; j++)
        {
            var p = b.Params[j];
            var grad = p.grad;
            if (grad is null) continue;
            var st = b.States[j];
            ref var max = ref access.MaxExpAvgSq(st);
            if (h.Amsgrad && max is null) max = torch.zeros_like(p).DetachFromDisposeScope();
            if (!StepSupport.FusableGrad(grad, b.Dtype, b.Device) || !b.StateFits(0, j, access.ExpAvg(st)) || !b.StateFits(1, j, access.ExpAvgSq(st))
                || (h.Amsgrad && !b.StateFits(2, j, max!)))
            {
                One(p, grad, st, h, b.Lr, scaling);
                continue;
            }
            batch.Add(j, grad, access.Step(st) + 1);
        }
        batch.Run((members, grads, step) =>
        {
            using var stepTensor = torch.tensor((float)step, ScalarType.Float32, b.Device);
            var stepImpl = FusedNative.Impl(stepTensor);
            for (int k = 0; k < members.Count; k++)
            {
                var st = b.States[members[k]];
                ps[k] = FusedNative.Impl(b.Params[members[k]]);
                gs[k] = FusedNative.Impl(grads[k]);
                ms[k] = FusedNative.Impl(access.ExpAvg(st));
                vs[k] = FusedNative.Impl(access.ExpAvgSq(st));
                if (h.Amsgrad) vmax[k] = FusedNative.Impl(access.MaxExpAvgSq(st)!);
                steps[k] = stepImpl;
            }
            FusedNative.Adam(decoupled, ps, gs, ms, vs, vmax, steps, members.Count, b.Lr, h.Beta1, h.Beta2, h.WeightDecay, h.Eps, h.Amsgrad, h.Maximize, scaling);
            foreach (var m in members) access.Step(b.States[m]) = step;
        });
    }
}

/// <summary>
/// The fused-kernel inputs of one bucket, split by the step count the kernel will see (parameters of one
/// bucket normally share it; a parameter that had no gradient at some step lags behind).
/// </summary>
internal sealed class StepBatches(int capacity)
{
    private readonly List<int> _members = new(capacity);
    private readonly List<Tensor> _grads = new(capacity);
    private readonly List<long> _steps = new(capacity);
    private bool _uniform = true;

    public void Add(int member, Tensor grad, long step)
    {
        if (_steps.Count > 0 && _steps[0] != step) _uniform = false;
        _members.Add(member);
        _grads.Add(grad);
        _steps.Add(step);
    }

    /// <summary>Calls <paramref name="run"/> once per distinct step, with the members at that step.</summary>
    public void Run(Action<List<int>, List<Tensor>, long> run)
    {
        if (_members.Count == 0) return;
        if (_uniform) { run(_members, _grads, _steps[0]); return; }
        foreach (var step in _steps.Distinct().ToList())
        {
            var members = new List<int>();
            var grads = new List<Tensor>();
            for (int i = 0; i < _members.Count; i++)
                if (_steps[i] == step) { members.Add(_members[i]); grads.Add(_grads[i]); }
            run(members, grads, step);
        }
    }
}

/// <summary>
/// PyTorch's <c>torch.optim.Adam</c> (weight decay, amsgrad, maximize) on TorchSharp's
/// <see cref="TorchSharp.Modules.Adam"/>: the same groups, options, per-parameter state
/// (<c>step</c>, <c>exp_avg</c>, <c>exp_avg_sq</c>, <c>max_exp_avg_sq</c>) and state dict. By default each
/// bucket (same device, dtype and hyper-parameters, across groups) is one call of libtorch's
/// <c>_fused_adam_</c>, within a few float32 ulps of the per-tensor rule.
/// </summary>
public sealed class Adam : TorchSharp.Modules.Adam, IAmpScalingOptimizer, IImplementationChoice
{
    private readonly AdamStepper<State> _stepper;

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
        : base(parameters, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize)
    {
        _stepper = new(false, Access.Instance, h => _state[h]);
        Implementation = Implementations.Resolve("Adam", @foreach, fused);
        if (fused == true) Implementations.CheckFusedParams("Adam", parameters);
        (this.@foreach, this.fused) = (@foreach, fused);
    }

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <inheritdoc cref="Adam(IEnumerable{Parameter}, double, double, double, double, double, bool, bool, bool?, bool?)"/>
    public Adam(IEnumerable<ParamGroup> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0, bool amsgrad = false, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize)
    {
        _stepper = new(false, Access.Instance, h => _state[h]);
        Implementation = Implementations.Resolve("Adam", @foreach, fused);
        if (fused == true) Implementations.CheckFusedParams("Adam", base.parameters());
        (this.@foreach, this.fused) = (@foreach, fused);
    }

    /// <inheritdoc />
    public bool? @foreach { get; }

    /// <inheritdoc />
    public bool? fused { get; }

    /// <inheritdoc />
    public Implementation Implementation { get; }

    /// <summary>How often the bucket partition was rebuilt (it is cached across steps).</summary>
    public int BucketRebuilds => _stepper?.Buckets.Rebuilds ?? 0;

    /// <inheritdoc />
    public override void add_param_group(TorchSharp.Modules.ParamGroup param_group)
    {
        base.add_param_group(param_group);
        _stepper?.Buckets.Invalidate();
        // PyTorch refuses non-floating parameters for fused=True; groups added after construction too.
        if (fused == true) Implementations.CheckFusedParams("Adam", param_group.Parameters);
    }

    /// <summary>One Adam step (PyTorch's <c>optimizer.step(closure)</c>).</summary>
    public override Tensor step(Func<Tensor>? closure = null) => _stepper.Step(Implementation, _parameter_groups, closure, FusedNative.Scaling.None)!;

    /// <inheritdoc />
    public Tensor? step(Tensor? grad_scale, Tensor? found_inf, Func<Tensor>? closure = null) =>
        _stepper.Step(Implementation, _parameter_groups, closure, new(grad_scale, found_inf));

    private sealed class Access : AdamAccess<State>
    {
        public static readonly Access Instance = new();
        public override ref long Step(State s) => ref s.step;
        public override Tensor ExpAvg(State s) => s.exp_avg;
        public override Tensor ExpAvgSq(State s) => s.exp_avg_sq;
        public override ref Tensor? MaxExpAvgSq(State s) => ref s.max_exp_avg_sq!;
        public override AdamHyper Hyper(OptimizerOptions o)
        {
            var a = (Options)o;
            return new(a.beta1!.Value, a.beta2!.Value, a.eps!.Value, a.weight_decay!.Value, a.amsgrad!.Value, a.maximize!.Value);
        }
        public override void Signature(OptimizerOptions o, Span<double> s)
        {
            var a = (Options)o;
            s[0] = a.LearningRate!.Value;
            s[1] = a.beta1!.Value;
            s[2] = a.beta2!.Value;
            s[3] = a.eps!.Value;
            s[4] = a.weight_decay!.Value;
            s[5] = a.amsgrad!.Value ? 1 : 0;
            s[6] = a.maximize!.Value ? 1 : 0;
        }
    }
}

/// <summary>
/// PyTorch's <c>torch.optim.AdamW</c> (decoupled weight decay: <c>p ← p·(1 − lr·wd)</c> before the Adam
/// update; amsgrad, maximize) on TorchSharp's <see cref="TorchSharp.Modules.AdamW"/>, with its groups,
/// options, state and state dict. By default each bucket is one call of libtorch's <c>_fused_adamw_</c>.
/// </summary>
public sealed class AdamW : TorchSharp.Modules.AdamW, IAmpScalingOptimizer, IImplementationChoice
{
    private readonly AdamStepper<State> _stepper;

    /// <summary>One group over <paramref name="parameters"/>.</summary>
    /// <inheritdoc cref="Adam(IEnumerable{Parameter}, double, double, double, double, double, bool, bool, bool?, bool?)"/>
    public AdamW(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0.01, bool amsgrad = false, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize)
    {
        _stepper = new(true, Access.Instance, h => _state[h]);
        Implementation = Implementations.Resolve("AdamW", @foreach, fused);
        if (fused == true) Implementations.CheckFusedParams("AdamW", parameters);
        (this.@foreach, this.fused) = (@foreach, fused);
    }

    /// <summary>Param groups with per-group options; missing options come from these arguments.</summary>
    /// <inheritdoc cref="Adam(IEnumerable{Parameter}, double, double, double, double, double, bool, bool, bool?, bool?)"/>
    public AdamW(IEnumerable<ParamGroup> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weight_decay = 0.01, bool amsgrad = false, bool maximize = false, bool? @foreach = null, bool? fused = null)
        : base(parameters, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize)
    {
        _stepper = new(true, Access.Instance, h => _state[h]);
        Implementation = Implementations.Resolve("AdamW", @foreach, fused);
        if (fused == true) Implementations.CheckFusedParams("AdamW", base.parameters());
        (this.@foreach, this.fused) = (@foreach, fused);
    }

    /// <inheritdoc />
    public bool? @foreach { get; }

    /// <inheritdoc />
    public bool? fused { get; }

    /// <inheritdoc />
    public Implementation Implementation { get; }

    /// <summary>How often the bucket partition was rebuilt (it is cached across steps).</summary>
    public int BucketRebuilds => _stepper?.Buckets.Rebuilds ?? 0;

    /// <inheritdoc />
    public override void add_param_group(TorchSharp.Modules.ParamGroup param_group)
    {
        base.add_param_group(param_group);
        _stepper?.Buckets.Invalidate();
        // PyTorch refuses non-floating parameters for fused=True; groups added after construction too.
        if (fused == true) Implementations.CheckFusedParams("AdamW", param_group.Parameters);
    }

    /// <summary>One AdamW step (PyTorch's <c>optimizer.step(closure)</c>).</summary>
    public override Tensor step(Func<Tensor>? closure = null) => _stepper.Step(Implementation, _parameter_groups, closure, FusedNative.Scaling.None)!;

    /// <inheritdoc />
    public Tensor? step(Tensor? grad_scale, Tensor? found_inf, Func<Tensor>? closure = null) =>
        _stepper.Step(Implementation, _parameter_groups, closure, new(grad_scale, found_inf));

    private sealed class Access : AdamAccess<State>
    {
        public static readonly Access Instance = new();
        public override ref long Step(State s) => ref s.step;
        public override Tensor ExpAvg(State s) => s.exp_avg;
        public override Tensor ExpAvgSq(State s) => s.exp_avg_sq;
        public override ref Tensor? MaxExpAvgSq(State s) => ref s.max_exp_avg_sq!;
        public override AdamHyper Hyper(OptimizerOptions o)
        {
            var a = (Options)o;
            return new(a.beta1!.Value, a.beta2!.Value, a.eps!.Value, a.weight_decay!.Value, a.amsgrad!.Value, a.maximize!.Value);
        }
        public override void Signature(OptimizerOptions o, Span<double> s)
        {
            var a = (Options)o;
            s[0] = a.LearningRate!.Value;
            s[1] = a.beta1!.Value;
            s[2] = a.beta2!.Value;
            s[3] = a.eps!.Value;
            s[4] = a.weight_decay!.Value;
            s[5] = a.amsgrad!.Value ? 1 : 0;
            s[6] = a.maximize!.Value ? 1 : 0;
        }
    }
}
