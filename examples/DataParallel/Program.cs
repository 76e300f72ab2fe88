// Data-parallel training with Optim over MPI. Every rank runs this same program:
//
//   dotnet build examples/DataParallel
//   mpirun -np 2 dotnet examples/DataParallel/bin/Debug/net10.0/DataParallel.dll [epochs] [checkpoint-dir]
//
// Each rank trains on its shard of every epoch (DistributedSampler); DistributedDataParallel keeps the
// ranks' parameters identical by averaging gradients after backward (once per update: accumulation
// iterations skip the all-reduce); rank 0 writes the checkpoint and every rank loads it back.
using Optim;
using Optim.Distributed;
using TorchSharp;
using static TorchSharp.torch;

var epochs = args.Length > 0 ? int.Parse(args[0]) : 5;
var checkpointDir = args.Length > 1 ? args[1] : Path.Combine(Path.GetTempPath(), $"optim-ddp-example-{Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_JOBID") ?? "local"}");
Directory.CreateDirectory(checkpointDir);
var checkpointFile = Path.Combine(checkpointDir, "last.ckpt");

using var group = MpiProcessGroup.Init();
// Ranks on one machine share its cores.
var ranksHere = int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_SIZE"), out var n) ? n : 1;
torch.set_num_threads(Math.Max(1, Environment.ProcessorCount / ranksHere));

// The data set: the same on every rank (a seeded synthetic 4-class problem, 512 samples).
torch.manual_seed(0);
var features = torch.randn(512, 20);
var labels = features.matmul(torch.randn(20, 4)).argmax(1);

// The model: every rank builds it; DistributedDataParallel copies rank 0's weights to all.
torch.manual_seed(1 + group.rank);
var model = nn.Sequential(("fc1", nn.Linear(20, 64)), ("act", nn.ReLU()), ("fc2", nn.Linear(64, 4)));
var ddp = new DistributedDataParallel(model, group);

// build_optim_wrapper sees the inner model's names ("fc1.bias", not "module.fc1.bias").
const string optimConfig = """
    { "type": "OptimWrapper", "accumulative_counts": 2, "clip_grad": { "max_norm": 5.0 },
      "optimizer": { "type": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4 },
      "paramwise_cfg": { "bias_decay_mult": 0.0 } }
    """;
var optimWrapper = Builder.build_optim_wrapper(ddp, optimConfig);

const int batchPerRank = 32;
var sampler = new DistributedSampler((int)features.shape[0], group, shuffle: true, seed: 42);
var itersPerEpoch = (sampler.num_samples + batchPerRank - 1) / batchPerRank;
optimWrapper.initialize_count_status(ddp, 0, epochs * itersPerEpoch);

for (var epoch = 0; epoch < epochs; epoch++)
{
    sampler.set_epoch(epoch);
    using var epochScope = torch.NewDisposeScope();
    var totals = torch.zeros(2, ScalarType.Float64);           // loss sum, sample count (this rank)
    foreach (var batch in sampler.indices().Chunk(batchPerRank))
    {
        using var index = torch.tensor(batch);
        var x = features.index_select(0, index);
        var y = labels.index_select(0, index);
        Tensor loss;
        using (optimWrapper.optim_context(ddp)) loss = nn.functional.cross_entropy(ddp.forward(x), y);
        optimWrapper.update_params(loss);
        totals += torch.stack([loss.detach().to(ScalarType.Float64) * batch.Length, torch.tensor((double)batch.Length)]);
    }
    group.all_reduce_(totals);                                 // every rank's share of the epoch
    if (group.rank == 0)
        Console.WriteLine($"epoch {epoch}: mean loss {(totals[0] / totals[1]).item<double>():F4} over {(long)totals[1].item<double>()} samples on {group.world_size} ranks, lr {optimWrapper.get_lr()}");
}

using (torch.no_grad())
{
    var accuracy = ddp.module.call(features).argmax(1).eq(labels).to(ScalarType.Float32).mean().item<float>();
    if (group.rank == 0) Console.WriteLine($"accuracy {accuracy:P1}");
}

// Rank 0 writes one checkpoint file; every rank reads it into a fresh plain model and wrapper (no "module." prefix).
DistributedCheckpoint.Save(group, checkpointFile, ddp, optimWrapper, metadata: new() { ["epochs"] = epochs });
var restored = nn.Sequential(("fc1", nn.Linear(20, 64)), ("act", nn.ReLU()), ("fc2", nn.Linear(64, 4)));
DistributedCheckpoint.Load(group, checkpointFile, restored, Builder.build_optim_wrapper(restored, optimConfig));
static double Checksum(nn.Module m) => m.parameters().Select(p => p.detach().to(ScalarType.Float64).sum().item<double>()).Sum();
Console.WriteLine($"rank {group.rank}: trained checksum {Checksum(model):R}, restored checksum {Checksum(restored):R}, gradient syncs {ddp.SyncCount}");
