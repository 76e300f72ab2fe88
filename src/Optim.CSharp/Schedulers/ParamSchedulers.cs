using Microsoft.FSharp.Core;
using Optim.Core;

namespace Optim;

/// <summary>
/// MMEngine's <c>PARAM_SCHEDULERS</c> registry: every scheduler class by type name, and building
/// schedulers from <c>param_scheduler</c> configs with MMEngine's key names
/// (<c>{"type": "LinearLR", "start_factor": 0.1, "by_epoch": false, "begin": 0, "end": 500}</c>),
/// including <c>convert_to_iter_based</c>. Errors name the JSON path of the offending value
/// (<c>param_scheduler[1].max_lr</c>) and carry MMEngine's exception type and message.
/// </summary>
public static partial class PARAM_SCHEDULERS
{
    private static readonly object Gate = new();
    private static readonly List<(string Name, Func<SchedulerTarget, Schedules.Scheduler, ParamScheduler> Create)> BuiltInTable = BuiltIns().ToList();
    private static readonly OrderedDictionary<string, Func<PyValue, SchedulerTarget, ScheduleConfig.Context, string, ParamScheduler>> Custom = new();

    /// <summary>Every registered name: the built-in LR, momentum and generic schedulers, then custom ones.</summary>
    public static IReadOnlyList<string> names
    {
        get { lock (Gate) return BuiltInTable.Select(e => e.Name).Concat(Custom.Keys).ToList(); }
    }

    /// <summary>Whether a type name is registered.</summary>
    public static bool Contains(string name) => names.Contains(name);

    /// <summary>
    /// Registers a custom scheduler type: <paramref name="factory"/> receives the entry's config (a
    /// PyValue dict, <c>type</c> included) and the target, and builds the scheduler.
    /// </summary>
    /// <exception cref="ArgumentException">The name is taken and <paramref name="force"/> is false (MMEngine's KeyError).</exception>
    public static void register_module(string name, Func<PyValue, SchedulerTarget, ParamScheduler> factory, bool force = false)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(factory);
        lock (Gate)
        {
            if (!force && (Custom.ContainsKey(name) || BuiltInTable.Any(e => e.Name == name)))
                throw new ArgumentException($"{name} is already registered in parameter scheduler", nameof(name));
            if (force) BuiltInTable.RemoveAll(e => e.Name == name);
            Custom[name] = (cfg, target, _, _) => factory(cfg, target);
        }
    }

    /// <summary>
    /// Builds one scheduler from its config (<c>PARAM_SCHEDULERS.build(cfg, default_args=dict(optimizer=..., epoch_length=...))</c>).
    /// </summary>
    /// <param name="cfg">A dict with <c>type</c> and MMEngine's keyword arguments.</param>
    /// <param name="optimizer">What to schedule.</param>
    /// <param name="epoch_length">Iterations per epoch, needed by <c>convert_to_iter_based</c>.</param>
    /// <exception cref="ParamSchedulerException">The config is rejected; <see cref="ParamSchedulerException.Path"/> says where.</exception>
    /// <exception cref="KeyNotFoundException">An unknown type (MMEngine's KeyError).</exception>
    public static ParamScheduler build(IReadOnlyDictionary<string, object?> cfg, SchedulerTarget optimizer, long? epoch_length = null) =>
        Build(Py.ToPy(cfg), optimizer, Context(epoch_length), "param_scheduler");

    /// <summary>Builds one scheduler from a PyValue config.</summary>
    public static ParamScheduler build(PyValue cfg, SchedulerTarget optimizer, long? epoch_length = null) =>
        Build(cfg, optimizer, Context(epoch_length), "param_scheduler");

    /// <summary>
    /// Builds a <c>param_scheduler</c> setting — one dict or a list of dicts — in order (they compose in
    /// that order). Each entry's errors are located as <c>param_scheduler[i]...</c>.
    /// </summary>
    /// <param name="json">JSON text of the setting.</param>
    /// <param name="optimizer">What to schedule.</param>
    /// <param name="epoch_length">Iterations per epoch, for <c>convert_to_iter_based</c>.</param>
    /// <param name="max_epochs">With <paramref name="max_iters"/>: MMEngine's Runner default for a missing <c>end</c>.</param>
    /// <param name="max_iters">See <paramref name="max_epochs"/>.</param>
    public static List<ParamScheduler> build_list(string json, SchedulerTarget optimizer, long? epoch_length = null, long? max_epochs = null, long? max_iters = null)
    {
        var parsed = PyJson.parse(json);
        if (parsed.IsError) throw new ParamSchedulerException("ValueError", "not valid JSON: " + parsed.ErrorValue, "param_scheduler");
        return build_list(parsed.ResultValue, optimizer, epoch_length, max_epochs, max_iters);
    }

    /// <summary>Builds a <c>param_scheduler</c> setting given as a PyValue (one dict or a list).</summary>
    public static List<ParamScheduler> build_list(PyValue cfg, SchedulerTarget optimizer, long? epoch_length = null, long? max_epochs = null, long? max_iters = null)
    {
        var ctx = Context(epoch_length, max_epochs, max_iters);
        return cfg switch
        {
            PyValue.List l => l.Item.Select((c, i) => Build(c, optimizer, ctx, $"param_scheduler[{i}]")).ToList(),
            PyValue.Tuple t => t.Item.Select((c, i) => Build(c, optimizer, ctx, $"param_scheduler[{i}]")).ToList(),
            _ => new List<ParamScheduler> { Build(cfg, optimizer, ctx, "param_scheduler") },
        };
    }

    private static ScheduleConfig.Context Context(long? epochLength, long? maxEpochs = null, long? maxIters = null) =>
        new(epochLength is null ? FSharpOption<PyValue>.None : FSharpOption<PyValue>.Some(PyValue.NewInt(epochLength.Value)),
            maxEpochs is null ? FSharpOption<long>.None : FSharpOption<long>.Some(maxEpochs.Value),
            maxIters is null ? FSharpOption<long>.None : FSharpOption<long>.Some(maxIters.Value));

    private static ParamScheduler Build(PyValue cfg, SchedulerTarget optimizer, ScheduleConfig.Context ctx, string path)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        Func<PyValue, SchedulerTarget, ScheduleConfig.Context, string, ParamScheduler>? custom = null;
        if (cfg is PyValue.Dict d && PyValueModule.tryFind("type", d.Item) is { } t && t.Value is PyValue.Str s)
            lock (Gate) Custom.TryGetValue(s.Item, out custom);
        if (custom is not null) return custom(cfg, optimizer, ctx, path);
        var settings = ScheduleRaise.Unwrap(ScheduleConfig.parse(ctx, path, cfg), stepping: false);
        Func<SchedulerTarget, Schedules.Scheduler, ParamScheduler> create;
        lock (Gate) create = BuiltInTable.First(e => e.Name == settings.TypeName).Create;
        try
        {
            return create(optimizer, settings);
        }
        catch (ParamSchedulerException e) when (e.Path.Length == 0)
        {
            throw new ParamSchedulerException(e.PythonType, e.PythonMessage, path);
        }
    }
}
