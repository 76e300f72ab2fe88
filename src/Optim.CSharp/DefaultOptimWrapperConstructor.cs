using Microsoft.Extensions.Logging;
using Microsoft.FSharp.Collections;
using Optim.Core;
using TorchSharp;
using TorchSharp.Modules;
using Optimizer = TorchSharp.torch.optim.Optimizer;

namespace Optim;

/// <summary>
/// MMEngine's <c>DefaultOptimWrapperConstructor</c>: builds the optimizer named by the config over the
/// model's parameters — one group with everything when there is no <c>paramwise_cfg</c>, else one
/// group per trainable parameter with the multipliers of <c>paramwise_cfg</c> applied (custom keys,
/// bias/norm/depth-wise/flat/DCN rules; the rules themselves are <c>Optim.Core.Paramwise</c>) — and
/// wraps it in the configured wrapper. Subclass it and override <see cref="add_params"/> for other
/// grouping policies, as in MMEngine.
/// </summary>
public class DefaultOptimWrapperConstructor : IOptimWrapperConstructor
{
    private readonly ILoggerFactory? _loggerFactory;
    private readonly ILogger _logger;

    /// <summary>Validates the config.</summary>
    /// <exception cref="OptimConfigException">No optimizer, a malformed paramwise_cfg, or decay multipliers without a base weight decay.</exception>
    /// <param name="optim_wrapper_cfg">The whole <c>optim_wrapper</c> config.</param>
    /// <param name="loggerFactory">Where this constructor and the wrappers it builds log (default: the factory of
    /// the <c>build_optim_wrapper</c> call creating it, else <see cref="OptimLogging.LoggerFactory"/>).</param>
    public DefaultOptimWrapperConstructor(Config.OptimWrapperConfig optim_wrapper_cfg, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(optim_wrapper_cfg);
        _loggerFactory = OptimLogging.Resolve(loggerFactory);
        _logger = OptimLogging.LoggerFor(_loggerFactory, GetType().Name);
        this.optim_wrapper_cfg = optim_wrapper_cfg;
        var checkedCfg = Config.defaultConstructorSettings(optim_wrapper_cfg);
        if (checkedCfg.IsError) throw new OptimConfigException(checkedCfg.ErrorValue);
        (optimizer_cfg, Settings) = checkedCfg.ResultValue.ToValueTuple();
        paramwise_cfg = optim_wrapper_cfg.ParamwiseCfg.IsNone
            ? new OrderedDictionary<string, object?>()
            : (IReadOnlyDictionary<string, object?>)Py.FromPy(optim_wrapper_cfg.ParamwiseCfg)!;
    }

    /// <summary>Parses and validates a JSON <c>optim_wrapper</c> config.</summary>
    /// <exception cref="OptimConfigException">Every problem found, with its JSON path.</exception>
    /// <param name="json">The <c>optim_wrapper</c> config as JSON.</param>
    /// <param name="loggerFactory">As for the other constructor.</param>
    public DefaultOptimWrapperConstructor(string json, ILoggerFactory? loggerFactory = null) : this(Builder.ParseConfig(json), loggerFactory) { }

    /// <summary>Where this constructor and the wrappers it builds log: the factory it was given (or its build's),
    /// else <see cref="OptimLogging.LoggerFactory"/> as it is now.</summary>
    public ILoggerFactory LoggerFactory => _loggerFactory ?? OptimLogging.LoggerFactory;

    /// <summary>The whole config.</summary>
    public Config.OptimWrapperConfig optim_wrapper_cfg { get; }

    /// <summary>The optimizer part of the config (<c>type</c> and keyword arguments).</summary>
    public Config.OptimizerConfig optimizer_cfg { get; }

    /// <summary>The optimizer's keyword arguments (the optimizer config without <c>type</c>), as .NET values.</summary>
    public IReadOnlyDictionary<string, object?> optimizer_kwargs => Builder.ToDict(optimizer_cfg.Args);

    /// <summary>The paramwise_cfg as given (empty when absent); custom constructors read their own keys here.</summary>
    public IReadOnlyDictionary<string, object?> paramwise_cfg { get; }

    /// <summary>The validated paramwise settings the core's rules apply.</summary>
    public Paramwise.Settings Settings { get; }

    /// <summary><c>optimizer_cfg.get('lr')</c>: the un-multiplied learning rate, or null.</summary>
    public double? base_lr => optimizer_cfg.Lr?.Value;

    /// <summary><c>optimizer_cfg.get('weight_decay')</c>: the un-multiplied weight decay, or null.</summary>
    public double? base_wd => optimizer_cfg.WeightDecay?.Value;

    /// <summary>The log lines of the last <see cref="add_params"/> calls, in order (also sent to the logger).</summary>
    public List<Paramwise.LogLine> Logs { get; } = new();

    /// <summary>
    /// The provenance of each group <see cref="add_params"/> planned: the rule behind each key
    /// (used by <see cref="Inspection"/>).
    /// </summary>
    internal List<(IParamGroup Group, Paramwise.GroupPlan Plan)> Planned { get; } = new();

    /// <summary>The groups the last <see cref="Invoke"/> passed to the optimizer (used by <see cref="Inspection"/>).</summary>
    internal List<IParamGroup> LastGroups { get; private set; } = new();

    /// <summary>
    /// Builds the optimizer and the wrapper for <paramref name="model"/> (the inner module of an
    /// <see cref="IModelWrapper"/>).
    /// </summary>
    /// <exception cref="KeyNotFoundException">The optimizer or wrapper type is not registered.</exception>
    /// <exception cref="ArgumentException">The optimizer rejects the groups (e.g. a parameter in two groups).</exception>
    public virtual object Invoke(torch.nn.Module model)
    {
        var wrapperFactory = Registries.OPTIM_WRAPPERS.get(optim_wrapper_cfg.Type);
        var (optimizer, _) = BuildOptimizer(model);
        try
        {
            // A registered wrapper factory cannot be handed the logger factory: the build's scope carries it.
            using (OptimLogging.During(_loggerFactory))
                return wrapperFactory(optimizer, Builder.ToDict(optim_wrapper_cfg.WrapperArgs));
        }
        catch
        {
            // Nothing of a failed build outlives it (TorchSharp's optimizer state has native finalizers).
            (optimizer as IDisposable)?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Config that was accepted but does nothing, found by the last <see cref="Invoke"/> (unknown
    /// paramwise_cfg keys, unknown keys in custom_keys entries, custom keys that match no parameter),
    /// each with its path and a "did you mean" when one is close; each is also logged as a warning.
    /// With <c>paramwise_cfg.strict</c> they are errors instead.
    /// </summary>
    public List<ConfigLint.ConfigWarning> Warnings { get; } = new();

    /// <summary>
    /// A walk of the model already made by the caller for this build (<see cref="Builder"/> walks it to
    /// check the config's values): used instead of walking again when it is of the model being built.
    /// </summary>
    internal ModuleWalk? Prewalked { get; set; }

    // During one BuildOptimizer: the model's walk, and the custom keys matched against it by add_params
    // (the plan and the lint read the same matches).
    private ModuleWalk? _walk;
    private Paramwise.MatchedFacts? _matched;

    /// <summary>The param groups MMEngine would pass to the optimizer, and the optimizer built from them.</summary>
    internal (Optimizer Optimizer, List<IParamGroup> Groups) BuildOptimizer(torch.nn.Module model)
    {
        model = ModuleFacts.Unwrap(model);
        var type = optimizer_cfg.Type?.Value ?? throw new KeyNotFoundException("optimizer config must contain the key \"type\"");
        var factory = Registries.OPTIMIZERS.get(type);
        Logs.Clear();
        Planned.Clear();
        try
        {
            _walk = Prewalked is { } w && ReferenceEquals(w.Root, model) ? w : null;
            var groups = new List<IParamGroup>();
            if (Paramwise.isEmpty(Settings))
                groups.Add(new PlainParamGroup(Array.Empty<KeyValuePair<string, object?>>(), model.parameters().ToList()));
            else
            {
                _walk ??= ModuleWalk.Of(model);
                add_params(groups, model);
            }
            LastGroups = groups;
            CheckBeforeBuilding(model, BuiltinOptimizers.NameOf(factory));
            return (factory(groups, optimizer_kwargs), groups);
        }
        finally
        {
            _walk = null;
            _matched = null;
        }
    }

    /// <summary>
    /// Appends one group per trainable parameter of <paramref name="module"/> (own parameters, then
    /// children recursively) to <paramref name="params"/>, with the paramwise rules applied, and logs
    /// <c>paramwise_options -- name:key=value</c> per key set (MMEngine's <c>add_params</c>).
    /// </summary>
    /// <param name="params">The groups so far (a parameter already there counts for <c>bypass_duplicate</c>).</param>
    /// <param name="module">The module whose parameters to add.</param>
    /// <param name="prefix">Its name in the model (<c>""</c> for the model).</param>
    /// <param name="is_dcn_module">Whether its parent is a deformable-conv module.</param>
    /// <exception cref="OptimConfigException">A rule needs the base lr and the optimizer config has none (TypeError).</exception>
    public virtual void add_params(List<IParamGroup> @params, torch.nn.Module module, string prefix = "", bool is_dcn_module = false)
    {
        // The model itself during a build: its walk is already there (and the lint reads the matches made here).
        var whole = _walk is { } w && ReferenceEquals(w.Root, module) && prefix == "" && !is_dcn_module;
        var (facts, byId) = whole ? (_walk!.Facts, _walk.Parameters) : ModuleFacts.Collect(module, prefix, is_dcn_module);
        var matched = Paramwise.matchFacts(Settings, facts);
        if (whole) _matched = matched;
        var placed = @params.SelectMany(g => g.Params).Select(ModuleFacts.Identity);
        var result = Paramwise.planMatched(Settings, optimizer_cfg.BaseLr, optimizer_cfg.BaseWd, placed, matched);
        var plan = result.IsOk ? result.ResultValue : result.ErrorValue.Partial;
        foreach (var g in plan.Groups)
        {
            var options = g.Options.Select(o => new KeyValuePair<string, object?>(o.Key, Py.FromPy(o.Value)));
            var group = new PlainParamGroup(options, new[] { byId[g.Param.Identity] });
            @params.Add(group);
            Planned.Add((group, g));
        }
        foreach (var line in plan.Logs) Log(line);
        // A rule multiplied a missing base value (Python's TypeError): a config problem, kind kept.
        if (result.IsError) throw new OptimConfigException(new[] { ConfigErrorModule.ofRule("", result.ErrorValue.Error) });
    }

    /// <summary>
    /// What can only be known with the model, checked before the optimizer sees a value: the values each
    /// planned group gives a built-in optimizer (PyTorch's range checks, finite, within the parameters'
    /// dtype), and custom keys that match no parameter (warnings; errors under <c>strict</c>).
    /// </summary>
    private void CheckBeforeBuilding(torch.nn.Module model, string? builtin)
    {
        Warnings.Clear();
        var limit = _walk?.Limit ?? Builder.LimitOf(model);
        var errors = new List<ConfigError>();
        if (builtin is not null)
            errors.AddRange(ConfigLint.planValues(limit, builtin, optimizer_cfg.Args, Planned.Select(p => p.Plan)));
        // A subclass reads paramwise keys of its own (and may match parameters its own way): lint only the default rules.
        var lintable = GetType() == typeof(DefaultOptimWrapperConstructor);
        var lint = lintable
            ? Config.checkValues(limit, builtin is null ? null : Microsoft.FSharp.Core.FSharpOption<string>.Some(builtin), optim_wrapper_cfg)
            : ConfigLint.empty;
        var warnings = lint.Warnings.ToList();
        if (lintable && !Paramwise.isEmpty(Settings))
        {
            // The matches add_params planned with: the model is not walked or scanned again.
            var matched = _matched ?? Paramwise.matchFacts(Settings, (_walk ?? ModuleWalk.Of(model)).Facts);
            var unmatched = ConfigLint.unmatchedKeysOf(Settings, matched);
            var escalated = ConfigLint.escalate(ConfigLint.isStrict(optim_wrapper_cfg.ParamwiseCfg),
                new ConfigLint.Lint(ListModule.Empty<ConfigError>(), unmatched));
            errors.AddRange(escalated.Errors);
            warnings.AddRange(escalated.Warnings);
        }
        errors.AddRange(lint.Errors.Where(e => !errors.Any(x => x.Path == e.Path)));
        if (errors.Count > 0) throw new OptimConfigException(errors);
        foreach (var w in warnings)
        {
            Warnings.Add(w);
            _logger.LogWarning("{Path}: {Message}", w.Path, w.Message);
        }
    }

    /// <summary>Logs one line through <see cref="LoggerFactory"/> and records it in <see cref="Logs"/>.</summary>
    protected void Log(Paramwise.LogLine line)
    {
        Logs.Add(line);
        // One line per parameter and option: nothing is formatted for a logger that would discard it.
        var level = line.Level.IsWarning ? LogLevel.Warning : LogLevel.Information;
        if (_logger.IsEnabled(level)) _logger.Log(level, "{Message}", line.Message);
    }

    /// <summary>Logs an INFO line (for subclasses, like MMEngine's <c>print_log(msg, logger='current')</c>).</summary>
    protected void print_log(string message) => Log(new Paramwise.LogLine(Paramwise.LogLevel.Info, message));
}
