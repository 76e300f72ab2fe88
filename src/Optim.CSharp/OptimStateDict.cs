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
    private const int FormatVersion = 2;

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

    /// <summary>
    /// Checks everything that can be checked without touching the wrapper: optimizer type, group count,
    /// parameter shapes, the optimizer state's tensors (dtype and shape per parameter), group value types,
    /// and the counters (through the core's rule). Throws naming the first misfit.
    /// </summary>
    internal void Validate(OptimWrapper wrapper, string path = "")
    {
        string At(string p) => path.Length == 0 ? p : path + "." + p;
        var optimizer = wrapper.optimizer;
        var groups = OptimizerGroups.Of(optimizer);
        var type = OptimizerGroups.PyTorchName(optimizer);
        if (optimizer_type.Length > 0 && optimizer_type != type)
            throw Misfit(At("optimizer_type"), $"state dict is for {Checkpointing.article(optimizer_type)} optimizer, the wrapper holds {type}");
        if (param_groups.Count != groups.Count)
            throw Misfit(At("param_groups"), $"state dict has {param_groups.Count} param groups, the optimizer has {groups.Count}");
        for (int i = 0; i < groups.Count; i++)
        {
            var current = groups[i].Params;
            var saved = i < param_shapes.Count ? param_shapes[i] : null;
            if (saved is null || saved.Count != current.Count)
                throw Misfit(At($"param_groups[{i}].params"), $"state dict has {saved?.Count ?? 0} parameters, the optimizer has {current.Count}");
            for (int j = 0; j < current.Count; j++)
                if (!saved[j].SequenceEqual(current[j].shape))
                    throw Misfit(At($"param_groups[{i}].params[{j}]"),
                        $"shape [{string.Join(", ", saved[j])}] where the parameter has shape [{string.Join(", ", current[j].shape)}]");
            foreach (var (key, value) in param_groups[i])
            {
                if (key == "params" || !groups[i].ContainsKey(key)) continue;
                if (!SameKind(groups[i][key], value))
                    throw Misfit(At($"param_groups[{i}].{key}"), $"{Py.Repr(value)} where the optimizer's '{key}' is {Py.Repr(groups[i][key])}");
            }
        }
        if (inner_count is null) throw Misfit(At("inner_count"), "missing");
        wrapper.CheckCounters(inner_count.Value, max_counts ?? -1, At(""));
        if (optimizer_state is not null) OptimizerStateCheck.Validate(optimizer, optimizer_state, At("optimizer_state"));
        else if (optimizer is OptimizerHelper && optimizer_type.Length > 0)
            throw Misfit(At("optimizer_state"), $"missing: the state has no optimizer state, the {type} optimizer has one");
    }

    private static StateDictException Misfit(string path, string message) =>
        new CheckpointException(path.TrimEnd('.'), message);

    /// <summary>Whether a saved group value has the kind (number, bool, pair, text) of the live one.</summary>
    private static bool SameKind(object? live, object? saved) => live switch
    {
        double or float or long or int => saved is double or float or long or int,
        bool => saved is bool,
        ValueTuple<double, double> => saved is ValueTuple<double, double> || saved is IList<object?> { Count: 2 } l && l.All(x => x is double or long),
        null => true,
        _ => true,
    };

    /// <summary>Validates, then applies; on any failure while applying restores the wrapper.</summary>
    internal void ApplyTo(OptimWrapper wrapper)
    {
        wrapper.ValidateState(this, "");
        var groups = OptimizerGroups.Of(wrapper.optimizer);
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

    /// <summary>Applies a validated state (no checks).</summary>
    internal void Apply(OptimWrapper wrapper) => Apply(wrapper, OptimizerGroups.Of(wrapper.optimizer));

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

    /// <summary>The payload inside the checked envelope: lossless JSON header, then the optimizer's bytes.</summary>
    internal byte[] ToBytes()
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true))
        {
            var header = Encoding.UTF8.GetBytes(PyJson.writeLossless(Header()));
            w.Write(header.Length);
            w.Write(header);
            w.Write((long)(optimizer_state?.Length ?? -1));
            if (optimizer_state is not null) w.Write(optimizer_state);
        }
        return ms.ToArray();
    }

    /// <summary>Reads what <see cref="ToBytes"/> wrote (already checksum-verified).</summary>
    internal static OptimStateDict FromBytes(ReadOnlySpan<byte> bytes, string path = "")
    {
        StateDictException Corrupt(string m) => new CheckpointException(path, $"corrupt state dict: {m}");
        var data = bytes.ToArray();
        try
        {
            using var r = new BinaryReader(new MemoryStream(data, writable: false), Encoding.UTF8);
            var headerLength = r.ReadInt32();
            if (headerLength < 0 || headerLength > data.Length - 4) throw Corrupt($"header length {headerLength}");
            var json = Encoding.UTF8.GetString(r.ReadBytes(headerLength));
            var parsed = PyJson.parseLossless(json);
            if (parsed.IsError) throw Corrupt($"header: {parsed.ErrorValue}");
            var header = Py.FromPy(parsed.ResultValue) as OrderedDictionary<string, object?>
                ?? throw Corrupt("header is not an object");
            var stateLength = r.ReadInt64();
            byte[]? state = null;
            if (stateLength >= 0)
            {
                if (stateLength > data.Length - r.BaseStream.Position) throw Corrupt("optimizer state runs past the end");
                state = r.ReadBytes((int)stateLength);
            }
            if (r.BaseStream.Position != data.Length) throw Corrupt($"{data.Length - r.BaseStream.Position} bytes after the optimizer state");
            return FromHeader(header, state, path);
        }
        catch (StateDictException) { throw; }
        catch (Exception ex) { throw new CheckpointException(path, $"corrupt state dict: {ex.Message}", ex); }
    }

    /// <summary>
    /// Writes the state to a stream: a checked envelope (magic, format version, length, SHA-256) around
    /// the state, so that <see cref="load(Stream)"/> rejects any truncation or corruption.
    /// </summary>
    public void save(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var payload = ToBytes();
        CheckedFile.Write(stream, Magic, FormatVersion, payload.LongLength, s => s.Write(payload));
    }

    /// <summary>
    /// Writes the state to a file atomically: a temporary file in the same folder, flushed to disk, then
    /// renamed over <paramref name="path"/>. A failure at any point leaves the previous file intact.
    /// </summary>
    public void save(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var payload = ToBytes();
        CheckedFile.WriteAtomically(path, f => CheckedFile.Write(f, Magic, FormatVersion, payload.LongLength, s => s.Write(payload)));
    }

    /// <summary>
    /// Reads a state written by <see cref="save(Stream)"/> from the stream's position (seekable or not,
    /// e.g. a GZipStream), verifying its checksum first. Reads exactly the state's bytes.
    /// </summary>
    /// <exception cref="StateDictException">The data is not an Optim state dict, another format version,
    /// truncated, or corrupt (checksum mismatch).</exception>
    public static OptimStateDict load(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var payload = CheckedFile.Read(stream, Magic, "state dict", FormatVersion, m => new CheckpointException("", m));
        return FromBytes(payload);
    }

    /// <summary>Reads a state from a file (see <see cref="load(Stream)"/>).</summary>
    public static OptimStateDict load(string path)
    {
        using var f = File.OpenRead(path);
        return load(f);
    }

    private static OptimStateDict FromHeader(OrderedDictionary<string, object?> h, byte[]? state, string path)
    {
        StateDictException Bad(string key, string what) => new CheckpointException(path.Length == 0 ? key : path + "." + key, what);
        T Get<T>(string key) => h.TryGetValue(key, out var v) && v is T t ? t : throw Bad(key, "missing or malformed");
        var groups = Get<List<object?>>("param_groups").Select((g, i) =>
            g as OrderedDictionary<string, object?> ?? throw Bad($"param_groups[{i}]", "not an object")).ToList();
        var shapes = Get<List<object?>>("param_shapes").Select((g, i) =>
            (g as List<object?> ?? throw Bad($"param_shapes[{i}]", "not a list"))
            .Select((s, j) => (s as List<object?> ?? throw Bad($"param_shapes[{i}][{j}]", "not a list"))
                .Select(x => x is long l ? l : throw Bad($"param_shapes[{i}][{j}]", "not a list of integers")).ToArray()).ToList()).ToList();
        int? Counter(string key)
        {
            if (!h.TryGetValue(key, out var v) || v is null) return null;
            if (v is not long l) throw Bad(key, $"must be an integer, got {Py.Repr(v)}");
            // Out-of-range values are kept out of int by the core's check at load time: report them there.
            if (l < int.MinValue || l > int.MaxValue) throw Bad(key, $"{l} is out of range");
            return (int)l;
        }
        return new OptimStateDict
        {
            optimizer_type = Get<string>("optimizer_type"),
            optimizer_state = state,
            param_groups = groups,
            param_shapes = shapes,
            base_param_settings = h.TryGetValue("base_param_settings", out var b) ? b as OrderedDictionary<string, object?> : null,
            inner_count = Counter("inner_count"),
            max_counts = Counter("max_counts"),
            entries = h.TryGetValue("entries", out var e) && e is OrderedDictionary<string, object?> ed ? ed : new(),
        };
    }
}
