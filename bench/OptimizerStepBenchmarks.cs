using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// One optimizer step over 10 M float32 parameters split into 8, 200 or 2,000 tensors, in one param
/// group or one group per tensor (MMEngine's paramwise layout): TorchSharp's optimizer (the baseline),
/// Optim's (<c>Optim.Torch</c>, default implementation: libtorch's fused kernels for SGD/Adam/AdamW, the
/// per-tensor rule for RMSprop), and a STREAM triad moving the same number of bytes as the step, so
/// the "of triad" column (triad time / step time) is the step's fraction of the machine's bandwidth.
/// </summary>
/// <remarks>
/// Bytes per parameter element: SGD with momentum 20 (read p, g, buffer; write p, buffer), Adam and
/// AdamW 28 (read p, g, m, v; write p, m, v), RMSprop 20 (read p, g, square_avg; write p, square_avg).
/// Gradients are set once in the setup; every invocation is one <c>step()</c>.
/// Set <c>OPTIM_BENCH_SMOKE=1</c> to run on 100 k parameters (a smoke test of the harness).
/// </remarks>
[Config(typeof(TriadFractionConfig))]
public class OptimizerStepBenchmarks
{
    /// <summary>The optimizer: SGD (momentum 0.9), Adam, AdamW or RMSprop.</summary>
    [Params("SGD", "Adam", "AdamW", "RMSprop")]
    public string Optimizer { get; set; } = "SGD";

    /// <summary>How many tensors the 10 M parameters are split into.</summary>
    [Params(8, 200, 2000)]
    public int Tensors { get; set; }

    /// <summary>One param group over all tensors, or one group per tensor.</summary>
    [Params(false, true)]
    public bool GroupPerTensor { get; set; }

    private static long TotalElements => Environment.GetEnvironmentVariable("OPTIM_BENCH_SMOKE") == "1" ? 100_000 : 10_000_000;

    private List<Parameter> parameters = new();
    private optim.Optimizer torchSharp = null!, ours = null!;
    private Triad triad = null!;

    /// <summary>Bytes one step moves per parameter element.</summary>
    public static int BytesPerElement(string optimizer) => optimizer is "Adam" or "AdamW" ? 28 : 20;

    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(1);
        torch.manual_seed(0);
        var size = TotalElements / Tensors;
        parameters = Enumerable.Range(0, Tensors).Select(_ => new Parameter(torch.randn(size) * 0.1)).ToList();
        foreach (var p in parameters)
        {
            using var g = torch.randn(size) * 0.01;
            (p * g).sum().backward();
        }
        torchSharp = Build(fromOptim: false);
        ours = Build(fromOptim: true);
        triad = Triad.ForBytes(BytesPerElement(Optimizer) * size * Tensors);
        // First steps allocate lazily created state (momentum buffers): not part of a steady-state step.
        torchSharp.step();
        ours.step();
    }

    private optim.Optimizer Build(bool fromOptim)
    {
        var perTensor = GroupPerTensor;
        switch (Optimizer)
        {
            case "SGD":
                var sgdGroups = perTensor ? parameters.Select(p => new TorchSharp.Modules.SGD.ParamGroup(new[] { p }, new TorchSharp.Modules.SGD.Options())).ToList()
                    : new() { new TorchSharp.Modules.SGD.ParamGroup(parameters, new TorchSharp.Modules.SGD.Options()) };
                return fromOptim ? new Optim.Torch.SGD(sgdGroups, 0.01, momentum: 0.9) : torch.optim.SGD(sgdGroups, 0.01, momentum: 0.9);
            case "Adam":
                var adamGroups = perTensor ? parameters.Select(p => new TorchSharp.Modules.Adam.ParamGroup(new[] { p }, new TorchSharp.Modules.Adam.Options())).ToList()
                    : new() { new TorchSharp.Modules.Adam.ParamGroup(parameters, new TorchSharp.Modules.Adam.Options()) };
                return fromOptim ? new Optim.Torch.Adam(adamGroups, 1e-3) : torch.optim.Adam(adamGroups, 1e-3);
            case "AdamW":
                var adamwGroups = perTensor ? parameters.Select(p => new TorchSharp.Modules.AdamW.ParamGroup(new[] { p }, new TorchSharp.Modules.AdamW.Options())).ToList()
                    : new() { new TorchSharp.Modules.AdamW.ParamGroup(parameters, new TorchSharp.Modules.AdamW.Options()) };
                return fromOptim ? new Optim.Torch.AdamW(adamwGroups, 1e-3) : torch.optim.AdamW(adamwGroups, 1e-3);
            default:
                var rmsGroups = perTensor ? parameters.Select(p => new TorchSharp.Modules.RMSProp.ParamGroup(new[] { p }, new TorchSharp.Modules.RMSProp.Options())).ToList()
                    : new() { new TorchSharp.Modules.RMSProp.ParamGroup(parameters, new TorchSharp.Modules.RMSProp.Options()) };
                return fromOptim ? new Optim.Torch.RMSProp(rmsGroups, 0.01) : torch.optim.RMSProp(rmsGroups, 0.01);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        torchSharp.Dispose();
        ours.Dispose();
        foreach (var p in parameters) p.Dispose();
        triad.Dispose();
    }

    /// <summary>TorchSharp 0.107's own step (per tensor, temporaries per operation).</summary>
    [Benchmark(Baseline = true)]
    public void TorchSharpStep() => torchSharp.step();

    /// <summary>Optim's step (default implementation).</summary>
    [Benchmark]
    public void OptimStep() => ours.step();

    /// <summary>A STREAM triad moving the bytes of one step: the bandwidth yardstick.</summary>
    [Benchmark]
    public void TriadSameBytes() => triad.Run();
}

/// <summary>
/// Adds the "of triad" column: for each benchmark, the triad's mean time in the same parameter case over
/// this benchmark's mean time — the fraction of triad bandwidth the step reaches (the triad moves the
/// same bytes).
/// </summary>
public sealed class TriadFractionConfig : ManualConfig
{
    /// <summary>The default columns plus <see cref="TriadFractionColumn"/>.</summary>
    public TriadFractionConfig() => AddColumn(new TriadFractionColumn());
}

/// <summary>Triad mean time / this mean time, within one parameter case (see <see cref="TriadFractionConfig"/>).</summary>
public sealed class TriadFractionColumn : IColumn
{
    /// <inheritdoc />
    public string Id => nameof(TriadFractionColumn);
    /// <inheritdoc />
    public string ColumnName => "of triad";
    /// <inheritdoc />
    public bool AlwaysShow => true;
    /// <inheritdoc />
    public ColumnCategory Category => ColumnCategory.Custom;
    /// <inheritdoc />
    public int PriorityInCategory => 1;
    /// <inheritdoc />
    public bool IsNumeric => true;
    /// <inheritdoc />
    public UnitType UnitType => UnitType.Dimensionless;
    /// <inheritdoc />
    public string Legend => "Fraction of STREAM-triad bandwidth: triad time for the same bytes / this time";
    /// <inheritdoc />
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    /// <inheritdoc />
    public bool IsAvailable(Summary summary) => true;
    /// <inheritdoc />
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    /// <inheritdoc />
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var mine = summary[benchmarkCase]?.ResultStatistics?.Mean;
        var triad = summary.BenchmarksCases
            .Where(c => c.Descriptor.WorkloadMethod.Name == nameof(OptimizerStepBenchmarks.TriadSameBytes) && c.Parameters.DisplayInfo == benchmarkCase.Parameters.DisplayInfo)
            .Select(c => summary[c]?.ResultStatistics?.Mean).FirstOrDefault();
        return mine is double m && triad is double t && m > 0 ? (t / m).ToString("0.00") : "-";
    }
}
