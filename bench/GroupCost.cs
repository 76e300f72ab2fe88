using System.Runtime.InteropServices;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// The fixed cost one param group adds to a step of Optim's optimizers, measured with this thread's CPU
/// time on tiny tensors (so the kernels' data movement is negligible): the same tensors stepped in one
/// group and in one group per tensor, with and without a scheduler-style lr write into every group
/// before each step; the difference over the group count is the per-group cost. Also the managed bytes
/// this thread allocates per step.
/// <c>dotnet run -c Release --project bench -- --group-cost [Optimizer] [Tensors] [Steps] [Elements per tensor] [Rounds]</c>
/// </summary>
public static class GroupCost
{
    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec { public long Sec; public long Nsec; }

    [DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, out TimeSpec t);

    private const int ThreadCpuClock = 3; // CLOCK_THREAD_CPUTIME_ID

    /// <summary>This thread's CPU time in nanoseconds.</summary>
    public static long ThreadCpuNs()
    {
        ClockGetTime(ThreadCpuClock, out var t);
        return t.Sec * 1_000_000_000 + t.Nsec;
    }

    public static void Run(string[] args)
    {
        var optimizers = args.Length > 1 ? new[] { args[1] } : new[] { "SGD", "Adam", "AdamW", "Adagrad" };
        var tensors = args.Length > 2 ? int.Parse(args[2]) : 2000;
        var steps = args.Length > 3 ? int.Parse(args[3]) : 100;
        var size = args.Length > 4 ? int.Parse(args[4]) : 16;
        var rounds = args.Length > 5 ? int.Parse(args[5]) : 15;
        torch.set_num_threads(1);
        Console.WriteLine($"{tensors} tensors of {size} float32, {rounds} interleaved rounds of {steps} steps, thread CPU time, lowest quartile; /proc/loadavg: {File.ReadAllText("/proc/loadavg").Trim()}");
        foreach (var name in optimizers)
        {
            using var scope = torch.NewDisposeScope();
            // (layout, lr writes): one group / per tensor, without / with a scheduler-style lr write into every group.
            var cases = new[] { (false, false), (true, false), (false, true), (true, true) }
                .Select(c => new Case(name, tensors, size, c.Item1, c.Item2)).ToArray();
            var ns = cases.Select(_ => new List<double>()).ToArray();
            var bytes = new long[cases.Length];
            for (int r = 0; r < rounds; r++)
                for (int c = 0; c < cases.Length; c++)
                {
                    var (t, b) = cases[c].Time(steps);
                    ns[c].Add(t);
                    bytes[c] = b;
                }
            double Q(int c) { var l = ns[c].OrderBy(x => x).ToList(); return l[l.Count / 4]; }
            Console.WriteLine($"{name,-8} one group {Q(0) / 1e3,7:0.0} µs/step, per tensor {Q(1) / 1e3,7:0.0}: per group {(Q(1) - Q(0)) / tensors,5:0} ns ({Q(1) / Q(0):0.000}x)"
                + $" | lr writes: {Q(2) / 1e3,7:0.0} / {Q(3) / 1e3,7:0.0} µs/step: per group {(Q(3) - Q(2)) / tensors,5:0} ns ({Q(3) / Q(2):0.000}x)"
                + $" | managed bytes per step: {bytes[0]} / {bytes[1]} ({bytes[2]} / {bytes[3]} with lr writes)");
            foreach (var c in cases) c.Dispose();
        }
    }

    private sealed class Case : IDisposable
    {
        private readonly optim.Optimizer _o;
        private readonly List<optim.ILearningRateController> _groups;
        private readonly bool _lrWrites;
        private int _k;

        public Case(string name, int tensors, int size, bool perTensor, bool lrWrites)
        {
            torch.manual_seed(0);
            var ps = Enumerable.Range(0, tensors).Select(_ => new Parameter(torch.randn(size))).ToList();
            foreach (var p in ps) p.sum().backward();
            _o = Build(name, ps, perTensor);
            _groups = _o.ParamGroups.ToList();
            _lrWrites = lrWrites;
            for (int i = 0; i < 20; i++) Step();
        }

        private void Step()
        {
            if (_lrWrites)
            {
                var lr = 1e-3 * (1 + (_k++ % 7));
                foreach (var g in _groups) g.LearningRate = lr;
            }
            _o.step();
        }

        /// <summary>Thread CPU ns per step over <paramref name="steps"/> steps, and managed bytes per step.</summary>
        public (double Ns, long Bytes) Time(int steps)
        {
            var b0 = GC.GetAllocatedBytesForCurrentThread();
            var t0 = ThreadCpuNs();
            for (int i = 0; i < steps; i++) Step();
            var t1 = ThreadCpuNs();
            return ((double)(t1 - t0) / steps, (GC.GetAllocatedBytesForCurrentThread() - b0) / steps);
        }

        public void Dispose() => _o.Dispose();
    }

    private static optim.Optimizer Build(string name, List<Parameter> ps, bool perTensor)
    {
        List<T> Groups<T>(Func<IEnumerable<Parameter>, T> make) => perTensor ? ps.Select(p => make(new[] { p })).ToList() : new() { make(ps) };
        return name switch
        {
            "SGD" => new Optim.Torch.SGD(Groups(p => new TorchSharp.Modules.SGD.ParamGroup(p, new TorchSharp.Modules.SGD.Options())), 0.01, momentum: 0.9),
            "Adam" => new Optim.Torch.Adam(Groups(p => new TorchSharp.Modules.Adam.ParamGroup(p, new TorchSharp.Modules.Adam.Options())), 1e-3),
            "AdamW" => new Optim.Torch.AdamW(Groups(p => new TorchSharp.Modules.AdamW.ParamGroup(p, new TorchSharp.Modules.AdamW.Options())), 1e-3),
            "Adagrad" => new Optim.Torch.Adagrad(Groups(p => new TorchSharp.Modules.Adagrad.ParamGroup(p, new TorchSharp.Modules.Adagrad.Options())), 1e-2),
            _ => throw new ArgumentException($"--group-cost: unknown optimizer {name} (SGD, Adam, AdamW, Adagrad)"),
        };
    }
}

/// <summary>Development probe: the bucket validation alone (<c>ParamBuckets.For</c>) per group, 2,000 SGD groups.</summary>
public static class ValidateProbe
{
    public static void Run()
    {
        torch.set_num_threads(1);
        var ps = Enumerable.Range(0, 2000).Select(_ => new Parameter(torch.randn(16))).ToList();
        foreach (var p in ps) p.sum().backward();
        var o = new Optim.Torch.SGD(ps.Select(p => new TorchSharp.Modules.SGD.ParamGroup(new[] { p }, new TorchSharp.Modules.SGD.Options())).ToList(), 0.01, momentum: 0.9);
        o.step();
        const System.Reflection.BindingFlags Private = System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance;
        var steps = (Optim.Torch.BucketStepper<TorchSharp.Modules.SGD.State, Optim.Torch.SgdHyper, Optim.Torch.SgdRule>)typeof(Optim.Torch.SGD).GetField("_steps", Private)!.GetValue(o)!;
        var groups = (IList<TorchSharp.Modules.ParamGroup>)typeof(optim.Optimizer).GetField("_parameter_groups", Private)!.GetValue(o)!;
        for (int r = 0; r < 5; r++)
        {
            var t0 = GroupCost.ThreadCpuNs();
            for (int i = 0; i < 1000; i++) steps.Buckets.For(groups, default(Optim.Torch.SgdRule));
            var t1 = GroupCost.ThreadCpuNs();
            for (int i = 0; i < 1000; i++) { foreach (var g in groups) g.LearningRate = 0.01 * (1 + i % 3); steps.Buckets.For(groups, default(Optim.Torch.SgdRule)); }
            var t2 = GroupCost.ThreadCpuNs();
            Console.WriteLine($"validate: {(t1 - t0) / 1000.0 / 2000:0.0} ns/group; with lr writes (the writes included): {(t2 - t1) / 1000.0 / 2000:0.0} ns/group");
        }
    }
}
