using System.Text;
using System.Text.Json.Nodes;
using Microsoft.FSharp.Collections;
using Optim.Core;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim;

/// <summary>
/// A checkpoint that does not fit what it is loaded into, or is not a valid checkpoint (truncated,
/// corrupted, another format). <see cref="Path"/> says where (<c>model["fc.weight"]</c>,
/// <c>optim_wrapper.gen.param_groups[0].lr</c>, <c>schedulers[1]</c>); nothing was changed.
/// </summary>
public class CheckpointException : StateDictException
{
    /// <summary>Creates the exception: where, and what was wrong there.</summary>
    public CheckpointException(string path, string reason, Exception? inner = null)
        : base(path.Length == 0 ? reason : $"{path}: {reason}", inner)
    {
        Path = path;
        Reason = reason;
    }

    /// <summary>Where in the checkpoint or state dict ("" for the file as a whole).</summary>
    public string Path { get; }

    /// <summary>What was wrong, without the path.</summary>
    public string Reason { get; }
}

/// <summary>
/// One-file training checkpoint: the model's state dict (parameters and buffers), the optimizer
/// wrapper (an <see cref="OptimWrapper"/>, <see cref="AmpOptimWrapper"/> or <see cref="OptimWrapperDict"/>:
/// optimizer state, group hyper-parameters, accumulation counters, loss scaler), the pending gradients
/// when saved mid-accumulation, any number of schedulers, the torch CPU random generator, and user
/// metadata (epoch, iteration, anything JSON). Saving to a path is atomic (temporary file in the same
/// folder, flushed, renamed); every file carries a format version and a SHA-256 checksum that is
/// verified before anything is applied; loading checks every part against the live objects first and
/// only then applies, so a failed load changes nothing.
/// </summary>
/// <example>
/// <code>
/// Checkpoint.Save("run/last.ckpt", model, wrapper, schedulers, new JsonObject { ["epoch"] = epoch });
/// var meta = Checkpoint.Load("run/last.ckpt", model, wrapper, schedulers);
/// var epoch = (int)meta["epoch"]!;
/// </code>
/// </example>
public static class Checkpoint
{
    private static readonly byte[] Magic = Encoding.ASCII.GetBytes("OPTIMCKP");

    /// <summary>The format version this library writes and reads.</summary>
    public static int FormatVersion => Checkpointing.formatVersion;

    /// <summary>
    /// Saves the whole training state to <paramref name="path"/> atomically: written to a temporary file
    /// in the same folder, flushed to disk, then renamed over the target. If saving fails (or the process
    /// dies) at any point, the previous file at <paramref name="path"/> is left intact.
    /// </summary>
    /// <param name="path">The checkpoint file.</param>
    /// <param name="model">The model (its <c>state_dict()</c>: parameters and buffers).</param>
    /// <param name="optim_wrapper">The wrapper, or an <see cref="OptimWrapperDict"/>.</param>
    /// <param name="schedulers">The schedulers, in an order <see cref="Load(string, nn.Module, OptimWrapper, IEnumerable{ParamScheduler}?)"/> will be given again.</param>
    /// <param name="metadata">Anything JSON (epoch, iteration, config); returned by Load.</param>
    public static void Save(string path, nn.Module model, OptimWrapper optim_wrapper,
                            IEnumerable<ParamScheduler>? schedulers = null, JsonObject? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        var sections = Capture(model, optim_wrapper, schedulers, metadata);
        CheckedFile.WriteAtomically(path, f => Write(f, sections));
    }

    /// <summary>Saves the whole training state to a stream (see the path overload for what is saved).</summary>
    public static void Save(Stream stream, nn.Module model, OptimWrapper optim_wrapper,
                            IEnumerable<ParamScheduler>? schedulers = null, JsonObject? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Write(stream, Capture(model, optim_wrapper, schedulers, metadata));
    }

    /// <summary>
    /// Loads a checkpoint written by <see cref="Save(string, nn.Module, OptimWrapper, IEnumerable{ParamScheduler}?, JsonObject?)"/>:
    /// verifies its checksum, checks every part against <paramref name="model"/>,
    /// <paramref name="optim_wrapper"/> and <paramref name="schedulers"/> (names, dtypes and shapes of
    /// tensors, optimizer type and state, counters, scaler, scheduler types), and only then applies it
    /// all. Returns the metadata given to Save (an empty object if none).
    /// </summary>
    /// <exception cref="CheckpointException">Not a checkpoint, truncated, corrupt, another format version,
    /// or a part that does not fit; the message names what and where. Nothing was changed.</exception>
    public static JsonObject Load(string path, nn.Module model, OptimWrapper optim_wrapper, IEnumerable<ParamScheduler>? schedulers = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Load(f, model, optim_wrapper, schedulers);
    }

    /// <summary>
    /// Loads a checkpoint from a stream, seekable or not (a GZipStream, a network stream), reading exactly
    /// the checkpoint's bytes from its position. See the path overload.
    /// </summary>
    /// <exception cref="CheckpointException">See the path overload. Nothing was changed.</exception>
    public static JsonObject Load(Stream stream, nn.Module model, OptimWrapper optim_wrapper, IEnumerable<ParamScheduler>? schedulers = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(optim_wrapper);
        var scheds = (schedulers ?? Array.Empty<ParamScheduler>()).ToList();
        var payload = CheckedFile.Read(stream, Magic, "checkpoint", FormatVersion, m => new CheckpointException("", m));
        var plan = Plan.Validate(payload, model, optim_wrapper, scheds);
        try
        {
            plan.Apply(model, optim_wrapper, scheds);
        }
        finally
        {
            plan.Dispose();
        }
        return plan.Metadata;
    }

    // ---------------------------------------------------------------------------------------------
    // Writing

    private static void Write(Stream stream, IReadOnlyList<Sections.Section> sections) =>
        CheckedFile.Write(stream, Magic, FormatVersion, Sections.TotalLength(sections), s => Sections.WriteAll(s, sections));

    private static IReadOnlyList<Sections.Section> Capture(nn.Module model, OptimWrapper wrapper,
                                                           IEnumerable<ParamScheduler>? schedulers, JsonObject? metadata)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(wrapper);
        var sections = new List<Sections.Section>();
        var manifest = new OrderedDictionary<string, object?>
        {
            ["format"] = "optim-checkpoint",
            ["version"] = (long)FormatVersion,
        };

        var entries = model.state_dict().ToList();
        manifest["model"] = entries.Select(kv => Spec(kv.Key, kv.Value)).ToList();
        sections.Add(TensorSection("model", entries.Select(kv => kv.Value).ToList()));

        var grads = new List<(string, Tensor)>();
        foreach (var (name, p) in model.named_parameters())
            if (p.grad is { } g) grads.Add((name, g));
        manifest["grads"] = grads.Select(x => Spec(x.Item1, x.Item2)).ToList();
        sections.Add(TensorSection("grads", grads.Select(x => x.Item2).ToList()));

        if (wrapper is OptimWrapperDict dict)
        {
            manifest["optim_wrapper"] = new OrderedDictionary<string, object?>
            {
                ["type"] = nameof(OptimWrapperDict),
                ["members"] = dict.items().Select(kv => new OrderedDictionary<string, object?> { ["name"] = kv.Key, ["type"] = kv.Value.GetType().Name }).ToList(),
            };
            foreach (var (name, w) in dict.items()) sections.Add(Sections.Bytes("optim/" + name, w.state_dict().ToBytes()));
        }
        else
        {
            manifest["optim_wrapper"] = new OrderedDictionary<string, object?> { ["type"] = wrapper.GetType().Name };
            sections.Add(Sections.Bytes("optim", wrapper.state_dict().ToBytes()));
        }

        manifest["schedulers"] = (schedulers ?? Array.Empty<ParamScheduler>()).Select(s => new OrderedDictionary<string, object?>
        {
            ["type"] = s.TypeName,
            ["state"] = ScheduleState.toPy(s.State),
        }).ToList();

        using (var rng = torch.random.get_rng_state())
        {
            var bytes = TensorBytes(rng);
            manifest["rng"] = new OrderedDictionary<string, object?> { ["cpu"] = (long)bytes.Length };
            sections.Add(Sections.Bytes("rng", bytes));
        }

        manifest["metadata"] = metadata?.ToJsonString();
        var manifestBytes = Encoding.UTF8.GetBytes(PyJson.writeLossless(Py.ToPy(manifest)));
        sections.Insert(0, Sections.Bytes("manifest", manifestBytes));
        return sections;
    }

    private static OrderedDictionary<string, object?> Spec(string name, Tensor t) => new()
    {
        ["name"] = name,
        ["dtype"] = Dtypes.Name(t.dtype),
        ["shape"] = t.shape.ToList(),
    };

    private static Sections.Section TensorSection(string name, IReadOnlyList<Tensor> tensors)
    {
        var length = tensors.Sum(t => t.NumberOfElements * t.ElementSize);
        return new Sections.Section(name, length, s =>
        {
            foreach (var t in tensors)
            {
                if (t.NumberOfElements == 0) continue;
                using var scope = torch.NewDisposeScope();
                var cpu = t.detach().cpu().contiguous();
                cpu.WriteBytesToStream(s, 1 << 20);
            }
        });
    }

    private static byte[] TensorBytes(Tensor t)
    {
        using var ms = new MemoryStream();
        using var scope = torch.NewDisposeScope();
        if (t.NumberOfElements > 0) t.detach().cpu().contiguous().WriteBytesToStream(ms, 1 << 20);
        return ms.ToArray();
    }

    // ---------------------------------------------------------------------------------------------
    // Reading: everything is parsed and checked into a plan; applying the plan cannot fail on bad data.

    private sealed class Plan : IDisposable
    {
        private readonly List<(Tensor Live, Tensor Loaded)> _model = new();
        private readonly List<(Parameter Param, Tensor? Grad)> _grads = new();
        private OptimStateDict? _single;
        private OrderedDictionary<string, OptimStateDict>? _dict;
        private readonly List<Schedules.State> _schedulers = new();
        private Tensor? _rng;

        public JsonObject Metadata { get; private set; } = new();

        public static Plan Validate(byte[] payload, nn.Module model, OptimWrapper wrapper, List<ParamScheduler> schedulers)
        {
            var plan = new Plan();
            try
            {
                plan.Read(payload, model, wrapper, schedulers);
                return plan;
            }
            catch
            {
                plan.Dispose();
                throw;
            }
        }

        private static CheckpointException Corrupt(string path, string m) => new(path, m);

        private static void Check(Microsoft.FSharp.Core.FSharpResult<Microsoft.FSharp.Core.Unit, ConfigError> r)
        {
            if (r.IsError) throw new CheckpointException(r.ErrorValue.Path, r.ErrorValue.Message);
        }

        private void Read(byte[] payload, nn.Module model, OptimWrapper wrapper, List<ParamScheduler> schedulers)
        {
            var sections = Sections.ReadAll(payload, m => Corrupt("", m));
            ArraySegment<byte> Section(string name) =>
                sections.TryGetValue(name, out var s) ? s : throw Corrupt("", $"the checkpoint has no '{name}' section");
            var parsed = PyJson.parseLossless(Encoding.UTF8.GetString(Section("manifest")));
            if (parsed.IsError) throw Corrupt("manifest", parsed.ErrorValue);
            var manifest = Py.FromPy(parsed.ResultValue) as OrderedDictionary<string, object?> ?? throw Corrupt("manifest", "not an object");
            T Get<T>(string key) => manifest.TryGetValue(key, out var v) && v is T t ? t : throw Corrupt(key, "missing or malformed");

            // Model: strict names, then dtype and shape of every entry.
            var live = model.state_dict();
            var saved = Specs(Get<List<object?>>("model"), "model");
            var parameterNames = model.named_parameters().Select(x => x.name).ToHashSet();
            Check(Checkpointing.checkNames("model", "entries", ListModule.OfSeq(saved.Select(s => s.Name)), ListModule.OfSeq(live.Keys)));
            var modelTensors = Tensors(Section("model"), saved, "model");
            for (int i = 0; i < saved.Count; i++)
            {
                var t = live[saved[i].Name];
                Check(Checkpointing.checkTensor(Key("model", saved[i].Name), parameterNames.Contains(saved[i].Name) ? "parameter" : "buffer",
                    saved[i].Spec, SpecOf(t)));
                _model.Add((t, modelTensors[i]));
            }

            // Pending gradients: only parameters of the model, each fitting its parameter.
            var parameters = model.named_parameters().ToDictionary(x => x.name, x => x.parameter);
            var savedGrads = Specs(Get<List<object?>>("grads"), "grads");
            var gradTensors = Tensors(Section("grads"), savedGrads, "grads");
            var gradOf = new Dictionary<string, Tensor>();
            for (int i = 0; i < savedGrads.Count; i++)
            {
                var name = savedGrads[i].Name;
                if (!parameters.TryGetValue(name, out var p)) throw new CheckpointException(Key("grads", name), "a gradient for a parameter the model does not have");
                if (!gradOf.TryAdd(name, gradTensors[i])) throw new CheckpointException(Key("grads", name), "saved twice");
                Check(Checkpointing.checkTensor(Key("grads", name), "parameter", savedGrads[i].Spec, SpecOf(p)));
            }
            foreach (var (name, p) in parameters) _grads.Add((p, gradOf.GetValueOrDefault(name)));

            // Wrapper(s).
            var w = Get<OrderedDictionary<string, object?>>("optim_wrapper");
            var savedType = w.TryGetValue("type", out var st) && st is string s1 ? s1 : throw Corrupt("optim_wrapper.type", "missing");
            if (wrapper is OptimWrapperDict dict)
            {
                if (savedType != nameof(OptimWrapperDict))
                    throw new CheckpointException("optim_wrapper", $"{A(savedType)} state where the wrapper is an OptimWrapperDict");
                var members = (w.TryGetValue("members", out var m) ? m as List<object?> : null) ?? throw Corrupt("optim_wrapper.members", "missing");
                var names = members.Select((x, i) => (x as OrderedDictionary<string, object?>)?.GetValueOrDefault("name") as string
                    ?? throw Corrupt($"optim_wrapper.members[{i}]", "malformed")).ToList();
                var types = members.Select(x => ((OrderedDictionary<string, object?>)x!).GetValueOrDefault("type") as string ?? "").ToList();
                Check(Checkpointing.checkNames("optim_wrapper", "wrappers", ListModule.OfSeq(names), ListModule.OfSeq(dict.keys())));
                _dict = new OrderedDictionary<string, OptimStateDict>();
                for (int i = 0; i < names.Count; i++)
                {
                    var member = dict[names[i]];
                    var at = "optim_wrapper." + names[i];
                    if (types[i] != member.GetType().Name)
                        throw new CheckpointException(at, $"{A(types[i])} state where the wrapper is {A(member.GetType().Name)}");
                    var sd = OptimStateDict.FromBytes(Section("optim/" + names[i]), at);
                    member.ValidateState(sd, at);
                    _dict[names[i]] = sd;
                }
            }
            else
            {
                if (savedType != wrapper.GetType().Name)
                    throw new CheckpointException("optim_wrapper", $"{A(savedType)} state where the wrapper is {A(wrapper.GetType().Name)}");
                _single = OptimStateDict.FromBytes(Section("optim"), "optim_wrapper");
                wrapper.ValidateState(_single, "optim_wrapper");
            }

            // Schedulers: same number, same kinds, states that load.
            var savedSchedulers = Get<List<object?>>("schedulers");
            Check(Checkpointing.checkCount("schedulers", "schedulers", savedSchedulers.Count, schedulers.Count));
            for (int i = 0; i < schedulers.Count; i++)
            {
                var at = $"schedulers[{i}]";
                var entry = savedSchedulers[i] as OrderedDictionary<string, object?> ?? throw Corrupt(at, "malformed");
                var type = entry.GetValueOrDefault("type") as string ?? throw Corrupt(at + ".type", "missing");
                var state = entry.GetValueOrDefault("state") as OrderedDictionary<string, object?> ?? throw Corrupt(at + ".state", "missing");
                var paramName = state.GetValueOrDefault("param_name") as string ?? throw Corrupt(at + ".state.param_name", "missing");
                Check(Checkpointing.checkScheduler(at, type, paramName, schedulers[i].TypeName, schedulers[i].param_name));
                try { _schedulers.Add(schedulers[i].CheckState(state, at)); }
                catch (CheckpointException) { throw; }
                catch (Exception ex) when (ex is ArgumentException or KeyNotFoundException or InvalidOperationException)
                {
                    throw new CheckpointException(at, ex.Message, ex);
                }
            }

            // Random generator: a state of the size this libtorch uses.
            var rng = Section("rng");
            using (var current = torch.random.get_rng_state())
            {
                if (rng.Count != current.NumberOfElements * current.ElementSize)
                    throw new CheckpointException("rng.cpu", $"{rng.Count} bytes where this libtorch's generator state has {current.NumberOfElements * current.ElementSize}");
                _rng = torch.empty(current.shape, current.dtype);
                _rng.bytes = rng.AsSpan();
            }

            // Metadata.
            var meta = manifest.GetValueOrDefault("metadata");
            if (meta is string text)
            {
                try { Metadata = JsonNode.Parse(text) as JsonObject ?? throw Corrupt("metadata", "not a JSON object"); }
                catch (System.Text.Json.JsonException ex) { throw Corrupt("metadata", ex.Message); }
            }
            else if (meta is not null) throw Corrupt("metadata", "malformed");
        }

        public void Apply(nn.Module model, OptimWrapper wrapper, List<ParamScheduler> schedulers)
        {
            // The wrapper first: its load is transactional by itself, so if it fails nothing has changed.
            if (_dict is not null) ((OptimWrapperDict)wrapper).load_state_dict(_dict);
            else wrapper.load_state_dict(_single!);
            // The rest was checked and cannot fail on the checkpoint's content.
            using (torch.no_grad())
            {
                foreach (var (liveTensor, loaded) in _model) liveTensor.copy_(loaded);
            }
            foreach (var (p, g) in _grads)
                p.grad = g?.to(p.device, copy: true).DetachFromDisposeScope();
            for (int i = 0; i < schedulers.Count; i++) schedulers[i].RestoreState(_schedulers[i]);
            torch.random.set_rng_state(_rng!);
        }

        public void Dispose()
        {
            foreach (var (_, t) in _model) t.Dispose();
            foreach (var (_, g) in _grads) g?.Dispose();
            _rng?.Dispose();
        }

        private static string A(string name) => Checkpointing.article(name);

        private static string Key(string parent, string name) => ConfigErrorModule.key(parent, name);

        private static Checkpointing.TensorSpec SpecOf(Tensor t) => new(Dtypes.Name(t.dtype), ListModule.OfSeq(t.shape));

        private static List<(string Name, Checkpointing.TensorSpec Spec)> Specs(List<object?> items, string path) =>
            items.Select((x, i) =>
            {
                var d = x as OrderedDictionary<string, object?> ?? throw Corrupt($"{path}[{i}]", "malformed");
                var name = d.GetValueOrDefault("name") as string ?? throw Corrupt($"{path}[{i}].name", "missing");
                var dtype = d.GetValueOrDefault("dtype") as string ?? throw Corrupt($"{path}[{i}].dtype", "missing");
                var shape = (d.GetValueOrDefault("shape") as List<object?> ?? throw Corrupt($"{path}[{i}].shape", "missing"))
                    .Select(v => v is long l && l >= 0 ? l : throw Corrupt($"{path}[{i}].shape", "not a list of sizes")).ToList();
                return (name, new Checkpointing.TensorSpec(dtype, ListModule.OfSeq(shape)));
            }).ToList();

        /// <summary>CPU tensors of the saved dtypes and shapes, filled from the section.</summary>
        private static List<Tensor> Tensors(ArraySegment<byte> section, List<(string Name, Checkpointing.TensorSpec Spec)> specs, string path)
        {
            var result = new List<Tensor>();
            long offset = 0;
            try
            {
                foreach (var (name, spec) in specs)
                {
                    var dtype = Dtypes.Parse(spec.Dtype) ?? throw new CheckpointException(Key(path, name), $"unknown dtype '{spec.Dtype}'");
                    var t = torch.empty(spec.Shape.ToArray(), dtype, torch.CPU).DetachFromDisposeScope();
                    result.Add(t);
                    var n = t.NumberOfElements * t.ElementSize;
                    if (offset + n > section.Count) throw Corrupt(path, $"the section holds {section.Count} bytes, its entries need more");
                    if (n > 0) t.bytes = section.AsSpan((int)offset, (int)n);
                    offset += n;
                }
                if (offset != section.Count) throw Corrupt(path, $"the section holds {section.Count} bytes, its entries {offset}");
                return result;
            }
            catch
            {
                foreach (var t in result) t.Dispose();
                throw;
            }
        }
    }
}

/// <summary>torch's dtype names ("float32", "bfloat16", "int64", ...) for TorchSharp's scalar types.</summary>
internal static class Dtypes
{
    private static readonly (ScalarType Type, string Name)[] Table =
    {
        (ScalarType.Float32, "float32"), (ScalarType.Float64, "float64"), (ScalarType.Float16, "float16"),
        (ScalarType.BFloat16, "bfloat16"), (ScalarType.Int64, "int64"), (ScalarType.Int32, "int32"),
        (ScalarType.Int16, "int16"), (ScalarType.Int8, "int8"), (ScalarType.Byte, "uint8"), (ScalarType.Bool, "bool"),
        (ScalarType.ComplexFloat32, "complex64"), (ScalarType.ComplexFloat64, "complex128"),
    };

    public static string Name(ScalarType t)
    {
        foreach (var (type, name) in Table) if (type == t) return name;
        return t.ToString();
    }

    public static ScalarType? Parse(string name)
    {
        foreach (var (type, n) in Table) if (n == name) return type;
        return null;
    }
}
