using System.Diagnostics;
using Optim.Distributed;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// The data-parallel measurements, a plain harness run under mpirun (BenchmarkDotNet cannot drive
/// MPI ranks: its pilot and iteration counts differ per process, so the ranks' collectives would
/// not match, and its out-of-process runs are not MPI ranks). Every rank runs the same fixed
/// sequence; A and B alternate within one run, many repetitions, medians reported by rank 0.
/// <code>mpirun -np 2 dotnet bench/bin/Release/net10.0/Optim.Bench.dll --ddp [repetitions]</code>
/// </summary>
public static class DataParallelBench
{
    /// <summary>A module that is only a bag of parameters (gradients of a chosen total size).</summary>
    private sealed class Bag : nn.Module<Tensor, Tensor>
    {
        public Bag(long floats, int tensors) : base("Bag")
        {
            for (var i = 0; i < tensors; i++)
                register_parameter($"p{i}", new TorchSharp.Modules.Parameter(torch.zeros(floats / tensors)));
        }
        public override Tensor forward(Tensor input) => input;
    }

    public static int Run(string[] args)
    {
        var reps = args.Length > 1 ? int.Parse(args[1]) : 30;
        torch.set_num_threads(1);
        using var group = MpiProcessGroup.Init(TimeSpan.FromMinutes(5));
        void Say(string s) { if (group.rank == 0) Console.WriteLine(s); }
        Say($"ranks {group.world_size}, repetitions {reps}, torch threads 1, {group.LibraryVersion.Split('\n')[0]}");

        // Times one call on every rank (started together after a barrier); returns the slowest rank's seconds.
        double Timed(Action action)
        {
            group.barrier();
            var clock = Stopwatch.StartNew();
            action();
            var mine = clock.Elapsed.Ticks;
            var all = group.all_gather([mine]);
            return all.Max() / (double)TimeSpan.TicksPerSecond;
        }
        static double Median(List<double> xs) { var s = xs.OrderBy(x => x).ToArray(); return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2; }

        if (group.world_size > 1)
        {
            Say("\n| gradient bytes | tensors | buckets | MPI_Allreduce (blocking) | our all_reduce_ (Iallreduce+Test) | DDP SynchronizeGradients | all_reduce_ / MPI | DDP sync / MPI | DDP sync GB/s |");
            Say("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var mb in new[] { 1, 25, 100 })
            {
                var floats = mb * 1024L * 1024 / 4;
                var tensors = Math.Max(1, mb * 4);           // ~256 KB per gradient tensor
                using var bag = new Bag(floats, tensors);
                using var ddp = new DistributedDataParallel(bag, group);
                foreach (var p in bag.parameters()) p.grad = torch.randn_like(p);
                using var raw = torch.ones(floats);
                var mpi = new List<double>(); var ours = new List<double>(); var sync = new List<double>();
                for (var r = -3; r < reps; r++)
                {
                    raw.fill_(1);
                    var order = r % 2 == 0 ? new[] { 0, 1, 2 } : new[] { 2, 1, 0 };
                    foreach (var which in order)
                    {
                        raw.fill_(1);
                        var t = which switch
                        {
                            0 => Timed(() => group.AllReduceBlocking(raw)),
                            1 => Timed(() => group.all_reduce_(raw)),
                            _ => Timed(ddp.SynchronizeGradients),
                        };
                        if (r >= 0) (which == 0 ? mpi : which == 1 ? ours : sync).Add(t);
                    }
                }
                var (m, o, s) = (Median(mpi), Median(ours), Median(sync));
                var bytes = floats * 4.0;
                Say($"| {mb} MiB | {tensors} | {ddp.Buckets.Count} | {m * 1e3:F2} ms | {o * 1e3:F2} ms | {s * 1e3:F2} ms | {o / m:F2} | {s / m:F2} | {bytes / s / 1e9:F2} |");
            }
        }

        // Step time: the same MLP step with DDP (all-reduce) and without (every rank alone, concurrently).
        Say("\n| step (MLP 784-512-512-10, batch 64 per rank, SGD momentum) | median | ratio |");
        Say("|---|---:|---:|");
        torch.manual_seed(0);
        nn.Module<Tensor, Tensor> Mlp() => nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10));
        var plain = Mlp();
        var wrapped = Mlp();
        using var ddpMlp = new DistributedDataParallel(wrapped, group);
        var plainWrapper = new OptimWrapper(torch.optim.SGD(plain.parameters(), 0.01, momentum: 0.9));
        var ddpWrapper = new OptimWrapper(torch.optim.SGD(wrapped.parameters(), 0.01, momentum: 0.9));
        using var x = torch.randn(64, 784);
        using var y = torch.randint(0, 10, [64]);
        void Step(nn.Module<Tensor, Tensor> m, OptimWrapper w)
        {
            using var scope = torch.NewDisposeScope();
            Tensor loss;
            using (w.optim_context(m)) loss = nn.functional.cross_entropy(m.forward(x), y);
            w.update_params(loss);
        }
        const int stepsPerSample = 10;
        var alone = new List<double>(); var together = new List<double>();
        for (var r = -2; r < reps; r++)
        {
            var first = r % 2 == 0;
            for (var k = 0; k < 2; k++)
            {
                var ddpTurn = first ^ (k == 1);
                var t = ddpTurn
                    ? Timed(() => { for (var i = 0; i < stepsPerSample; i++) Step(ddpMlp, ddpWrapper); })
                    : Timed(() => { for (var i = 0; i < stepsPerSample; i++) Step(plain, plainWrapper); });
                if (r >= 0) (ddpTurn ? together : alone).Add(t / stepsPerSample);
            }
        }
        var (a, d) = (Median(alone), Median(together));
        Say($"| without DDP ({group.world_size} process(es) side by side, no communication) | {a * 1e3:F2} ms | 1.00 |");
        Say($"| DistributedDataParallel ({group.world_size} ranks, all-reduce every step) | {d * 1e3:F2} ms | {d / a:F2} |");
        return 0;
    }
}
