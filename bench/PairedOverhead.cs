using System.Diagnostics;
namespace Optim.Bench;

/// <summary>
/// A paired look at <see cref="WrapperOverheadBenchmarks"/> for a machine whose speed drifts between
/// runs: the hand-written loop and <c>update_params</c> alternate (A B B A) in one process, each call
/// timed by the process's CPU time, and the ratio is taken per round, so the drift cancels:
/// <c>dotnet run -c Release --project bench -- --paired-overhead [rounds]</c>.
/// </summary>
public static class PairedOverhead
{
    public static void Run(string[] args)
    {
        int rounds = args.Length > 1 ? int.Parse(args[1]) : 40;
        foreach (var model in new[] { "mlp10m", "cnn" })
        {
            var hand = new WrapperOverheadBenchmarks { Model = model };
            var wrapped = new WrapperOverheadBenchmarks { Model = model };
            hand.Setup();
            wrapped.Setup();
            static double Cpu(Action a)
            {
                var t0 = Process.GetCurrentProcess().TotalProcessorTime;
                a();
                return (Process.GetCurrentProcess().TotalProcessorTime - t0).TotalMilliseconds;
            }
            for (int i = 0; i < 5; i++) { hand.HandWritten(); wrapped.UpdateParams(); }
            var ratios = new List<double>();
            var hs = new List<double>();
            var us = new List<double>();
            for (int r = 0; r < rounds; r++)
            {
                var h1 = Cpu(hand.HandWritten);
                var u1 = Cpu(wrapped.UpdateParams);
                var u2 = Cpu(wrapped.UpdateParams);
                var h2 = Cpu(hand.HandWritten);
                hs.Add(h1 + h2); us.Add(u1 + u2);
                ratios.Add((u1 + u2) / (h1 + h2));
            }
            static double Median(List<double> v) { var s = v.OrderBy(x => x).ToList(); return (s[(s.Count - 1) / 2] + s[s.Count / 2]) / 2; }
            static double Quantile(List<double> v, double q) { var s = v.OrderBy(x => x).ToList(); return s[(int)Math.Round(q * (s.Count - 1))]; }
            Console.WriteLine($"{model,-7} hand {Median(hs) / 2,7:0.00} ms CPU  update_params {Median(us) / 2,7:0.00} ms CPU  " +
                              $"ratio median {Median(ratios):0.000} (quartiles {Quantile(ratios, 0.25):0.000}-{Quantile(ratios, 0.75):0.000}, {rounds} rounds)");
        }
    }
}
