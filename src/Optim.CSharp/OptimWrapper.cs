using Microsoft.Extensions.Logging;
using Microsoft.FSharp.Core;
using Optim.Core;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Optimizer = TorchSharp.torch.optim.Optimizer;

namespace Optim;

/// <summary>
/// Implemented by a data-parallel module that can skip gradient synchronisation (PyTorch's
/// <c>DistributedDataParallel.no_sync()</c>). TorchSharp has no DDP: a module that all-reduces
/// gradients implements this, and <see cref="OptimWrapper.optim_context"/> enters
/// <see cref="no_sync"/> on iterations that do not update.
/// </summary>
public interface INoSyncModule
{
    /// <summary>A scope inside which backward passes do not synchronise gradients.</summary>
    IDisposable no_sync();
}

/// <summary>
/// Implemented by a data-parallel module whose gradients are synchronised across processes after
/// backward (<see cref="Distributed.DistributedDataParallel"/>). TorchSharp has no autograd hooks
/// for a reducer, so the synchronisation is an explicit step: <see cref="OptimWrapper"/> remembers
/// the model given to <see cref="OptimWrapper.optim_context"/> and calls <see cref="finish_backward"/>
/// right after each backward pass, before clipping and stepping see the gradients.
/// </summary>
public interface IDistributedModule
{
    /// <summary>
    /// Completes the backward pass that followed this module's last forward: averages the gradients
    /// over the ranks unless that forward ran inside <see cref="INoSyncModule.no_sync"/>.
    /// </summary>
    void finish_backward();

    /// <summary>Whether <paramref name="flag"/> is true on any rank (every rank gets the same answer).</summary>
    bool any_rank(bool flag);

    /// <summary>Averages every gradient over the ranks now (a missing gradient counts as zeros).</summary>
    void SynchronizeGradients();
}

/// <summary>The abstract optimizer wrapper (MMEngine's <c>BaseOptimWrapper</c>).</summary>
public abstract class BaseOptimWrapper
{
    /// <summary>Scale the loss, back-propagate, and step and zero the gradients when it is time to.</summary>
    public abstract void update_params(Tensor loss);

    /// <summary>Back-propagate the loss.</summary>
    public abstract void backward(Tensor loss);

    /// <summary>Update the parameters.</summary>
    public abstract void step();

    /// <summary>Clear the gradients.</summary>
    public abstract void zero_grad(bool set_to_none = true);

    /// <summary>The param groups schedulers act on.</summary>
    public abstract IReadOnlyList<IParamGroup> param_groups { get; }

    /// <summary>The learning rates, one per group (<c>base_lr</c> first when there is a base group).</summary>
    public abstract HyperParameterValues get_lr();

    /// <summary>The momenta, one per group.</summary>
    public abstract HyperParameterValues get_momentum();
}

/// <summary>
/// MMEngine's <c>OptimWrapper</c> over any TorchSharp optimizer: loss scaling for gradient
/// accumulation, backward, optional gradient clipping, step and zero_grad, with MMEngine's exact
/// counting rules (the rules live in <c>Optim.Core.Accumulation</c> and <c>Optim.Core.Clipping</c>).
/// </summary>
/// <example>
/// <code>
/// var wrapper = new OptimWrapper(torch.optim.SGD(model.parameters(), 0.01), accumulative_counts: 4);
/// wrapper.initialize_count_status(model, 0, maxIters);
/// foreach (var (x, y) in data) {
///     using (wrapper.optim_context(model)) { loss = lossFn(model.forward(x), y); }
///     wrapper.update_params(loss);
/// }
/// </code>
/// </example>
public class OptimWrapper : BaseOptimWrapper
{
    private readonly Optimizer? _optimizer;
    private Accumulation.Counts _counts;
    private readonly Clipping.Parsed? _clip;
    private PlainParamGroup? _baseParamSettings;
    private readonly ILoggerFactory? _loggerFactory;
    private readonly ILogger _logger;
    private readonly NonFiniteGuard.Settings _guard = NonFiniteGuard.off;
    private NonFiniteGuard.Counts _skips = NonFiniteGuard.zero;
    private Tensor? _lossNonFinite;
    private IDistributedModule? _distributed;

    /// <summary>Wraps an optimizer.</summary>
    /// <param name="optimizer">Any TorchSharp optimizer.</param>
    /// <param name="accumulative_counts">Backward passes per update (at least 1).</param>
    /// <param name="clip_grad">
    /// null for no clipping, else MMEngine's dict: <c>{"max_norm": 35}</c> (optionally <c>"type": "norm"</c>,
    /// <c>norm_type</c>, <c>error_if_nonfinite</c>) or <c>{"type": "value", "clip_value": 0.5}</c>.
    /// Unlike MMEngine, the caller's dict is not modified, and unknown keys are rejected here rather
    /// than at the first step.
    /// </param>
    /// <param name="skip_nonfinite">
    /// Off by default (MMEngine has no such guard). <c>true</c>, or a dict <c>{"max_consecutive": N}</c>:
    /// before each step one fused check looks for inf/NaN in the gradients and the losses since the last
    /// step (one device synchronisation); if any is found the step is skipped — parameters and optimizer
    /// state stay bit-identical — and counted (<see cref="SkippedSteps"/>), logged as a warning, and
    /// reported to <see cref="message_hub"/> as <c>train/skipped_steps</c>. With <c>max_consecutive</c>,
    /// the skip after N in a row throws <see cref="NonFiniteTrainingException"/> instead.
    /// </param>
    /// <param name="loggerFactory">Where this wrapper and the schedulers attached to it log (default: the
    /// factory of the <c>build_optim_wrapper</c> call building it, else <see cref="OptimLogging.LoggerFactory"/>).</param>
    /// <exception cref="ArgumentException">accumulative_counts below 1, a malformed clip_grad or skip_nonfinite.</exception>
    public OptimWrapper(Optimizer optimizer, int accumulative_counts = 1, IDictionary<string, object?>? clip_grad = null, object? skip_nonfinite = null,
                        ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        _loggerFactory = OptimLogging.Resolve(loggerFactory);
        _logger = CreateLogger(nameof(OptimWrapper));
        _counts = Raise.Unwrap(Accumulation.create(accumulative_counts), nameof(accumulative_counts));
        _optimizer = optimizer;
        _guard = ParseGuard(skip_nonfinite);
        var parsed = Raise.Unwrap(Clipping.parse(clip_grad is null ? PyValue.None : Py.ToPy(clip_grad)), nameof(clip_grad));
        _clip = FSharpOption<Clipping.Parsed>.get_IsSome(parsed) ? parsed.Value : null;
        message_hub = MessageHub.get_current_instance();
        if (optimizer.ParamGroups.Skip(1).Any())
            _baseParamSettings = new PlainParamGroup(OptimizerGroups.Defaults(optimizer));
    }

    /// <summary>For containers of wrappers (<see cref="OptimWrapper"/> subclasses that hold no optimizer of their own).</summary>
    /// <param name="loggerFactory">As for the public constructor.</param>
    protected OptimWrapper(ILoggerFactory? loggerFactory = null)
    {
        _loggerFactory = OptimLogging.Resolve(loggerFactory);
        _logger = CreateLogger(nameof(OptimWrapper));
        _counts = Raise.Unwrap(Accumulation.create(1));
        message_hub = MessageHub.get_current_instance();
    }

    /// <summary>
    /// Where this wrapper, its loss scaler and the schedulers attached to it log: the factory it was built
    /// with, else (none given) <see cref="OptimLogging.LoggerFactory"/> as it is now.
    /// </summary>
    public ILoggerFactory LoggerFactory => _loggerFactory ?? OptimLogging.LoggerFactory;

    /// <summary>A logger of this wrapper's factory (or following the fallback when it was given none).</summary>
    internal ILogger CreateLogger(string category) => OptimLogging.LoggerFor(_loggerFactory, category);

    /// <summary>The wrapped optimizer.</summary>
    public Optimizer optimizer => _optimizer ?? throw new NotSupportedException($"{GetType().Name} holds no optimizer of its own");

    /// <summary>The hub that receives <c>train/grad_norm</c>: the current one when this wrapper was built.</summary>
    public MessageHub message_hub { get; }

    /// <summary>Raised with the total gradient norm (before clipping) each time clipping by norm runs.</summary>
    public event EventHandler<double>? GradNormReported;

    /// <summary>The last total gradient norm reported by clipping by norm, or null.</summary>
    public double? LastGradNorm { get; private set; }

    /// <summary>The clip_grad settings without <c>type</c> (MMEngine's <c>clip_grad_kwargs</c>), or null.</summary>
    public IReadOnlyDictionary<string, object?>? clip_grad_kwargs =>
        _clip is null ? null : (IReadOnlyDictionary<string, object?>)Py.FromPy(PyValue.NewDict(_clip.Kwargs))!;

    /// <summary>The parsed clipping setting, or null.</summary>
    public Clipping.ClipGrad? ClipGrad => _clip?.Clip;

    /// <summary>Backward passes per update.</summary>
    public int accumulative_counts => _counts.Accumulative;

    /// <summary>Backward passes so far (not updates).</summary>
    public int inner_count
    {
        get => _counts.Inner;
        protected internal set => _counts = new Accumulation.Counts(_counts.Accumulative, value, _counts.Max, _counts.Remainder);
    }

    /// <summary>Total iterations of the run, or -1 when unknown.</summary>
    public int max_counts => _counts.Max;

    /// <summary><c>max_counts % accumulative_counts</c>, or -1 before <see cref="initialize_count_status"/>.</summary>
    public int remainder_counts => _counts.Remainder;

    /// <summary>The un-multiplied base hyper-parameters as a pseudo group, when the optimizer has several groups.</summary>
    public IParamGroup? base_param_settings => _baseParamSettings;

    /// <summary>The optimizer's defaults under PyTorch's names.</summary>
    public IReadOnlyDictionary<string, object?> defaults => OptimizerGroups.Defaults(optimizer);

    /// <summary>The optimizer's groups, plus <see cref="base_param_settings"/> when present.</summary>
    public override IReadOnlyList<IParamGroup> param_groups
    {
        get
        {
            var groups = OptimizerGroups.Of(optimizer);
            return _baseParamSettings is null ? groups : groups.Append(_baseParamSettings).ToList();
        }
    }

    /// <summary>
    /// MMEngine's exact order: scale the loss by the accumulation factor, <see cref="backward"/>, and when
    /// <see cref="should_update"/>: <see cref="step()"/> then <see cref="zero_grad"/>.
    /// </summary>
    public override void update_params(Tensor loss)
    {
        var scaled = scale_loss(loss);
        backward(scaled);
        if (should_update())
        {
            step();
            zero_grad();
        }
    }

    /// <summary>Back-propagates and counts the backward pass. Overrides must count exactly once (call base or <see cref="CountBackward"/>).</summary>
    public override void backward(Tensor loss)
    {
        BeginBackward(loss);
        loss.backward();
        CountBackward();
    }

    /// <summary>
    /// What every backward does first (overrides call it): drops the gradients a failed step left
    /// behind (see <see cref="RecoverFromFailedStep"/>), and with <c>skip_nonfinite</c> records whether the loss is finite.
    /// </summary>
    protected void BeginBackward(Tensor loss)
    {
        if (_discardGradsBeforeBackward)
        {
            zero_grad();
            _discardGradsBeforeBackward = false;
        }
        RecordLoss(loss);
    }

    /// <summary>
    /// Counts one backward pass (for subclasses that back-propagate differently) and, for a
    /// data-parallel model seen by <see cref="optim_context"/>, completes its gradient
    /// synchronisation, so clipping and stepping see the ranks' averaged gradients.
    /// </summary>
    protected void CountBackward()
    {
        _distributed?.finish_backward();
        _counts = Accumulation.afterBackward(_counts);
    }

    /// <summary>The data-parallel model last given to <see cref="optim_context"/>, or null.</summary>
    protected IDistributedModule? DistributedModule => _distributed;

    /// <summary>
    /// Clips the gradients if configured, then steps the optimizer. With <c>skip_nonfinite</c>, a step
    /// whose loss or gradients hold inf/NaN is skipped first (it still counts as a step call). If
    /// clipping throws (clip_grad's <c>error_if_nonfinite</c>), the next backward clears the gradients
    /// first, so the next iteration starts clean.
    /// </summary>
    /// <remarks>Overrides must count the call exactly once (call base or <see cref="CountStep"/>), so that
    /// schedulers can check they are stepped after the optimizer.</remarks>
    public override void step()
    {
        CountStep();
        if (_guard.Enabled && !GuardAllowsStep(NonFiniteFlag())) return;
        if (_clip is not null) ClipOrRecover();
        optimizer.step();
    }

    /// <summary>
    /// <c>step()</c> calls since a scheduler was last attached, minus one (-1: none yet): MMEngine's
    /// <c>optimizer._global_step</c>, which a scheduler reads at its first step to warn when it is
    /// stepped before the optimizer.
    /// </summary>
    internal long StepCalls { get; set; } = -1;

    /// <summary>Counts one <c>step()</c> call (for subclasses that step differently).</summary>
    protected void CountStep() => StepCalls++;

    /// <summary>
    /// Clips the gradients if configured, then steps the optimizer with a closure that re-evaluates the
    /// loss (PyTorch's <c>step(closure)</c>; LBFGS needs it).
    /// </summary>
    /// <exception cref="InvalidOperationException"><c>skip_nonfinite</c> is on: it checks the gradients
    /// before a step, and a closure computes them during it.</exception>
    public virtual void step(Func<Tensor> closure)
    {
        if (_guard.Enabled)
            throw new InvalidOperationException("skip_nonfinite cannot guard step(closure): the closure computes the gradients during the step");
        CountStep();
        if (_clip is not null) ClipOrRecover();
        optimizer.step(closure);
    }

    /// <summary>Clips; when clipping throws, leaves the wrapper ready for the next iteration (<see cref="RecoverFromFailedStep"/>) and rethrows.</summary>
    protected void ClipOrRecover()
    {
        try { _clip_grad(); }
        catch (InvalidOperationException)
        {
            RecoverFromFailedStep();
            throw;
        }
    }

    /// <summary>
    /// After a step failed part way (clipping found a non-finite norm): the gradients stay as they are
    /// for inspection, and the next <see cref="backward"/> clears them first, so the next iteration does
    /// not inherit them.
    /// </summary>
    protected virtual void RecoverFromFailedStep() => _discardGradsBeforeBackward = true;

    private bool _discardGradsBeforeBackward;

    // ---------------------------------------------------------------------------------------------
    // The non-finite guard (skip_nonfinite).

    /// <summary>The <c>skip_nonfinite</c> settings (off unless given).</summary>
    public NonFiniteGuard.Settings skip_nonfinite => _guard;

    /// <summary>Steps skipped by <c>skip_nonfinite</c> so far.</summary>
    public long SkippedSteps => _skips.Total;

    /// <summary>Steps skipped in a row (0 after a step that ran).</summary>
    public int ConsecutiveSkippedSteps => _skips.Consecutive;

    /// <summary>Whether the last step was skipped by <c>skip_nonfinite</c> (see <see cref="ParamSchedulerHook.after_train_iter(IEnumerable{ParamScheduler}, OptimWrapper?, bool)"/>).</summary>
    public bool LastStepSkipped { get; private set; }

    /// <summary>Raised with the total number of skipped steps each time <c>skip_nonfinite</c> skips one.</summary>
    public event EventHandler<long>? StepSkipped;

    /// <summary>With <c>skip_nonfinite</c>: remembers whether the loss is finite, as a flag on its device (no synchronisation).</summary>
    protected void RecordLoss(Tensor loss)
    {
        if (!_guard.Enabled) return;
        using var scope = torch.NewDisposeScope();
        var flag = loss.detach().isfinite().logical_not().any().to(ScalarType.Float32);
        if (_lossNonFinite is null) _lossNonFinite = flag.MoveToOuterDisposeScope().DetachFromDisposeScope();
        else using (var one = 1.ToScalar()) _lossNonFinite.add_(flag.to(_lossNonFinite.device), one);
    }

    /// <summary>
    /// The one "is anything non-finite" flag of this step, as a float32 tensor (0 = all finite): the fused
    /// check of every gradient plus the recorded losses. A data-parallel wrapper overrides
    /// <see cref="ReduceNonFinite"/> to all-reduce it (sum or max) across ranks so that every rank decides the same.
    /// </summary>
    protected virtual Tensor? NonFiniteFlag() => Combine(GradNonFinite.Check(optimizer), TakeLossFlag());

    /// <summary>The loss flag recorded since the last step (ownership passes to the caller), or null.</summary>
    protected Tensor? TakeLossFlag()
    {
        var f = _lossNonFinite;
        _lossNonFinite = null;
        return f;
    }

    /// <summary>Sums two flags into the first one's device (either may be null; both are consumed).</summary>
    protected static Tensor? Combine(Tensor? a, Tensor? b)
    {
        if (a is null) return b;
        if (b is null) return a;
        using (b) using (var one = 1.ToScalar()) a.add_(b.to(a.device), one);
        return a;
    }

    /// <summary>
    /// The seam for distributed training on the device: reduce this rank's non-finite flag tensor across
    /// ranks before it is read (identity here). Must return a tensor whose value is non-zero when any rank
    /// saw inf/NaN. With an <see cref="IDistributedModule"/> model, the host-side decision is also agreed
    /// through its <c>any_rank</c>, so every rank skips or steps together.
    /// </summary>
    protected virtual Tensor ReduceNonFinite(Tensor flag) => flag;

    /// <summary>Reads the flag (the one synchronisation), asks the core, and records, logs and reports a skip.</summary>
    /// <exception cref="NonFiniteTrainingException">More than <c>max_consecutive</c> skips in a row.</exception>
    protected bool GuardAllowsStep(Tensor? flag)
    {
        var nonFinite = false;
        if (flag is not null)
        {
            var reduced = ReduceNonFinite(flag);
            nonFinite = reduced.item<float>() != 0f;
            if (!ReferenceEquals(reduced, flag)) reduced.Dispose();
            flag.Dispose();
        }
        // A data-parallel model: every rank decides the same (called by every rank, every guarded step).
        if (DistributedModule is { } distributed) nonFinite = distributed.any_rank(nonFinite);
        var (decision, counts) = NonFiniteGuard.decide(_guard, nonFinite, _skips).ToValueTuple();
        _skips = counts;
        LastStepSkipped = !decision.IsStep;
        if (decision.IsStep) return true;
        _logger.LogWarning("{Message}", NonFiniteGuard.skippedMessage(counts));
        message_hub.update_scalar("train/skipped_steps", counts.Total);
        StepSkipped?.Invoke(this, counts.Total);
        if (decision is NonFiniteGuard.Decision.Fail fail) throw new NonFiniteTrainingException(fail.Item);
        return false;
    }

    private static NonFiniteGuard.Settings ParseGuard(object? value) => value switch
    {
        null => NonFiniteGuard.off,
        NonFiniteGuard.Settings s => s,
        _ => ParseGuardValue(Py.ToPy(value)),
    };

    private static NonFiniteGuard.Settings ParseGuardValue(PyValue value)
    {
        var r = NonFiniteGuard.parse(value);
        return r.IsOk ? r.ResultValue : throw Raise.From(RuleErrorOf(r.ErrorValue), "skip_nonfinite");
    }

    private static RuleError RuleErrorOf(Microsoft.FSharp.Collections.FSharpList<Tuple<string, RuleError>> problems)
    {
        var (key, e) = problems.Head;
        return key == "" ? e : new RuleError(e.Kind, $"skip_nonfinite.{key}: {e.Message}");
    }

    /// <summary>Clears the gradients: sets them to null (PyTorch 2's default), or zeroes them.</summary>
    public override void zero_grad(bool set_to_none = true)
    {
        if (!set_to_none) { optimizer.zero_grad(); return; }
        foreach (var group in OptimizerGroups.Of(optimizer))
            foreach (var p in group.Params)
                if (p.grad is not null) p.grad = null;
    }

    /// <summary>
    /// The scope to run the forward pass in: on iterations that will not update, a
    /// <see cref="INoSyncModule"/> model skips gradient synchronisation. A
    /// <see cref="IDistributedModule"/> model is remembered, and its gradients are synchronised
    /// after the next backward.
    /// </summary>
    public virtual IDisposable optim_context(nn.Module model)
    {
        _distributed = model as IDistributedModule;
        if (!should_sync() && model is INoSyncModule noSync) return noSync.no_sync();
        return EmptyScope.Instance;
    }

    /// <summary>
    /// Tells the wrapper where training starts and ends (in iterations), so that the last
    /// <c>max_counts % accumulative_counts</c> iterations are scaled by that remainder and still update.
    /// Warns when resuming mid-accumulation and when accumulating over a model with BatchNorm.
    /// </summary>
    public void initialize_count_status(nn.Module model, int init_counts, int max_counts)
    {
        var (counts, warnings) = Accumulation.initialize(ContainsBatchNorm(model), init_counts, max_counts, _counts).ToValueTuple();
        _counts = counts;
        foreach (var w in warnings) _logger.LogWarning("{Message}", Accumulation.message(w));
    }

    /// <summary>Whether the last backward completes an accumulation (time to step).</summary>
    public bool should_update() => Accumulation.shouldUpdate(_counts);

    /// <summary>Whether the coming backward should synchronise gradients.</summary>
    public bool should_sync() => Accumulation.shouldSync(_counts);

    /// <summary>The loss divided by the accumulation factor for the coming backward.</summary>
    /// <exception cref="OptimAssertionException">Training went past the known end of the run.</exception>
    public Tensor scale_loss(Tensor loss)
    {
        var factor = Raise.Unwrap(Accumulation.lossFactor(_counts), runtime: true);
        using var divisor = factor.ToScalar(); // kept alive through the native call (see PerTensor)
        return loss / divisor;
    }

    /// <inheritdoc />
    public override HyperParameterValues get_lr()
    {
        var result = new HyperParameterValues();
        if (_baseParamSettings is not null) result.Add("base_lr", new[] { Py.ToPy(_baseParamSettings["lr"]) });
        result.Add("lr", OptimizerGroups.Of(optimizer).Select(g => Py.ToPy(g["lr"])));
        return result;
    }

    /// <inheritdoc />
    public override HyperParameterValues get_momentum()
    {
        var result = new HyperParameterValues();
        result.Add("momentum", OptimizerGroups.Of(optimizer).Select(MomentumOf));
        return result;
    }

    /// <summary>MMEngine's momentum of a group: <c>momentum</c>, else <c>betas[0]</c>, else 0.</summary>
    internal static PyValue MomentumOf(IParamGroup group) =>
        Optimizers.momentumOf(FuncConvert.FromFunc<string, FSharpOption<PyValue>>(key =>
            group.ContainsKey(key) ? FSharpOption<PyValue>.Some(Py.ToPy(group[key])) : FSharpOption<PyValue>.None));

    /// <summary>
    /// The optimizer's state, its groups' hyper-parameters (extra keys included), the base group, and —
    /// unlike MMEngine — the accumulation counters, so a resumed run continues mid-accumulation exactly.
    /// </summary>
    public virtual OptimStateDict state_dict() => OptimStateDict.Capture(this);

    /// <summary>
    /// Restores a state from <see cref="state_dict"/>. The caller's object is not modified.
    /// </summary>
    /// <exception cref="StateDictException">The state does not fit (group count, parameter shapes, corrupt
    /// data); the wrapper is left exactly as it was.</exception>
    public virtual void load_state_dict(OptimStateDict state) => state.ApplyTo(this);

    internal (int Inner, int Max) Counters => (_counts.Inner, _counts.Max);

    /// <summary>Checks restored counters with the core's rule; throws naming the counter.</summary>
    internal void CheckCounters(long inner, long max, string path)
    {
        var r = Accumulation.restore(inner, max, _counts);
        if (r.IsError)
            throw new CheckpointException(path + (r.ErrorValue.Message.StartsWith("max_counts") ? "max_counts" : "inner_count"), r.ErrorValue.Message);
    }

    internal void RestoreCounters(int inner, int max) => _counts = Raise.Unwrap(Accumulation.restore(inner, max, _counts));

    /// <summary>Every check of a state against this wrapper, without changing anything (subclasses add theirs).</summary>
    internal virtual void ValidateState(OptimStateDict state, string path) => state.Validate(this, path);

    internal void ReplaceBaseParamSettings(PlainParamGroup? group) => _baseParamSettings = group;

    /// <summary>MMEngine's repr: the wrapper type, the accumulation count and PyTorch's optimizer repr.</summary>
    public override string ToString() =>
        $"Type: {GetType().Name}\n_accumulative_counts: {_counts.Accumulative}\noptimizer: \n{OptimizerRepr(optimizer)}\n";

    /// <summary>PyTorch's <c>repr(optimizer)</c>: each group's keys sorted, values in Python's <c>str()</c>.</summary>
    public static string OptimizerRepr(Optimizer optimizer)
    {
        var sb = new System.Text.StringBuilder(OptimizerGroups.PyTorchName(optimizer) + " (");
        var groups = OptimizerGroups.Of(optimizer);
        for (int i = 0; i < groups.Count; i++)
        {
            sb.Append('\n').Append("Parameter Group ").Append(i).Append('\n');
            foreach (var key in groups[i].Keys.OrderBy(k => k, StringComparer.Ordinal))
                sb.Append("    ").Append(key).Append(": ").Append(PyFormat.str(Py.ToPy(groups[i][key]))).Append('\n');
        }
        return sb.Append(')').ToString();
    }

    /// <summary>
    /// Clips the gradients of the optimizer's parameters that require grad and have one, as
    /// <c>torch.nn.utils.clip_grad_norm_</c> / <c>clip_grad_value_</c> do; by norm, the total norm is
    /// reported to <see cref="message_hub"/> as <c>train/grad_norm</c>, to <see cref="GradNormReported"/>
    /// and <see cref="LastGradNorm"/>.
    /// </summary>
    protected virtual void _clip_grad()
    {
        var grads = OptimizerGroups.Of(optimizer).SelectMany(g => g.Params)
            .Where(p => p.requires_grad && p.grad is not null).Select(p => p.grad!).ToList();
        if (grads.Count == 0 || _clip is null) return;
        if (_clip.Clip is Clipping.ClipGrad.Value byValue)
        {
            using var low = (-byValue.Item.ClipValue).ToScalar();
            using var high = byValue.Item.ClipValue.ToScalar();
            foreach (var g in grads) g.clamp_(low, high);
            return;
        }
        var byNorm = ((Clipping.ClipGrad.Norm)_clip.Clip).Item;
        var total = GradClipping.ClipByNorm(grads, byNorm);
        LastGradNorm = total;
        message_hub.update_scalar("train/grad_norm", total);
        GradNormReported?.Invoke(this, total);
    }

    private static bool ContainsBatchNorm(nn.Module module) =>
        module is BatchNorm || module.named_children().Any(c => ContainsBatchNorm(c.module));

    private sealed class EmptyScope : IDisposable
    {
        public static readonly EmptyScope Instance = new();
        public void Dispose() { }
    }
}

/// <summary>More consecutive non-finite steps than <c>skip_nonfinite.max_consecutive</c> allows: training is diverging.</summary>
public class NonFiniteTrainingException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public NonFiniteTrainingException(string message) : base(message) { }
}

/// <summary>The fused inf/NaN check of an optimizer's gradients (libtorch's AMP kernel with an inverse scale of 1, which leaves every value bit-identical).</summary>
internal static class GradNonFinite
{
    /// <summary>One float32 flag on the first gradient's device (non-zero when any gradient holds inf/NaN), or null when there are no gradients. No synchronisation.</summary>
    public static Tensor? Check(Optimizer optimizer)
    {
        var groups = new Dictionary<(DeviceType, int, ScalarType), List<Tensor>>();
        var wrappers = new List<Tensor>();
        try
        {
            foreach (var p in optimizer.parameters())
            {
                var g = p.grad;
                if (g is null) continue;
                wrappers.Add(g);
                var key = (g.device_type, g.device_index, g.dtype);
                if (!groups.TryGetValue(key, out var list)) groups[key] = list = new List<Tensor>();
                list.Add(g);
            }
            if (groups.Count == 0) return null;
            Tensor? total = null;
            foreach (var ((type, index, _), list) in groups)
            {
                var device = new Device(type, index);
                var found = torch.zeros(Array.Empty<long>(), ScalarType.Float32, device).DetachFromDisposeScope();
                using (var one = torch.ones(Array.Empty<long>(), ScalarType.Float32, device))
                    AmpNative.NonFiniteCheckAndUnscale(list, found, one);
                if (total is null) total = found;
                else using (found) using (var one = 1.ToScalar()) total.add_(found.to(total.device), one);
            }
            return total;
        }
        finally
        {
            foreach (var g in wrappers) g.Dispose();   // the wrappers only; the gradients live on
        }
    }
}

/// <summary>PyTorch's clip-by-norm on TorchSharp tensors (the one device sync is reading the norm).</summary>
internal static class GradClipping
{
    /// <summary>Scales every gradient by min(1, max_norm / (total + 1e-6)) and returns the total norm.</summary>
    public static double ClipByNorm(IReadOnlyList<Tensor> grads, Clipping.ByNorm settings)
    {
        using var scope = torch.NewDisposeScope();
        var device = grads[0].device;
        Tensor total;
        if (settings.NormType.IsInfinity)
        {
            var maxes = grads.Select(g => g.detach().abs().max().to(device)).ToList();
            total = maxes.Count == 1 ? maxes[0] : torch.stack(maxes).max();
        }
        else
        {
            var p = ((Clipping.NormOrder.P)settings.NormType).Item;
            var norms = grads.Select(g => torch.linalg.vector_norm(g.detach(), p).to(device)).ToList();
            total = torch.linalg.vector_norm(torch.stack(norms), p);
        }
        if (settings.ErrorIfNonfinite && (total.isnan() | total.isinf()).item<bool>())
            throw new InvalidOperationException(
                $"The total norm of order {PyFormat.@float(settings.NormType.IsInfinity ? double.PositiveInfinity : ((Clipping.NormOrder.P)settings.NormType).Item)} for gradients from `parameters` is non-finite, so it cannot be clipped. To disable this error and scale the gradients by the non-finite norm anyway, set `error_if_nonfinite=False`");
        // Python's `max_norm / tensor` is reciprocal-then-multiply; do the same for the same bits.
        using var epsilon = 1e-6.ToScalar();
        using var maxNorm = settings.MaxNorm.ToScalar();
        using var unitAlpha = 1.ToScalar();
        using var one = 1.0.ToScalar();
        var coef = total.add(epsilon, unitAlpha).reciprocal().mul(maxNorm).clamp_max(one);
        foreach (var g in grads) g.mul_(coef.to(g.device));
        return total.to(torch.float64).item<double>();
    }
}
