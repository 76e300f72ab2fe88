using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Optim.Bench;

/// <summary>
/// Resident memory over a training run (not a BenchmarkDotNet benchmark: it follows one process over
/// time). <c>memory STEPS DTYPE POLICY [MODEL] [BATCH]</c>: DTYPE <c>fp32</c> (OptimWrapper) or an
/// autocast dtype (<c>bfloat16</c>, <c>float16</c>: AmpOptimWrapper); POLICY <c>library</c> (what Optim
/// does: AmpOptimWrapper fixes glibc's mmap threshold), <c>glibc-defaults</c> (NativeAllocator.Enabled
/// = false) or <c>trim</c> (glibc defaults plus <c>malloc_trim(0)</c> after every step); MODEL
/// <c>mlp10m</c> (784-2048-2048-2048-10, the default) or <c>mlp</c> (784-512-512-10); BATCH 8 by default.
/// Prints resident memory, the allocator's free and mapped bytes and the elapsed time every tenth of
/// the run, then a summary line. Intra-op threads are libtorch's default (all cores).
/// </summary>
internal static class MemoryRun
{
    private static long RssBytes() =>
        long.Parse(File.ReadAllText("/proc/self/statm").Split(' ')[1]) * Environment.SystemPageSize;

    public static int Run(string[] args)
    {
        if (args.Length < 3)
        {
            Console.Error.WriteLine("usage: memory STEPS fp32|bfloat16|float16 library|glibc-defaults|trim|trim:N [mlp10m|mlp] [BATCH]");
            return 2;
        }
        int steps = int.Parse(args[0]);
        string dtype = args[1], policy = args[2];
        var modelName = args.Length > 3 ? args[3] : "mlp10m";
        var batch = args.Length > 4 ? int.Parse(args[4]) : 8;
        // trim:N — glibc's defaults, plus malloc_trim(0) every N steps (trim = trim:1).
        int trimEvery = policy == "trim" ? 1 : policy.StartsWith("trim:") && int.TryParse(policy[5..], out var n) && n > 0 ? n : 0;
        if (!(policy is "library" or "glibc-defaults" || trimEvery > 0)) { Console.Error.WriteLine($"unknown policy {policy}"); return 2; }
        NativeAllocator.Enabled = policy == "library";

        torch.manual_seed(0);
        var model = modelName == "mlp"
            ? nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
            : nn.Sequential(nn.Linear(784, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10));
        var optimizer = torch.optim.SGD(model.parameters(), 0.01, momentum: 0.9);
        OptimWrapper wrapper = dtype == "fp32" ? new OptimWrapper(optimizer) : new AmpOptimWrapper(optimizer, dtype: dtype);
        var x = torch.randn(batch, 784);
        var y = torch.randint(10, new long[] { batch });
        Console.WriteLine($"{modelName} ({model.parameters().Sum(p => p.numel()):N0} parameters), batch {batch}, {dtype}, policy {policy} " +
                          $"(mmap threshold fixed: {NativeAllocator.IsThresholdFixed}), {torch.get_num_threads()} threads");
        long peak = 0;
        double trimMs = 0;
        var sw = Stopwatch.StartNew();
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        for (int step = 1; step <= steps; step++)
        {
            using (torch.NewDisposeScope())
            {
                Tensor loss;
                using (wrapper.optim_context(model))
                    loss = F.cross_entropy(model.forward(x), y);
                wrapper.update_params(loss);
            }
            if (trimEvery > 0 && step % trimEvery == 0)
            {
                var t = Stopwatch.StartNew();
                NativeAllocator.Trim();
                trimMs += t.Elapsed.TotalMilliseconds;
            }
            var rss = RssBytes();
            peak = Math.Max(peak, rss);
            if (step % Math.Max(1, steps / 10) == 0)
            {
                var s = NativeAllocator.Statistics();
                Console.WriteLine($"step {step,5}  rss {rss / 1e6,7:F0} MB  peak {peak / 1e6,7:F0} MB  free-in-arenas {(s?.FreeInArenas ?? 0) / 1e6,6:F0} MB  " +
                                  $"mapped {(s?.Mapped ?? 0) / 1e6,5:F0} MB  {sw.Elapsed.TotalSeconds,7:F1} s");
            }
        }
        // CPU time (user + system: the page faults of freshly mapped blocks are system time) is the cost
        // figure that survives a shared machine; wall time does not.
        var cpuMs = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalMilliseconds;
        Console.WriteLine($"{dtype} {policy}: {steps} steps in {sw.Elapsed.TotalSeconds:F1} s ({sw.Elapsed.TotalMilliseconds / steps:F1} ms/step, CPU {cpuMs / steps:F1} ms/step), " +
                          $"final rss {RssBytes() / 1e6:F0} MB, peak {peak / 1e6:F0} MB" + (trimEvery > 0 ? $", malloc_trim {trimMs / steps:F2} ms/step" : ""));
        return 0;
    }
}
