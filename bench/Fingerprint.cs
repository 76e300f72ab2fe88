using System.Security.Cryptography;
using Optim;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench;

/// <summary>
/// A development check that a change to the optimizers' step keeps every result to the bit: runs every
/// optimizer, implementation, group layout (one group, one per tensor, per-tensor groups with their own
/// hyper-parameters), per-group lr changes, a parameter that joins late (step counts that differ within a
/// bucket), float64 next to float32, and AMP's grad_scale/found_inf, then prints a hash of the parameters'
/// bits per case. Run it on two builds and diff the output:
/// <c>dotnet run -c Release --project bench -- --fingerprint</c>.
/// </summary>
public static class Fingerprint
{
    private static readonly string[] Names = { "SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adamax", "NAdam", "RAdam", "Adadelta", "ASGD", "Rprop" };

    public static void Run()
    {
        torch.set_num_threads(1);
        foreach (var name in Names)
            foreach (var (fe, fu) in new (bool?, bool?)[] { (null, null), (false, null), (true, null), (null, true) })
            {
                if (fu == true && name is not ("SGD" or "Adam" or "AdamW" or "Adagrad")) continue;
                foreach (var layout in new[] { "one", "per-tensor", "mixed" })
                    foreach (var amp in new[] { false, true })
                        Console.WriteLine($"{name,-8} foreach={fe?.ToString() ?? "-",-5} fused={fu?.ToString() ?? "-",-5} {layout,-10} amp={amp,-5} {Case(name, fe, fu, layout, amp)}");
            }
    }

    private static string Case(string name, bool? fe, bool? fu, string layout, bool amp)
    {
        using var scope = torch.NewDisposeScope();
        var r = new Random(name.Sum(c => c * 31) ^ (layout.Length * 7919) ^ (amp ? 17 : 0)); // string.GetHashCode is randomised per process
        var sizes = new[] { 1, 7, 8, 17, 33, 5 };
        var ps = sizes.Select((n, i) => new Parameter(torch.tensor(Enumerable.Range(0, n).Select(_ => r.NextDouble() * 2 - 1).ToArray(),
            i == 5 && fu != true ? ScalarType.Float64 : ScalarType.Float32))).ToList();
        var kwargs = new Dictionary<string, object?> { ["lr"] = 0.01 };
        if (name == "SGD") { kwargs["momentum"] = 0.9; kwargs["weight_decay"] = 1e-3; }
        if (name is "Adam" or "AdamW") kwargs["amsgrad"] = layout == "mixed";
        if (fe is not null) kwargs["foreach"] = fe;
        if (fu is not null) kwargs["fused"] = fu;
        IParamGroup Group(IReadOnlyList<Parameter> members, int i)
        {
            var values = new List<KeyValuePair<string, object?>>();
            // Mixed: every other group its own weight decay (a separate bucket), the rest the defaults.
            if (layout == "mixed" && i % 2 == 1 && name is not ("Rprop")) values.Add(new("weight_decay", 0.05));
            return new PlainParamGroup(values, members);
        }
        var groups = layout == "one" ? new[] { Group(ps, 0) } : ps.Select((p, i) => Group(new[] { p }, i)).ToArray();
        using var o = BuiltinOptimizers.Create(name, groups, kwargs);
        var lrGroups = o.ParamGroups.ToList();
        for (int step = 1; step <= 6; step++)
        {
            o.zero_grad();
            for (int i = 0; i < ps.Count; i++)
            {
                if (i == 2 && step < 3) continue; // joins at step 3: its step count lags behind its bucket's
                using var g = torch.tensor(Enumerable.Range(0, sizes[i]).Select(_ => r.NextDouble() - 0.5).ToArray(), ps[i].dtype);
                using var scaled = amp ? g * 1024.0 : g.alias();
                (ps[i] * scaled).sum().backward();
            }
            // Scheduler-style lr writes: the same value into every group, or (per-tensor layouts) one value per group.
            var common = 0.01 * (1 + r.Next(3));
            foreach (var g in lrGroups) g.LearningRate = layout != "one" && step % 2 == 0 ? 0.01 * (1 + r.Next(3)) : common;
            if (amp)
            {
                using var scale = torch.tensor(1024.0f);
                using var inf = torch.tensor(step == 4 ? 1.0f : 0.0f);
                ((Torch.IAmpScalingOptimizer)o).step(scale, inf);
            }
            else o.step();
        }
        var bytes = ps.SelectMany(p => p.dtype == ScalarType.Float64
            ? p.data<double>().ToArray().SelectMany(BitConverter.GetBytes)
            : p.data<float>().ToArray().SelectMany(BitConverter.GetBytes)).ToArray();
        return Convert.ToHexString(SHA256.HashData(bytes))[..16];
    }
}
