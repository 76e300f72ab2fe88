using System.Collections;
using Microsoft.FSharp.Collections;
using Optim.Core;

namespace Optim;

/// <summary>
/// What <c>get_lr()</c> and <c>get_momentum()</c> return: an ordered map from a key (<c>lr</c>,
/// <c>base_lr</c>, <c>gen.momentum</c>, ...) to one value per param group, readable as doubles, and
/// printed as Python prints the dict (<c>{'lr': [0.01]}</c>, <c>{'momentum': [0]}</c>).
/// </summary>
[Microsoft.FSharp.Core.StructuredFormatDisplay("{Repr}")]
public sealed class HyperParameterValues : IReadOnlyDictionary<string, IReadOnlyList<double>>
{
    private readonly List<(string Key, List<PyValue> Values)> _entries = new();

    /// <summary>An empty map.</summary>
    public HyperParameterValues() { }

    /// <summary>Appends a key with its values (Python-typed, so ints print as ints).</summary>
    public void Add(string key, IEnumerable<PyValue> values)
    {
        if (ContainsKey(key)) throw new ArgumentException($"duplicate key '{key}'", nameof(key));
        _entries.Add((key, values.ToList()));
    }

    /// <summary>Appends a key with plain double values.</summary>
    public void Add(string key, IEnumerable<double> values) => Add(key, values.Select(PyValue.NewFloat));

    /// <summary>The Python-typed values of a key.</summary>
    public IReadOnlyList<PyValue> PythonValues(string key) => _entries.First(e => e.Key == key).Values;

    /// <inheritdoc />
    public IReadOnlyList<double> this[string key] =>
        TryGetValue(key, out var v) ? v : throw new KeyNotFoundException($"no '{key}' (keys: {string.Join(", ", Keys)})");

    /// <inheritdoc />
    public IEnumerable<string> Keys => _entries.Select(e => e.Key);

    /// <inheritdoc />
    public IEnumerable<IReadOnlyList<double>> Values => _entries.Select(e => ToDoubles(e.Values));

    /// <inheritdoc />
    public int Count => _entries.Count;

    /// <inheritdoc />
    public bool ContainsKey(string key) => _entries.Any(e => e.Key == key);

    /// <inheritdoc />
    public bool TryGetValue(string key, out IReadOnlyList<double> value)
    {
        foreach (var e in _entries)
            if (e.Key == key) { value = ToDoubles(e.Values); return true; }
        value = Array.Empty<double>();
        return false;
    }

    /// <inheritdoc />
    public IEnumerator<KeyValuePair<string, IReadOnlyList<double>>> GetEnumerator() =>
        _entries.Select(e => new KeyValuePair<string, IReadOnlyList<double>>(e.Key, ToDoubles(e.Values))).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Python's <c>repr</c>, which F# Interactive and <c>%A</c> print (see <see cref="ToString"/>).</summary>
    public string Repr => ToString();

    /// <summary>Python's <c>repr</c> of the dict.</summary>
    public override string ToString() =>
        PyFormat.repr(PyValue.NewDict(ListModule.OfSeq(_entries.Select(e => Tuple.Create(e.Key, PyValue.NewList(ListModule.OfSeq(e.Values)))))));

    private static IReadOnlyList<double> ToDoubles(List<PyValue> values) =>
        values.Select(v => v switch
        {
            PyValue.Float f => f.Item,
            PyValue.Int i => (double)i.Item,
            _ => double.NaN,
        }).ToList();
}
