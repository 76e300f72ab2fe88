using Microsoft.FSharp.Core;
using Optim.Core;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim;

/// <summary>
/// Automatic mixed precision for TorchSharp: <c>autocast</c> scopes over libtorch's own autocast
/// (the same dispatch-level casting <c>torch.autocast</c> uses), and helpers to inspect its state.
/// </summary>
/// <remarks>
/// <para><b>The state is per thread.</b> libtorch keeps the autocast flags, dtypes and nesting depth
/// in thread-local storage: a scope affects only the thread that entered it, and must be disposed on
/// that thread, innermost first (a <c>using</c> block does both). Do not hold a scope across an
/// <c>await</c> that may resume on another thread; work started on other threads (thread pool,
/// <c>Parallel.For</c>) does not run under the scope.</para>
/// <para>Mirrors <c>mmengine.runner.amp.autocast</c>: with <c>device_type</c> null the
/// device is CUDA when available, else the CPU; the CPU default dtype is bfloat16. Unlike MMEngine,
/// float16 is also accepted on the CPU, because libtorch 2.10's CPU autocast supports it.</para>
/// </remarks>
public static class Amp
{
    /// <summary>
    /// Enters an autocast scope: inside it, eligible operations (matmul, linear, convolutions, ...) on
    /// <paramref name="device_type"/> run in <paramref name="dtype"/>, precision-sensitive ones in
    /// float32, and gradients of float32 parameters stay float32. Disposing the scope restores the
    /// previous enabled flag, dtype and cache setting (also when the body throws, through
    /// <c>using</c>); closing the outermost scope clears the cache of cast weights (so does entering or
    /// leaving a nested scope with another dtype).
    /// </summary>
    /// <param name="device_type">"cpu" or "cuda"; null: CUDA when available, else the CPU.</param>
    /// <param name="dtype">The fast dtype. Null: bfloat16 on the CPU, CUDA's current autocast dtype
    /// (float16 by default) on CUDA. The CPU accepts bfloat16 and float16 only.</param>
    /// <param name="enabled">False: a scope that turns autocast off (e.g. nested inside an enabled one
    /// to run a region in float32).</param>
    /// <param name="cache_enabled">Whether casts of leaf tensors (weights) are cached inside the scope;
    /// null keeps the current setting.</param>
    /// <exception cref="ArgumentException">A CPU dtype other than bfloat16/float16 (also when
    /// <paramref name="enabled"/> is false, as in MMEngine), or an unknown device type with
    /// <paramref name="enabled"/> true.</exception>
    public static IDisposable autocast(string? device_type = null, ScalarType? dtype = null, bool enabled = true, bool? cache_enabled = null)
    {
        var plan = Raise.Unwrap(Autocast.resolve(torch.cuda.is_available(),
            device_type is null ? FSharpOption<string>.None : FSharpOption<string>.Some(device_type),
            dtype is null ? FSharpOption<Autocast.CastDtype>.None : FSharpOption<Autocast.CastDtype>.Some(ToCastDtype(dtype.Value, nameof(dtype))),
            enabled), nameof(device_type));
        return AutocastScope.Enter(plan, cache_enabled);
    }

    /// <summary>Whether autocast is on for <paramref name="device_type"/> on this thread.</summary>
    public static bool is_autocast_enabled(string device_type = "cpu") => AmpNative.IsEnabled(DeviceTypeOf(device_type));

    /// <summary>The autocast fast dtype of <paramref name="device_type"/> on this thread
    /// (libtorch's defaults: bfloat16 on the CPU, float16 on CUDA).</summary>
    public static ScalarType get_autocast_dtype(string device_type = "cpu") => AmpNative.GetDtype(DeviceTypeOf(device_type));

    /// <summary>Whether autocast caches casts of leaf tensors on this thread.</summary>
    public static bool is_autocast_cache_enabled() => AmpNative.IsCacheEnabled();

    internal static DeviceType DeviceTypeOf(string deviceType) => deviceType switch
    {
        "cpu" => DeviceType.CPU,
        "cuda" => DeviceType.CUDA,
        _ => throw new ArgumentException($"autocast knows the device types cpu and cuda, got {deviceType}", nameof(deviceType)),
    };

    /// <summary>The core's dtype for a torch dtype; non-floating dtypes are MMEngine's dtype error.</summary>
    internal static Autocast.CastDtype ToCastDtype(ScalarType dtype, string paramName)
    {
        var parsed = Autocast.parseDtype(PyValue.NewStr(NameOf(dtype)));
        var value = Raise.Unwrap(parsed, paramName);
        return value.Value;
    }

    /// <summary>The torch name of a dtype ("float16", "bfloat16", ...; other types their TorchSharp name).</summary>
    internal static string NameOf(ScalarType dtype) => dtype switch
    {
        ScalarType.Float16 => "float16",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float32 => "float32",
        ScalarType.Float64 => "float64",
        _ => dtype.ToString(),
    };

    internal static ScalarType ToScalarType(Autocast.CastDtype d) =>
        d.IsFloat16 ? ScalarType.Float16 : d.IsBFloat16 ? ScalarType.BFloat16 : d.IsFloat32 ? ScalarType.Float32 : ScalarType.Float64;
}

/// <summary>
/// One entered autocast scope: what <c>torch.autocast.__enter__</c>/<c>__exit__</c> do, on the native
/// thread-local state. Scopes form a per-thread stack; disposing out of order or on another thread
/// is refused, because it would restore the wrong state. One difference from torch: the cast cache
/// is also cleared when a nested scope changes the dtype (entering and leaving it), so casts made
/// for one dtype are never served to another.
/// </summary>
internal sealed class AutocastScope : IDisposable
{
    [ThreadStatic] private static Stack<AutocastScope>? open;

    private readonly DeviceType device;
    private readonly bool prevEnabled;
    private readonly ScalarType prevDtype;
    private readonly bool prevCache;
    private readonly ScalarType dtype;
    private readonly int threadId;
    private bool disposed;

    private AutocastScope(DeviceType device, ScalarType? dtype, bool enabled, bool? cacheEnabled)
    {
        AmpNative.EnsureLoaded();
        this.device = device;
        threadId = Environment.CurrentManagedThreadId;
        prevEnabled = AmpNative.IsEnabled(device);
        prevDtype = AmpNative.GetDtype(device);
        prevCache = AmpNative.IsCacheEnabled();
        this.dtype = dtype ?? prevDtype;
        // libtorch's cache of cast weights is keyed by tensor, not by dtype: entering a scope with
        // another dtype must not reuse the outer scope's casts (torch.autocast does, and fails with
        // "Input type (c10::BFloat16) and bias type (c10::Half) should be the same").
        if (this.dtype != prevDtype) AmpNative.ClearCache();
        AmpNative.SetEnabled(device, enabled);
        AmpNative.SetDtype(device, this.dtype);
        AmpNative.IncrementNesting();
        AmpNative.SetCacheEnabled(cacheEnabled ?? prevCache);
        (open ??= new Stack<AutocastScope>()).Push(this);
    }

    /// <summary>Enters the scope a core plan describes (a no-op scope for <c>Passthrough</c>).</summary>
    internal static IDisposable Enter(Autocast.Plan plan, bool? cacheEnabled = null)
    {
        if (plan is Autocast.Plan.Scope s)
        {
            var device = s.Device.IsCpu ? DeviceType.CPU : DeviceType.CUDA;
            ScalarType? dtype = s.Dtype is null ? null : Amp.ToScalarType(s.Dtype.Value);
            return new AutocastScope(device, dtype, s.Enabled, cacheEnabled);
        }
        return NoScope.Instance;
    }

    public void Dispose()
    {
        if (disposed) return;
        if (Environment.CurrentManagedThreadId != threadId)
            throw new InvalidOperationException("An autocast scope must be disposed on the thread that entered it (autocast state is per thread).");
        if (open is null || open.Count == 0 || !ReferenceEquals(open.Peek(), this))
            throw new InvalidOperationException("Autocast scopes must be disposed innermost first.");
        open.Pop();
        disposed = true;
        if (AmpNative.DecrementNesting() == 0 || dtype != prevDtype) AmpNative.ClearCache();
        AmpNative.SetEnabled(device, prevEnabled);
        AmpNative.SetDtype(device, prevDtype);
        AmpNative.SetCacheEnabled(prevCache);
    }

    private sealed class NoScope : IDisposable
    {
        internal static readonly NoScope Instance = new();
        public void Dispose() { }
    }
}
