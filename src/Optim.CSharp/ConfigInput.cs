using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.FSharp.Collections;
using Optim.Core;

namespace Optim;

/// <summary>
/// Reads a config given as a <see cref="JsonNode"/> or as .NET values into the core's
/// <see cref="PyValue"/> without recursion beyond <see cref="MaxDepth"/> levels, and without letting
/// any exception but <see cref="OptimConfigException"/> out: a value with no Python counterpart, a
/// dictionary that contains itself, or nesting deeper than JSON readers accept is an error at its path.
/// </summary>
internal static class ConfigInput
{
    /// <summary>The deepest nesting accepted (System.Text.Json's default reader limit).</summary>
    public const int MaxDepth = 64;

    private static ConfigError TooDeep(string path) =>
        ConfigErrorModule.at(path, ErrorKind.Value, $"nested more than {MaxDepth} levels deep (a config this deep is a mistake, or a dictionary that contains itself)");

    /// <summary>The .NET dictionary as a Python dict, or every problem found.</summary>
    public static PyValue FromDictionary(IReadOnlyDictionary<string, object?> cfg)
    {
        var errors = new List<ConfigError>();
        var value = Dict(cfg, "", 1, errors);
        if (errors.Count > 0) throw new OptimConfigException(errors);
        return value;
    }

    /// <summary>The JSON node as a Python value, or every problem found.</summary>
    public static PyValue FromJsonNode(JsonNode? node)
    {
        var errors = new List<ConfigError>();
        var value = Node(node, "", 1, errors);
        if (errors.Count > 0) throw new OptimConfigException(errors);
        return value;
    }

    private static PyValue Dict(IEnumerable<KeyValuePair<string, object?>> kvs, string path, int depth, List<ConfigError> errors)
    {
        if (depth > MaxDepth) { errors.Add(TooDeep(path)); return PyValue.None; }
        var items = new List<Tuple<string, PyValue>>();
        foreach (var kv in kvs)
        {
            if (kv.Key is null) { errors.Add(ConfigErrorModule.at(path, ErrorKind.Type, "a key is null")); continue; }
            items.Add(Tuple.Create(kv.Key, Value(kv.Value, ConfigErrorModule.key(path, kv.Key), depth + 1, errors)));
        }
        return PyValue.NewDict(ListModule.OfSeq(items));
    }

    private static PyValue Value(object? value, string path, int depth, List<ConfigError> errors)
    {
        switch (value)
        {
            case null: return PyValue.None;
            case PyValue p: return Bounded(p, path, depth, errors);
            case bool b: return PyValue.NewBool(b);
            case int i: return PyValue.NewInt(i);
            case long l: return PyValue.NewInt(l);
            case short s: return PyValue.NewInt(s);
            case byte y: return PyValue.NewInt(y);
            case float f: return PyValue.NewFloat(f);
            case double d: return PyValue.NewFloat(d);
            case decimal m: return PyValue.NewFloat((double)m);
            case string str: return PyValue.NewStr(str);
            case JsonNode n: return Node(n, path, depth, errors);
            case JsonElement e: return Node(JsonSerializer.SerializeToNode(e), path, depth, errors);
            case ValueTuple<double, double> t:
                return PyValue.NewTuple(ListModule.OfArray(new[] { PyValue.NewFloat(t.Item1), PyValue.NewFloat(t.Item2) }));
            case IEnumerable<KeyValuePair<string, object?>> kvs: return Dict(kvs, path, depth, errors);
            case System.Collections.IDictionary dict:
                if (depth > MaxDepth) { errors.Add(TooDeep(path)); return PyValue.None; }
                var items = new List<Tuple<string, PyValue>>();
                foreach (System.Collections.DictionaryEntry de in dict)
                {
                    if (de.Key is not string k) { errors.Add(ConfigErrorModule.at(path, ErrorKind.Type, $"keys must be strings, got {de.Key?.GetType().Name ?? "null"}")); continue; }
                    items.Add(Tuple.Create(k, Value(de.Value, ConfigErrorModule.key(path, k), depth + 1, errors)));
                }
                return PyValue.NewDict(ListModule.OfSeq(items));
            case System.Collections.IEnumerable xs:
                if (depth > MaxDepth) { errors.Add(TooDeep(path)); return PyValue.None; }
                var list = new List<PyValue>();
                var index = 0;
                foreach (var x in xs) list.Add(Value(x, ConfigErrorModule.index(path, index++), depth + 1, errors));
                return PyValue.NewList(ListModule.OfSeq(list));
            default:
                errors.Add(ConfigErrorModule.at(path, ErrorKind.Type, $"a {value.GetType().Name} has no JSON/Python counterpart"));
                return PyValue.None;
        }
    }

    /// <summary>A PyValue given directly: accepted as is when not too deep (checked without recursion limits of its own).</summary>
    private static PyValue Bounded(PyValue p, string path, int depth, List<ConfigError> errors)
    {
        var stack = new Stack<(PyValue Value, int Depth)>();
        stack.Push((p, depth));
        while (stack.Count > 0)
        {
            var (v, d) = stack.Pop();
            if (d > MaxDepth) { errors.Add(TooDeep(path)); return PyValue.None; }
            if (v is PyValue.Dict dict) foreach (var kv in dict.Item) stack.Push((kv.Item2, d + 1));
            else if (v is PyValue.List l) foreach (var x in l.Item) stack.Push((x, d + 1));
            else if (v is PyValue.Tuple t) foreach (var x in t.Item) stack.Push((x, d + 1));
        }
        return p;
    }

    private static PyValue Node(JsonNode? node, string path, int depth, List<ConfigError> errors)
    {
        if (depth > MaxDepth) { errors.Add(TooDeep(path)); return PyValue.None; }
        switch (node)
        {
            case null: return PyValue.None;
            case JsonObject o:
                var items = new List<Tuple<string, PyValue>>();
                // Python's dict semantics: a repeated key cannot occur in a JsonObject.
                foreach (var kv in o) items.Add(Tuple.Create(kv.Key, Node(kv.Value, ConfigErrorModule.key(path, kv.Key), depth + 1, errors)));
                return PyValue.NewDict(ListModule.OfSeq(items));
            case JsonArray a:
                var list = new List<PyValue>();
                for (int i = 0; i < a.Count; i++) list.Add(Node(a[i], ConfigErrorModule.index(path, i), depth + 1, errors));
                return PyValue.NewList(ListModule.OfSeq(list));
            case JsonValue v:
                try
                {
                    // A leaf: its JSON text keeps the int/float distinction.
                    return PyJson.ofElement(JsonSerializer.Deserialize<JsonElement>(v.ToJsonString()));
                }
                catch (Exception e) when (e is JsonException or InvalidOperationException or NotSupportedException or ArgumentException)
                {
                    errors.Add(ConfigErrorModule.at(path, ErrorKind.Type, $"not a JSON value: {e.Message}"));
                    return PyValue.None;
                }
            default:
                errors.Add(ConfigErrorModule.at(path, ErrorKind.Type, $"unsupported JSON node {node.GetType().Name}"));
                return PyValue.None;
        }
    }
}
