using Microsoft.Extensions.Logging;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.FSharp.Collections;
using Optim.Core;
using TorchSharp;

namespace Optim;

/// <summary>
/// A configuration that cannot be used. <see cref="Errors"/> lists every problem found, each with its
/// JSON path, the Python exception MMEngine raises for it (<see cref="ConfigError.Kind"/>) and what
/// was expected; the message lists them all, one per line.
/// </summary>
public class OptimConfigException : ArgumentException
{
    /// <summary>Creates the exception from the problems found.</summary>
    public OptimConfigException(IEnumerable<ConfigError> errors)
        : this(errors.ToList()) { }

    private OptimConfigException(List<ConfigError> errors)
        : base(Describe(errors))
    {
        Errors = errors;
    }

    /// <summary>Every problem, in the order found.</summary>
    public IReadOnlyList<ConfigError> Errors { get; }

    private static string Describe(List<ConfigError> errors) =>
        errors.Count == 1
            ? "invalid optim_wrapper config: " + errors[0]
            : $"invalid optim_wrapper config ({errors.Count} problems):\n" + string.Join("\n", errors.Select(e => "  " + e));
}

/// <summary>
/// MMEngine's <c>build_optim_wrapper(model, cfg)</c> with the config as JSON text, a parsed JSON node,
/// a .NET dictionary, or the typed <see cref="Config.OptimWrapperConfig"/>.
/// </summary>
/// <example>
/// <code>
/// var wrapper = Builder.build_optim_wrapper(model, """
///     {"optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4},
///      "paramwise_cfg": {"norm_decay_mult": 0, "custom_keys": {"backbone": {"lr_mult": 0.1}}}}
///     """);
/// </code>
/// </example>
public static class Builder
{
    /// <summary>Builds the optimizer wrapper the config describes for <paramref name="model"/>.</summary>
    /// <param name="model">The model (or a model wrapper, whose inner module's parameters are grouped).</param>
    /// <param name="cfg">The <c>optim_wrapper</c> config.</param>
    /// <param name="loggerFactory">Where the build, the wrapper, its loss scaler and the schedulers attached to it
    /// log (default: <see cref="OptimLogging.LoggerFactory"/>).</param>
    /// <exception cref="OptimConfigException">The config is invalid: every problem is listed; nothing was built.</exception>
    /// <exception cref="InvalidCastException">A custom constructor returned something that is not an <see cref="OptimWrapper"/> (use <see cref="build_optim_wrapper{T}(torch.nn.Module, string, ILoggerFactory?)"/>).</exception>
    public static OptimWrapper build_optim_wrapper(torch.nn.Module model, string cfg, ILoggerFactory? loggerFactory = null) =>
        build_optim_wrapper<OptimWrapper>(model, ParseForBuild(model, ParseRaw(cfg)), loggerFactory);

    /// <inheritdoc cref="build_optim_wrapper(torch.nn.Module, string, ILoggerFactory?)"/>
    public static OptimWrapper build_optim_wrapper(torch.nn.Module model, JsonNode cfg, ILoggerFactory? loggerFactory = null) =>
        build_optim_wrapper<OptimWrapper>(model, ParseForBuild(model, ConfigInput.FromJsonNode(cfg)), loggerFactory);

    /// <inheritdoc cref="build_optim_wrapper(torch.nn.Module, string, ILoggerFactory?)"/>
    public static OptimWrapper build_optim_wrapper(torch.nn.Module model, IReadOnlyDictionary<string, object?> cfg, ILoggerFactory? loggerFactory = null) =>
        build_optim_wrapper<OptimWrapper>(model, ParseForBuild(model, ConfigInput.FromDictionary(cfg ?? throw new ArgumentNullException(nameof(cfg)))), loggerFactory);

    /// <inheritdoc cref="build_optim_wrapper(torch.nn.Module, string, ILoggerFactory?)"/>
    public static OptimWrapper build_optim_wrapper(torch.nn.Module model, Config.OptimWrapperConfig cfg, ILoggerFactory? loggerFactory = null) =>
        build_optim_wrapper<OptimWrapper>(model, cfg, loggerFactory);

    /// <summary>As <see cref="build_optim_wrapper(torch.nn.Module, string, ILoggerFactory?)"/>, for constructors that return something else (a bare optimizer, ...).</summary>
    public static T build_optim_wrapper<T>(torch.nn.Module model, string cfg, ILoggerFactory? loggerFactory = null) =>
        build_optim_wrapper<T>(model, ParseForBuild(model, ParseRaw(cfg)), loggerFactory);

    private static PyValue ParseRaw(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        var r = Config.parseJson(json);
        return r.IsOk ? r.ResultValue : throw new OptimConfigException(new[] { r.ErrorValue });
    }

    /// <summary>Parses; when that fails, also checks what remains, so that every problem is in one exception.</summary>
    private static Config.OptimWrapperConfig ParseForBuild(torch.nn.Module model, PyValue raw)
    {
        var r = Config.parseKeepingRest(raw);
        if (r.IsOk) return r.ResultValue;
        var (errors, rest) = r.ErrorValue.ToValueTuple();
        var all = errors.ToList();
        if (rest is not null && model is not null)
            foreach (var e in Validate(rest.Value, model))
                if (!all.Any(x => x.Path == e.Path || e.Path.StartsWith(x.Path + ".") || e.Path.StartsWith(x.Path + "["))) all.Add(e);
        throw new OptimConfigException(all);
    }

    /// <summary>
    /// Picks the constructor (default <c>DefaultOptimWrapperConstructor</c>), creates it from the
    /// config, and calls it on the model. Before anything is built, every problem MMEngine would raise
    /// for the config is collected (unknown names included) and thrown together.
    /// </summary>
    public static T build_optim_wrapper<T>(torch.nn.Module model, Config.OptimWrapperConfig cfg, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(cfg);
        // One walk of the model for the whole build: the value limits here, the plan and the lint in the constructor.
        var walk = ModuleWalk.Of(ModuleFacts.Unwrap(model));
        var errors = Check(cfg, walk.Limit).Errors.ToList();
        if (errors.Count > 0) throw new OptimConfigException(errors);
        // Registered constructors are created from the config alone: the build's scope hands them the factory.
        object built;
        using (OptimLogging.During(loggerFactory))
        {
            var constructor = Registries.OPTIM_WRAPPER_CONSTRUCTORS.get(cfg.Constructor)(cfg);
            if (constructor is DefaultOptimWrapperConstructor d)
            {
                d.Prewalked = walk;
                try { built = d.Invoke(model); }
                finally { d.Prewalked = null; }
            }
            else
                built = constructor.Invoke(model);
        }
        return built is T t ? t : throw new InvalidCastException(
            $"constructor {cfg.Constructor} returned {built?.GetType().Name ?? "null"}, not {typeof(T).Name}");
    }

    /// <summary>
    /// Every problem with a parsed config that can be known before building: the constructor name, and
    /// for the default constructor its own checks, the optimizer and wrapper names (with "did you
    /// mean"), the keyword arguments a built-in optimizer or wrapper does not take, and the values
    /// PyTorch would reject or that cannot be represented (checked against float32, the parameters'
    /// usual dtype; <see cref="Validate(Config.OptimWrapperConfig, torch.nn.Module)"/> uses the model's).
    /// </summary>
    public static List<ConfigError> Validate(Config.OptimWrapperConfig cfg) => Check(cfg, OptimizerRules.float32Limit).Errors.ToList();

    /// <summary>
    /// <see cref="Validate(Config.OptimWrapperConfig)"/> with the value limits of <paramref name="model"/>'s
    /// parameters (float64 parameters accept numbers beyond float32's range).
    /// </summary>
    public static List<ConfigError> Validate(Config.OptimWrapperConfig cfg, torch.nn.Module model) =>
        Check(cfg, LimitOf(model)).Errors.ToList();

    /// <summary>Config that is accepted but does nothing (unknown paramwise_cfg keys, unknown keys in custom_keys entries), each with its path.</summary>
    public static List<ConfigLint.ConfigWarning> Warnings(Config.OptimWrapperConfig cfg) => Check(cfg, OptimizerRules.float32Limit).Warnings.ToList();

    /// <summary>The largest magnitude every parameter of <paramref name="model"/> can hold.</summary>
    internal static double LimitOf(torch.nn.Module model) => ModuleFacts.LimitOf(ModuleFacts.Unwrap(model).parameters().ToList());

    internal static ConfigLint.Lint Check(Config.OptimWrapperConfig cfg, double limit)
    {
        var errors = new List<ConfigError>();
        var warnings = new List<ConfigLint.ConfigWarning>();
        var constructor = Registries.OPTIM_WRAPPER_CONSTRUCTORS.find(cfg.Constructor);
        if (constructor.IsError) errors.Add(ConfigErrorModule.ofRule("constructor", constructor.ErrorValue));
        void CheckWrapper()
        {
            var wrapper = Registries.OPTIM_WRAPPERS.find(cfg.Type);
            if (wrapper.IsError) errors.Add(ConfigErrorModule.ofRule("type", wrapper.ErrorValue));
            else if (Registries.BuiltinWrapperName(wrapper.ResultValue) is string builtinWrapper)
                errors.AddRange(Config.checkWrapperArgs(builtinWrapper, cfg.WrapperArgs));
        }
        if (constructor.IsError || cfg.Constructor != "DefaultOptimWrapperConstructor")
        {
            CheckWrapper();
            return Lint(errors, warnings);
        }
        var checkedCfg = Config.defaultConstructorSettings(cfg);
        if (checkedCfg.IsError) errors.AddRange(checkedCfg.ErrorValue);
        var optimizer = cfg.Optimizer?.Value;
        string? builtin = null;
        if (optimizer?.Type?.Value is string type)
        {
            var factory = Registries.OPTIMIZERS.find(type);
            if (factory.IsError) errors.Add(ConfigErrorModule.ofRule("optimizer.type", factory.ErrorValue));
            else if ((builtin = BuiltinOptimizers.NameOf(factory.ResultValue)) is not null)
                errors.AddRange(Config.checkOptimizerArgs(builtin, optimizer.Args).Select(e => ConfigErrorModule.under("optimizer", e)));
        }
        CheckWrapper();
        var lint = Config.checkValues(limit, builtin is null ? null : Microsoft.FSharp.Core.FSharpOption<string>.Some(builtin), cfg);
        foreach (var e in lint.Errors)
            if (!errors.Any(x => x.Path == e.Path)) errors.Add(e);
        warnings.AddRange(lint.Warnings);
        return Lint(errors, warnings);
    }

    private static ConfigLint.Lint Lint(List<ConfigError> errors, List<ConfigLint.ConfigWarning> warnings) =>
        new(ListModule.OfSeq(errors), ListModule.OfSeq(warnings));

    /// <summary>Parses a JSON <c>optim_wrapper</c> config.</summary>
    /// <exception cref="OptimConfigException">Every problem found, with its JSON path.</exception>
    public static Config.OptimWrapperConfig ParseConfig(string json) => Unwrap(Config.parseText(json));

    /// <inheritdoc cref="ParseConfig(string)"/>
    public static Config.OptimWrapperConfig ParseConfig(JsonNode json) => Unwrap(Config.parse(ConfigInput.FromJsonNode(json)));

    /// <summary>Reads a config given as .NET values (nested dictionaries, lists, numbers, strings, bools).</summary>
    /// <exception cref="OptimConfigException">Every problem found, with its path.</exception>
    public static Config.OptimWrapperConfig ParseConfig(IReadOnlyDictionary<string, object?> cfg)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        return Unwrap(Config.parse(ConfigInput.FromDictionary(cfg)));
    }

    private static Config.OptimWrapperConfig Unwrap(Microsoft.FSharp.Core.FSharpResult<Config.OptimWrapperConfig, FSharpList<ConfigError>> r) =>
        r.IsOk ? r.ResultValue : throw new OptimConfigException(r.ErrorValue);

    /// <summary>An ordered dict of Python values as .NET keyword arguments.</summary>
    internal static IReadOnlyDictionary<string, object?> ToDict(FSharpList<Tuple<string, PyValue>> kvs)
    {
        var d = new OrderedDictionary<string, object?>();
        foreach (var kv in kvs) d[kv.Item1] = Py.FromPy(kv.Item2);
        return d;
    }
}
