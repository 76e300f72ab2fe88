/// Training runs that the 2-rank MPI tests replay: the same code trains one process on the whole
/// batch (the reference, in the test process) and each rank of `mpirun -np 2` on its half
/// (the worker, launched as `Optim.Tests.dll --ddp-worker ...`).
module Optim.Tests.DataParallelScenarios

open System
open System.Collections.Generic
open System.IO
open System.Text.Json
open TorchSharp
open Optim
open Optim.Distributed

/// Samples per rank per iteration, and the ranks of the MPI tests.
let perRank = 4
let ranks = 2

/// What a run records after every iteration (parameters flattened in named_parameters order).
type Trace =
    { Params: float[][]
      GradNorms: float[]
      Scales: float[]
      Syncs: int[]
      AllReduces: int[]
      Buckets: int }

/// An AmpOptimWrapper that puts +inf into one gradient just before its `poisonAt`-th step on this
/// process only — after the all-reduce, so only this rank sees it unless found-inf is reduced.
type PoisoningAmpOptimWrapper(optimizer: torch.optim.Optimizer, poisonAt: int, poison: bool) =
    inherit AmpOptimWrapper(optimizer, loss_scale = dict [ "init_scale", box 1024.0 ], dtype = "float32")
    let mutable steps = 0
    override this.step() =
        steps <- steps + 1
        if poison && steps = poisonAt then
            let p = this.optimizer.parameters() |> Seq.head
            use g = p.grad
            use _ = torch.no_grad ()
            g.fill_(Double.PositiveInfinity) |> ignore
        base.step ()

/// The scenarios; `sgd-buckets` is `sgd` with buckets of ~100 bytes (several all-reduces per sync).
let names = [ "sgd"; "adamw"; "accum3"; "clip"; "amp"; "sgd-buckets" ]

let private model () =
    torch.nn.Sequential(("fc1", torch.nn.Linear(6L, 8L) :> torch.nn.Module<torch.Tensor, torch.Tensor>), ("act", torch.nn.Tanh() :> torch.nn.Module<torch.Tensor, torch.Tensor>), ("fc2", torch.nn.Linear(8L, 3L) :> torch.nn.Module<torch.Tensor, torch.Tensor>))

/// Iteration `i`'s whole batch (every rank builds it; each takes its rows).
let private batch (i: int) =
    torch.manual_seed (1000L + int64 i) |> ignore
    torch.randn (int64 (perRank * ranks), 6L), torch.randn (int64 (perRank * ranks), 3L)

let private flatParams (m: torch.nn.Module) =
    ModuleFacts.NamedParameters m
    |> Seq.collect (fun struct (_, p) -> p.detach().reshape(-1L).data<float32>().ToArray() |> Seq.map float)
    |> Array.ofSeq

/// Trains scenario `name` as rank `rank` of `world` (world 1: one process on the whole batch).
/// `group` is None for the reference, else the ranks' group, and the model is wrapped in DDP.
let train (name: string) (rank: int) (world: int) (group: IProcessGroup option) : Trace =
    // Rank 1 starts from other weights on purpose: DDP's broadcast must make them rank 0's.
    torch.manual_seed (7L + int64 rank) |> ignore
    let inner = model ()
    let ddp =
        group |> Option.map (fun g -> new DistributedDataParallel(inner, g, bucket_cap_mb = (if name = "sgd-buckets" then 0.0001 else 25.0)))
    let m: torch.nn.Module<torch.Tensor, torch.Tensor> = match ddp with Some d -> d | None -> inner
    let ps = inner.parameters ()
    let (wrapper: OptimWrapper), iters =
        match name with
        | "sgd" | "sgd-buckets" -> OptimWrapper(torch.optim.SGD(ps, 0.1, momentum = 0.9)), 4
        | "adamw" -> OptimWrapper(torch.optim.AdamW(ps, 0.01, weight_decay = 0.01)), 4
        | "accum3" -> OptimWrapper(torch.optim.SGD(ps, 0.1, momentum = 0.9), accumulative_counts = 3), 7
        | "clip" -> OptimWrapper(torch.optim.SGD(ps, 0.5), clip_grad = dict [ "max_norm", box 0.05 ]), 4
        | "amp" -> PoisoningAmpOptimWrapper(torch.optim.SGD(ps, 0.1), 2, (rank = world - 1)) :> OptimWrapper, 4
        | other -> failwithf "unknown scenario %s" other
    wrapper.initialize_count_status (m, 0, iters)
    let trace = ResizeArray()
    let norms, scales, syncs, allReduces = ResizeArray(), ResizeArray(), ResizeArray(), ResizeArray()
    for i in 0 .. iters - 1 do
        use scope = torch.NewDisposeScope()
        let x, y = batch i
        let rows = int64 (perRank * ranks / world)
        let x, y = x.narrow (0L, int64 rank * rows, rows), y.narrow (0L, int64 rank * rows, rows)
        let output =
            use _ = wrapper.optim_context m
            m.forward x
        wrapper.update_params (torch.nn.functional.mse_loss (output, y))
        trace.Add(flatParams inner)
        norms.Add(wrapper.LastGradNorm |> Option.ofNullable |> Option.defaultValue nan)
        scales.Add(match wrapper with :? AmpOptimWrapper as a -> a.loss_scaler.get_scale () | _ -> nan)
        syncs.Add(ddp |> Option.map (fun d -> d.SyncCount) |> Option.defaultValue 0)
        allReduces.Add(ddp |> Option.map (fun d -> d.AllReduceCount) |> Option.defaultValue 0)
    { Params = trace.ToArray()
      GradNorms = norms.ToArray()
      Scales = scales.ToArray()
      Syncs = syncs.ToArray()
      AllReduces = allReduces.ToArray()
      Buckets = ddp |> Option.map (fun d -> d.Buckets.Count) |> Option.defaultValue 0 }

let private jsonOptions = JsonSerializerOptions(NumberHandling = Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals)

let tracePath (dir: string) (name: string) (rank: int) = Path.Combine(dir, sprintf "%s.rank%d.json" name rank)
let errorPath (dir: string) (rank: int) = Path.Combine(dir, sprintf "error.rank%d.txt" rank)

let writeTrace (path: string) (t: Trace) = File.WriteAllText(path, JsonSerializer.Serialize(t, jsonOptions))
let readTrace (path: string) : Trace = JsonSerializer.Deserialize<Trace>(File.ReadAllText path, jsonOptions)

/// The worker: `--ddp-worker train|mismatch|timeout <dir>`, run by every rank under mpirun.
let worker (argv: string[]) : int =
    let mode, dir = argv.[0], argv.[1]
    let timeout = if mode = "timeout" then TimeSpan.FromSeconds 3.0 else TimeSpan.FromSeconds 60.0
    let group = MpiProcessGroup.Init(timeout)
    let rank = group.rank
    match mode with
    | "train" ->
        for name in names do
            writeTrace (tracePath dir name rank) (train name rank group.world_size (Some(group :> IProcessGroup)))
        group.Dispose()
        0
    | "mismatch" ->
        // Rank r builds fc2 with 3 + r outputs: the ranks' models differ.
        let m = torch.nn.Sequential(("fc1", torch.nn.Linear(4L, 5L) :> torch.nn.Module<torch.Tensor, torch.Tensor>), ("fc2", torch.nn.Linear(5L, 3L + int64 rank) :> torch.nn.Module<torch.Tensor, torch.Tensor>))
        try
            use _ = new DistributedDataParallel(m, group)
            group.Dispose()
            0
        with :? DistributedException as e ->
            File.WriteAllText(errorPath dir rank, e.Message)
            group.Dispose()
            3
    | "timeout" ->
        // Rank 1 never joins the all-reduce: rank 0 must time out, say so, and abort the job.
        if rank = 0 then
            try
                use t = torch.ones(3L)
                group.all_reduce_ t
                File.WriteAllText(errorPath dir rank, "no timeout")
                0
            with :? DistributedTimeoutException as e ->
                File.WriteAllText(errorPath dir rank, e.Message)
                group.Dispose() // MPI_Abort: ends rank 1 too
                4
        else
            Threading.Thread.Sleep(TimeSpan.FromSeconds 60.0)
            group.Dispose()
            0
    | other -> eprintfn "unknown worker mode %s" other; 2
