using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// Why AMP is slow on a CPU without bfloat16/float16 arithmetic: the (128×784)·(784×512) matmul of
/// the step benchmark's first layer, on tensors already in each dtype (no autocast, no casts).
/// </summary>
public class MatmulBenchmarks
{
    private Tensor a32 = null!, b32 = null!, a16 = null!, b16 = null!, abf = null!, bbf = null!;

    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(1);
        torch.manual_seed(0);
        a32 = torch.randn(128, 784);
        b32 = torch.randn(784, 512);
        a16 = a32.to_type(ScalarType.Float16);
        b16 = b32.to_type(ScalarType.Float16);
        abf = a32.to_type(ScalarType.BFloat16);
        bbf = b32.to_type(ScalarType.BFloat16);
    }

    [Benchmark(Baseline = true)]
    public void MatmulFp32() { using var c = a32.matmul(b32); }

    [Benchmark]
    public void MatmulBf16() { using var c = abf.matmul(bbf); }

    [Benchmark]
    public void MatmulFp16() { using var c = a16.matmul(b16); }
}
