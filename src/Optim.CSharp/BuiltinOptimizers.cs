using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Optim.Core;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Optimizer = TorchSharp.torch.optim.Optimizer;

namespace Optim;

/// <summary>
/// PyTorch's optimizer construction on TorchSharp: <c>OptimizerClass(param_groups, **kwargs)</c> where
/// each group's missing hyper-parameters come from the keyword arguments and then PyTorch's defaults,
/// a parameter in two groups is an error, and extra group keys (<c>lr_mult</c>, ...) are kept.
/// The optimizers are Optim's (<see cref="Torch"/> namespace): TorchSharp's classes with PyTorch 2.x's
/// <c>step</c> — libtorch's fused kernels for SGD, Adam, AdamW and Adagrad — honouring PyTorch's
/// <c>foreach</c> and <c>fused</c> keyword arguments; LBFGS is TorchSharp's native one.
/// </summary>
public static class BuiltinOptimizers
{
    private static readonly Dictionary<string, OptimizerFactory> Factories = new();

    /// <summary>The factory for a PyTorch optimizer name (the same delegate every time).</summary>
    public static OptimizerFactory Factory(string name)
    {
        lock (Factories)
        {
            if (!Factories.TryGetValue(name, out var f))
                Factories[name] = f = (groups, kwargs) => Create(name, groups, kwargs);
            return f;
        }
    }

    /// <summary>Whether <paramref name="factory"/> is one of the built-in ones, and which.</summary>
    public static string? NameOf(OptimizerFactory factory)
    {
        lock (Factories) return Factories.FirstOrDefault(kv => kv.Value == factory).Key;
    }

    /// <summary>
    /// The problems with an optimizer's keyword arguments (the core's <c>Config.checkOptimizerArgs</c>):
    /// keys it does not take, torch-only switches turned on, a missing required <c>lr</c>. Empty when fine.
    /// </summary>
    public static List<ConfigError> Check(string name, IReadOnlyDictionary<string, object?> kwargs) =>
        Config.checkOptimizerArgs(name, Py.ToPyDict(kwargs)).ToList();

    private static List<Optimizers.HyperParameter> HyperParameters(string name)
    {
        var found = Optimizers.tryHyperParameters(name);
        if (FSharpOption<Microsoft.FSharp.Collections.FSharpList<Optimizers.HyperParameter>>.get_IsNone(found))
            throw new ArgumentException($"{name} is not an optimizer TorchSharp provides", nameof(name));
        return found.Value.ToList();
    }

    /// <summary>Builds the optimizer <paramref name="name"/> over <paramref name="groups"/>.</summary>
    /// <exception cref="ArgumentException">Unknown keyword arguments, a parameter in two groups, bad values.</exception>
    public static Optimizer Create(string name, IReadOnlyList<IParamGroup> groups, IReadOnlyDictionary<string, object?> kwargs)
    {
        var problems = Check(name, kwargs);
        if (problems.Count > 0) throw new OptimConfigException(problems.Select(p => ConfigErrorModule.under("optimizer", p)));
        var all = groups.SelectMany(g => g.Params).ToList();
        if (Paramwise.hasDuplicateIdentities(all.Select(ModuleFacts.Identity)))
            throw new OptimConfigException(new[] { ConfigErrorModule.at("paramwise_cfg.bypass_duplicate", ErrorKind.Value,
                Paramwise.duplicateMessage + " (a parameter shared by two modules; set paramwise_cfg.bypass_duplicate to true to keep its first group)") });
        if (groups.Count == 0 || groups.All(g => g.Params.Count == 0)) throw new ArgumentException("optimizer got an empty parameter list");
        CheckValues(name, groups, all, kwargs);

        // kwargs over PyTorch's defaults.
        var defaults = new Dictionary<string, object?>();
        foreach (var h in HyperParameters(name))
            defaults[h.Name] = kwargs.TryGetValue(h.Name, out var v) && v is not null ? v : Py.FromPy(h.Default);
        double D(string key) => ToDouble(key, defaults[key]);
        bool B(string key) => defaults[key] is bool b ? b : throw new ArgumentException($"'{key}' expects true or false, got {Py.Repr(defaults[key])}");
        (double, double) P(string key) => ToPair(key, defaults[key]);
        // PyTorch's implementation switches (Optim's optimizers honour them; null = the fastest proven-equal one).
        bool? fe = kwargs.GetValueOrDefault("foreach") as bool?, fu = kwargs.GetValueOrDefault("fused") as bool?;

        Optimizer optimizer = name switch
        {
            "SGD" => Build(name, groups, (ps, o) => new SGD.ParamGroup(ps, o), () => new SGD.Options(),
                gs => new Torch.SGD(gs, D("lr"), D("momentum"), D("dampening"), D("weight_decay"), B("nesterov"), B("maximize"), fe, fu)),
            "Adam" => Build(name, groups, (ps, o) => new Adam.ParamGroup(ps, o), () => new Adam.Options(),
                gs => new Torch.Adam(gs, D("lr"), P("betas").Item1, P("betas").Item2, D("eps"), D("weight_decay"), B("amsgrad"), B("maximize"), fe, fu)),
            "AdamW" => Build(name, groups, (ps, o) => new AdamW.ParamGroup(ps, o), () => new AdamW.Options(),
                gs => new Torch.AdamW(gs, D("lr"), P("betas").Item1, P("betas").Item2, D("eps"), D("weight_decay"), B("amsgrad"), B("maximize"), fe, fu)),
            "Adagrad" => Build(name, groups, (ps, o) => new Adagrad.ParamGroup(ps, o), () => new Adagrad.Options(),
                gs => new Torch.Adagrad(gs, D("lr"), D("lr_decay"), D("weight_decay"), D("initial_accumulator_value"), D("eps"), fe, fu)),
            "Adadelta" => Build(name, groups, (ps, o) => new Adadelta.ParamGroup(ps, o), () => new Adadelta.Options(),
                gs => new Torch.Adadelta(gs, D("lr"), D("rho"), D("eps"), D("weight_decay"), B("maximize"), fe, fu)),
            "Adamax" => Build(name, groups, (ps, o) => new Adamax.ParamGroup(ps, o), () => new Adamax.Options(),
                gs => new Torch.Adamax(gs, D("lr"), P("betas").Item1, P("betas").Item2, D("eps"), D("weight_decay"), fe, fu)),
            "ASGD" => Build(name, groups, (ps, o) => new ASGD.ParamGroup(ps, o), () => new ASGD.Options(),
                gs => new Torch.ASGD(gs, D("lr"), D("lambd"), D("alpha"), D("t0"), D("weight_decay"), B("maximize"), fe, fu)),
            "NAdam" => Build(name, groups, (ps, o) => new NAdam.ParamGroup(ps, o), () => new NAdam.Options(),
                gs => new Torch.NAdam(gs, D("lr"), P("betas").Item1, P("betas").Item2, D("eps"), D("weight_decay"), D("momentum_decay"), fe, fu)),
            "RAdam" => Build(name, groups, (ps, o) => new RAdam.ParamGroup(ps, o), () => new RAdam.Options(),
                gs => new Torch.RAdam(gs, D("lr"), P("betas").Item1, P("betas").Item2, D("eps"), D("weight_decay"), fe, fu)),
            "RMSprop" => Build(name, groups, (ps, o) => new RMSProp.ParamGroup(ps, o), () => new RMSProp.Options(),
                gs => new Torch.RMSProp(gs, D("lr"), D("alpha"), D("eps"), D("weight_decay"), D("momentum"), B("centered"), B("maximize"), fe, fu)),
            "Rprop" => Build(name, groups, (ps, o) => new Rprop.ParamGroup(ps, o), () => new Rprop.Options(),
                gs => new Torch.Rprop(gs, D("lr"), P("etas").Item1, P("etas").Item2, P("step_sizes").Item1, P("step_sizes").Item2, B("maximize"), fe, fu)),
            "LBFGS" => CreateLbfgs(groups, D, defaults),
            _ => throw new ArgumentException($"{name} is not an optimizer TorchSharp provides", nameof(name)),
        };
        // The values keep the Python types they were given (TorchSharp stores doubles).
        OptimizerGroups.RememberDefaults(optimizer, defaults);
        // Extra keys (lr_mult, decay_mult, ...) live beside TorchSharp's options, as in PyTorch's group dicts.
        var views = OptimizerGroups.Of(optimizer);
        for (int i = 0; i < groups.Count && i < views.Count; i++)
            foreach (var (key, value) in PlainParamGroup.EntriesOf(groups[i]))
                if (!IsHyper(name, key) || !views[i].ContainsKey(key))
                    views[i][key] = value;
        return optimizer;
    }

    /// <summary>
    /// PyTorch's range checks, finiteness and the parameters' dtype range on the keyword arguments and on
    /// every group's own values, before TorchSharp sees any (TorchSharp fails natively, part way, or from
    /// a finalizer). Paths: <c>optimizer.key</c>, <c>param_groups[i].key</c>.
    /// </summary>
    private static void CheckValues(string name, IReadOnlyList<IParamGroup> groups, List<Parameter> all, IReadOnlyDictionary<string, object?> kwargs)
    {
        var limit = ModuleFacts.LimitOf(all);
        var given = Py.ToPyDict(kwargs.Where(kv => kv.Value is not null));
        var errors = new List<ConfigError>();
        foreach (var (key, e) in OptimizerRules.check(limit, name, OptimizerRules.effective(name, ListModule.OfArray(new[] { given })), ListModule.OfSeq(given.Select(kv => kv.Item1))).Select(t => (t.Item1, t.Item2)))
            errors.Add(ConfigErrorModule.ofRule(ConfigErrorModule.key("optimizer", key), e));
        var owns = groups.Select(g => Py.ToPyDict(PlainParamGroup.EntriesOf(g).Where(kv => kv.Value is not null && IsHyper(name, kv.Key))));
        foreach (var (i, key, e) in OptimizerRules.checkGroups(limit, name, given, owns).Select(t => (t.Item1, t.Item2, t.Item3)))
            errors.Add(ConfigErrorModule.ofRule(ConfigErrorModule.key(ConfigErrorModule.index("param_groups", i), key), e));
        if (errors.Count > 0) throw new OptimConfigException(errors);
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, HashSet<string>> HyperNames = new();

    private static bool IsHyper(string name, string key) =>
        HyperNames.GetOrAdd(name, n => HyperParameters(n).Select(h => h.Name).ToHashSet()).Contains(key);

    private static Optimizer Build<TGroup, TOptions>(string name, IReadOnlyList<IParamGroup> groups,
        Func<IEnumerable<Parameter>, TOptions, TGroup> group, Func<TOptions> options, Func<IEnumerable<TGroup>, Optimizer> create)
        where TOptions : OptimizerOptions
        where TGroup : ParamGroup
    {
        var built = new List<TGroup>();
        foreach (var g in groups)
        {
            var o = options();
            // Hyper-parameters the group sets go into TorchSharp's options (PyTorch names → fields); the
            // optimizer fills the others from its defaults when it adds the group.
            var view = new TorchParamGroup(name, o, null, null);
            foreach (var (key, value) in PlainParamGroup.EntriesOf(g))
                if (IsHyper(name, key) && view.ContainsKey(key)) view[key] = value;
            built.Add(group(g.Params, o));
        }
        // TorchSharp's constructor adds the groups in O(parameters²); construct it empty and add them in linear time.
        var optimizer = create(Array.Empty<TGroup>());
        if (!LinearParamGroups.Supports(optimizer)) return create(built);
        LinearParamGroups.AddAll(optimizer, built.Cast<ParamGroup>());
        return optimizer;
    }

    private static Optimizer CreateLbfgs(IReadOnlyList<IParamGroup> groups, Func<string, double> d, Dictionary<string, object?> defaults)
    {
        if (groups.Count != 1) throw new ArgumentException("LBFGS doesn't support per-parameter options (parameter groups)");
        if (groups[0].Keys.Any(k => IsHyper("LBFGS", k)))
            throw new ArgumentException("TorchSharp's LBFGS takes its hyper-parameters from the optimizer config only, not from a param group");
        long? maxEval = defaults["max_eval"] is null ? null : Convert.ToInt64(defaults["max_eval"]);
        return torch.optim.LBFGS(groups[0].Params, d("lr"), Convert.ToInt64(defaults["max_iter"]), maxEval,
            d("tolerance_grad"), d("tolerance_change"), Convert.ToInt64(defaults["history_size"]));
    }

    private static double ToDouble(string key, object? value) => value switch
    {
        double x => x,
        float x => x,
        long x => x,
        int x => x,
        _ => throw new ArgumentException($"'{key}' expects a number, got {Py.Repr(value)}", key),
    };

    private static (double, double) ToPair(string key, object? value) => value switch
    {
        ValueTuple<double, double> t => t,
        System.Collections.IList { Count: 2 } l => (ToDouble(key, l[0]), ToDouble(key, l[1])),
        _ => throw new ArgumentException($"'{key}' expects two numbers, got {Py.Repr(value)}", key),
    };
}
