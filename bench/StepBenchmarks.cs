using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Optim.Bench;

/// <summary>
/// One training step of the same classifier (MLP 784-512-512-10, batch 128, SGD with momentum):
/// plain TorchSharp fp32 (the baseline), OptimWrapper fp32, and AmpOptimWrapper with bfloat16,
/// float16 and float32 autocast (float32 measures the AMP machinery alone: scaling, fused unscale,
/// the one host read, scale update).
/// </summary>
[MemoryDiagnoser(false)]
public class StepBenchmarks
{
    private nn.Module<Tensor, Tensor> model = null!;
    private optim.Optimizer optimizer = null!;
    private OptimWrapper fp32 = null!;
    private AmpOptimWrapper bf16 = null!, fp16 = null!, amp32 = null!;
    private Tensor x = null!, y = null!;

    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(1);
        torch.manual_seed(0);
        model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10));
        optimizer = torch.optim.SGD(model.parameters(), 0.01, momentum: 0.9);
        fp32 = new OptimWrapper(optimizer);
        bf16 = new AmpOptimWrapper(optimizer, dtype: "bfloat16");
        fp16 = new AmpOptimWrapper(optimizer, dtype: "float16");
        amp32 = new AmpOptimWrapper(optimizer, dtype: "float32");
        x = torch.randn(128, 784);
        y = torch.randint(10, new long[] { 128 });
    }

    /// <summary>Plain TorchSharp: forward, loss, backward, step, zero_grad.</summary>
    [Benchmark(Baseline = true)]
    public void PlainTorchSharpFp32()
    {
        using var scope = torch.NewDisposeScope();
        var loss = F.cross_entropy(model.forward(x), y);
        loss.backward();
        optimizer.step();
        optimizer.zero_grad();
    }

    [Benchmark]
    public void OptimWrapperFp32() => Step(fp32);

    [Benchmark]
    public void AmpBf16() => Step(bf16);

    [Benchmark]
    public void AmpFp16() => Step(fp16);

    [Benchmark]
    public void AmpFp32() => Step(amp32);

    private void Step(OptimWrapper wrapper)
    {
        using var scope = torch.NewDisposeScope();
        Tensor loss;
        using (wrapper.optim_context(model))
            loss = F.cross_entropy(model.forward(x), y);
        wrapper.update_params(loss);
    }
}
