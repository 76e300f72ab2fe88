using Microsoft.FSharp.Core;
using Optim.Core;

namespace Optim;

/// <summary>How a <c>param_scheduler</c> entry is being built: what <c>default_args</c> and the Runner add, and where it sits.</summary>
/// <param name="epoch_length">Iterations per epoch (<c>len(train_dataloader)</c>), needed by <c>convert_to_iter_based</c>.</param>
/// <param name="max_epochs">With <paramref name="max_iters"/>: the Runner's default <c>end</c> (epochs for epoch-based schedulers)...</param>
/// <param name="max_iters">... and iterations for iteration-based ones. Unset: <c>end</c> defaults to INF.</param>
/// <param name="path">The entry's JSON path, for error messages (<c>param_scheduler[1]</c>).</param>
public sealed record ParamSchedulerBuildArgs(long? epoch_length = null, long? max_epochs = null, long? max_iters = null, string path = "param_scheduler")
{
    internal ScheduleConfig.Context Context =>
        new(epoch_length is null ? FSharpOption<PyValue>.None : FSharpOption<PyValue>.Some(PyValue.NewInt(epoch_length.Value)),
            max_epochs is null ? FSharpOption<long>.None : FSharpOption<long>.Some(max_epochs.Value),
            max_iters is null ? FSharpOption<long>.None : FSharpOption<long>.Some(max_iters.Value));
}

/// <summary>
/// Builds a scheduler of a registered type from its config entry (a dict with <c>type</c> and
/// MMEngine's keyword arguments) for <paramref name="optimizer"/>.
/// </summary>
public delegate ParamScheduler ParamSchedulerFactory(SchedulerTarget optimizer, PyValue cfg, ParamSchedulerBuildArgs args);

/// <summary>
/// Building schedulers from MMEngine's <c>param_scheduler</c> configs, with MMEngine's key names
/// (<c>{"type": "LinearLR", "start_factor": 0.1, "by_epoch": false, "begin": 0, "end": 500}</c>),
/// through <see cref="Registries.PARAM_SCHEDULERS"/> (<c>PARAM_SCHEDULERS.build(cfg,
/// default_args=dict(optimizer=..., epoch_length=...))</c>), <c>convert_to_iter_based</c> included.
/// Errors name the JSON path of the offending value (<c>param_scheduler[1].max_lr</c>) and carry
/// MMEngine's exception type and message.
/// </summary>
public static partial class ParamSchedulers
{
    internal static Registry<ParamSchedulerFactory> CreateRegistry()
    {
        var registry = new Registry<ParamSchedulerFactory>("parameter scheduler");
        foreach (var (name, create) in BuiltIns())
            registry.register_module(name, (optimizer, cfg, args) =>
            {
                var settings = ScheduleRaise.Unwrap(ScheduleConfig.parseForConfig(args.Context, args.path, cfg), stepping: false);
                return create(optimizer, settings);
            });
        return registry;
    }

    /// <summary>Builds one scheduler from its config entry.</summary>
    /// <param name="cfg">A dict with <c>type</c> and MMEngine's keyword arguments.</param>
    /// <param name="optimizer">What to schedule.</param>
    /// <param name="epoch_length">Iterations per epoch, needed by <c>convert_to_iter_based</c>.</param>
    /// <exception cref="ParamSchedulerException">The config is rejected; <see cref="ParamSchedulerException.Path"/> says where.</exception>
    /// <exception cref="KeyNotFoundException">An unknown type (MMEngine's KeyError).</exception>
    public static ParamScheduler build(IReadOnlyDictionary<string, object?> cfg, SchedulerTarget optimizer, long? epoch_length = null) =>
        build(Py.ToPy(cfg), optimizer, new ParamSchedulerBuildArgs(epoch_length));

    /// <summary>Builds one scheduler from a PyValue config entry.</summary>
    public static ParamScheduler build(PyValue cfg, SchedulerTarget optimizer, ParamSchedulerBuildArgs? args = null)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        args ??= new ParamSchedulerBuildArgs();
        if (cfg is not PyValue.Dict d)
            throw new ParamSchedulerException("TypeError", $"cfg should be a dict, ConfigDict or Config, but got {PyValueModule.kind(cfg)}", args.path);
        var type = PyValueModule.tryFind("type", d.Item);
        // Anything but a registered name: the core reports it exactly as MMEngine does.
        var name = type is not null && type.Value is PyValue.Str s ? s.Item : null;
        if (name is null || !Registries.PARAM_SCHEDULERS.contains(name))
        {
            var parsed = ScheduleConfig.parse(args.Context, args.path, cfg);
            throw ScheduleRaise.From(parsed.IsError ? parsed.ErrorValue : Schedules.ScheduleErrorModule.at(args.path, ScheduleConfig.unknownType(name!)), stepping: false);
        }
        try
        {
            return Registries.PARAM_SCHEDULERS.get(name)(optimizer, cfg, args);
        }
        catch (KeyNotFoundException e) when (e.Message.StartsWith("param_name: ", StringComparison.Ordinal))
        {
            // A param_name no group has: located at this entry.
            throw new KeyNotFoundException(args.path + "." + e.Message, e);
        }
        catch (ParamSchedulerException e) when (e.Path.Length == 0)
        {
            // Raised while attaching (it needs the optimizer's groups): locate it too.
            throw new ParamSchedulerException(e.PythonType, e.PythonMessage, args.path);
        }
    }

    /// <summary>
    /// Builds a <c>param_scheduler</c> setting — one dict or a list of dicts — in order (they compose in
    /// that order; step them in that order, e.g. with <see cref="ParamSchedulerHook"/>).
    /// </summary>
    /// <param name="json">JSON text of the setting.</param>
    /// <param name="optimizer">What to schedule.</param>
    /// <param name="epoch_length">Iterations per epoch, for <c>convert_to_iter_based</c>.</param>
    /// <param name="max_epochs">With <paramref name="max_iters"/>: MMEngine's Runner default for a missing <c>end</c>.</param>
    /// <param name="max_iters">See <paramref name="max_epochs"/>.</param>
    /// <exception cref="ParamSchedulerException">An entry is rejected; <see cref="ParamSchedulerException.Path"/> says where.</exception>
    /// <exception cref="KeyNotFoundException">An unknown type.</exception>
    public static List<ParamScheduler> build_list(string json, SchedulerTarget optimizer, long? epoch_length = null, long? max_epochs = null, long? max_iters = null)
    {
        var parsed = PyJson.parse(json);
        if (parsed.IsError) throw new ParamSchedulerException("ValueError", "not valid JSON: " + parsed.ErrorValue, "param_scheduler");
        return build_list(parsed.ResultValue, optimizer, epoch_length, max_epochs, max_iters);
    }

    /// <summary>Builds a <c>param_scheduler</c> setting given as a PyValue (one dict or a list).</summary>
    public static List<ParamScheduler> build_list(PyValue cfg, SchedulerTarget optimizer, long? epoch_length = null, long? max_epochs = null, long? max_iters = null)
    {
        var args = new ParamSchedulerBuildArgs(epoch_length, max_epochs, max_iters);
        return cfg switch
        {
            PyValue.List l => l.Item.Select((c, i) => build(c, optimizer, args with { path = $"param_scheduler[{i}]" })).ToList(),
            PyValue.Tuple t => t.Item.Select((c, i) => build(c, optimizer, args with { path = $"param_scheduler[{i}]" })).ToList(),
            _ => new List<ParamScheduler> { build(cfg, optimizer, args) },
        };
    }

    /// <summary>
    /// Every problem in a <c>param_scheduler</c> setting, without an optimizer (one per bad entry, each
    /// with its path): for checking a config before training.
    /// </summary>
    public static IReadOnlyList<ParamSchedulerException> check(string json, long? epoch_length = null)
    {
        var parsed = PyJson.parse(json);
        if (parsed.IsError) return new[] { new ParamSchedulerException("ValueError", "not valid JSON: " + parsed.ErrorValue, "param_scheduler") };
        var ctx = new ParamSchedulerBuildArgs(epoch_length).Context;
        return ScheduleConfig.validate(ctx, parsed.ResultValue)
            .Select(e => new ParamSchedulerException(e.Type, e.Message, e.Path))
            .ToList();
    }
}
