using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// A model with many small parameter tensors, named like a real network (<c>stage3.block17.conv.weight</c>,
/// <c>...bn.weight</c>, <c>...bn.bias</c>): <c>blocks</c> blocks of a 1×1 Conv2d (weight) and a BatchNorm2d
/// (weight, bias), so 3 tensors a block, spread over 4 stages.
/// </summary>
internal sealed class ManyTensorsModel : nn.Module
{
    public ManyTensorsModel(int tensors) : base(nameof(ManyTensorsModel))
    {
        var blocks = Math.Max(1, tensors / 3);
        for (int s = 0; s < 4; s++)
        {
            var stage = new Stage();
            for (int b = s; b < blocks; b += 4)
                stage.Add($"block{b}", nn.Conv2d(2, 2, 1, bias: false), nn.BatchNorm2d(2));
            register_module($"stage{s}", stage);
        }
    }

    private sealed class Stage : nn.Module
    {
        public Stage() : base(nameof(Stage)) { }

        public void Add(string name, nn.Module conv, nn.Module bn)
        {
            var block = new Block(conv, bn);
            register_module(name, block);
        }
    }

    private sealed class Block : nn.Module
    {
        public Block(nn.Module conv, nn.Module bn) : base(nameof(Block))
        {
            register_module("conv", conv);
            register_module("bn", bn);
        }
    }

    /// <summary>
    /// A paramwise_cfg with <paramref name="keys"/> custom keys that all occur in the model's names
    /// (<c>block{i}.</c> for the first blocks, stage names, <c>conv</c>), plus norm_decay_mult and
    /// bias_decay_mult, as JSON.
    /// </summary>
    public static string Config(int keys)
    {
        var custom = Enumerable.Range(0, keys).Select(i =>
            i switch
            {
                0 => "\"conv\": {\"lr_mult\": 0.5}",
                1 => "\"stage0\": {\"lr_mult\": 0.1, \"decay_mult\": 0.0}",
                _ => $"\"block{i}.\": {{\"lr_mult\": {1.0 + i * 1e-3:R}}}",
            });
        return "{\"optimizer\": {\"type\": \"SGD\", \"lr\": 0.01, \"momentum\": 0.9, \"weight_decay\": 1e-4}, "
            + "\"paramwise_cfg\": {\"norm_decay_mult\": 0.0, \"bias_decay_mult\": 0.0, \"custom_keys\": {"
            + string.Join(", ", custom) + "}}}";
    }
}

/// <summary>
/// <c>build_optim_wrapper</c> with a paramwise_cfg (one group per tensor) against the tensor count and
/// the number of custom keys. The baseline is the same model's optimizer built by TorchSharp over one
/// group holding every tensor (what a user without paramwise rules pays).
/// </summary>
[MemoryDiagnoser(false)]
public class ConstructionBenchmarks
{
    private nn.Module model = null!;
    private string config = "";

    /// <summary>Parameter tensors in the model.</summary>
    [Params(1_000, 10_000, 28_000)]
    public int Tensors { get; set; }

    /// <summary>Custom keys in paramwise_cfg.</summary>
    [Params(10, 1_000)]
    public int CustomKeys { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(1);
        model = new ManyTensorsModel(Tensors);
        config = ManyTensorsModel.Config(CustomKeys);
    }

    [GlobalCleanup]
    public void Cleanup() => model.Dispose();

    /// <summary>TorchSharp's SGD over one group with every tensor.</summary>
    [Benchmark(Baseline = true)]
    public object OneGroupTorchSharp() => torch.optim.SGD(model.parameters(), 0.01, momentum: 0.9, weight_decay: 1e-4);

    /// <summary><c>build_optim_wrapper</c>: plan the groups, build the optimizer, wrap it.</summary>
    [Benchmark]
    public object BuildOptimWrapper() => Builder.build_optim_wrapper(model, config);
}
