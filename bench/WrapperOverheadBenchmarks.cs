using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Optim.Bench;

/// <summary>
/// What <c>OptimWrapper.update_params</c> costs over the loop a TorchSharp user writes by hand
/// (forward, loss, backward, step, zero_grad), fp32, one thread: a 10 M-parameter MLP
/// (784-2048-2048-2048-10, batch 32) and a small CNN (two 3×3 convs with BatchNorm, 28×28 inputs,
/// batch 32). SGD with momentum; zero_grad sets gradients to None in both loops.
/// </summary>
[MemoryDiagnoser(false)]
public class WrapperOverheadBenchmarks
{
    private nn.Module<Tensor, Tensor> model = null!;
    private optim.Optimizer optimizer = null!;
    private OptimWrapper wrapper = null!;
    private Tensor x = null!, y = null!;

    /// <summary>The model.</summary>
    [Params("mlp10m", "cnn")]
    public string Model { get; set; } = "mlp10m";

    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(1);
        // glibc moves its mmap threshold as large blocks are freed, so a 10 M-parameter step's gradient
        // buffers come either from fresh mappings (a page fault per page) or from the heap depending on
        // what ran before in the process: step times differed by 1.8x between runs of the same code.
        // Fixing the threshold puts every case in the same allocator state.
        NativeAllocator.ReturnLargeBlocksToSystem();
        torch.manual_seed(0);
        if (Model == "mlp10m")
        {
            model = nn.Sequential(nn.Linear(784, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10));
            x = torch.randn(32, 784);
        }
        else
        {
            model = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding: 1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding: 1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(32 * 7 * 7, 10));
            x = torch.randn(32, 1, 28, 28);
        }
        y = torch.randint(10, new long[] { 32 });
        optimizer = torch.optim.SGD(model.parameters(), 0.01, momentum: 0.9);
        wrapper = new OptimWrapper(optimizer);
    }

    /// <summary>forward, loss, backward, step, zero_grad (to None), by hand.</summary>
    [Benchmark(Baseline = true)]
    public void HandWritten()
    {
        using var scope = torch.NewDisposeScope();
        var loss = F.cross_entropy(model.forward(x), y);
        loss.backward();
        optimizer.step();
        foreach (var p in model.parameters()) p.grad = null;
    }

    /// <summary>The same through <c>optim_context</c> and <c>update_params</c>.</summary>
    [Benchmark]
    public void UpdateParams()
    {
        using var scope = torch.NewDisposeScope();
        Tensor loss;
        using (wrapper.optim_context(model))
            loss = F.cross_entropy(model.forward(x), y);
        wrapper.update_params(loss);
    }
}
