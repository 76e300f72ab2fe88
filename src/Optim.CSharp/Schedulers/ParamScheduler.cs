using Microsoft.Extensions.Logging;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Optim.Core;
using Optimizer = TorchSharp.torch.optim.Optimizer;
using Group = Microsoft.FSharp.Collections.FSharpList<System.Tuple<string, Optim.Core.PyValue>>;

namespace Optim;

/// <summary>
/// What a scheduler acts on: an <see cref="OptimWrapper"/> (its <c>param_groups</c>, including the
/// <c>base_param_settings</c> pseudo group, so <c>base_lr</c> follows the schedule) or a bare
/// TorchSharp optimizer (its groups through <see cref="OptimizerGroups.Of"/>). Both convert
/// implicitly, so <c>new CosineAnnealingLR(wrapper, T_max: 100)</c> and
/// <c>new CosineAnnealingLR(sgd, T_max: 100)</c> both work. A member of an OptimWrapperDict is an
/// <see cref="OptimWrapper"/>.
/// </summary>
public sealed class SchedulerTarget
{
    private readonly OptimWrapper? _wrapper;
    private readonly Optimizer? _optimizer;

    private SchedulerTarget(OptimWrapper? wrapper, Optimizer? optimizer)
    {
        _wrapper = wrapper;
        _optimizer = optimizer;
    }

    /// <summary>A logger where a scheduler on this target logs: the wrapper's factory (for a bare optimizer, the fallback).</summary>
    internal ILogger CreateLogger(string category) => _wrapper?.CreateLogger(category) ?? OptimLogging.CreateLogger(category);

    /// <summary>Schedules a wrapper's groups (its base pseudo group included).</summary>
    public static SchedulerTarget Of(OptimWrapper wrapper) =>
        new(wrapper ?? throw new ArgumentNullException(nameof(wrapper)), null);

    /// <summary>Schedules a bare TorchSharp optimizer's groups.</summary>
    public static SchedulerTarget Of(Optimizer optimizer) =>
        new(null, optimizer ?? throw new ArgumentNullException(nameof(optimizer)));

    /// <summary>
    /// Schedules whatever <paramref name="optimizer"/> is, when its type is known only at run time (a
    /// config's <c>default_args</c>, an F# script): an <see cref="OptimWrapper"/> or a TorchSharp optimizer.
    /// </summary>
    /// <exception cref="ParamSchedulerException">Anything else (MMEngine's TypeError "``optimizer`` should be an Optimizer,but got str").</exception>
    public static SchedulerTarget FromObject(object? optimizer) => optimizer switch
    {
        OptimWrapper w => Of(w),
        Optimizer o => Of(o),
        _ => throw new ParamSchedulerException("TypeError", "``optimizer`` should be an Optimizer,but got " + PythonTypeName(optimizer), ""),
    };

    private static string PythonTypeName(object? value) => value switch
    {
        null => "NoneType",
        string => "str",
        bool => "bool",
        int or long => "int",
        float or double => "float",
        _ => value.GetType().Name,
    };

    /// <summary>A wrapper as a scheduler target.</summary>
    public static implicit operator SchedulerTarget(OptimWrapper wrapper) => Of(wrapper);

    /// <summary>A TorchSharp optimizer as a scheduler target.</summary>
    public static implicit operator SchedulerTarget(Optimizer optimizer) => Of(optimizer);

    /// <summary>The wrapper or optimizer (MMEngine's <c>scheduler.optimizer</c>).</summary>
    public object Inner => (object?)_wrapper ?? _optimizer!;

    private Optimizer RawOptimizer => _wrapper?.optimizer ?? _optimizer!;

    /// <summary>Forgets the optimizer steps seen so far (a scheduler is being attached).</summary>
    internal void ResetStepCount()
    {
        if (_wrapper is not null) _wrapper.StepCalls = -1;
    }

    /// <summary>
    /// The optimizer steps a scheduler can see: a wrapper counts its <c>step()</c> calls; a bare
    /// TorchSharp optimizer's cannot be intercepted. A wrapper whose <c>step()</c> is overridden outside
    /// this library may bypass the count.
    /// </summary>
    internal Schedules.OptimizerSteps ObservedSteps()
    {
        if (_wrapper is null) return Schedules.OptimizerSteps.Unobserved;
        var declaring = _wrapper.GetType().GetMethod(nameof(OptimWrapper.step), Type.EmptyTypes)?.DeclaringType;
        var overridden = declaring is not null && declaring.Assembly != typeof(OptimWrapper).Assembly;
        return Schedules.OptimizerSteps.NewCounted(_wrapper.StepCalls, overridden);
    }

    /// <summary>The groups a scheduler writes: the optimizer's, then the wrapper's pseudo group if any.</summary>
    public IReadOnlyList<IParamGroup> param_groups => _wrapper?.param_groups ?? OptimizerGroups.Of(_optimizer!);

    /// <summary>The (inner) optimizer's defaults, under PyTorch's names.</summary>
    public IReadOnlyDictionary<string, object?> defaults => OptimizerGroups.Defaults(RawOptimizer);

    internal Schedules.Target CoreTarget() =>
        new(Py.ToPyDict(defaults), OptimizerGroups.Of(RawOptimizer).Count);
}

/// <summary>
/// A scheduler's configuration or construction was rejected, as MMEngine would reject it (Python's
/// <c>TypeError</c>, <c>ValueError</c>, <c>AssertionError</c>, <c>AttributeError</c>). <see cref="Path"/>
/// locates the value in a <c>param_scheduler</c> config (<c>param_scheduler[1].max_lr</c>).
/// </summary>
public class ParamSchedulerException : ArgumentException
{
    /// <summary>Creates the exception from the core's error.</summary>
    public ParamSchedulerException(string pythonType, string pythonMessage, string path)
        : base((path.Length > 0 ? path + ": " : "") + pythonMessage)
    {
        PythonType = pythonType;
        PythonMessage = pythonMessage;
        Path = path;
    }

    /// <summary>The exception MMEngine raises here: <c>TypeError</c>, <c>ValueError</c>, ...</summary>
    public string PythonType { get; }

    /// <summary>MMEngine's message (Python's <c>str(exc)</c>).</summary>
    public string PythonMessage { get; }

    /// <summary>Where in the config ("" when the scheduler was built in code).</summary>
    public string Path { get; }
}

/// <summary>Turns the core's scheduler errors into .NET exceptions.</summary>
internal static class ScheduleRaise
{
    /// <summary>
    /// KeyError → <see cref="KeyNotFoundException"/>. While building: everything else →
    /// <see cref="ParamSchedulerException"/>. While stepping: ZeroDivisionError →
    /// <see cref="DivideByZeroException"/>, TypeError → <see cref="ArgumentException"/>, ValueError and
    /// the rest → <see cref="InvalidOperationException"/>.
    /// </summary>
    public static Exception From(Schedules.ScheduleError e, bool stepping)
    {
        var text = Schedules.ScheduleErrorModule.describe(e);
        if (e.Type == "KeyError") return new KeyNotFoundException(text);
        if (!stepping) return new ParamSchedulerException(e.Type, e.Message, e.Path);
        return e.Type switch
        {
            "ZeroDivisionError" => new DivideByZeroException(text),
            "TypeError" => new ArgumentException(text),
            _ => new InvalidOperationException(text),
        };
    }

    public static T Unwrap<T>(FSharpResult<T, Schedules.ScheduleError> r, bool stepping) =>
        r.IsOk ? r.ResultValue : throw From(r.ErrorValue, stepping);
}

/// <summary>
/// MMEngine's <c>_ParamScheduler</c>: adjusts one hyper-parameter (<see cref="param_name"/>) of every
/// param group each time <see cref="step()"/> is called, between <see cref="begin"/> and
/// <see cref="end"/> (in iterations or epochs, see <see cref="by_epoch"/>). The rule — MMEngine's
/// chainable recurrence — lives in <c>Optim.Core.Schedules</c>; this class copies group values in and
/// out. Several schedulers on one optimizer compose in the order they are stepped. Like MMEngine's,
/// the constructor records <c>initial_{param}</c> in every group and performs the first step.
/// </summary>
public abstract class ParamScheduler
{
    private readonly SchedulerTarget _target;
    private readonly ILogger _logger;
    private Schedules.State _state;

    /// <summary>Attaches configured settings to a target (MMEngine's constructor).</summary>
    /// <exception cref="ParamSchedulerException">The optimizer does not fit the settings (e.g. a OneCycle <c>eta_max</c> list of the wrong length).</exception>
    /// <exception cref="KeyNotFoundException">A group lacks the parameter, or <c>initial_{param}</c> on a resume.</exception>
    protected ParamScheduler(SchedulerTarget optimizer, Schedules.Scheduler settings)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        ArgumentNullException.ThrowIfNull(settings);
        _target = optimizer;
        _logger = optimizer.CreateLogger(GetType().Name);
        var groups = optimizer.param_groups;
        // MMEngine meets a missing key as a KeyError inside its constructor; say which key, where, and what is close.
        // ("momentum" is MMEngine's alias of betas[0] on Adam-like optimizers; the core checks it.)
        var missingIn = settings.ParamName == "momentum" ? default
            : groups.Select((g, i) => (g, i)).FirstOrDefault(x => !x.g.ContainsKey(settings.ParamName));
        if (missingIn.g is not null)
            throw new KeyNotFoundException(
                $"param_name: '{settings.ParamName}' is not a key of param group {missingIn.i} (its keys: {string.Join(", ", missingIn.g.Keys)}).{Suggest.didYouMean(settings.ParamName, Microsoft.FSharp.Collections.ListModule.OfSeq(missingIn.g.Keys))}");
        var outcome = ScheduleRaise.Unwrap(Schedules.attach(settings, optimizer.CoreTarget(), ToCore(groups)), stepping: false);
        Apply(outcome, groups);
        _state = outcome.State;
        // MMEngine counts the optimizer's steps from here (ReduceOnPlateau does not count them).
        if (!Schedules.needsMetrics(settings)) optimizer.ResetStepCount();
    }

    /// <summary>A keyword argument left out, so that MMEngine's default applies.</summary>
    protected static readonly object Omitted = new();

    /// <summary>Validates MMEngine-style keyword arguments for a registered type (what the public constructors call).</summary>
    protected static Schedules.Scheduler Configure(string typeName, params (string Key, object? Value)[] kwargs)
    {
        var cfg = new List<Tuple<string, PyValue>> { Tuple.Create("type", PyValue.NewStr(typeName)) };
        cfg.AddRange(kwargs.Where(kv => !ReferenceEquals(kv.Value, Omitted)).Select(kv => Tuple.Create(kv.Key, Py.ToPy(kv.Value))));
        var parsed = ScheduleConfig.parse(ScheduleConfig.noContext, "", PyValue.NewDict(ListModule.OfSeq(cfg)));
        return ScheduleRaise.Unwrap(parsed, stepping: false);
    }

    /// <summary>MMEngine's <c>INF</c> (10**9), the default <c>end</c>.</summary>
    public const long INF = Schedules.INF;

    /// <summary>The wrapper or optimizer scheduled.</summary>
    public object optimizer => _target.Inner;

    /// <summary>The group key adjusted (<c>lr</c>, <c>momentum</c>, ...).</summary>
    public string param_name => _state.Scheduler.ParamName;

    /// <summary>First step (inclusive) at which the value changes.</summary>
    public long begin => _state.Scheduler.Begin;

    /// <summary>Step (exclusive) after which the value no longer changes.</summary>
    public long end => _state.Scheduler.End;

    /// <summary>Steps taken inside [begin, end), minus one (0 right after construction when begin is 0).</summary>
    public long last_step => _state.LastStep;

    /// <summary>Whether the unit is the epoch (stepped after each epoch) or the iteration.</summary>
    public bool by_epoch => _state.Scheduler.ByEpoch;

    /// <summary>Whether each change is logged.</summary>
    public bool verbose => _state.Scheduler.Verbose;

    /// <summary>Each group's <c>initial_{param}</c> when attached (empty for ReduceOnPlateau).</summary>
    public IReadOnlyList<double> base_values => _state.BaseValues.ToList();

    /// <summary>True for ReduceOnPlateau schedulers: they are stepped with validation metrics.</summary>
    public bool need_val_args => Schedules.needsMetrics(_state.Scheduler);

    /// <summary>Calls to <see cref="step()"/> so far (MMEngine's <c>_global_step</c>).</summary>
    public long GlobalStep => _state.GlobalStep;

    /// <summary>The registered type name (<c>LinearLR</c>, ...).</summary>
    public string TypeName => _state.Scheduler.TypeName;

    /// <summary>The scheduler's whole state as immutable data (settings and counters).</summary>
    public Schedules.State State => _state;

    /// <summary>Every group's value after the last step (the pseudo group last).</summary>
    public IReadOnlyList<double> get_last_value() => _state.LastValue.ToList();

    /// <summary>
    /// Advances one step (after an iteration, or an epoch for <see cref="by_epoch"/> schedulers). Call it
    /// after the optimizer's step: on a wrapper, the first call after construction logs MMEngine's
    /// warning when the wrapper has not stepped since (or when its <c>step()</c> is overridden so that
    /// its calls cannot be counted). A bare TorchSharp optimizer's steps cannot be seen, so the order is
    /// not checked there.
    /// </summary>
    /// <exception cref="InvalidOperationException">OneCycle stepped past its total steps (MMEngine's ValueError).</exception>
    /// <exception cref="DivideByZeroException">MMEngine's arithmetic divides by zero here (e.g. LinearLR with start_factor 0).</exception>
    public void step() => Step(null);

    /// <summary>
    /// ReduceOnPlateau's <c>step(metrics)</c>: with metrics, judges the monitored value; without, only
    /// counts. Other schedulers take no metrics (<see cref="ArgumentException"/>, Python's TypeError).
    /// </summary>
    /// <exception cref="KeyNotFoundException">The monitored key is missing from the metrics.</exception>
    public void step(IReadOnlyDictionary<string, double>? metrics) => Step(metrics);

    private void Step(IReadOnlyDictionary<string, double>? metrics)
    {
        var warning = Schedules.orderWarning(_state, _target.ObservedSteps());
        if (warning is not null) _logger.LogWarning("{Message}", warning.Value);
        var groups = _target.param_groups;
        var coreMetrics = metrics is null
            ? FSharpOption<FSharpList<Tuple<string, double>>>.None
            : FSharpOption<FSharpList<Tuple<string, double>>>.Some(ListModule.OfSeq(metrics.Select(kv => Tuple.Create(kv.Key, kv.Value))));
        var outcome = ScheduleRaise.Unwrap(Schedules.step(_state, coreMetrics, ToCore(groups)), stepping: true);
        Apply(outcome, groups);
        _state = outcome.State;
    }

    /// <summary>MMEngine's <c>state_dict()</c>: every attribute but the optimizer, under MMEngine's names.</summary>
    public OrderedDictionary<string, object?> state_dict() =>
        (OrderedDictionary<string, object?>)Py.FromPy(ScheduleState.toPy(_state))!;

    /// <summary>
    /// MMEngine's <c>load_state_dict(sd)</c>: the given entries replace the scheduler's (<c>__dict__.update</c>).
    /// Unlike MMEngine, a state saved from another kind of scheduler (a LinearLR state into a
    /// CosineAnnealingLR) or for another parameter (<c>momentum</c> into an <c>lr</c> schedule) is refused.
    /// Nothing changes when it throws.
    /// </summary>
    /// <exception cref="ArgumentException">An entry has the wrong type, or the state is another scheduler's.</exception>
    public void load_state_dict(IEnumerable<KeyValuePair<string, object?>> state_dict)
    {
        ArgumentNullException.ThrowIfNull(state_dict);
        _state = CheckState(state_dict, "");
    }

    /// <summary>The state <paramref name="state_dict"/> would give this scheduler (nothing changes), or an exception.</summary>
    internal Schedules.State CheckState(IEnumerable<KeyValuePair<string, object?>> state_dict, string path)
    {
        var loaded = ScheduleRaise.Unwrap(ScheduleState.load(_state, Py.ToPy(state_dict)), stepping: true);
        var fit = Checkpointing.checkScheduler(path, loaded.Scheduler.TypeName, loaded.Scheduler.ParamName, TypeName, param_name);
        if (fit.IsError) throw new CheckpointException(fit.ErrorValue.Path, fit.ErrorValue.Message);
        return loaded;
    }

    /// <summary>Replaces the state with one returned by <see cref="CheckState"/>.</summary>
    internal void RestoreState(Schedules.State state) => _state = state;

    /// <inheritdoc />
    public override string ToString() => $"{TypeName}(param_name={param_name}, begin={begin}, end={end}, last_step={last_step}, by_epoch={by_epoch})";

    // Every key with a Python-like value (an extra key holding some other .NET object is not the
    // scheduler's business and is left out).
    private static FSharpList<Group> ToCore(IReadOnlyList<IParamGroup> groups) =>
        ListModule.OfSeq(groups.Select(g => ListModule.OfSeq(g.Keys.SelectMany(k => Convertible(k, g[k])))));

    private static IEnumerable<Tuple<string, PyValue>> Convertible(string key, object? value)
    {
        PyValue converted;
        try { converted = Py.ToPy(value); }
        catch (ArgumentException) { yield break; }
        yield return Tuple.Create(key, converted);
    }

    private void Apply(Schedules.Outcome outcome, IReadOnlyList<IParamGroup> groups)
    {
        foreach (var w in outcome.Writes) groups[w.Group][w.Key] = Py.FromPy(w.Value);
        foreach (var line in outcome.Logs) _logger.LogInformation("{Message}", line);
    }
}

/// <summary>
/// MMEngine's <c>ParamSchedulerHook</c>: who steps which scheduler when. Iteration-based schedulers
/// after every training iteration, epoch-based ones after every training epoch, and the
/// ReduceOnPlateau ones with the validation metrics after every validation epoch.
/// </summary>
public static class ParamSchedulerHook
{
    /// <summary>After a training iteration: steps every scheduler with <c>by_epoch == false</c>, in order.</summary>
    public static void after_train_iter(IEnumerable<ParamScheduler> schedulers)
    {
        foreach (var s in schedulers) if (!s.by_epoch) s.step();
    }

    /// <summary>
    /// As <see cref="after_train_iter(IEnumerable{ParamScheduler})"/>; with
    /// <paramref name="advance_on_skipped_step"/> false (beyond MMEngine, whose default is to advance),
    /// nothing steps when <paramref name="optim_wrapper"/>'s last step was skipped by <c>skip_nonfinite</c>,
    /// so a skipped step does not consume a step of the schedule.
    /// </summary>
    public static void after_train_iter(IEnumerable<ParamScheduler> schedulers, OptimWrapper? optim_wrapper, bool advance_on_skipped_step = true)
    {
        if (!advance_on_skipped_step && optim_wrapper is { LastStepSkipped: true }) return;
        after_train_iter(schedulers);
    }

    /// <summary>After a training epoch: steps every scheduler with <c>by_epoch == true</c>, in order.</summary>
    public static void after_train_epoch(IEnumerable<ParamScheduler> schedulers)
    {
        foreach (var s in schedulers) if (s.by_epoch) s.step();
    }

    /// <summary>After a validation epoch: steps the epoch-based schedulers that need metrics, with them.</summary>
    public static void after_val_epoch(IEnumerable<ParamScheduler> schedulers, IReadOnlyDictionary<string, double>? metrics)
    {
        if (metrics is null) return;
        foreach (var s in schedulers) if (s.by_epoch && s.need_val_args) s.step(metrics);
    }
}
