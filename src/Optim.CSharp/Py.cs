using Microsoft.FSharp.Collections;
using Optim.Core;

namespace Optim;

/// <summary>
/// Conversions between .NET values and the core's Python-like <see cref="PyValue"/>:
/// floats are <see cref="double"/>, ints <see cref="long"/>, pairs <see cref="ValueTuple{Double, Double}"/>,
/// dicts ordered <see cref="IEnumerable{T}"/> of key/value pairs.
/// </summary>
public static class Py
{
    /// <summary>Converts a .NET value to a <see cref="PyValue"/>.</summary>
    /// <exception cref="ArgumentException">The value has no Python counterpart.</exception>
    public static PyValue ToPy(object? value) => value switch
    {
        null => PyValue.None,
        PyValue p => p,
        bool b => PyValue.NewBool(b),
        int i => PyValue.NewInt(i),
        long l => PyValue.NewInt(l),
        float f => PyValue.NewFloat(f),
        double d => PyValue.NewFloat(d),
        string s => PyValue.NewStr(s),
        ValueTuple<double, double> t => PyValue.NewTuple(ListModule.OfArray(new[] { PyValue.NewFloat(t.Item1), PyValue.NewFloat(t.Item2) })),
        IEnumerable<KeyValuePair<string, object?>> kvs => PyValue.NewDict(ListModule.OfSeq(kvs.Select(kv => Tuple.Create(kv.Key, ToPy(kv.Value))))),
        System.Collections.IEnumerable xs => PyValue.NewList(ListModule.OfSeq(xs.Cast<object?>().Select(ToPy))),
        _ => throw new ArgumentException($"{value.GetType().Name} has no Python counterpart", nameof(value)),
    };

    /// <summary>Converts a <see cref="PyValue"/> to its natural .NET value (dicts become ordered dictionaries).</summary>
    public static object? FromPy(PyValue value)
    {
        if (value.IsNone) return null;
        if (value is PyValue.Bool b) return b.Item;
        if (value is PyValue.Int i) return i.Item;
        if (value is PyValue.Float f) return f.Item;
        if (value is PyValue.Str s) return s.Item;
        if (value is PyValue.Tuple t && t.Item.Length == 2 && t.Item.All(x => x is PyValue.Float || x is PyValue.Int))
            return (ToDouble(t.Item.Head), ToDouble(t.Item.Tail.Head));
        if (value is PyValue.Tuple t2) return t2.Item.Select(FromPy).ToList();
        if (value is PyValue.List l) return l.Item.Select(FromPy).ToList();
        if (value is PyValue.Dict d)
        {
            var o = new OrderedDictionary<string, object?>();
            foreach (var kv in d.Item) o[kv.Item1] = FromPy(kv.Item2);
            return o;
        }
        throw new ArgumentException($"unknown PyValue {value}", nameof(value));
    }

    /// <summary>Converts an ordered .NET dictionary to the core's ordered pair list.</summary>
    public static FSharpList<Tuple<string, PyValue>> ToPyDict(IEnumerable<KeyValuePair<string, object?>> kvs) =>
        ListModule.OfSeq(kvs.Select(kv => Tuple.Create(kv.Key, ToPy(kv.Value))));

    /// <summary>Python's <c>repr()</c> of a .NET value.</summary>
    public static string Repr(object? value) => PyFormat.repr(ToPy(value));

    private static double ToDouble(PyValue v) => v switch
    {
        PyValue.Float f => f.Item,
        PyValue.Int i => i.Item,
        _ => throw new ArgumentException("not a number"),
    };
}
