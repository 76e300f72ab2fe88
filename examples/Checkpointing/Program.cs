// The README's checkpoint example. Trains a small model for 12 iterations with mixed precision,
// gradient accumulation and two schedulers. With a checkpoint path it resumes from that file when it
// exists, and with a stop iteration it saves there and exits (mid-accumulation when it is not a
// multiple of 4). It prints a SHA-256 of the final parameters: a run interrupted and resumed in a
// new process prints the same hash as one straight through.
//   dotnet run --project examples/Checkpointing                      # straight through
//   dotnet run --project examples/Checkpointing -- run.ckpt 6        # stops after iteration 6
//   dotnet run --project examples/Checkpointing -- run.ckpt          # resumes at iteration 7
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Optim;
using TorchSharp;
using static TorchSharp.torch;

var path = args.Length > 0 ? args[0] : null;
var stopAfter = args.Length > 1 ? int.Parse(args[1]) : -1;
const int iterations = 12;

torch.manual_seed(0);
var model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1));
var optim_wrapper = new AmpOptimWrapper(torch.optim.AdamW(model.parameters(), 1e-2), accumulative_counts: 4);
optim_wrapper.initialize_count_status(model, 0, iterations);
var schedulers = new List<ParamScheduler>
{
    new LinearLR(optim_wrapper, start_factor: 0.1, end: 4, by_epoch: false),
    new CosineAnnealingLR(optim_wrapper, T_max: 8, begin: 4, end: 12, by_epoch: false),
};

var start = 0;
if (path is not null && File.Exists(path))
{
    var metadata = Checkpoint.Load(path, model, optim_wrapper, schedulers);
    start = (int)metadata["iteration"]!;
    Console.WriteLine($"resumed after iteration {start}, inner_count {optim_wrapper.inner_count}");
}

for (var i = start; i < iterations; i++)
{
    using var scope = torch.NewDisposeScope();
    using var data = new torch.Generator((ulong)i);   // the data of iteration i, whatever the run
    var (x, y) = (torch.randn(new long[] { 16, 8 }, generator: data), torch.randn(new long[] { 16, 1 }, generator: data));
    Tensor loss;
    using (optim_wrapper.optim_context(model)) loss = nn.functional.mse_loss(model.forward(x), y);
    optim_wrapper.update_params(loss);
    foreach (var s in schedulers) s.step();
    if (i + 1 == stopAfter && path is not null)
    {
        Checkpoint.Save(path, model, optim_wrapper, schedulers, new JsonObject { ["iteration"] = i + 1 });
        Console.WriteLine($"saved after iteration {i + 1}");
        return;
    }
}

using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
foreach (var p in model.parameters()) hash.AppendData(p.detach().contiguous().bytes);
Console.WriteLine($"final {Convert.ToHexString(hash.GetHashAndReset())}");
