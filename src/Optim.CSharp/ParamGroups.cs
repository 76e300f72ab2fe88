using System.Reflection;
using System.Runtime.CompilerServices;
using Optim.Core;
using TorchSharp;
using TorchSharp.Modules;
using Optimizers = Optim.Core.Optimizers;

namespace Optim;

/// <summary>
/// A parameter group as MMEngine and PyTorch see it: a dict of hyper-parameters under PyTorch's names
/// (<c>lr</c>, <c>momentum</c>, <c>weight_decay</c>, <c>betas</c>, ...) plus any extra keys
/// (<c>initial_lr</c>, <c>lr_mult</c>, ...), which are kept in insertion order.
/// Floats are <see cref="double"/>, ints <see cref="long"/>, bools <see cref="bool"/>, pairs
/// (<c>betas</c>, <c>etas</c>, <c>step_sizes</c>) <see cref="ValueTuple{Double, Double}"/>.
/// </summary>
public interface IParamGroup
{
    /// <summary>The group's parameters (PyTorch's <c>group['params']</c>).</summary>
    IReadOnlyList<Parameter> Params { get; }

    /// <summary>Gets or sets a hyper-parameter or extra key. Getting a missing key throws <see cref="KeyNotFoundException"/>.</summary>
    object? this[string key] { get; set; }

    /// <summary>Whether the group has the key.</summary>
    bool ContainsKey(string key);

    /// <summary>The keys: hyper-parameters in PyTorch's order, then extra keys in insertion order (never <c>params</c>).</summary>
    IReadOnlyList<string> Keys { get; }

    /// <summary>Removes an extra key; hyper-parameters cannot be removed.</summary>
    bool Remove(string key);
}

/// <summary>A plain dict group, such as the wrapper's <c>base_param_settings</c> pseudo group.</summary>
[Microsoft.FSharp.Core.StructuredFormatDisplay("{Repr}")]
public sealed class PlainParamGroup : IParamGroup
{
    // A group holds a handful of keys and a paramwise build makes one group per parameter: a list searched
    // in order is the ordered dict here (a fifth of the memory of a hashed one, which the GC then copies).
    private readonly List<KeyValuePair<string, object?>> _values = new();

    /// <summary>Creates a group with the given entries, in order.</summary>
    public PlainParamGroup(IEnumerable<KeyValuePair<string, object?>> values, IReadOnlyList<Parameter>? @params = null)
    {
        foreach (var kv in values) this[kv.Key] = kv.Value;
        Params = @params ?? Array.Empty<Parameter>();
    }

    /// <inheritdoc />
    public IReadOnlyList<Parameter> Params { get; }

    /// <summary>The entries in order, read in place (building one optimizer group per parameter reads them several times).</summary>
    internal IEnumerable<KeyValuePair<string, object?>> Entries => _values;

    /// <summary>The entries of any group, in <see cref="IParamGroup.Keys"/> order.</summary>
    internal static IEnumerable<KeyValuePair<string, object?>> EntriesOf(IParamGroup group) =>
        group is PlainParamGroup plain ? plain.Entries : group.Keys.Select(k => new KeyValuePair<string, object?>(k, group[k]));

    private int IndexOf(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        for (int i = 0; i < _values.Count; i++)
            if (string.Equals(_values[i].Key, key, StringComparison.Ordinal)) return i;
        return -1;
    }

    /// <inheritdoc />
    public object? this[string key]
    {
        get => IndexOf(key) is var i and >= 0 ? _values[i].Value : throw new KeyNotFoundException($"param group has no key '{key}'");
        set
        {
            var i = IndexOf(key);
            if (i >= 0) _values[i] = new(key, value);
            else _values.Add(new(key, value));
        }
    }

    /// <inheritdoc />
    public bool ContainsKey(string key) => IndexOf(key) >= 0;

    /// <inheritdoc />
    public IReadOnlyList<string> Keys => _values.Select(kv => kv.Key).ToList();

    /// <inheritdoc />
    public bool Remove(string key)
    {
        var i = IndexOf(key);
        if (i < 0) return false;
        _values.RemoveAt(i);
        return true;
    }

    /// <summary>Python's <c>repr</c>, which F# Interactive and <c>%A</c> print (see <see cref="ToString"/>).</summary>
    public string Repr => ToString();

    /// <inheritdoc />
    public override string ToString() => Py.Repr(_values);
}

/// <summary>
/// A TorchSharp param group seen through PyTorch's names. Hyper-parameters read and write the
/// TorchSharp option fields directly (so a change reaches the optimizer's next step); extra keys live
/// beside the group for as long as the group does.
/// </summary>
[Microsoft.FSharp.Core.StructuredFormatDisplay("{Repr}")]
internal sealed class TorchParamGroup : IParamGroup
{
    private static readonly ConditionalWeakTable<OptimizerOptions, OrderedDictionary<string, object?>> Extras = new();

    // The Python value last written to each scalar hyper-parameter (TorchSharp keeps every number as a
    // double): read back with its int/float type while the option still holds that number.
    private static readonly ConditionalWeakTable<OptimizerOptions, Dictionary<string, PyValue>> Given = new();

    /// <summary>Remembers the Python type of a value written to <paramref name="options"/> under <paramref name="key"/> (numbers only).</summary>
    internal static void Remember(OptimizerOptions options, string key, object? value)
    {
        var py = value switch { long l => PyValue.NewInt(l), int i => PyValue.NewInt(i), double d => PyValue.NewFloat(d), float f => PyValue.NewFloat(f), _ => null };
        var table = Given.GetValue(options, _ => new Dictionary<string, PyValue>());
        if (py is null) table.Remove(key); else table[key] = py;
    }

    /// <summary>The number read from an option, typed as it was given when it still holds that number.</summary>
    private object? Typed(string key, object? raw)
    {
        if (raw is not double d) return raw;
        foreach (var options in new[] { _options, _fallback })
        {
            if (options is null || !Given.TryGetValue(options, out var table) || !table.TryGetValue(key, out var given)) continue;
            if (given is PyValue.Int i && (double)i.Item == d) return i.Item;
            if (given is PyValue.Float f && f.Item.Equals(d)) return d;
        }
        return Py.FromPy(Optimizers.pythonTyped(_optimizerName, key, PyValue.NewFloat(d)));
    }

    // Pairs PyTorch keeps in one tuple that TorchSharp keeps in two fields.
    private static readonly Dictionary<string, (string First, string Second)> PairFields = new()
    {
        ["betas"] = ("beta1", "beta2"),
        ["etas"] = ("etaminus", "etaplus"),
        ["step_sizes"] = ("min_step", "max_step"),
    };

    private readonly OptimizerOptions _options;
    private readonly OptimizerOptions? _fallback;
    private readonly ParamGroup? _group;
    private readonly string[] _hyperKeys;
    private readonly string _optimizerName;

    internal TorchParamGroup(string optimizerName, OptimizerOptions options, OptimizerOptions? fallback, ParamGroup? group)
    {
        _optimizerName = optimizerName;
        _options = options;
        _fallback = fallback;
        _group = group;
        _hyperKeys = HyperKeys(optimizerName, options.GetType());
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<(string, Type), string[]> HyperKeysCache = new();

    /// <summary>The PyTorch names this options type supports, in PyTorch's order when the optimizer is known (computed once per pair).</summary>
    internal static string[] HyperKeys(string optimizerName, Type optionsType) =>
        HyperKeysCache.GetOrAdd((optimizerName, optionsType), k => ComputeHyperKeys(k.Item1, k.Item2));

    private static string[] ComputeHyperKeys(string optimizerName, Type optionsType)
    {
        var fields = optionsType.GetFields(BindingFlags.Public | BindingFlags.Instance).Select(f => f.Name).ToHashSet();
        bool Supported(string key) =>
            key == "lr" || fields.Contains(key) ||
            (PairFields.TryGetValue(key, out var pair) && fields.Contains(pair.First) && fields.Contains(pair.Second));
        var known = Optimizers.order(optimizerName).Where(Supported).ToList();
        if (known.Count == 0) known.Add("lr");
        // Anything TorchSharp has that the table does not name (a user optimizer's options) comes after, by field name.
        var covered = known.SelectMany(k => PairFields.TryGetValue(k, out var p) ? new[] { p.First, p.Second } : new[] { k }).ToHashSet();
        known.AddRange(optionsType.GetFields(BindingFlags.Public | BindingFlags.Instance).Select(f => f.Name).Where(n => !covered.Contains(n)));
        return known.ToArray();
    }

    private OrderedDictionary<string, object?> ExtraValues => Extras.GetValue(_options, _ => new OrderedDictionary<string, object?>());

    public IReadOnlyList<Parameter> Params => _group is null ? Array.Empty<Parameter>() : _group.Parameters.ToList();

    public IReadOnlyList<string> Keys => _hyperKeys.Concat(ExtraValues.Keys).ToList();

    public bool ContainsKey(string key) => _hyperKeys.Contains(key) || ExtraValues.ContainsKey(key);

    public bool Remove(string key) => !_hyperKeys.Contains(key) && ExtraValues.Remove(key);

    public object? this[string key]
    {
        get
        {
            if (!_hyperKeys.Contains(key))
                return ExtraValues.TryGetValue(key, out var extra) ? extra : throw new KeyNotFoundException($"param group has no key '{key}'");
            if (key == "lr") return Typed(key, _options.LearningRate ?? _fallback?.LearningRate);
            if (PairFields.TryGetValue(key, out var pair))
                return ((double)ReadField(pair.First)!, (double)ReadField(pair.Second)!);
            return Typed(key, ReadField(key));
        }
        set
        {
            if (!_hyperKeys.Contains(key)) { ExtraValues[key] = value; return; }
            Remember(_options, key, value);
            if (key == "lr") { _options.LearningRate = ToDouble(key, value); return; }
            if (PairFields.TryGetValue(key, out var pair))
            {
                var (a, b) = ToPair(key, value);
                WriteField(pair.First, a);
                WriteField(pair.Second, b);
                return;
            }
            WriteField(key, value);
        }
    }

    private object? ReadField(string name)
    {
        var field = _options.GetType().GetField(name)!;
        var v = field.GetValue(_options);
        if (v is null && _fallback is not null) v = field.GetValue(_fallback);
        return v switch { int i => (long)i, float f => (double)f, _ => v };
    }

    private void WriteField(string name, object? value)
    {
        var field = _options.GetType().GetField(name)!;
        var type = Nullable.GetUnderlyingType(field.FieldType) ?? field.FieldType;
        object? converted = type == typeof(double) ? ToDouble(name, value)
            : type == typeof(bool) ? value is bool b ? b : throw new ArgumentException($"'{name}' expects a bool, got {Py.Repr(value)}")
            : type == typeof(int) ? Convert.ToInt32(value)
            : type == typeof(long) ? Convert.ToInt64(value)
            : value;
        field.SetValue(_options, converted);
    }

    private static double ToDouble(string key, object? value) => value switch
    {
        double d => d,
        float f => f,
        long l => l,
        int i => i,
        _ => throw new ArgumentException($"'{key}' expects a number, got {Py.Repr(value)}"),
    };

    private static (double, double) ToPair(string key, object? value) => value switch
    {
        ValueTuple<double, double> t => t,
        double[] { Length: 2 } a => (a[0], a[1]),
        IList<object?> { Count: 2 } l => (ToDouble(key, l[0]), ToDouble(key, l[1])),
        _ => throw new ArgumentException($"'{key}' expects two numbers, got {Py.Repr(value)}"),
    };

    /// <summary>Python's <c>repr</c>, which F# Interactive and <c>%A</c> print (see <see cref="ToString"/>).</summary>
    public string Repr => ToString();

    public override string ToString() => Py.Repr(Keys.Select(k => new KeyValuePair<string, object?>(k, this[k])));
}

/// <summary>PyTorch-style views of any TorchSharp optimizer's param groups and defaults.</summary>
public static class OptimizerGroups
{
    private static readonly ConditionalWeakTable<ParamGroup, TorchParamGroup> Views = new();

    private static readonly Dictionary<string, string> PyTorchNames = new()
    {
        ["RMSProp"] = "RMSprop",
    };

    /// <summary>PyTorch's class name for a TorchSharp optimizer (<c>RMSProp</c> is PyTorch's <c>RMSprop</c>).</summary>
    public static string PyTorchName(torch.optim.Optimizer optimizer)
    {
        var name = optimizer.GetType().Name;
        return PyTorchNames.TryGetValue(name, out var py) ? py : name;
    }

    /// <summary>The optimizer's param groups as dicts; the same view object for the same group every time.</summary>
    public static IReadOnlyList<IParamGroup> Of(torch.optim.Optimizer optimizer)
    {
        var name = PyTorchName(optimizer);
        var fallback = DefaultOptions(optimizer);
        return optimizer.ParamGroups.Cast<ParamGroup>()
            .Select(g => (IParamGroup)Views.GetValue(g, grp => new TorchParamGroup(name, grp.Options, fallback, grp)))
            .ToList();
    }

    /// <summary>The optimizer's defaults under PyTorch's names, in PyTorch's order.</summary>
    public static IReadOnlyDictionary<string, object?> Defaults(torch.optim.Optimizer optimizer)
    {
        var options = DefaultOptions(optimizer);
        var result = new OrderedDictionary<string, object?>();
        if (options is null)
        {
            // LBFGS (native) keeps no options object: its single group's values are its defaults.
            var first = Of(optimizer).FirstOrDefault();
            if (first is not null) foreach (var k in first.Keys) result[k] = first[k];
            return result;
        }
        var view = new TorchParamGroup(PyTorchName(optimizer), options, null, null);
        foreach (var k in view.Keys) result[k] = view[k];
        return result;
    }

    // TorchSharp keeps the constructor's options in OptimizerHelper._defaults, which it does not expose.
    private static readonly FieldInfo? DefaultsField =
        typeof(OptimizerHelper).GetField("_defaults", BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Public);

    /// <summary>Remembers the Python types of the values an optimizer was constructed with (its defaults).</summary>
    internal static void RememberDefaults(torch.optim.Optimizer optimizer, IEnumerable<KeyValuePair<string, object?>> values)
    {
        if (DefaultOptions(optimizer) is not { } options) return;
        foreach (var kv in values) TorchParamGroup.Remember(options, kv.Key, kv.Value);
    }

    private static OptimizerOptions? DefaultOptions(torch.optim.Optimizer optimizer) =>
        optimizer is OptimizerHelper ? DefaultsField?.GetValue(optimizer) as OptimizerOptions : null;
}
