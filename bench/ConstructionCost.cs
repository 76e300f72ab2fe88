using Optim.Core;
using TorchSharp;

namespace Optim.Bench;

/// <summary>
/// CPU time and managed bytes allocated by one <c>build_optim_wrapper</c> on <see cref="ManyTensorsModel"/>,
/// the figures that a shared machine's load disturbs least (no BenchmarkDotNet statistics; the figures
/// to publish come from <see cref="ConstructionBenchmarks"/>):
/// <c>dotnet run -c Release --project bench -- --construction-cost [Tensors] [CustomKeys] [repetitions]</c>.
/// Also prints the core's phases alone (walk, plan, unmatched-key lint) for the same model.
/// </summary>
public static class ConstructionCost
{
    public static void Run(string[] args)
    {
        var tensors = args.Length > 1 ? new[] { int.Parse(args[1]) } : new[] { 1_000, 10_000, 28_000 };
        var keys = args.Length > 2 ? new[] { int.Parse(args[2]) } : new[] { 10, 1_000 };
        var reps = args.Length > 3 ? int.Parse(args[3]) : 5;
        torch.set_num_threads(1);
        foreach (var n in tensors)
        {
            using var model = new ManyTensorsModel(n);
            foreach (var k in keys)
            {
                var config = ManyTensorsModel.Config(k);
                var (cpu, bytes) = Measure(() => Builder.build_optim_wrapper(model, config), reps);
                var pause = LastPause;
                var cfg = Builder.ParseConfig(config);
                var settings = Config.defaultConstructorSettings(cfg).ResultValue.Item2;
                var facts = ModuleFacts.Collect(model).Facts;
                var (walkCpu, walkBytes) = Measure(() => ModuleFacts.Collect(model), reps);
                var (planCpu, planBytes) = Measure(() => Paramwise.plan(settings, cfg.Optimizer.Value.BaseLr, cfg.Optimizer.Value.BaseWd, Array.Empty<long>(), facts), reps);
                Console.WriteLine(
                    $"{n,6} tensors x {k,5} keys: build {cpu,7:0.0} ms CPU {bytes / 1e6,7:0.0} MB (GC pauses {pause,5:0.0} ms) | walk {walkCpu,6:0.0} ms {walkBytes / 1e6,6:0.0} MB"
                    + $" | plan {planCpu,6:0.0} ms {planBytes / 1e6,6:0.0} MB");
                if (Environment.GetEnvironmentVariable("PHASES") is not null) Phases(model, config, reps);
                if (Environment.GetEnvironmentVariable("GCS") is not null) Collections(() => Builder.build_optim_wrapper(model, config));
                if (Environment.GetEnvironmentVariable("ALLOCATIONS") is not null) Allocations(() => Builder.build_optim_wrapper(model, config));
            }
        }
    }

    /// <summary>The runtime's allocation samples (one event per ~100 KB allocated) of one call, by type, largest first.</summary>
    private static void Allocations(Func<object> action)
    {
        Dispose(action());
        using var listener = new AllocationListener();
        Dispose(action());
        listener.Dispose();
        foreach (var (type, bytes) in listener.ByType.OrderByDescending(kv => kv.Value).Take(25).Select(kv => (kv.Key, kv.Value)))
            Console.WriteLine($"    {bytes / 1e6,7:0.0} MB  {type}");
    }

    /// <summary>Each garbage collection during one call: generation, reason, pause, bytes promoted.</summary>
    private static void Collections(Func<object> action)
    {
        Dispose(action());
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var before = GC.CollectionCount(0);
        var seen = new List<string>();
        long lastIndex = GC.GetGCMemoryInfo(GCKind.Any).Index;
        var result = action();
        foreach (var kind in new[] { GCKind.Ephemeral, GCKind.FullBlocking, GCKind.Background })
        {
            var info = GC.GetGCMemoryInfo(kind);
            if (info.Index > lastIndex)
                Console.WriteLine($"    last {kind} GC: gen {info.Generation}, pause {info.PauseDurations[0].TotalMilliseconds:0.0} ms, promoted {info.PromotedBytes / 1e6:0.0} MB, heap {info.HeapSizeBytes / 1e6:0} MB, compacted {info.Compacted}");
        }
        Console.WriteLine($"    collections during the call: {GC.CollectionCount(0) - before} (gen1 {GC.CollectionCount(1)}, gen2 {GC.CollectionCount(2)} so far)");
        Dispose(result);
    }

    private sealed class AllocationListener : System.Diagnostics.Tracing.EventListener
    {
        public readonly Dictionary<string, long> ByType = new();

        protected override void OnEventSourceCreated(System.Diagnostics.Tracing.EventSource source)
        {
            if (source.Name == "Microsoft-Windows-DotNETRuntime")
                EnableEvents(source, System.Diagnostics.Tracing.EventLevel.Verbose, (System.Diagnostics.Tracing.EventKeywords)0x1);
        }

        protected override void OnEventWritten(System.Diagnostics.Tracing.EventWrittenEventArgs e)
        {
            if (e.EventName is not "GCAllocationTick_V4" || e.Payload is null) return;
            var type = e.Payload[e.PayloadNames!.IndexOf("TypeName")] as string ?? "?";
            var amount = Convert.ToInt64(e.Payload[e.PayloadNames!.IndexOf("AllocationAmount64")]);
            lock (ByType) ByType[type] = ByType.GetValueOrDefault(type) + amount;
        }
    }

    private static void Phases(TorchSharp.torch.nn.Module model, string config, int reps)
    {
        void Show(string what, Func<object> a) { var (c, b) = Measure(a, reps); Console.WriteLine($"    {what,-22} {c,7:0.0} ms {b / 1e6,7:0.0} MB"); }
        var cfg = Builder.ParseConfig(config);
        Show("parse", () => Builder.ParseConfig(config));
        Show("validate", () => Builder.Validate(cfg, model));
        Show("ctor", () => new DefaultOptimWrapperConstructor(cfg));
        var ctor = new DefaultOptimWrapperConstructor(cfg);
        Show("add_params", () => { var g = new List<IParamGroup>(); ctor.add_params(g, model); return g; });
        ctor = new DefaultOptimWrapperConstructor(cfg);
        var groups = new List<IParamGroup>();
        ctor.add_params(groups, model);
        Show("limitOf", () => Builder.LimitOf(model));
        var planned = ctor.Planned.Select(p => p.Plan).ToList();
        Show("planValues", () => ConfigLint.planValues(OptimizerRules.float32Limit, "SGD", cfg.Optimizer.Value.Args, planned));
        Show("checkValues", () => Config.checkValues(OptimizerRules.float32Limit, Microsoft.FSharp.Core.FSharpOption<string>.Some("SGD"), cfg));
        Show("collect+unmatched", () => ConfigLint.unmatchedCustomKeys(ctor.Settings, ModuleFacts.Collect(model).Facts));
        Show("optimizer", () => BuiltinOptimizers.Create("SGD", groups, ctor.optimizer_kwargs));
    }

    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private struct Timespec { public long Seconds; public long Nanoseconds; }

    // int clock_gettime(clockid_t clockid, struct timespec *tp);  CLOCK_THREAD_CPUTIME_ID = 3 on Linux.
    [System.Runtime.InteropServices.DllImport("libc", SetLastError = false)]
    private static extern int clock_gettime(int clockId, out Timespec tp);

    /// <summary>This thread's CPU time in ms (not the JIT's or the GC's background threads').</summary>
    private static double ThreadCpuMs() => clock_gettime(3, out var t) == 0 ? t.Seconds * 1e3 + t.Nanoseconds / 1e6 : double.NaN;

    /// <summary>The median GC pause time within the calls of the last <see cref="Measure"/>.</summary>
    private static double LastPause;

    /// <summary>Median CPU time of this thread (ms) and median bytes allocated on it by <paramref name="action"/>, after warm-ups.</summary>
    private static (double Cpu, double Bytes) Measure(Func<object> action, int reps)
    {
        for (int i = 0; i < 3; i++) Dispose(action());
        var cpu = new List<double>();
        var bytes = new List<double>();
        var pauses = new List<double>();
        for (int i = 0; i < reps; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            var t0 = ThreadCpuMs();
            var p0 = GC.GetTotalPauseDuration();
            var b0 = GC.GetAllocatedBytesForCurrentThread();
            var result = action();
            var b1 = GC.GetAllocatedBytesForCurrentThread();
            cpu.Add(ThreadCpuMs() - t0);
            pauses.Add((GC.GetTotalPauseDuration() - p0).TotalMilliseconds);
            bytes.Add(b1 - b0);
            Dispose(result);
        }
        cpu.Sort();
        bytes.Sort();
        pauses.Sort();
        LastPause = pauses[reps / 2];
        return (cpu[reps / 2], bytes[reps / 2]);
    }

    private static void Dispose(object o)
    {
        if (o is OptimWrapper w && w.optimizer is IDisposable d) d.Dispose();
    }
}
