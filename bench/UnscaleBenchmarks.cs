using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// Unscaling and inf/NaN-checking the gradients of ResNet-18 (62 tensors, 11.7 M floats): libtorch's
/// fused <c>_amp_foreach_non_finite_check_and_unscale_</c> (what <see cref="GradScaler"/> calls, one
/// host read per step) against the loop a TorchSharp user writes without it (a check and a multiply
/// per tensor, reading each check back), and the same loop with a single read at the end.
/// Each operation unscales by 1/2 then by 2, so the values stay put across iterations.
/// </summary>
[MemoryDiagnoser(false)]
public class UnscaleBenchmarks
{
    private List<Tensor> grads = new();
    private Tensor half = null!, two = null!, foundInf = null!;

    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(1);
        torch.manual_seed(0);
        var model = torchvision.models.resnet18();
        grads = model.parameters().Select(p => torch.randn(p.shape)).ToList();
        half = torch.tensor(0.5f);
        two = torch.tensor(2.0f);
        foundInf = torch.zeros(Array.Empty<long>(), ScalarType.Float32);
    }

    /// <summary>Plain TorchSharp: per tensor, check finiteness (read back) and multiply.</summary>
    [Benchmark(Baseline = true)]
    public bool PerTensorLoop() => Loop(0.5f) | Loop(2.0f);

    /// <summary>Plain TorchSharp, per-tensor ops but one read at the end.</summary>
    [Benchmark]
    public bool PerTensorLoopOneSync() => LoopOneSync(0.5f) | LoopOneSync(2.0f);

    /// <summary>The fused kernel over the whole list, one read at the end.</summary>
    [Benchmark]
    public bool Fused() => FusedOnce(half) | FusedOnce(two);

    private bool Loop(float inv)
    {
        var found = false;
        foreach (var g in grads)
        {
            using var finite = g.isfinite().all();
            if (!finite.item<bool>()) found = true;
            g.mul_(inv);
        }
        return found;
    }

    private bool LoopOneSync(float inv)
    {
        using var scope = torch.NewDisposeScope();
        var any = torch.zeros(Array.Empty<long>(), ScalarType.Bool);
        foreach (var g in grads)
        {
            any.logical_or_(g.isfinite().logical_not().any());
            g.mul_(inv);
        }
        return any.item<bool>();
    }

    private bool FusedOnce(Tensor inv)
    {
        foundInf.zero_();
        AmpNative.NonFiniteCheckAndUnscale(grads, foundInf, inv);
        return foundInf.item<float>() != 0f;
    }
}
