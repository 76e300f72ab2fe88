using System.Text;
using Optim.Core;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Optimizer = TorchSharp.torch.optim.Optimizer;

namespace Optim;

/// <summary>
/// A snapshot of an <see cref="OptimWrapper"/>: the optimizer's state (TorchSharp's own binary form),
/// each group's hyper-parameters and extra keys (PyTorch's <c>param_groups</c>, with <c>params</c> as
/// indices), <c>base_param_settings</c>, the accumulation counters, and named extra entries
/// (<c>loss_scaler</c> for AMP). It is a deep copy: training on does not change it.
/// Save it with <see cref="save(Stream)"/> and read it back with <see cref="load(Stream)"/>.
/// </summary>
[Microsoft.FSharp.Core.StructuredFormatDisplay("{Repr}")]
public sealed class OptimStateDict
{
    private static readonly byte[] Magic = Encoding.ASCII.GetBytes("OPTIMSD\0");
    private const int FormatVersion = 1;

    /// <summary>PyTorch's class name of the optimizer it came from.</summary>
    public string optimizer_type { get; init; } = "";

    /// <summary>TorchSharp's serialized optimizer state, or null for optimizers without one (LBFGS).</summary>
    public byte[]? optimizer_state { get; init; }

    /// <summary>Each group's keys and values; <c>params</c> holds the parameters' indices, as in PyTorch.</summary>
    public List<OrderedDictionary<string, object?>> param_groups { get; init; } = new();

    /// <summary>Each group's parameter shapes, to check that a state fits before loading it.</summary>
    public List<List<long[]>> param_shapes { get; init; } = new();

    /// <summary>The wrapper's base pseudo group, when it has one.</summary>
    public OrderedDictionary<string, object?>? base_param_settings { get; set; }

    /// <summary>Backward passes so far (not saved by MMEngine).</summary>
    public int? inner_count { get; set; }

    /// <summary>The run length the counters were initialised with, or -1.</summary>
    public int? max_counts { get; set; }

    /// <summary>Further entries by name, e.g. <c>loss_scaler</c>; values are JSON-like .NET values.</summary>
    public OrderedDictionary<string, object?> entries { get; init; } = new();

    internal static OptimStateDict Capture(OptimWrapper wrapper)
    {
        var optimizer = wrapper.optimizer;
        var groups = OptimizerGroups.Of(optimizer);
        var index = 0;
        var sd = new OptimStateDict
        {
            optimizer_type = OptimizerGroups.PyTorchName(optimizer),
            optimizer_state = SerializeOptimizer(optimizer),
        };
        foreach (var g in groups)
        {
            var d = new OrderedDictionary<string, object?>();
            foreach (var k in g.Keys) d[k] = g[k];
            d["params"] = g.Params.Select(_ => (long)index++).ToList();
            sd.param_groups.Add(d);
            sd.param_shapes.Add(g.Params.Select(p => p.shape.ToArray()).ToList());
        }
        if (wrapper.base_param_settings is { } b)
        {
            sd.base_param_settings = new OrderedDictionary<string, object?>();
            foreach (var k in b.Keys) sd.base_param_settings[k] = b[k];
        }
        var (inner, max) = wrapper.Counters;
        sd.inner_count = inner;
        sd.max_counts = max;
        return sd;
    }

    /// <summary>Checks that the state fits, then applies it; on any failure restores the wrapper.</summary>
    internal void ApplyTo(OptimWrapper wrapper)
    {
        var optimizer = wrapper.optimizer;
        var groups = OptimizerGroups.Of(optimizer);
        var type = OptimizerGroups.PyTorchName(optimizer);
        if (optimizer_type.Length > 0 && optimizer_type != type)
            throw new StateDictException($"state dict is for a {optimizer_type} optimizer, the wrapper holds {type}");
        if (param_groups.Count != groups.Count)
            throw new StateDictException($"state dict has {param_groups.Count} param groups, the optimizer has {groups.Count}");
        for (int i = 0; i < groups.Count; i++)
        {
            var current = groups[i].Params;
            var saved = i < param_shapes.Count ? param_shapes[i] : null;
            if (saved is null || saved.Count != current.Count)
                throw new StateDictException($"param_groups[{i}]: state dict has {saved?.Count ?? 0} parameters, the optimizer has {current.Count}");
            for (int j = 0; j < current.Count; j++)
                if (!saved[j].SequenceEqual(current[j].shape))
                    throw new StateDictException(
                        $"param_groups[{i}].params[{j}]: state dict shape [{string.Join(", ", saved[j])}], parameter shape [{string.Join(", ", current[j].shape)}]");
        }

        var before = Capture(wrapper);
        try
        {
            Apply(wrapper, groups);
        }
        catch (Exception ex)
        {
            try { before.Apply(wrapper, groups); } catch { /* the original error is the one to report */ }
            throw ex as StateDictException ?? new StateDictException($"state dict could not be loaded: {ex.Message}", ex);
        }
    }

    private void Apply(OptimWrapper wrapper, IReadOnlyList<IParamGroup> groups)
    {
        var optimizer = wrapper.optimizer;
        if (optimizer_state is not null)
        {
            if (optimizer is not OptimizerHelper helper)
                throw new StateDictException($"{OptimizerGroups.PyTorchName(optimizer)} has no state dict in TorchSharp");
            using var reader = new BinaryReader(new MemoryStream(optimizer_state));
            helper.load_state_dict(reader);
        }
        for (int i = 0; i < groups.Count; i++)
        {
            var g = groups[i];
            foreach (var extra in g.Keys.Where(k => !param_groups[i].ContainsKey(k)).ToList()) g.Remove(extra);
            foreach (var (k, v) in param_groups[i])
                if (k != "params") g[k] = v;
        }
        if (base_param_settings is not null) wrapper.ReplaceBaseParamSettings(new PlainParamGroup(base_param_settings));
        if (inner_count is int inner) wrapper.RestoreCounters(inner, max_counts ?? -1);
    }

    private static byte[]? SerializeOptimizer(Optimizer optimizer)
    {
        if (optimizer is not OptimizerHelper helper) return null;
        using var ms = new MemoryStream();
        using (var writer = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true)) helper.save_state_dict(writer);
        return ms.ToArray();
    }

    /// <summary>
    /// Python's repr of the dict MMEngine's <c>state_dict()</c> returns: <c>state</c> (here TorchSharp's
    /// binary state, shown by size), <c>param_groups</c>, then the extra entries such as <c>loss_scaler</c>.
    /// </summary>
    public override string ToString()
    {
        var d = new OrderedDictionary<string, object?>
        {
            ["state"] = optimizer_state is null ? new OrderedDictionary<string, object?>() : $"<{optimizer_state.Length} bytes>",
            ["param_groups"] = param_groups,
        };
        foreach (var (k, v) in entries) d[k] = v;
        return Py.Repr(d);
    }

    /// <summary>Python's <c>repr</c>, which F# Interactive and <c>%A</c> print (see <see cref="ToString"/>).</summary>
    public string Repr => ToString();

    /// <summary>Everything but the optimizer's binary state, as Python-like JSON (for reading and diffing).</summary>
    public string ToJson(bool indented = true) => PyJson.write(indented, Header());

    private PyValue Header() => Py.ToPy(new OrderedDictionary<string, object?>
    {
        ["format"] = "optim-state-dict",
        ["version"] = (long)FormatVersion,
        ["optimizer_type"] = optimizer_type,
        ["param_groups"] = param_groups,
        ["param_shapes"] = param_shapes.Select(g => g.Select(s => s.ToList()).ToList()).ToList(),
        ["base_param_settings"] = base_param_settings,
        ["inner_count"] = inner_count is int i ? (long)i : null,
        ["max_counts"] = max_counts is int m ? (long)m : null,
        ["entries"] = entries,
        ["has_optimizer_state"] = optimizer_state is not null,
    });

    /// <summary>Writes the state to a stream.</summary>
    public void save(Stream stream)
    {
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(FormatVersion);
        var header = Encoding.UTF8.GetBytes(ToJson(indented: false));
        w.Write(header.Length);
        w.Write(header);
        w.Write((long)(optimizer_state?.Length ?? -1));
        if (optimizer_state is not null) w.Write(optimizer_state);
    }

    /// <summary>Writes the state to a file.</summary>
    public void save(string path)
    {
        using var f = File.Create(path);
        save(f);
    }

    /// <summary>Reads a state written by <see cref="save(Stream)"/>.</summary>
    /// <exception cref="StateDictException">The data is not an Optim state dict or is corrupt.</exception>
    public static OptimStateDict load(Stream stream)
    {
        try
        {
            using var r = new BinaryReader(stream, Encoding.UTF8, leaveOpen: true);
            if (!r.ReadBytes(Magic.Length).SequenceEqual(Magic)) throw new StateDictException("not an Optim state dict (bad magic)");
            var version = r.ReadInt32();
            if (version != FormatVersion) throw new StateDictException($"unsupported state dict version {version}");
            var headerLength = r.ReadInt32();
            if (headerLength < 0 || headerLength > stream.Length) throw new StateDictException("corrupt state dict header");
            var json = Encoding.UTF8.GetString(r.ReadBytes(headerLength));
            var parsed = PyJson.parse(json);
            if (parsed.IsError) throw new StateDictException($"corrupt state dict header: {parsed.ErrorValue}");
            var header = Py.FromPy(parsed.ResultValue) as OrderedDictionary<string, object?>
                ?? throw new StateDictException("corrupt state dict header: not an object");
            var stateLength = r.ReadInt64();
            byte[]? state = null;
            if (stateLength >= 0)
            {
                state = r.ReadBytes(checked((int)stateLength));
                if (state.Length != stateLength) throw new StateDictException("truncated state dict");
            }
            return FromHeader(header, state);
        }
        catch (StateDictException) { throw; }
        catch (Exception ex) { throw new StateDictException($"corrupt state dict: {ex.Message}", ex); }
    }

    /// <summary>Reads a state from a file.</summary>
    public static OptimStateDict load(string path)
    {
        using var f = File.OpenRead(path);
        return load(f);
    }

    private static OptimStateDict FromHeader(OrderedDictionary<string, object?> h, byte[]? state)
    {
        T Get<T>(string key) => h.TryGetValue(key, out var v) && v is T t ? t : throw new StateDictException($"state dict header: '{key}' missing or malformed");
        var groups = Get<List<object?>>("param_groups").Select((g, i) =>
            g as OrderedDictionary<string, object?> ?? throw new StateDictException($"state dict header: param_groups[{i}] is not an object")).ToList();
        var shapes = Get<List<object?>>("param_shapes").Select((g, i) =>
            (g as List<object?> ?? throw new StateDictException($"state dict header: param_shapes[{i}] is not a list"))
            .Select(s => (s as List<object?> ?? throw new StateDictException($"state dict header: param_shapes[{i}] holds a non-list"))
                .Select(Convert.ToInt64).ToArray()).ToList()).ToList();
        return new OptimStateDict
        {
            optimizer_type = Get<string>("optimizer_type"),
            optimizer_state = state,
            param_groups = groups,
            param_shapes = shapes,
            base_param_settings = h.TryGetValue("base_param_settings", out var b) ? b as OrderedDictionary<string, object?> : null,
            inner_count = h.TryGetValue("inner_count", out var ic) && ic is long icl ? (int)icl : null,
            max_counts = h.TryGetValue("max_counts", out var mc) && mc is long mcl ? (int)mcl : null,
            entries = h.TryGetValue("entries", out var e) && e is OrderedDictionary<string, object?> ed ? ed : new(),
        };
    }
}
