using System.Text.Json.Nodes;
using Microsoft.FSharp.Collections;
using Optim.Core;
using TorchSharp;

namespace Optim;

/// <summary>
/// A machine-readable account of what a config does to a model: the param groups in order with
/// their parameter names, the keys MMEngine's rules set and which rule set each, every option after
/// the optimizer filled its defaults, the log lines, the parameters left out — or every error.
/// The layout follows the golden <c>paramgroups_*.json</c> cases.
/// </summary>
public static class Inspection
{
    /// <summary>Resolves <paramref name="cfg"/> (JSON text) on <paramref name="model"/>; see <see cref="inspect(torch.nn.Module, Config.OptimWrapperConfig)"/>.</summary>
    public static JsonObject inspect(torch.nn.Module model, string cfg)
    {
        Config.OptimWrapperConfig parsed;
        try { parsed = Builder.ParseConfig(cfg); }
        catch (OptimConfigException e) { return ErrorResult(e.Errors, new List<Paramwise.LogLine>()); }
        return inspect(model, parsed);
    }

    /// <summary>
    /// Builds the wrapper the config describes and reports it:
    /// <c>{result: "ok", optimizer_type, optim_wrapper_type, optimizer_defaults, num_groups,
    /// param_groups: [{params, explicit_keys, provenance, options}], base_param_settings, get_lr,
    /// get_momentum, params_not_in_optimizer, logs: [{level, msg}]}</c>, or
    /// <c>{result: "error", errors: [{path, kind, message}], logs}</c>. <c>provenance</c> maps each
    /// explicit key to the paramwise option behind it (<c>bias_lr_mult</c>, <c>custom_keys["head"]</c>, ...);
    /// for a custom constructor only what the built wrapper shows is reported.
    /// </summary>
    public static JsonObject inspect(torch.nn.Module model, Config.OptimWrapperConfig cfg)
    {
        var errors = Builder.Validate(cfg, model);
        if (errors.Count > 0) return ErrorResult(errors, new List<Paramwise.LogLine>());
        IOptimWrapperConstructor constructor;
        try { constructor = Registries.OPTIM_WRAPPER_CONSTRUCTORS.get(cfg.Constructor)(cfg); }
        catch (OptimConfigException e) { return ErrorResult(e.Errors, new List<Paramwise.LogLine>()); }
        var logs = new List<Paramwise.LogLine>();
        object built;
        try { built = constructor.Invoke(model); }
        catch (Exception e) when (e is ArgumentException or KeyNotFoundException)
        {
            if (constructor is DefaultOptimWrapperConstructor d) logs.AddRange(d.Logs);
            var kind = e is KeyNotFoundException ? ErrorKind.Key : ErrorKind.Value;
            var list = e is OptimConfigException ce ? ce.Errors.ToList() : new List<ConfigError> { ConfigErrorModule.at("", kind, e.Message) };
            return ErrorResult(list, logs);
        }
        if (built is not OptimWrapper wrapper)
            return ErrorResult(new[] { ConfigErrorModule.at("constructor", ErrorKind.Type,
                $"{cfg.Constructor} returned {built?.GetType().Name ?? "null"}, not an OptimWrapper") }, logs);

        var named = ModuleFacts.NamedParameters(ModuleFacts.Unwrap(model));
        var nameOf = new Dictionary<long, string>();
        foreach (var (n, p) in named) nameOf.TryAdd(ModuleFacts.Identity(p), n);
        string NameOf(TorchSharp.Modules.Parameter p) => nameOf.TryGetValue(ModuleFacts.Identity(p), out var n) ? n : "<not in model>";

        // What the constructor passed to the optimizer, group by group, and the rule behind each key.
        List<(IReadOnlyList<string> Keys, Dictionary<string, string> Provenance)>? passed = null;
        if (constructor is DefaultOptimWrapperConstructor dc)
        {
            logs.AddRange(dc.Logs);
            var plans = new Dictionary<IParamGroup, Paramwise.GroupPlan>(ReferenceEqualityComparer.Instance);
            foreach (var (group, plan) in dc.Planned) plans[group] = plan;
            passed = dc.LastGroups.Select(g =>
            {
                var provenance = new Dictionary<string, string>();
                if (plans.TryGetValue(g, out var plan))
                    foreach (var o in plan.Options) provenance[o.Key] = o.Rule.Source;
                else
                    foreach (var k in g.Keys) provenance[k] = $"{constructor.GetType().Name}.add_params";
                return (g.Keys, provenance);
            }).ToList();
        }

        var optimizer = wrapper.optimizer;
        var groups = OptimizerGroups.Of(optimizer);
        var groupsJson = new List<PyValue>();
        var inOptimizer = new HashSet<long>();
        for (int i = 0; i < groups.Count; i++)
        {
            var g = groups[i];
            foreach (var p in g.Params) inOptimizer.Add(ModuleFacts.Identity(p));
            var entry = new List<Tuple<string, PyValue>>
            {
                Tuple.Create("params", PyValue.NewList(ListModule.OfSeq(g.Params.Select(p => PyValue.NewStr(NameOf(p)))))),
            };
            if (passed is not null && i < passed.Count)
            {
                var (keys, provenance) = passed[i];
                entry.Add(Tuple.Create("explicit_keys", PyValue.NewList(ListModule.OfSeq(keys.Select(PyValue.NewStr)))));
                entry.Add(Tuple.Create("provenance", PyValue.NewDict(ListModule.OfSeq(keys.Select(k => Tuple.Create(k, PyValue.NewStr(provenance[k])))))));
            }
            entry.Add(Tuple.Create("options", Dict(g.Keys.Select(k => new KeyValuePair<string, object?>(k, g[k])))));
            groupsJson.Add(PyValue.NewDict(ListModule.OfSeq(entry)));
        }

        var result = new List<Tuple<string, PyValue>>
        {
            Tuple.Create("result", PyValue.NewStr("ok")),
            Tuple.Create("optimizer_type", PyValue.NewStr(OptimizerGroups.PyTorchName(optimizer))),
            Tuple.Create("optim_wrapper_type", PyValue.NewStr(wrapper.GetType().Name)),
            Tuple.Create("optimizer_defaults", Dict(wrapper.defaults)),
            Tuple.Create("num_groups", PyValue.NewInt(groups.Count)),
            Tuple.Create("param_groups", PyValue.NewList(ListModule.OfSeq(groupsJson))),
            Tuple.Create("base_param_settings", wrapper.base_param_settings is { } b
                ? Dict(b.Keys.Select(k => new KeyValuePair<string, object?>(k, b[k]))) : PyValue.None),
            Tuple.Create("get_lr", Values(wrapper.get_lr())),
            Tuple.Create("get_momentum", Values(wrapper.get_momentum())),
            Tuple.Create("params_not_in_optimizer", PyValue.NewList(ListModule.OfSeq(
                named.Where(np => !inOptimizer.Contains(ModuleFacts.Identity(np.Param))).Select(np => PyValue.NewStr(np.Name))))),
            Tuple.Create("logs", Logs(logs)),
            Tuple.Create("warnings", Warnings(constructor is DefaultOptimWrapperConstructor dw ? dw.Warnings : Builder.Warnings(cfg))),
        };
        return Parse(PyValue.NewDict(ListModule.OfSeq(result)));
    }

    /// <summary>As <see cref="inspect(torch.nn.Module, string)"/>, as JSON text.</summary>
    public static string inspect_json(torch.nn.Module model, string cfg, bool indented = true) =>
        inspect(model, cfg).ToJsonString(new System.Text.Json.JsonSerializerOptions
        {
            WriteIndented = indented,
            Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        });

    private static JsonObject ErrorResult(IEnumerable<ConfigError> errors, List<Paramwise.LogLine> logs) =>
        Parse(PyValue.NewDict(ListModule.OfSeq(new[]
        {
            Tuple.Create("result", PyValue.NewStr("error")),
            Tuple.Create("errors", PyValue.NewList(ListModule.OfSeq(errors.Select(e => PyValue.NewDict(ListModule.OfSeq(new[]
            {
                Tuple.Create("path", PyValue.NewStr(e.Path)),
                Tuple.Create("kind", PyValue.NewStr(KindName(e.Kind))),
                Tuple.Create("message", PyValue.NewStr(e.Message)),
            })))))),
            Tuple.Create("logs", Logs(logs)),
        })));

    /// <summary>Python's exception name for an error kind.</summary>
    public static string KindName(ErrorKind kind) =>
        kind.IsAssertion ? "AssertionError" : kind.IsValue ? "ValueError" : kind.IsType ? "TypeError" : kind.IsKey ? "KeyError" : "RuntimeError";

    private static PyValue Logs(IEnumerable<Paramwise.LogLine> logs) =>
        PyValue.NewList(ListModule.OfSeq(logs.Select(l => PyValue.NewDict(ListModule.OfSeq(new[]
        {
            Tuple.Create("level", PyValue.NewStr(l.Level.IsWarning ? "WARNING" : "INFO")),
            Tuple.Create("msg", PyValue.NewStr(l.Message)),
        })))));

    private static PyValue Warnings(IEnumerable<ConfigLint.ConfigWarning> warnings) =>
        PyValue.NewList(ListModule.OfSeq(warnings.Select(w => PyValue.NewDict(ListModule.OfSeq(new[]
        {
            Tuple.Create("path", PyValue.NewStr(w.Path)),
            Tuple.Create("message", PyValue.NewStr(w.Message)),
        })))));

    private static PyValue Values(HyperParameterValues values) =>
        PyValue.NewDict(ListModule.OfSeq(values.Keys.Select(k => Tuple.Create(k, PyValue.NewList(ListModule.OfSeq(values.PythonValues(k)))))));

    private static PyValue Dict(IEnumerable<KeyValuePair<string, object?>> kvs) =>
        PyValue.NewDict(ListModule.OfSeq(kvs.Select(kv => Tuple.Create(kv.Key, Py.ToPy(kv.Value)))));

    private static JsonObject Parse(PyValue v) => JsonNode.Parse(PyJson.write(false, v))!.AsObject();
}
