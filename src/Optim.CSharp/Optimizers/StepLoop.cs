using TorchSharp.Modules;
using static TorchSharp.torch;
using Implementation = Optim.Core.Optimizers.Implementation;

namespace Optim.Torch;

// The one step loop of Optim's optimizers. An optimizer states its rule (a struct implementing IRule, or
// IFusedRule where libtorch has a fused kernel) and its state names there; GroupLoop and BucketStepper do
// the rest: PyTorch's step frame, the found-inf skip, the walk over groups or cached buckets, gathering
// parameters, gradients and states for the kernel, the per-tensor fallback, writing step counters back.
// Rules are structs and the loops generic over them, so the JIT specialises each loop per optimizer:
// no virtual call per tensor for the rule (the state lookup by handle is a delegate, as TorchSharp keeps
// the states in a protected dictionary).

/// <summary>An optimizer's per-tensor update (PyTorch's <c>_single_tensor_*</c> rule) and how it reads a group.</summary>
/// <typeparam name="TState">TorchSharp's per-parameter state type.</typeparam>
/// <typeparam name="THyper">A group's hyper-parameters other than lr, as the rule reads them.</typeparam>
internal interface IRule<TState, THyper> where TState : OptimizerState
{
    /// <summary>The group's hyper-parameters other than the learning rate.</summary>
    THyper Read(OptimizerOptions options);

    /// <summary>Updates one parameter (its gradient already unscaled), advancing its state as PyTorch does.</summary>
    void One(Parameter p, Tensor grad, TState st, in THyper h, double lr);
}

/// <summary>A rule libtorch has a fused kernel for: what the kernel takes per bucket and how state follows it.</summary>
internal interface IFusedRule<TState, THyper> : IRule<TState, THyper> where TState : OptimizerState
{
    /// <summary>How many per-parameter state tensor lists the kernel takes after the parameters and the gradients.</summary>
    int Slots { get; }

    /// <summary>Whether the kernel takes a list of step tensors after the state lists (one float32 tensor per call).</summary>
    bool StepTensors { get; }

    /// <summary>
    /// Which kernel call of its bucket the parameter joins (parameters of one call share it): the step count
    /// the kernel sees (Adam, Adagrad), or whether this is its first step (SGD). Read before <see cref="Prepare"/>.
    /// </summary>
    long Batch(TState st, in THyper h);

    /// <summary>The state tensor of <paramref name="slot"/>, or null (the kernel takes an empty list, or <see cref="Prepare"/> creates it).</summary>
    Tensor? State(TState st, int slot, in THyper h);

    /// <summary>Creates state the kernel needs (a first momentum buffer, amsgrad's maximum) once the parameter goes to the kernel.</summary>
    void Prepare(Parameter p, Tensor grad, TState st, in THyper h);

    /// <summary>
    /// One kernel call over <paramref name="count"/> parameters: <c>lists[0]</c> parameters, <c>[1]</c> gradients,
    /// <c>[2 .. 2 + Slots)</c> state slots, then the step tensors (impl pointers).
    /// </summary>
    void Launch(IntPtr[][] lists, int count, long batch, in THyper h, double lr, FusedNative.Scaling scaling);

    /// <summary>
    /// Writes back what the call does to the parameter's state (the step counter); called as the parameter is
    /// gathered, before the call (the kernels read the step tensors, not this counter).
    /// </summary>
    void Advance(TState st, long batch);
}

/// <summary>The implementation switches an optimizer was built with (PyTorch's <c>foreach</c>, <c>fused</c>) and the choice they make.</summary>
internal readonly record struct ImplementationChoice(bool? Foreach, bool? Fused, Implementation Implementation)
{
    /// <summary>PyTorch's meaning of the switches for <paramref name="name"/>; with <c>fused=True</c>, the parameters checked as PyTorch does.</summary>
    internal static ImplementationChoice For(string name, bool? @foreach, bool? fused, IEnumerable<Parameter> parameters)
    {
        var choice = new ImplementationChoice(@foreach, fused, Implementations.Resolve(name, @foreach, fused));
        if (fused == true) Implementations.CheckFusedParams(name, parameters);
        return choice;
    }

    /// <summary>PyTorch's meaning of the switches for <paramref name="name"/>, an optimizer without a fused kernel.</summary>
    internal static ImplementationChoice PerTensor(string name, bool? @foreach, bool? fused) =>
        new(@foreach, fused, Implementations.Resolve(name, @foreach, fused));
}

/// <summary>An optimizer's step machinery: what its public surface needs of it.</summary>
internal interface IStepper
{
    /// <summary>The implementation switches and their choice.</summary>
    ImplementationChoice Choice { get; }

    /// <summary>How often the bucket partition was built (0 for optimizers without buckets).</summary>
    int BucketRebuilds { get; }

    /// <summary>How many buckets the last step used (0 for optimizers without buckets).</summary>
    int BucketCount { get; }

    /// <summary>PyTorch's <c>step(closure)</c>, with AMP's scale and found-inf flag when given.</summary>
    Tensor? Step(Func<Tensor>? closure, FusedNative.Scaling scaling);
}

/// <summary>
/// Optim's optimizers: the implementation switches and the AMP step, answered once here from
/// <see cref="Steps"/> (the optimizer classes derive from different TorchSharp classes, so this is where
/// their shared surface can live).
/// </summary>
internal interface IStepped : IAmpScalingOptimizer, IImplementationChoice
{
    /// <summary>The optimizer's step machinery.</summary>
    IStepper Steps { get; }

    bool? IImplementationChoice.@foreach => Steps.Choice.Foreach;

    bool? IImplementationChoice.fused => Steps.Choice.Fused;

    Implementation IImplementationChoice.Implementation => Steps.Choice.Implementation;

    Tensor? IAmpScalingOptimizer.step(Tensor? grad_scale, Tensor? found_inf, Func<Tensor>? closure) => Steps.Step(closure, new(grad_scale, found_inf));
}

/// <summary>PyTorch's per-tensor rule over every parameter, group by group (the per-tensor optimizers, and <c>foreach=False</c>).</summary>
internal static class GroupLoop
{
    /// <summary>Every parameter with a gradient, group by group, with the group's options as they are now.</summary>
    internal static void Update<TState, THyper, TRule>(in TRule rule, IList<TorchSharp.Modules.ParamGroup> groups, Func<IntPtr, OptimizerState> stateOf,
        FusedNative.Scaling scaling)
        where TState : OptimizerState where TRule : struct, IRule<TState, THyper>
    {
        for (int i = 0; i < groups.Count; i++)
        {
            var g = groups[i];
            var h = rule.Read(g.Options);
            var lr = g.Options.LearningRate!.Value;
            // Indexed when the group holds a list (as Optim's groups do): no enumerator per group and step.
            if (g.Parameters is IList<Parameter> list)
            {
                for (int j = 0; j < list.Count; j++)
                    if (list[j].grad is { } grad) One(rule, list[j], grad, (TState)stateOf(list[j].Handle), h, lr, scaling);
            }
            else
            {
                foreach (var p in g.Parameters)
                    if (p.grad is { } grad) One(rule, p, grad, (TState)stateOf(p.Handle), h, lr, scaling);
            }
        }
    }

    /// <summary>The rule on one parameter, its gradient unscaled first when the step carries a scale.</summary>
    internal static void One<TState, THyper, TRule>(in TRule rule, Parameter p, Tensor grad, TState st, in THyper h, double lr, FusedNative.Scaling scaling)
        where TState : OptimizerState where TRule : struct, IRule<TState, THyper>
    {
        if (scaling.GradScale is not null) grad.div_(scaling.GradScale);
        rule.One(p, grad, st, h, lr);
    }
}

/// <summary>The step of an optimizer without a fused kernel: PyTorch's per-tensor rule, group by group.</summary>
internal sealed class GroupStepper<TState, THyper, TRule>(ImplementationChoice choice, IList<TorchSharp.Modules.ParamGroup> groups,
    Func<IntPtr, OptimizerState> stateOf) : IStepper
    where TState : OptimizerState where TRule : struct, IRule<TState, THyper>
{
    public ImplementationChoice Choice => choice;

    public int BucketRebuilds => 0;

    public int BucketCount => 0;

    /// <summary>
    /// The closure with grad, then (unless the found-inf flag is set) every parameter with a gradient updated
    /// by the rule without grad, temporaries disposed.
    /// </summary>
    public Tensor? Step(Func<Tensor>? closure, FusedNative.Scaling scaling)
    {
        var loss = StepSupport.Closure(closure);
        using (no_grad())
        using (NewDisposeScope())
            if (!StepSupport.Flagged(scaling.FoundInf)) GroupLoop.Update<TState, THyper, TRule>(default, groups, stateOf, scaling);
        return loss;
    }
}

/// <summary>
/// The step of the optimizers with a fused kernel: per cached bucket (same device, dtype and hyper-parameters
/// across groups) one kernel call per distinct <see cref="IFusedRule{TState, THyper}.Batch"/> (normally one),
/// the per-tensor rule for what the kernel cannot take; the per-tensor loop for <c>foreach=False</c>.
/// </summary>
internal sealed class BucketStepper<TState, THyper, TRule> : IStepper
    where TState : OptimizerState where THyper : struct, IEquatable<THyper> where TRule : struct, IFusedRule<TState, THyper>
{
    private readonly string _name;
    private readonly TRule _rule;
    private readonly IList<TorchSharp.Modules.ParamGroup> _groups;
    private readonly Func<IntPtr, OptimizerState> _stateOf;

    /// <param name="name">PyTorch's name of the optimizer (for messages).</param>
    /// <param name="rule">The optimizer's rule.</param>
    /// <param name="choice">The implementation switches.</param>
    /// <param name="groups">The optimizer's param groups (the list object, read at each step).</param>
    /// <param name="stateOf">The optimizer's per-parameter state of a parameter handle.</param>
    internal BucketStepper(string name, TRule rule, ImplementationChoice choice, IList<TorchSharp.Modules.ParamGroup> groups,
        Func<IntPtr, OptimizerState> stateOf)
    {
        _name = name;
        _rule = rule;
        Choice = choice;
        _groups = groups;
        _stateOf = stateOf;
        Buckets = new ParamBuckets<TState, THyper>(2 + rule.Slots + (rule.StepTensors ? 1 : 0), stateOf);
    }

    public ImplementationChoice Choice { get; }

    internal ParamBuckets<TState, THyper> Buckets { get; }

    public int BucketRebuilds => Buckets.Rebuilds;

    public int BucketCount => Buckets.Count;

    /// <summary>After <c>add_param_group</c>: PyTorch refuses non-floating parameters for <c>fused=True</c>, groups added later too.</summary>
    internal void Added(TorchSharp.Modules.ParamGroup group)
    {
        Buckets.Invalidate();
        if (Choice.Fused == true) Implementations.CheckFusedParams(_name, group.Parameters);
    }

    /// <summary>The closure with grad, then (unless the found-inf flag is set) the update without grad, temporaries disposed.</summary>
    public Tensor? Step(Func<Tensor>? closure, FusedNative.Scaling scaling)
    {
        var loss = StepSupport.Closure(closure);
        using (no_grad())
        using (NewDisposeScope())
            if (!StepSupport.Flagged(scaling.FoundInf)) Update(scaling);
        return loss;
    }

    private void Update(FusedNative.Scaling scaling)
    {
        if (Choice.Implementation == Implementation.ForLoop)
        {
            GroupLoop.Update<TState, THyper, TRule>(_rule, _groups, _stateOf, scaling);
            return;
        }
        var buckets = Buckets.For(_groups, _rule);
        for (int i = 0; i < buckets.Count; i++) StepBucket(buckets[i], scaling);
    }

    private void StepBucket(ParamBuckets<TState, THyper>.Bucket b, FusedNative.Scaling scaling)
    {
        var n = b.Params.Count;
        if (Choice.Implementation != Implementation.Fused || !b.Fusable)
        {
            for (int j = 0; j < n; j++)
                if (b.Params[j].grad is { } grad) GroupLoop.One(_rule, b.Params[j], grad, b.States[j], b.Hyper, b.Lr, scaling);
            return;
        }
        scaling = StepSupport.OnDevice(scaling, b.Device);
        // One pass over the parameters (their objects are touched once): each one the kernel can take is
        // prepared, its state advanced (the kernels read the step tensors, not these counters) and its impl
        // pointers written into the argument lists. The gradient wrappers stay alive in the step's dispose scope.
        var (lists, batches) = (b.Lists, b.Batches);
        var slots = _rule.Slots;
        int count = 0;
        var uniform = true;
        for (int j = 0; j < n; j++)
        {
            var p = b.Params[j];
            var grad = p.grad;
            if (grad is null) continue;
            var st = b.States[j];
            if (!StepSupport.FusableGrad(grad, b.Dtype, b.Device) || !StatesFit(b, j, st))
            {
                GroupLoop.One(_rule, p, grad, st, b.Hyper, b.Lr, scaling);
                continue;
            }
            var batch = _rule.Batch(st, b.Hyper);
            _rule.Prepare(p, grad, st, b.Hyper);
            lists[0][count] = FusedNative.Impl(p);
            lists[1][count] = FusedNative.Impl(grad);
            for (int s = 0; s < slots; s++)
                if (_rule.State(st, s, b.Hyper) is { } t) lists[2 + s][count] = FusedNative.Impl(t);
            _rule.Advance(st, batch);
            batches[count] = batch;
            uniform &= batch == batches[0];
            count++;
        }
        if (count == 0) return;
        if (uniform)
        {
            Launch(b, lists, count, batches[0], scaling);
            return;
        }
        // Parameters that missed a gradient at some step lag behind: one call per distinct batch, its rows
        // copied to the front of a second set of lists.
        var (rows, done) = (b.Rows, b.Done);
        Array.Clear(done, 0, count);
        for (int first = 0; first < count; first++)
        {
            if (done[first]) continue;
            var batch = batches[first];
            int k = 0;
            for (int m = first; m < count; m++)
            {
                if (done[m] || batches[m] != batch) continue;
                for (int l = 0; l < 2 + slots; l++) rows[l][k] = lists[l][m];
                done[m] = true;
                k++;
            }
            Launch(b, rows, k, batch, scaling);
        }
    }

    private bool StatesFit(ParamBuckets<TState, THyper>.Bucket b, int j, TState st)
    {
        for (int s = 0; s < _rule.Slots; s++)
            if (_rule.State(st, s, b.Hyper) is { } t && !b.StateFits(s, j, t)) return false;
        return true;
    }

    /// <summary>One kernel call over the first <paramref name="count"/> rows of <paramref name="lists"/>, with its step tensor.</summary>
    private void Launch(ParamBuckets<TState, THyper>.Bucket b, IntPtr[][] lists, int count, long batch, FusedNative.Scaling scaling)
    {
        using var stepTensor = _rule.StepTensors ? tensor((float)batch, ScalarType.Float32, b.Device) : null;
        if (stepTensor is not null) Array.Fill(lists[2 + _rule.Slots], FusedNative.Impl(stepTensor), 0, count);
        _rule.Launch(lists, count, batch, b.Hyper, b.Lr, scaling);
        GC.KeepAlive(b);
    }
}
