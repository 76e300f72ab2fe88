using System.Diagnostics;
namespace Optim.Bench;

/// <summary>
/// A stopwatch pass over the optimizer-step cases (no BenchmarkDotNet statistics): for a quick look
/// while developing, <c>dotnet run -c Release --project bench -- --quick-steps [Optimizer] [Tensors]</c>.
/// The figures to publish come from <see cref="OptimizerStepBenchmarks"/>.
/// </summary>
public static class QuickSteps
{
    public static void Run(string[] args)
    {
        var optimizers = args.Length > 1 ? new[] { args[1] } : new[] { "SGD", "Adam", "AdamW", "RMSprop" };
        var counts = args.Length > 2 ? new[] { int.Parse(args[2]) } : new[] { 8, 200, 2000 };
        foreach (var o in optimizers)
            foreach (var n in counts)
                foreach (var per in new[] { false, true })
                {
                    var b = new OptimizerStepBenchmarks { Optimizer = o, Tensors = n, GroupPerTensor = per };
                    b.Setup();
                    double Time(Action a, int reps)
                    {
                        // Thread CPU time, not wall time: on a shared machine it is the less disturbed figure.
                        a();
                        var t0 = Process.GetCurrentProcess().TotalProcessorTime;
                        for (int i = 0; i < reps; i++) a();
                        return (Process.GetCurrentProcess().TotalProcessorTime - t0).TotalMilliseconds / reps;
                    }
                    var triad = Time(b.TriadSameBytes, 20);
                    var ours = Time(b.OptimStep, 20);
                    var theirs = Time(b.TorchSharpStep, 3);
                    Console.WriteLine($"{o,-8} {n,5} perTensor={per,-5} TorchSharp {theirs,8:0.0} ms CPU  Optim {ours,7:0.0} ms ({theirs / ours,5:0.0}x)  triad {triad,6:0.0} ms  of triad {triad / ours:0.00}");
                    b.Cleanup();
                }
    }
}
