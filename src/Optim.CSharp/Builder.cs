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
    /// <exception cref="OptimConfigException">The config is invalid: every problem is listed; nothing was built.</exception>
    /// <exception cref="InvalidCastException">A custom constructor returned something that is not an <see cref="OptimWrapper"/> (use <see cref="build_optim_wrapper{T}(torch.nn.Module, string)"/>).</exception>
    public static OptimWrapper build_optim_wrapper(torch.nn.Module model, string cfg) => build_optim_wrapper<OptimWrapper>(model, ParseConfig(cfg));

    /// <inheritdoc cref="build_optim_wrapper(torch.nn.Module, string)"/>
    public static OptimWrapper build_optim_wrapper(torch.nn.Module model, JsonNode cfg) => build_optim_wrapper<OptimWrapper>(model, ParseConfig(cfg));

    /// <inheritdoc cref="build_optim_wrapper(torch.nn.Module, string)"/>
    public static OptimWrapper build_optim_wrapper(torch.nn.Module model, IReadOnlyDictionary<string, object?> cfg) => build_optim_wrapper<OptimWrapper>(model, ParseConfig(cfg));

    /// <inheritdoc cref="build_optim_wrapper(torch.nn.Module, string)"/>
    public static OptimWrapper build_optim_wrapper(torch.nn.Module model, Config.OptimWrapperConfig cfg) => build_optim_wrapper<OptimWrapper>(model, cfg);

    /// <summary>As <see cref="build_optim_wrapper(torch.nn.Module, string)"/>, for constructors that return something else (a bare optimizer, ...).</summary>
    public static T build_optim_wrapper<T>(torch.nn.Module model, string cfg) => build_optim_wrapper<T>(model, ParseConfig(cfg));

    /// <summary>
    /// SPEC §7.1: pick the constructor (default <c>DefaultOptimWrapperConstructor</c>), create it from the
    /// config, and call it on the model. Before anything is built, every problem MMEngine would raise
    /// for the config is collected (unknown names included) and thrown together.
    /// </summary>
    public static T build_optim_wrapper<T>(torch.nn.Module model, Config.OptimWrapperConfig cfg)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(cfg);
        var errors = Validate(cfg);
        if (errors.Count > 0) throw new OptimConfigException(errors);
        var constructor = Registries.OPTIM_WRAPPER_CONSTRUCTORS.get(cfg.Constructor)(cfg);
        var built = constructor.Invoke(model);
        return built is T t ? t : throw new InvalidCastException(
            $"constructor {cfg.Constructor} returned {built?.GetType().Name ?? "null"}, not {typeof(T).Name}");
    }

    /// <summary>
    /// Every problem with a parsed config that can be known before building: the constructor name, and
    /// for the default constructor its own checks, the optimizer and wrapper names, and the keyword
    /// arguments a built-in optimizer does not take.
    /// </summary>
    public static List<ConfigError> Validate(Config.OptimWrapperConfig cfg)
    {
        var errors = new List<ConfigError>();
        var constructor = Registries.OPTIM_WRAPPER_CONSTRUCTORS.find(cfg.Constructor);
        if (constructor.IsError) errors.Add(ConfigErrorModule.ofRule("constructor", constructor.ErrorValue));
        if (constructor.IsError || cfg.Constructor != "DefaultOptimWrapperConstructor") return errors;
        var checkedCfg = Config.defaultConstructorSettings(cfg);
        if (checkedCfg.IsError) errors.AddRange(checkedCfg.ErrorValue);
        var optimizer = cfg.Optimizer?.Value;
        if (optimizer?.Type?.Value is string type)
        {
            var factory = Registries.OPTIMIZERS.find(type);
            if (factory.IsError) errors.Add(ConfigErrorModule.ofRule("optimizer.type", factory.ErrorValue));
            else if (BuiltinOptimizers.NameOf(factory.ResultValue) is string builtin)
                foreach (var (key, message) in BuiltinOptimizers.Check(builtin, ToDict(optimizer.Args)))
                    errors.Add(ConfigErrorModule.at(ConfigErrorModule.key("optimizer", key),
                        key == "lr" ? ErrorKind.Value : ErrorKind.Type, message));
        }
        var wrapper = Registries.OPTIM_WRAPPERS.find(cfg.Type);
        if (wrapper.IsError) errors.Add(ConfigErrorModule.ofRule("type", wrapper.ErrorValue));
        return errors;
    }

    /// <summary>Parses a JSON <c>optim_wrapper</c> config.</summary>
    /// <exception cref="OptimConfigException">Every problem found, with its JSON path.</exception>
    public static Config.OptimWrapperConfig ParseConfig(string json) => Unwrap(Config.parseText(json));

    /// <inheritdoc cref="ParseConfig(string)"/>
    public static Config.OptimWrapperConfig ParseConfig(JsonNode json) =>
        Unwrap(Config.parse(json is null ? PyValue.None : PyJson.ofElement(JsonSerializer.Deserialize<JsonElement>(json.ToJsonString()))));

    /// <summary>Reads a config given as .NET values (nested dictionaries, lists, numbers, strings, bools).</summary>
    /// <exception cref="OptimConfigException">Every problem found, with its path.</exception>
    public static Config.OptimWrapperConfig ParseConfig(IReadOnlyDictionary<string, object?> cfg) =>
        Unwrap(Config.parse(PyValue.NewDict(ListModule.OfSeq(cfg.Select(kv => Tuple.Create(kv.Key, Py.ToPy(kv.Value)))))));

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
