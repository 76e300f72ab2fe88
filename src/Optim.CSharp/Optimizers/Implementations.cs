using Optim.Core;
using TorchSharp;
using static TorchSharp.torch;
using Implementation = Optim.Core.Optimizers.Implementation;

namespace Optim.Torch;

/// <summary>
/// An optimizer whose <c>step</c> can unscale the gradients itself and skip on inf/NaN (PyTorch's
/// <c>_step_supports_amp_scaling</c>): <see cref="GradScaler"/> then hands it the scale and the found-inf
/// flag instead of unscaling the gradients in a separate pass.
/// </summary>
public interface IAmpScalingOptimizer
{
    /// <summary>
    /// One step on gradients multiplied by <paramref name="grad_scale"/>: each gradient is divided by it
    /// (and stored back unscaled) as part of the update; when <paramref name="found_inf"/> is non-zero the
    /// whole step is skipped (state included).
    /// </summary>
    /// <param name="grad_scale">One-element float32 tensor on the parameters' device, or null (gradients already unscaled).</param>
    /// <param name="found_inf">One-element float32 tensor (non-zero: skip), or null.</param>
    /// <param name="closure">Re-evaluates the model and returns the loss (optional).</param>
    Tensor? step(Tensor? grad_scale, Tensor? found_inf, Func<Tensor>? closure = null);
}

/// <summary>The implementation switches every Optim optimizer takes (PyTorch's <c>foreach</c> and <c>fused</c>).</summary>
public interface IImplementationChoice
{
    /// <summary>PyTorch's <c>foreach</c> as given (null: not given).</summary>
    bool? @foreach { get; }

    /// <summary>PyTorch's <c>fused</c> as given (null: not given).</summary>
    bool? fused { get; }

    /// <summary>The implementation <c>step</c> runs, from <see cref="@foreach"/> and <see cref="fused"/>.</summary>
    Implementation Implementation { get; }
}

internal static class Implementations
{
    /// <summary>The core's choice for PyTorch's switches, or PyTorch's error as an ArgumentException.</summary>
    internal static Implementation Resolve(string name, bool? @foreach, bool? fused)
    {
        var r = Optimizers.implementation(name, Opt(@foreach), Opt(fused));
        if (r.IsError) throw new ArgumentException(r.ErrorValue, fused == true ? nameof(fused) : nameof(@foreach));
        return r.ResultValue;
    }

    /// <summary>PyTorch refuses <c>fused=True</c> for parameters its kernels cannot take; so does Optim.</summary>
    internal static void CheckFusedParams(string name, IEnumerable<TorchSharp.Modules.Parameter> parameters)
    {
        foreach (var p in parameters)
            if (!FusedNative.SupportsDtype(p.dtype))
                throw new ArgumentException($"{name}: `fused=True` requires all the params to be floating point Tensors (float64, float32, float16, bfloat16), got {p.dtype}", "fused");
    }

    private static Microsoft.FSharp.Core.FSharpOption<bool> Opt(bool? b) =>
        b is bool v ? Microsoft.FSharp.Core.FSharpOption<bool>.Some(v) : Microsoft.FSharp.Core.FSharpOption<bool>.None;
}
