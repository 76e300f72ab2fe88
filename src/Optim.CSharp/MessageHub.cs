namespace Optim;

/// <summary>
/// MMEngine's MessageHub, reduced to what the optimizer wrappers publish: named scalar histories
/// (e.g. <c>train/grad_norm</c>). Instances are named; the most recently created one is "current",
/// and a wrapper publishes to the hub that was current when the wrapper was constructed.
/// Subscribe to <see cref="ScalarUpdated"/> or read <see cref="log_scalars"/>.
/// </summary>
public sealed class MessageHub
{
    private static readonly object Gate = new();
    private static readonly Dictionary<string, MessageHub> Instances = new();
    private static MessageHub? _current;
    private readonly Dictionary<string, List<double>> _scalars = new();

    private MessageHub(string name) => instance_name = name;

    /// <summary>The hub's name.</summary>
    public string instance_name { get; }

    /// <summary>Raised after every <see cref="update_scalar"/> with the key and value.</summary>
    public event EventHandler<(string Key, double Value)>? ScalarUpdated;

    /// <summary>The hub with this name, created (and made current) if it does not exist yet.</summary>
    public static MessageHub get_instance(string name)
    {
        lock (Gate)
        {
            if (!Instances.TryGetValue(name, out var hub))
            {
                hub = new MessageHub(name);
                Instances[name] = hub;
                _current = hub;
            }
            return hub;
        }
    }

    /// <summary>The most recently created hub; one named <c>mmengine</c> is created if there is none.</summary>
    public static MessageHub get_current_instance()
    {
        lock (Gate) return _current ?? get_instance("mmengine");
    }

    /// <summary>Appends a value to the scalar's history.</summary>
    public void update_scalar(string key, double value)
    {
        lock (_scalars)
        {
            if (!_scalars.TryGetValue(key, out var history)) _scalars[key] = history = new List<double>();
            history.Add(value);
        }
        ScalarUpdated?.Invoke(this, (key, value));
    }

    /// <summary>Every scalar's history, oldest first.</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<double>> log_scalars
    {
        get { lock (_scalars) return _scalars.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<double>)kv.Value.ToList()); }
    }

    /// <summary>The latest value of a scalar, or null if it was never updated.</summary>
    public double? get_scalar(string key)
    {
        lock (_scalars) return _scalars.TryGetValue(key, out var h) && h.Count > 0 ? h[^1] : null;
    }
}
