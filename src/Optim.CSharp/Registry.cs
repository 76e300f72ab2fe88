using System.Reflection;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Optim.Core;
using TorchSharp;
using Optimizer = TorchSharp.torch.optim.Optimizer;
using CoreRegistry = Optim.Core.Registry;

namespace Optim;

/// <summary>
/// MMEngine's registry: names mapped to builders, registered once (or overwritten with
/// <c>force</c>), looked up by the <c>type</c> of a config. Unknown names fail with the list of
/// registered names and the closest one. Thread-safe.
/// </summary>
/// <typeparam name="T">What is registered: a factory delegate.</typeparam>
public sealed class Registry<T> where T : class
{
    private readonly object _lock = new();
    private CoreRegistry.Registry<T> _state;

    /// <summary>Creates an empty registry.</summary>
    /// <param name="name">Its name in messages (<c>optimizer</c>, <c>optim_wrapper</c>, ...).</param>
    public Registry(string name) => _state = CoreRegistry.create<T>(name);

    /// <summary>The registry's name.</summary>
    public string name => _state.Name;

    /// <summary>The registered names, in registration order.</summary>
    public IReadOnlyList<string> names
    {
        get { lock (_lock) return CoreRegistry.names(_state).ToList(); }
    }

    /// <summary>Registers <paramref name="module"/> under <paramref name="name"/> and returns it.</summary>
    /// <exception cref="ArgumentException">The name is taken and <paramref name="force"/> is false, or it is blank.</exception>
    public T register_module(string name, T module, bool force = false) => register_module(new[] { name }, module, force);

    /// <summary>Registers <paramref name="module"/> under each of <paramref name="names"/> (aliases) and returns it.</summary>
    /// <exception cref="ArgumentException">A name is taken and <paramref name="force"/> is false, or it is blank.</exception>
    public T register_module(IEnumerable<string> names, T module, bool force = false)
    {
        ArgumentNullException.ThrowIfNull(module);
        lock (_lock)
        {
            var result = CoreRegistry.register(ListModule.OfSeq(names), force, module, _state);
            if (result.IsError) throw new ArgumentException(result.ErrorValue.Message, nameof(names));
            _state = result.ResultValue;
        }
        return module;
    }

    /// <summary>Whether <paramref name="name"/> is registered.</summary>
    public bool contains(string name)
    {
        lock (_lock) return FSharpOption<T>.get_IsSome(CoreRegistry.tryFind(name, _state));
    }

    /// <summary>The entry under <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">Not registered; the message lists the registered names and the closest.</exception>
    public T get(string name)
    {
        lock (_lock)
        {
            var result = CoreRegistry.find(name, _state);
            if (result.IsError) throw new KeyNotFoundException(result.ErrorValue.Message);
            return result.ResultValue;
        }
    }

    /// <summary>The entry, or the core's error (for collecting several config errors at once).</summary>
    internal FSharpResult<T, RuleError> find(string name)
    {
        lock (_lock) return CoreRegistry.find(name, _state);
    }

    /// <summary>Removes a name (for tests that register temporary entries); true if it was there.</summary>
    public bool remove(string name)
    {
        lock (_lock)
        {
            var before = _state.Entries.Length;
            _state = new CoreRegistry.Registry<T>(_state.Name, ListModule.Filter(FuncConvert.FromFunc<Tuple<string, T>, bool>(e => e.Item1 != name), _state.Entries));
            return _state.Entries.Length != before;
        }
    }

    /// <inheritdoc />
    public override string ToString() => $"Registry(name={name}, items=[{string.Join(", ", names)}])";
}

/// <summary>
/// Builds a TorchSharp optimizer from param groups and the optimizer config's keyword arguments
/// (PyTorch's <c>OptimizerClass(params, **kwargs)</c>). Each group carries its parameters and the keys
/// set for it; keys a group lacks come from <paramref name="kwargs"/> and then the optimizer's defaults.
/// </summary>
public delegate Optimizer OptimizerFactory(IReadOnlyList<IParamGroup> param_groups, IReadOnlyDictionary<string, object?> kwargs);

/// <summary>
/// Builds an optimizer wrapper around <paramref name="optimizer"/> from the remaining keys of the
/// <c>optim_wrapper</c> config (<c>accumulative_counts</c>, <c>clip_grad</c>, ...).
/// </summary>
public delegate OptimWrapper OptimWrapperFactory(Optimizer optimizer, IReadOnlyDictionary<string, object?> kwargs);

/// <summary>Creates an optimizer wrapper constructor from the whole <c>optim_wrapper</c> config.</summary>
public delegate IOptimWrapperConstructor OptimWrapperConstructorFactory(Config.OptimWrapperConfig optim_wrapper_cfg);

/// <summary>MMEngine's optimizer wrapper constructor: called with the model, it returns the wrapper (or anything).</summary>
public interface IOptimWrapperConstructor
{
    /// <summary>Builds the optimizer (wrapper) for <paramref name="model"/> (Python's <c>constructor(model)</c>).</summary>
    object Invoke(torch.nn.Module model);
}

/// <summary>The root registries: <see cref="OPTIMIZERS"/>, <see cref="OPTIM_WRAPPERS"/>, <see cref="OPTIM_WRAPPER_CONSTRUCTORS"/>.</summary>
public static class Registries
{
    /// <summary>
    /// Every PyTorch optimizer under its class name: SGD, Adam, AdamW, Adagrad, Adadelta, Adamax, ASGD,
    /// NAdam, RAdam, RMSprop, Rprop (Optim's, in <see cref="Torch"/>: PyTorch 2.x's algorithms, fused
    /// kernels for the first four), and LBFGS (TorchSharp's native one).
    /// </summary>
    public static readonly Registry<OptimizerFactory> OPTIMIZERS = new("optimizer");

    /// <summary>Optimizer wrappers: <c>OptimWrapper</c>, <c>AmpOptimWrapper</c>, and whatever else is registered.</summary>
    public static readonly Registry<OptimWrapperFactory> OPTIM_WRAPPERS = new("optim_wrapper");

    /// <summary>Optimizer wrapper constructors: <c>DefaultOptimWrapperConstructor</c> and user constructors.</summary>
    public static readonly Registry<OptimWrapperConstructorFactory> OPTIM_WRAPPER_CONSTRUCTORS = new("optimizer wrapper constructor");

    /// <summary>
    /// Parameter schedulers by type name: every LR, momentum and generic scheduler of MMEngine
    /// (<c>LinearLR</c>, <c>CosineAnnealingMomentum</c>, <c>StepParamScheduler</c>, ...). Build with
    /// <see cref="ParamSchedulers.build_list(string, SchedulerTarget, long?, long?, long?)"/>.
    /// </summary>
    public static readonly Registry<ParamSchedulerFactory> PARAM_SCHEDULERS = ParamSchedulers.CreateRegistry();

    /// <summary>The names registered in <see cref="OPTIMIZERS"/> at start-up (MMEngine's <c>TORCH_OPTIMIZERS</c>).</summary>
    public static readonly IReadOnlyList<string> TORCH_OPTIMIZERS;

    static Registries()
    {
        foreach (var name in Optimizers.names)
            OPTIMIZERS.register_module(name, BuiltinOptimizers.Factory(name));
        TORCH_OPTIMIZERS = Optimizers.names.ToList();
        OPTIM_WRAPPERS.register_module("OptimWrapper", PlainWrapperFactory);
        OPTIM_WRAPPERS.register_module("AmpOptimWrapper", AmpWrapperFactory);
        OPTIM_WRAPPER_CONSTRUCTORS.register_module("DefaultOptimWrapperConstructor", cfg => new DefaultOptimWrapperConstructor(cfg));
    }

    private static readonly OptimWrapperFactory PlainWrapperFactory = (optimizer, kwargs) =>
    {
        WrapperArgs.Check("OptimWrapper", kwargs);
        return new OptimWrapper(optimizer, WrapperArgs.Int(kwargs, "accumulative_counts", 1), WrapperArgs.Dict(kwargs, "clip_grad"),
            kwargs.GetValueOrDefault("skip_nonfinite"));
    };

    private static readonly OptimWrapperFactory AmpWrapperFactory = (optimizer, kwargs) =>
    {
        WrapperArgs.Check("AmpOptimWrapper", kwargs);
        return new AmpOptimWrapper(optimizer, kwargs.GetValueOrDefault("loss_scale", "dynamic"), kwargs.GetValueOrDefault("dtype"),
            WrapperArgs.Int(kwargs, "accumulative_counts", 1), WrapperArgs.Dict(kwargs, "clip_grad"), kwargs.GetValueOrDefault("skip_nonfinite"));
    };

    /// <summary>Whether <paramref name="factory"/> is a built-in wrapper factory, and which.</summary>
    internal static string? BuiltinWrapperName(OptimWrapperFactory factory) =>
        factory == PlainWrapperFactory ? "OptimWrapper" : factory == AmpWrapperFactory ? "AmpOptimWrapper" : null;

    /// <summary>
    /// Registers a constructor type under its class name (or <paramref name="name"/>); the type needs a
    /// public constructor taking a <see cref="Config.OptimWrapperConfig"/> (MMEngine's
    /// <c>@OPTIM_WRAPPER_CONSTRUCTORS.register_module()</c>).
    /// </summary>
    public static void register_constructor<T>(string? name = null, bool force = false) where T : IOptimWrapperConstructor
    {
        var ctor = typeof(T).GetConstructor(new[] { typeof(Config.OptimWrapperConfig) })
            ?? throw new ArgumentException($"{typeof(T).Name} needs a public constructor taking an OptimWrapperConfig");
        OPTIM_WRAPPER_CONSTRUCTORS.register_module(name ?? typeof(T).Name, cfg =>
        {
            try { return (IOptimWrapperConstructor)ctor.Invoke(new object[] { cfg }); }
            catch (TargetInvocationException e) when (e.InnerException is not null)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerException).Throw();
                throw;
            }
        }, force);
    }
}

/// <summary>Reading wrapper keyword arguments with PyTorch-like errors.</summary>
public static class WrapperArgs
{
    /// <summary>Rejects keys a built-in wrapper does not take (Python's "unexpected keyword argument", with "did you mean").</summary>
    /// <exception cref="OptimConfigException">Every unknown key, at its path.</exception>
    public static void Check(string wrapper, IReadOnlyDictionary<string, object?> kwargs)
    {
        var errors = Config.checkWrapperArgs(wrapper, Py.ToPyDict(kwargs));
        if (!errors.IsEmpty) throw new OptimConfigException(errors);
    }

    /// <summary>Rejects keys not in <paramref name="accepted"/> (for user wrappers), with "did you mean".</summary>
    /// <exception cref="OptimConfigException">Every unknown key, at its path.</exception>
    public static void Check(string wrapper, IReadOnlyDictionary<string, object?> kwargs, params string[] accepted)
    {
        var errors = Config.unexpectedKeywords(wrapper, ListModule.OfSeq(accepted), Py.ToPyDict(kwargs));
        if (!errors.IsEmpty) throw new OptimConfigException(errors);
    }

    /// <summary>An integer argument, or <paramref name="fallback"/> when absent or null.</summary>
    public static int Int(IReadOnlyDictionary<string, object?> kwargs, string key, int fallback) =>
        kwargs.TryGetValue(key, out var v) && v is not null ? Convert.ToInt32(v) : fallback;

    /// <summary>A dict argument, or null when absent or null.</summary>
    public static IDictionary<string, object?>? Dict(IReadOnlyDictionary<string, object?> kwargs, string key) =>
        kwargs.TryGetValue(key, out var v) && v is not null
            ? v as IDictionary<string, object?> ?? throw new ArgumentException($"'{key}' expects a dict, got {Py.Repr(v)}", key)
            : null;
}
