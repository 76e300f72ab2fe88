using System.Collections;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim;

/// <summary>
/// MMEngine's <c>OptimWrapperDict</c>: several named wrappers (e.g. a GAN's generator and
/// discriminator) behind one object, in insertion order, so that learning rates, momenta and state
/// dicts of all of them are read and restored together. It cannot train: <see cref="update_params"/>,
/// <see cref="backward"/>, <see cref="step"/> and <see cref="optim_context"/> throw — call them on each
/// wrapper (<c>dict["gen"].update_params(loss)</c>).
/// </summary>
/// <example>
/// <code>
/// var d = new OptimWrapperDict(("gen", new OptimWrapper(genOptimizer)), ("disc", new OptimWrapper(discOptimizer)));
/// d.get_lr();        // {"gen.lr": [0.01], "disc.lr": [0.01]}
/// d.get_momentum();  // {"gen.momentum": [0], "disc.momentum": [0]}
/// </code>
/// </example>
[Microsoft.FSharp.Core.StructuredFormatDisplay("{Repr}")]
public class OptimWrapperDict : OptimWrapper, IReadOnlyDictionary<string, OptimWrapper>
{
    private readonly OrderedDictionary<string, OptimWrapper> _wrappers = new();

    /// <summary>Holds the given wrappers under their names, in order (none is fine).</summary>
    /// <exception cref="ArgumentException">A name appears twice.</exception>
    public OptimWrapperDict(params (string Name, OptimWrapper Wrapper)[] optim_wrappers)
    {
        foreach (var (name, wrapper) in optim_wrappers)
        {
            ArgumentNullException.ThrowIfNull(wrapper, name);
            if (!_wrappers.TryAdd(name, wrapper)) throw new ArgumentException($"'{name}' is given twice", nameof(optim_wrappers));
        }
    }

    /// <summary>
    /// Holds the given values, which must all be <see cref="OptimWrapper"/>s (MMEngine's
    /// <c>OptimWrapperDict(**optim_wrappers)</c> check).
    /// </summary>
    /// <exception cref="ArgumentException">A value is not an OptimWrapper (e.g. a bare optimizer).</exception>
    public OptimWrapperDict(IEnumerable<KeyValuePair<string, object?>> optim_wrappers)
    {
        foreach (var (name, value) in optim_wrappers)
        {
            if (value is not OptimWrapper wrapper)
                throw new ArgumentException(
                    $"`OptimWrapperDict` only accept OptimWrapper instance, but got {name}: {value?.GetType().FullName ?? "None"}",
                    nameof(optim_wrappers));
            _wrappers[name] = wrapper;
        }
    }

    /// <summary>The wrappers by name, in insertion order.</summary>
    public IReadOnlyDictionary<string, OptimWrapper> optim_wrappers => _wrappers;

    private static NotImplementedException Separately(string member) =>
        new($"`{member}` should be called by each optimizer separately`");

    /// <summary>Not supported: call <c>update_params</c> on each wrapper.</summary>
    /// <exception cref="NotImplementedException">Always.</exception>
    public override void update_params(Tensor loss) => throw Separately("update_params");

    /// <summary>Not supported: call <c>backward</c> on each wrapper.</summary>
    /// <exception cref="NotImplementedException">Always.</exception>
    public override void backward(Tensor loss) => throw Separately("backward");

    /// <summary>Not supported: call <c>step</c> on each wrapper.</summary>
    /// <exception cref="NotImplementedException">Always.</exception>
    public override void step() => throw Separately("step");

    /// <summary>Not supported: enter <c>optim_context</c> of each wrapper (MMEngine raises on entering; here on the call, which enters).</summary>
    /// <exception cref="NotImplementedException">Always.</exception>
    public override IDisposable optim_context(nn.Module model) =>
        throw new NotImplementedException("`optim_context` should be called by each optimizer separately");

    /// <summary>Clears the gradients of every wrapper with their default (<paramref name="set_to_none"/> is not forwarded, as in MMEngine).</summary>
    public override void zero_grad(bool set_to_none = true)
    {
        foreach (var w in _wrappers.Values) w.zero_grad();
    }

    /// <summary>Does nothing (MMEngine does not forward it either; initialize each wrapper yourself).</summary>
    public new void initialize_count_status(nn.Module model, int init_counts, int max_counts) { }

    /// <summary>Each wrapper's param groups by name.</summary>
    public new IReadOnlyDictionary<string, IReadOnlyList<IParamGroup>> param_groups =>
        _wrappers.ToDictionary(kv => kv.Key, kv => kv.Value.param_groups);

    /// <summary>All learning rates: <c>name.base_lr</c> (when that wrapper has a base group) then <c>name.lr</c>, per wrapper.</summary>
    public override HyperParameterValues get_lr()
    {
        var result = new HyperParameterValues();
        foreach (var (name, w) in _wrappers)
        {
            var lr = w.get_lr();
            if (lr.ContainsKey("base_lr")) result.Add($"{name}.base_lr", lr.PythonValues("base_lr"));
            result.Add($"{name}.lr", lr.PythonValues("lr"));
        }
        return result;
    }

    /// <summary>All momenta: <c>name.momentum</c> per wrapper.</summary>
    public override HyperParameterValues get_momentum()
    {
        var result = new HyperParameterValues();
        foreach (var (name, w) in _wrappers) result.Add($"{name}.momentum", w.get_momentum().PythonValues("momentum"));
        return result;
    }

    /// <summary>Each wrapper's state by name.</summary>
    public new OrderedDictionary<string, OptimStateDict> state_dict()
    {
        var result = new OrderedDictionary<string, OptimStateDict>();
        foreach (var (name, w) in _wrappers) result[name] = w.state_dict();
        return result;
    }

    /// <summary>
    /// Loads each named state into the wrapper of that name; wrappers the dict does not name are left as
    /// they are. All or nothing: every state is checked against its wrapper before any is applied, and
    /// if applying one fails the ones already applied are restored.
    /// </summary>
    /// <exception cref="KeyNotFoundException">A name that is not in this dict ("Mismatched `state_dict`!").</exception>
    /// <exception cref="StateDictException">A state does not fit its wrapper (the message names the wrapper); nothing was changed.</exception>
    public void load_state_dict(IReadOnlyDictionary<string, OptimStateDict> state_dict)
    {
        ArgumentNullException.ThrowIfNull(state_dict);
        foreach (var name in state_dict.Keys)
            if (!_wrappers.ContainsKey(name))
                throw new KeyNotFoundException($"Mismatched `state_dict`! cannot found {name} in OptimWrapperDict");
        foreach (var (name, sd) in state_dict) _wrappers[name].ValidateState(sd, name);
        var applied = new List<(OptimWrapper Wrapper, OptimStateDict Before)>();
        try
        {
            foreach (var (name, sd) in state_dict)
            {
                var w = _wrappers[name];
                var before = w.state_dict();
                w.load_state_dict(sd);
                applied.Add((w, before));
            }
        }
        catch
        {
            for (int i = applied.Count - 1; i >= 0; i--)
            {
                try { applied[i].Wrapper.load_state_dict(applied[i].Before); } catch { /* report the original error */ }
            }
            throw;
        }
    }

    /// <summary>Not supported: a single state cannot be loaded into several wrappers; use the dictionary overload.</summary>
    /// <exception cref="NotSupportedException">Always.</exception>
    public override void load_state_dict(OptimStateDict state) =>
        throw new NotSupportedException("OptimWrapperDict loads a dict of states by name: use load_state_dict(IReadOnlyDictionary<string, OptimStateDict>)");

    /// <summary>Not supported on a container (MMEngine fails with AttributeError).</summary>
    /// <exception cref="NotSupportedException">Always.</exception>
    public new bool should_update() => throw new NotSupportedException("OptimWrapperDict has no counters; ask each wrapper");

    /// <summary>Not supported on a container (MMEngine fails with AttributeError).</summary>
    /// <exception cref="NotSupportedException">Always.</exception>
    public new bool should_sync() => throw new NotSupportedException("OptimWrapperDict has no counters; ask each wrapper");

    /// <summary>Not supported on a container (MMEngine fails with AttributeError).</summary>
    /// <exception cref="NotSupportedException">Always.</exception>
    public new Tensor scale_loss(Tensor loss) => throw new NotSupportedException("OptimWrapperDict has no counters; ask each wrapper");

    /// <summary>Not supported on a container (MMEngine fails with AttributeError).</summary>
    /// <exception cref="NotSupportedException">Always.</exception>
    public new int inner_count => throw new NotSupportedException("OptimWrapperDict has no counters; ask each wrapper");

    /// <summary>The (name, wrapper) pairs in order.</summary>
    public IEnumerable<KeyValuePair<string, OptimWrapper>> items() => _wrappers;

    /// <summary>The wrappers in order.</summary>
    public IEnumerable<OptimWrapper> values() => _wrappers.Values;

    /// <summary>The names in order.</summary>
    public IEnumerable<string> keys() => _wrappers.Keys;

    /// <summary>The wrapper named <paramref name="key"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such name.</exception>
    public OptimWrapper this[string key] =>
        _wrappers.TryGetValue(key, out var w) ? w
            : throw new KeyNotFoundException($"Cannot find {key} in OptimWrapperDict, please check your optimizer constructor.");

    /// <summary>The number of wrappers.</summary>
    public int Count => _wrappers.Count;

    /// <summary>Whether a wrapper has this name.</summary>
    public bool ContainsKey(string key) => _wrappers.ContainsKey(key);

    /// <inheritdoc />
    public bool TryGetValue(string key, out OptimWrapper value) => _wrappers.TryGetValue(key, out value!);

    IEnumerable<string> IReadOnlyDictionary<string, OptimWrapper>.Keys => _wrappers.Keys;

    IEnumerable<OptimWrapper> IReadOnlyDictionary<string, OptimWrapper>.Values => _wrappers.Values;

    /// <inheritdoc />
    public IEnumerator<KeyValuePair<string, OptimWrapper>> GetEnumerator() => _wrappers.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Python's <c>repr</c>, which F# Interactive and <c>%A</c> print (see <see cref="ToString"/>).</summary>
    public string Repr => ToString();

    /// <summary>MMEngine's repr: <c>name: {name}</c> and the wrapper's repr, per wrapper.</summary>
    public override string ToString() => string.Concat(_wrappers.Select(kv => $"name: {kv.Key}\n{kv.Value}"));
}
