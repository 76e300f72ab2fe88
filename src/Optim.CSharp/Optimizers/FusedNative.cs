using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Torch;

/// <summary>
/// libtorch's fused optimizer kernels (<c>torch._fused_sgd_</c>, <c>_fused_adam_</c>, <c>_fused_adamw_</c>,
/// <c>_fused_adagrad_</c>), called directly in <c>libtorch_cpu.so</c> through their dispatcher entry points
/// <c>at::_ops::&lt;op&gt;::call</c> (TorchSharp does not bind them). One call updates a whole list of
/// tensors in one pass over memory.
/// </summary>
/// <remarks>
/// <para>ABI (x86-64 System V, as for the AMP kernels): an <c>at::ArrayRef&lt;at::Tensor&gt;</c> is passed by
/// value as the 16-byte struct (data pointer, length) — <see cref="TensorList"/>; an <c>at::Tensor</c> is one
/// <c>TensorImpl*</c>, so an array of the pointees of TorchSharp handles is a tensor list's data; a
/// <c>const std::optional&lt;at::Tensor&gt;&amp;</c> is a pointer to libstdc++'s optional (the tensor, then the
/// engaged flag) — <see cref="OptionalTensor"/>; <c>bool</c> is one byte.</para>
/// <para>A C++ exception cannot cross this boundary, so the callers check what the kernels would
/// (list lengths, one device and dtype per list, contiguous strided tensors, float32 scale and flag) first,
/// and call inside <c>torch.no_grad()</c> (the parameters are autograd leaves).</para>
/// <para>Every kernel skips the whole update when <c>found_inf</c> is given and holds 1.0, and divides the
/// gradients by <c>grad_scale</c> (storing the unscaled gradient back) when it is given.</para>
/// </remarks>
internal static unsafe class FusedNative
{
    private const string Lib = "libtorch_cpu";

    static FusedNative() => torch.InitializeDeviceType(DeviceType.CPU);

    /// <summary><c>c10::ArrayRef&lt;at::Tensor&gt;</c>: a pointer to consecutive <c>at::Tensor</c>s and their count.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct TensorList
    {
        public IntPtr Data;
        public nuint Length;
    }

    /// <summary>libstdc++'s <c>std::optional&lt;at::Tensor&gt;</c>: the tensor's impl pointer, then the engaged flag.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct OptionalTensor
    {
        public IntPtr Impl;
        public byte Engaged;
    }

    // void at::_ops::_fused_sgd_::call(at::TensorList self, at::TensorList grads, at::TensorList momentum_buffer_list,
    //     double weight_decay, double momentum, double lr, double dampening, bool nesterov, bool maximize,
    //     bool is_first_step, const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf)
    [DllImport(Lib, EntryPoint = "_ZN2at4_ops11_fused_sgd_4callEN3c108ArrayRefINS_6TensorEEES5_S5_ddddbbbRKSt8optionalIS4_ES9_", ExactSpelling = true)]
    private static extern void fused_sgd_(TensorList self, TensorList grads, TensorList momentumBuffers,
        double weightDecay, double momentum, double lr, double dampening, byte nesterov, byte maximize, byte isFirstStep,
        OptionalTensor* gradScale, OptionalTensor* foundInf);

    // void at::_ops::_fused_adam_::call(at::TensorList self, at::TensorList grads, at::TensorList exp_avgs,
    //     at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs, at::TensorList state_steps,
    //     double lr, double beta1, double beta2, double weight_decay, double eps, bool amsgrad, bool maximize,
    //     const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf)
    [DllImport(Lib, EntryPoint = "_ZN2at4_ops12_fused_adam_4callEN3c108ArrayRefINS_6TensorEEES5_S5_S5_S5_S5_dddddbbRKSt8optionalIS4_ES9_", ExactSpelling = true)]
    private static extern void fused_adam_(TensorList self, TensorList grads, TensorList expAvgs, TensorList expAvgSqs,
        TensorList maxExpAvgSqs, TensorList stateSteps, double lr, double beta1, double beta2, double weightDecay, double eps,
        byte amsgrad, byte maximize, OptionalTensor* gradScale, OptionalTensor* foundInf);

    // void at::_ops::_fused_adamw_::call(...same parameters as _fused_adam_...) — decoupled weight decay:
    //     param *= 1 - lr * weight_decay before the Adam update.
    [DllImport(Lib, EntryPoint = "_ZN2at4_ops13_fused_adamw_4callEN3c108ArrayRefINS_6TensorEEES5_S5_S5_S5_S5_dddddbbRKSt8optionalIS4_ES9_", ExactSpelling = true)]
    private static extern void fused_adamw_(TensorList self, TensorList grads, TensorList expAvgs, TensorList expAvgSqs,
        TensorList maxExpAvgSqs, TensorList stateSteps, double lr, double beta1, double beta2, double weightDecay, double eps,
        byte amsgrad, byte maximize, OptionalTensor* gradScale, OptionalTensor* foundInf);

    // void at::_ops::_fused_adagrad_::call(at::TensorList self, at::TensorList grads, at::TensorList state_sums,
    //     at::TensorList state_steps, double lr, double lr_decay, double weight_decay, double eps, bool maximize,
    //     const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf)
    [DllImport(Lib, EntryPoint = "_ZN2at4_ops15_fused_adagrad_4callEN3c108ArrayRefINS_6TensorEEES5_S5_S5_ddddbRKSt8optionalIS4_ES9_", ExactSpelling = true)]
    private static extern void fused_adagrad_(TensorList self, TensorList grads, TensorList stateSums, TensorList stateSteps,
        double lr, double lrDecay, double weightDecay, double eps, byte maximize, OptionalTensor* gradScale, OptionalTensor* foundInf);

    /// <summary>The scalar types the CPU and CUDA fused kernels accept.</summary>
    internal static bool SupportsDtype(ScalarType t) =>
        t is ScalarType.Float32 or ScalarType.Float64 or ScalarType.Float16 or ScalarType.BFloat16;

    /// <summary>The <c>at::Tensor</c> (impl pointer) behind a TorchSharp handle.</summary>
    internal static IntPtr Impl(Tensor t) => *(IntPtr*)t.Handle;

    /// <summary>Amp scaling arguments for one kernel call: the scale to divide gradients by and the
    /// inf/NaN flag, each a one-element float32 tensor on the parameters' device, or null.</summary>
    internal readonly record struct Scaling(Tensor? GradScale, Tensor? FoundInf)
    {
        public static readonly Scaling None = new(null, null);
        public bool IsNone => GradScale is null && FoundInf is null;
    }

    private static OptionalTensor Optional(Tensor? t) => t is null ? default : new OptionalTensor { Impl = Impl(t), Engaged = 1 };

    private static byte B(bool b) => b ? (byte)1 : (byte)0;

    /// <summary>torch._fused_sgd_ over equally long lists of impl pointers (<paramref name="buffers"/> empty without momentum).</summary>
    internal static void Sgd(IntPtr[] @params, IntPtr[] grads, IntPtr[] buffers, int count, double weightDecay, double momentum,
        double lr, double dampening, bool nesterov, bool maximize, bool isFirstStep, Scaling scaling)
    {
        var scale = Optional(scaling.GradScale);
        var inf = Optional(scaling.FoundInf);
        fixed (IntPtr* p = @params, g = grads, b = buffers)
        {
            fused_sgd_(List(p, count), List(g, count), List(b, momentum == 0 ? 0 : count), weightDecay, momentum, lr, dampening,
                B(nesterov), B(maximize), B(isFirstStep), &scale, &inf);
        }
        GC.KeepAlive(scaling.GradScale);
        GC.KeepAlive(scaling.FoundInf);
    }

    /// <summary>torch._fused_adam_ (or _fused_adamw_ when <paramref name="decoupled"/>); <paramref name="maxExpAvgSqs"/> used only with amsgrad.</summary>
    internal static void Adam(bool decoupled, IntPtr[] @params, IntPtr[] grads, IntPtr[] expAvgs, IntPtr[] expAvgSqs, IntPtr[] maxExpAvgSqs,
        IntPtr[] steps, int count, double lr, double beta1, double beta2, double weightDecay, double eps, bool amsgrad, bool maximize, Scaling scaling)
    {
        var scale = Optional(scaling.GradScale);
        var inf = Optional(scaling.FoundInf);
        fixed (IntPtr* p = @params, g = grads, m = expAvgs, v = expAvgSqs, vmax = maxExpAvgSqs, s = steps)
        {
            var maxList = List(vmax, amsgrad ? count : 0);
            if (decoupled)
                fused_adamw_(List(p, count), List(g, count), List(m, count), List(v, count), maxList, List(s, count),
                    lr, beta1, beta2, weightDecay, eps, B(amsgrad), B(maximize), &scale, &inf);
            else
                fused_adam_(List(p, count), List(g, count), List(m, count), List(v, count), maxList, List(s, count),
                    lr, beta1, beta2, weightDecay, eps, B(amsgrad), B(maximize), &scale, &inf);
        }
        GC.KeepAlive(scaling.GradScale);
        GC.KeepAlive(scaling.FoundInf);
    }

    /// <summary>torch._fused_adagrad_.</summary>
    internal static void Adagrad(IntPtr[] @params, IntPtr[] grads, IntPtr[] sums, IntPtr[] steps, int count,
        double lr, double lrDecay, double weightDecay, double eps, bool maximize, Scaling scaling)
    {
        var scale = Optional(scaling.GradScale);
        var inf = Optional(scaling.FoundInf);
        fixed (IntPtr* p = @params, g = grads, s = sums, st = steps)
        {
            fused_adagrad_(List(p, count), List(g, count), List(s, count), List(st, count), lr, lrDecay, weightDecay, eps,
                B(maximize), &scale, &inf);
        }
        GC.KeepAlive(scaling.GradScale);
        GC.KeepAlive(scaling.FoundInf);
    }

    private static TensorList List(IntPtr* data, int count) => new() { Data = (IntPtr)data, Length = (nuint)count };
}
