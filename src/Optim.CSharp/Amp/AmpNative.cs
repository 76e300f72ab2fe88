using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim;

/// <summary>
/// libtorch's autocast API and fused AMP kernels, called directly in <c>libtorch_cpu.so</c> (TorchSharp
/// does not bind them). The C++ names are mangled; <c>c10::DeviceType</c> and <c>c10::ScalarType</c>
/// are one-byte enums, <c>bool</c> is one byte, a TorchSharp tensor handle is an <c>at::Tensor*</c>,
/// and an <c>at::ArrayRef&lt;at::Tensor&gt;</c> is passed by value as (data pointer, length);
/// <c>increment_nesting</c>/<c>decrement_nesting</c> return a C++ <c>int</c> (32 bits).
/// </summary>
/// <remarks>
/// A C++ exception thrown by libtorch cannot cross this boundary, so every precondition the kernels
/// check (same device and dtype, float32 one-element scalars, strided layout) is checked here first.
/// </remarks>
internal static unsafe class AmpNative
{
    private const string Lib = "libtorch_cpu";

    static AmpNative()
    {
        // Make sure TorchSharp has loaded libtorch (and its dependencies) before the first call.
        torch.InitializeDeviceType(DeviceType.CPU);
    }

    /// <summary>Forces the static constructor (library load) to run.</summary>
    internal static void EnsureLoaded() { }

    [DllImport(Lib, EntryPoint = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb", ExactSpelling = true)]
    private static extern void set_autocast_enabled(sbyte deviceType, byte enabled);

    [DllImport(Lib, EntryPoint = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE", ExactSpelling = true)]
    private static extern byte is_autocast_enabled(sbyte deviceType);

    [DllImport(Lib, EntryPoint = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE", ExactSpelling = true)]
    private static extern void set_autocast_dtype(sbyte deviceType, sbyte dtype);

    [DllImport(Lib, EntryPoint = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE", ExactSpelling = true)]
    private static extern sbyte get_autocast_dtype(sbyte deviceType);

    [DllImport(Lib, EntryPoint = "_ZN2at8autocast17increment_nestingEv", ExactSpelling = true)]
    private static extern int increment_nesting();

    [DllImport(Lib, EntryPoint = "_ZN2at8autocast17decrement_nestingEv", ExactSpelling = true)]
    private static extern int decrement_nesting();

    [DllImport(Lib, EntryPoint = "_ZN2at8autocast11clear_cacheEv", ExactSpelling = true)]
    private static extern void clear_cache();

    [DllImport(Lib, EntryPoint = "_ZN2at8autocast25is_autocast_cache_enabledEv", ExactSpelling = true)]
    private static extern byte is_autocast_cache_enabled();

    [DllImport(Lib, EntryPoint = "_ZN2at8autocast26set_autocast_cache_enabledEb", ExactSpelling = true)]
    private static extern void set_autocast_cache_enabled(byte enabled);

    // void at::_ops::_amp_foreach_non_finite_check_and_unscale_::call(ArrayRef<Tensor>, Tensor& found_inf, const Tensor& inv_scale)
    [DllImport(Lib, EntryPoint = "_ZN2at4_ops42_amp_foreach_non_finite_check_and_unscale_4callEN3c108ArrayRefINS_6TensorEEERS4_RKS4_", ExactSpelling = true)]
    private static extern void amp_foreach_non_finite_check_and_unscale_(IntPtr tensors, nuint count, IntPtr foundInf, IntPtr invScale);

    // Tensor& at::_ops::_amp_update_scale_::call(Tensor& self, Tensor& growth_tracker, const Tensor& found_inf, double, double, int64_t)
    [DllImport(Lib, EntryPoint = "_ZN2at4_ops18_amp_update_scale_4callERNS_6TensorES3_RKS2_ddl", ExactSpelling = true)]
    private static extern IntPtr amp_update_scale_(IntPtr scale, IntPtr growthTracker, IntPtr foundInf, double growthFactor, double backoffFactor, long growthInterval);

    // ---- autocast state (thread-local in libtorch) ----

    internal static bool IsEnabled(DeviceType device) => is_autocast_enabled((sbyte)device) != 0;
    internal static void SetEnabled(DeviceType device, bool enabled) => set_autocast_enabled((sbyte)device, enabled ? (byte)1 : (byte)0);
    internal static ScalarType GetDtype(DeviceType device) => (ScalarType)get_autocast_dtype((sbyte)device);
    internal static void SetDtype(DeviceType device, ScalarType dtype) => set_autocast_dtype((sbyte)device, (sbyte)dtype);
    internal static int IncrementNesting() => increment_nesting();
    internal static int DecrementNesting() => decrement_nesting();
    internal static void ClearCache() => clear_cache();
    internal static bool IsCacheEnabled() => is_autocast_cache_enabled() != 0;
    internal static void SetCacheEnabled(bool enabled) => set_autocast_cache_enabled(enabled ? (byte)1 : (byte)0);

    // ---- fused kernels ----

    private static bool IsFloating(ScalarType t) =>
        t is ScalarType.Float32 or ScalarType.Float64 or ScalarType.Float16 or ScalarType.BFloat16;

    private static void CheckScalar(Tensor t, string name, ScalarType dtype, Device device)
    {
        if (t.numel() != 1) throw new ArgumentException($"{name} must be a 1-element tensor.", name);
        if (t.dtype != dtype) throw new ArgumentException($"{name} must be a {dtype} tensor.", name);
        if (t.device_type != device.type || t.device_index != device.index)
            throw new ArgumentException($"{name} must be on {device}, like the gradients.", name);
    }

    /// <summary>
    /// <c>torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)</c>: sets
    /// <paramref name="foundInf"/> to 1 if any element of any tensor is inf/NaN (checked before
    /// scaling), and multiplies every tensor by <paramref name="invScale"/> in place. One kernel launch
    /// for the whole list, no device synchronisation. All tensors must share one device and one
    /// floating dtype (the caller groups them).
    /// </summary>
    internal static void NonFiniteCheckAndUnscale(IReadOnlyList<Tensor> tensors, Tensor foundInf, Tensor invScale)
    {
        if (tensors.Count == 0) return;
        var device = tensors[0].device;
        var dtype = tensors[0].dtype;
        if (!IsFloating(dtype)) throw new ArgumentException($"cannot unscale {dtype} tensors", nameof(tensors));
        foreach (var t in tensors)
        {
            if (t.device_type != device.type || t.device_index != device.index)
                throw new ArgumentException("all tensors must be on one device", nameof(tensors));
            if (t.dtype != dtype) throw new ArgumentException("all tensors must have one dtype", nameof(tensors));
            if (t.is_sparse) throw new ArgumentException("sparse tensors are not supported", nameof(tensors));
        }
        CheckScalar(foundInf, "found_inf", ScalarType.Float32, device);
        CheckScalar(invScale, "inv_scale", ScalarType.Float32, device);

        // An at::Tensor is one intrusive pointer: an array of them is the handles' pointees, side by side.
        var array = new IntPtr[tensors.Count];
        for (int i = 0; i < array.Length; i++) array[i] = *(IntPtr*)tensors[i].Handle;
        fixed (IntPtr* data = array)
        {
            amp_foreach_non_finite_check_and_unscale_((IntPtr)data, (nuint)array.Length, foundInf.Handle, invScale.Handle);
        }
        GC.KeepAlive(tensors);
        GC.KeepAlive(foundInf);
        GC.KeepAlive(invScale);
    }

    /// <summary>
    /// <c>torch._amp_update_scale_(scale, growth_tracker, found_inf, growth_factor, backoff_factor,
    /// growth_interval)</c> in place. Optim's GradScaler takes this decision in the F# core
    /// (<c>LossScaling.update</c>); the kernel is kept as the reference the core is tested against.
    /// </summary>
    internal static void UpdateScale(Tensor scale, Tensor growthTracker, Tensor foundInf, double growthFactor, double backoffFactor, long growthInterval)
    {
        var device = scale.device;
        CheckScalar(scale, "current_scale", ScalarType.Float32, device);
        CheckScalar(growthTracker, "growth_tracker", ScalarType.Int32, device);
        CheckScalar(foundInf, "found_inf", ScalarType.Float32, device);
        amp_update_scale_(scale.Handle, growthTracker.Handle, foundInf.Handle, growthFactor, backoffFactor, growthInterval);
        GC.KeepAlive(scale);
        GC.KeepAlive(growthTracker);
        GC.KeepAlive(foundInf);
    }
}
