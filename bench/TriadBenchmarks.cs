using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// STREAM's triad, <c>a[i] = b[i] + s·c[i]</c> over float32 arrays, on one thread: the memory-bandwidth
/// yardstick other benchmarks are read against. Bytes moved are counted as STREAM does, 12 per element
/// (two reads, one write); <see cref="Run"/> uses non-temporal stores so that count is the real traffic.
/// The arrays live in 64-byte-aligned native memory, are touched once when allocated (so page faults are not measured),
/// and are far larger than the caches at the default size.
/// </summary>
/// <remarks>
/// Reuse it as a baseline in the same run: give a benchmark class a
/// <c>[Benchmark(Baseline = true)] public void Triad() => triad.Run();</c> built with
/// <see cref="ForBytes"/> to move as many bytes as the measured operation, and BenchmarkDotNet's Ratio
/// column then reads as (time of the operation) / (time of moving its bytes at triad speed), so the
/// operation's fraction of triad bandwidth is 1 / Ratio. Or mark methods with
/// <see cref="MovesBytesAttribute"/> and add <see cref="BandwidthConfig"/> to get a GB/s column.
/// </remarks>
public sealed unsafe class Triad : IDisposable
{
    /// <summary>STREAM's count of bytes moved per element: read b, read c, write a (float32).</summary>
    public const int BytesPerElement = 3 * sizeof(float);

    private float* _a, _b, _c;

    /// <summary>Allocates and fills the three arrays of <paramref name="elements"/> floats.</summary>
    public Triad(long elements)
    {
        if (elements <= 0) throw new ArgumentOutOfRangeException(nameof(elements), "need at least one element");
        Elements = elements;
        var bytes = (nuint)(elements * sizeof(float));
        _a = (float*)NativeMemory.AlignedAlloc(bytes, 64);
        _b = (float*)NativeMemory.AlignedAlloc(bytes, 64);
        _c = (float*)NativeMemory.AlignedAlloc(bytes, 64);
        for (long i = 0; i < elements; i++)
        {
            _a[i] = 0f;
            _b[i] = 1f;
            _c[i] = 2f;
        }
    }

    /// <summary>A triad moving (at least) <paramref name="bytes"/> bytes per <see cref="Run"/>, rounded up to whole elements.</summary>
    public static Triad ForBytes(long bytes) => new((bytes + BytesPerElement - 1) / BytesPerElement);

    /// <summary>The length of each array.</summary>
    public long Elements { get; }

    /// <summary>Bytes one <see cref="Run"/> moves by STREAM's count.</summary>
    public long BytesMoved => Elements * BytesPerElement;

    /// <summary>
    /// One pass of <c>a = b + s·c</c>, 256-bit vectors with non-temporal stores: the write of <c>a</c>
    /// bypasses the cache, so the 12 bytes per element counted are the bytes the memory really moves.
    /// </summary>
    public void Run(float s = 3f)
    {
        float* a = _a, b = _b, c = _c;
        long n = Elements, i = 0;
        var sv = Vector256.Create(s);
        for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
            Vector256.StoreAlignedNonTemporal(Vector256.LoadAligned(b + i) + sv * Vector256.LoadAligned(c + i), a + i);
        for (; i < n; i++) a[i] = b[i] + s * c[i];
    }

    /// <summary>
    /// As <see cref="Run"/> with ordinary stores: the CPU first reads each line of <c>a</c> it writes
    /// (write-allocate), so 16 bytes per element really move for the 12 counted.
    /// </summary>
    public void RunCachedStores(float s = 3f)
    {
        float* a = _a, b = _b, c = _c;
        long n = Elements, i = 0;
        var sv = Vector256.Create(s);
        for (; i <= n - Vector256<float>.Count; i += Vector256<float>.Count)
            Vector256.Store(Vector256.Load(b + i) + sv * Vector256.Load(c + i), a + i);
        for (; i < n; i++) a[i] = b[i] + s * c[i];
    }

    /// <summary>An element of the output array (to check the work was done).</summary>
    public float this[long i] => i >= 0 && i < Elements ? _a[i] : throw new ArgumentOutOfRangeException(nameof(i));

    /// <summary>Frees the arrays.</summary>
    public void Dispose()
    {
        NativeMemory.AlignedFree(_a);
        NativeMemory.AlignedFree(_b);
        NativeMemory.AlignedFree(_c);
        _a = _b = _c = null;
    }
}

/// <summary>
/// Declares how many bytes one invocation of a benchmark method moves, for <see cref="BandwidthColumn"/>:
/// <c>BytesPerElement</c> times either <see cref="Elements"/> or the value of the <c>[Params]</c> member
/// named by <see cref="ElementsParam"/>.
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class MovesBytesAttribute : Attribute
{
    /// <summary>Bytes moved per element (STREAM triad: 12; SGD with momentum on float32: 20; Adam: 28).</summary>
    public MovesBytesAttribute(int bytesPerElement) => BytesPerElement = bytesPerElement;

    /// <summary>Bytes moved per element.</summary>
    public int BytesPerElement { get; }

    /// <summary>A fixed element count (used when <see cref="ElementsParam"/> is not set).</summary>
    public long Elements { get; set; }

    /// <summary>The name of the <c>[Params]</c> field or property holding the element count.</summary>
    public string? ElementsParam { get; set; }

    /// <summary>The bytes one invocation moves in <paramref name="benchmarkCase"/>, or null when unknown.</summary>
    public long? BytesFor(BenchmarkCase benchmarkCase)
    {
        if (ElementsParam is null) return Elements > 0 ? BytesPerElement * Elements : null;
        var value = benchmarkCase.Parameters.Items.FirstOrDefault(p => p.Name == ElementsParam)?.Value;
        return value is null ? null : BytesPerElement * Convert.ToInt64(value);
    }
}

/// <summary>A "GB/s" column: the bytes a <see cref="MovesBytesAttribute"/> method declares over its mean time.</summary>
public sealed class BandwidthColumn : IColumn
{
    private static long? Bytes(BenchmarkCase benchmarkCase) =>
        benchmarkCase.Descriptor.WorkloadMethod.GetCustomAttribute<MovesBytesAttribute>()?.BytesFor(benchmarkCase);

    /// <inheritdoc />
    public string Id => nameof(BandwidthColumn);
    /// <inheritdoc />
    public string ColumnName => "GB/s";
    /// <inheritdoc />
    public bool AlwaysShow => true;
    /// <inheritdoc />
    public ColumnCategory Category => ColumnCategory.Custom;
    /// <inheritdoc />
    public int PriorityInCategory => 0;
    /// <inheritdoc />
    public bool IsNumeric => true;
    /// <inheritdoc />
    public UnitType UnitType => UnitType.Dimensionless;
    /// <inheritdoc />
    public string Legend => "Bytes moved per invocation (as declared by [MovesBytes]) / mean time, in 10^9 bytes per second";
    /// <inheritdoc />
    public bool IsAvailable(Summary summary) => true;
    /// <inheritdoc />
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    /// <inheritdoc />
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    /// <inheritdoc />
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var bytes = Bytes(benchmarkCase);
        var mean = summary[benchmarkCase]?.ResultStatistics?.Mean; // nanoseconds
        return bytes is null || mean is null or <= 0 ? "-" : (bytes.Value / mean.Value).ToString("F1");
    }
}

/// <summary>Adds <see cref="BandwidthColumn"/>: put <c>[Config(typeof(BandwidthConfig))]</c> on a benchmark class.</summary>
public sealed class BandwidthConfig : ManualConfig
{
    /// <summary>The config with the GB/s column.</summary>
    public BandwidthConfig() => AddColumn(new BandwidthColumn());
}

/// <summary>
/// The bandwidth baseline: STREAM's triad on one thread (the baseline; also with ordinary stores), and libtorch's in-place
/// <c>a.add_(c, alpha)</c> (two reads, one write: the shape of an optimizer update) with one intra-op
/// thread, over 10.5 M floats (the size of the optimizer-step benchmarks' models).
/// </summary>
[Config(typeof(BandwidthConfig))]
public class TriadBenchmarks
{
    private Triad triad = null!;
    private Tensor a = null!, c = null!;
    private float sign = 1f;

    /// <summary>Floats per array.</summary>
    [Params(10_500_000)]
    public long Elements { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(1);
        triad = new Triad(Elements);
        a = torch.zeros(Elements);
        c = torch.ones(Elements);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        triad.Dispose();
        a.Dispose();
        c.Dispose();
    }

    /// <summary>STREAM triad, <c>a = b + 3·c</c>, non-temporal stores (the yardstick).</summary>
    [Benchmark(Baseline = true), MovesBytes(Triad.BytesPerElement, ElementsParam = nameof(Elements))]
    public void StreamTriad() => triad.Run();

    /// <summary>The same with ordinary stores (write-allocate traffic uncounted).</summary>
    [Benchmark, MovesBytes(Triad.BytesPerElement, ElementsParam = nameof(Elements))]
    public void StreamTriadCachedStores() => triad.RunCachedStores();

    /// <summary>libtorch <c>a.add_(c, alpha: ±1e-3)</c> (the sign alternates so values stay bounded).</summary>
    [Benchmark, MovesBytes(Triad.BytesPerElement, ElementsParam = nameof(Elements))]
    public void TorchAddInPlace()
    {
        sign = -sign;
        a.add_(c, alpha: sign * 1e-3f);
    }
}
