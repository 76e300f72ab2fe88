/// Data-parallel training: the core's bucketing/sharding/layout rules (in process), DDP with a
/// one-rank group (in process), and 2-rank runs under a real `mpirun` (child processes, loopback
/// only) compared update by update with one process training on the concatenated batch.
module Optim.Tests.DataParallelTests

open System
open System.Diagnostics
open System.IO
open Expecto
open FsCheck
open TorchSharp
open Optim
open Optim.Core
open Optim.Core.DataParallel
open Optim.Distributed
open Optim.Tests.DataParallelScenarios
open Optim.Tests.TestSupport

/// A group of one rank, in process (collectives are identities): DDP's bookkeeping without MPI.
type SingleRankGroup() =
    member val AllReduces = 0 with get, set
    interface IProcessGroup with
        member _.rank = 0
        member _.world_size = 1
        member this.all_reduce_(_t, _op) = this.AllReduces <- this.AllReduces + 1
        member _.broadcast_(_t, _src) = ()
        member _.all_gather(values) = Array.copy values
        member _.barrier() = ()
        member _.Dispose() = ()

/// Rank `me` of two, in process, whose peer's contribution to every all_gather is `peer`
/// (DistributedCheckpoint's success flags: 1 = that rank failed).
type ScriptedPeerGroup(me: int, peer: int64) =
    interface IProcessGroup with
        member _.rank = me
        member _.world_size = 2
        member _.all_reduce_(_t, _op) = ()
        member _.broadcast_(_t, _src) = ()
        member _.all_gather(values) = if me = 0 then Array.append values [| peer |] else Array.append [| peer |] values
        member _.barrier() = ()
        member _.Dispose() = ()

/// Result of one mpirun launch.
type Launch = { ExitCode: int; Output: string; Elapsed: TimeSpan; TimedOut: bool }

/// `mpirun -np 2` on the loopback interface, as root if need be, running `dotnet <program>`;
/// killed (with its ranks) if it outlives `limit`.
let mpirunProgram (program: string list) (limit: TimeSpan) : Launch =
    let args =
        [ "-np"; string ranks; "--oversubscribe"; "--allow-run-as-root"; "--tag-output"
          "--mca"; "btl"; "self,tcp"; "--mca"; "btl_tcp_if_include"; "lo"; "--mca"; "oob_tcp_if_include"; "lo"
          "dotnet" ] @ program
    let psi = ProcessStartInfo("mpirun", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in args do psi.ArgumentList.Add a
    psi.Environment["OMPI_ALLOW_RUN_AS_ROOT"] <- "1"
    psi.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] <- "1"
    let output = Text.StringBuilder()
    let clock = Stopwatch.StartNew()
    use p =
        try Process.Start psi
        with :? ComponentModel.Win32Exception as e ->
            failwithf "mpirun could not be started (%s): install Open MPI (apt-get install openmpi-bin libopenmpi-dev)" e.Message
    p.OutputDataReceived.Add(fun e -> if not (isNull e.Data) then lock output (fun () -> output.AppendLine e.Data |> ignore))
    p.ErrorDataReceived.Add(fun e -> if not (isNull e.Data) then lock output (fun () -> output.AppendLine e.Data |> ignore))
    p.BeginOutputReadLine()
    p.BeginErrorReadLine()
    let finished = p.WaitForExit(limit)
    if not finished then p.Kill(entireProcessTree = true); p.WaitForExit()
    else p.WaitForExit()
    { ExitCode = (if finished then p.ExitCode else -1); Output = lock output (fun () -> output.ToString()); Elapsed = clock.Elapsed; TimedOut = not finished }

/// This test assembly as the 2-rank worker (`--ddp-worker mode dir`).
let mpirun (mode: string) (dir: string) (limit: TimeSpan) : Launch =
    mpirunProgram [ Reflection.Assembly.GetExecutingAssembly().Location; "--ddp-worker"; mode; dir ] limit

/// The examples/DataParallel program built beside this test assembly's configuration.
let private exampleDll () =
    let testDir = AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)
    // tests/props/bin/<Configuration>/<tfm> -> examples/DataParallel/bin/<Configuration>/<tfm>
    let tfm = Path.GetFileName testDir
    let config = Path.GetFileName(Path.GetDirectoryName testDir)
    let root = Path.GetFullPath(Path.Combine(testDir, "..", "..", "..", "..", ".."))
    let dll = Path.Combine(root, "examples", "DataParallel", "bin", config, tfm, "DataParallel.dll")
    if not (File.Exists dll) then failwithf "%s is missing: build the solution (dotnet fsi build.fsx build)" dll
    dll

let private tempDir (tag: string) =
    let d = Path.Combine(Path.GetTempPath(), sprintf "optim-ddp-%s-%d-%s" tag Environment.ProcessId (Guid.NewGuid().ToString("N").Substring(0, 6)))
    Directory.CreateDirectory d |> ignore
    d

/// float32 tolerance for "the same training": |a − e| ≤ 1e-6 + 1e-5·|e|.
let private close (a: float) (e: float) = abs (a - e) <= 1e-6 + 1e-5 * abs e

let private maxAbsDiff (a: float[][]) (b: float[][]) =
    Array.map2 (fun (x: float[]) y -> Array.map2 (fun u v -> abs (u - v)) x y |> Array.max) a b |> Array.max

/// One launch of the training worker, shared by the 2-rank equality tests.
let private trained =
    lazy
        (let dir = tempDir "train"
         let launch = mpirun "train" dir (TimeSpan.FromMinutes 3.0)
         if launch.TimedOut || launch.ExitCode <> 0 then
             failwithf "mpirun train failed (exit %d, timed out %b, %.1f s):\n%s" launch.ExitCode launch.TimedOut launch.Elapsed.TotalSeconds launch.Output
         eprintfn "ddp: 2-rank training launch took %.1f s" launch.Elapsed.TotalSeconds
         dir)

let private ranksAndReference (name: string) =
    let dir = trained.Force()
    let r0 = readTrace (tracePath dir name 0)
    let r1 = readTrace (tracePath dir name 1)
    let reference = train name 0 1 None
    r0, r1, reference

/// Both ranks hold bit-identical parameters after every iteration, equal to the one-process run's.
let private assertSameTraining (name: string) (r0: Trace) (r1: Trace) (reference: Trace) =
    Expect.equal r0.Params.Length reference.Params.Length $"{name}: iterations"
    Expect.equal r0.Params r1.Params $"{name}: the two ranks' parameters are bit-identical after every iteration"
    for i in 0 .. reference.Params.Length - 1 do
        Array.iteri2 (fun j a e -> if not (close a e) then failtestf "%s: iteration %d parameter element %d: 2 ranks %.9g, one process %.9g" name i j a e)
            r0.Params.[i] reference.Params.[i]
    // Training moved the parameters (a test that cannot fail would compare unchanged weights).
    Expect.isGreaterThan (maxAbsDiff [| r0.Params.[0] |] [| r0.Params.[r0.Params.Length - 1] |]) 1e-4 $"{name}: the parameters changed"
    eprintfn "ddp equality %s: max |2 ranks - 1 process| = %.3g over %d iterations (%d values each)"
        name (maxAbsDiff r0.Params reference.Params) reference.Params.Length reference.Params.[0].Length

let private dtypeName = Microsoft.FSharp.Core.FuncConvert.FromFunc<int64, string>(fun c -> sprintf "t%d" c)

[<Tests>]
let coreTests =
    testList "DataParallel core" [
        testProperty "planBuckets: every gradient once, one device and dtype per bucket, under the cap unless alone" <| fun (sizes: PositiveInt list) (capSeed: PositiveInt) (kinds: bool list) ->
            let slots =
                sizes |> List.mapi (fun i (PositiveInt n) ->
                    let k = if i < kinds.Length && kinds.[i] then "float64" else "float32"
                    { Index = i; Numel = int64 n; ElementSize = (if k = "float64" then 8 else 4); Device = "cpu"; Dtype = k })
            let cap = int64 capSeed.Get * 4L
            let buckets = DataParallel.planBuckets cap slots
            let all = List.concat buckets
            let bytesOf i = let s = slots.[i] in s.Numel * int64 s.ElementSize
            List.sort all = List.init slots.Length id
            && buckets |> List.forall (fun b -> b |> List.map (fun i -> slots.[i].Dtype) |> List.distinct |> List.length = 1)
            && buckets |> List.forall (fun b -> b.Length = 1 || List.sumBy bytesOf b <= cap)
            // Within a bucket, reverse parameter order (PyTorch's: last layers first).
            && buckets |> List.forall (fun b -> b = List.sortDescending b)

        test "planBuckets: 25 MB holds a small model in one bucket, a tiny cap splits it" {
            let slots = [ for i in 0 .. 3 -> { Index = i; Numel = 10L; ElementSize = 4; Device = "cpu"; Dtype = "float32" } ]
            let cap = DataParallel.capBytes DataParallel.defaultBucketCapMb |> Result.defaultValue 0L
            Expect.equal cap (25L * 1024L * 1024L) "PyTorch's 25 MiB"
            Expect.equal (DataParallel.planBuckets cap slots) [ [ 3; 2; 1; 0 ] ] "one bucket, reverse order"
            Expect.equal (DataParallel.planBuckets 80L slots) [ [ 3; 2 ]; [ 1; 0 ] ] "two per bucket"
            Expect.isError (DataParallel.capBytes 0.0) "a zero cap is an error"
        }

        testProperty "shard: the ranks' shards are disjoint, cover the data set, and have equal sizes" <| fun (n: NonNegativeInt) (r: PositiveInt) (dropLast: bool) ->
            let n, world = n.Get % 200, 1 + r.Get % 7
            let order = Array.init n int64 |> Array.rev
            let shards = [ for rank in 0 .. world - 1 -> DataParallel.shard order world rank dropLast |> Result.defaultValue [||] ]
            let per = DataParallel.samplesPerRank n world dropLast
            let all = Array.concat shards
            shards |> List.forall (fun s -> s.Length = per)
            && (if dropLast then Array.distinct all = all && all.Length = per * world
                else n = 0 || Set.ofArray all = Set.ofArray order)
            && (n = 0 || Array.distinct all |> Array.length = min n (per * world))

        test "shard matches PyTorch's DistributedSampler arithmetic (10 samples, 3 ranks)" {
            let order = Array.init 10 int64
            Expect.equal (DataParallel.shard order 3 0 false) (Ok [| 0L; 3L; 6L; 9L |]) "rank 0, padded"
            Expect.equal (DataParallel.shard order 3 2 false) (Ok [| 2L; 5L; 8L; 1L |]) "rank 2 wraps around"
            Expect.equal (DataParallel.shard order 3 1 true) (Ok [| 1L; 4L; 7L |]) "drop_last"
            Expect.isError (DataParallel.shard order 3 3 false) "rank out of range"
        }

        test "checkSameLayout names the first differing tensor and each rank's shape" {
            let l0 = Array.append (DataParallel.encodeLayout 6L [| 5L; 4L |]) (DataParallel.encodeLayout 6L [| 3L; 5L |])
            let l1 = Array.append (DataParallel.encodeLayout 6L [| 5L; 4L |]) (DataParallel.encodeLayout 6L [| 4L; 5L |])
            match DataParallel.checkSameLayout dtypeName [| "fc1.weight"; "fc2.weight" |] [| (2, 0); (2, 0) |] [| l0; l1 |] with
            | Error msg ->
                Expect.stringContains msg "parameter 'fc2.weight'" "names it"
                Expect.stringContains msg "rank 0: [3, 5] t6" "rank 0's view"
                Expect.stringContains msg "rank 1: [4, 5] t6" "rank 1's view"
            | Ok() -> failtest "a mismatch passed"
            match DataParallel.checkSameLayout dtypeName [||] [| (2, 0); (3, 1) |] [||] with
            | Error msg -> Expect.stringContains msg "rank 1: 3 parameters, 1 buffers" "counts"
            | Ok() -> failtest "a count mismatch passed"
            Expect.equal (DataParallel.checkSameLayout dtypeName [| "a" |] [| (1, 0); (1, 0) |] [| l0.[0..10]; l1.[0..10] |]) (Ok()) "same layout"
        }
    ]

[<Tests>]
let checkpointTests =
    testList "DistributedCheckpoint (in process)" [
        let fresh () =
            let m = torch.nn.Linear(3L, 2L)
            m, OptimWrapper(torch.optim.SGD(m.parameters(), 0.1))
        let weights (m: torch.nn.Module) = m.parameters() |> Seq.map (fun p -> p.detach().clone()) |> List.ofSeq
        test "rank 0 writes one Checkpoint file that loads without any group; metadata comes back" {
            let path = Path.Combine(tempDir "ckpt", "last.ckpt")
            let m, w = fresh ()
            use ddp = new DistributedDataParallel(m, new SingleRankGroup())
            DistributedCheckpoint.Save(new SingleRankGroup(), path, ddp, w, metadata = Text.Json.Nodes.JsonObject(dict [ "epoch", Text.Json.Nodes.JsonValue.Create 3 :> Text.Json.Nodes.JsonNode ]))
            Expect.equal (Directory.GetFiles(Path.GetDirectoryName path) |> Array.map Path.GetFileName) [| "last.ckpt" |] "one file"
            let plain, w2 = fresh ()
            let meta = Optim.Checkpoint.Load(path, plain, w2)
            Expect.equal (meta.["epoch"].GetValue<int>()) 3 "metadata"
            for a, b in List.zip (weights m) (weights plain) do Expect.isTrue (a.allclose(b, 0.0, 0.0)) "the unwrapped model's weights"
        }
        test "a rank that loaded the file still fails when its peer could not: nobody trains on" {
            let path = Path.Combine(tempDir "ckpt", "last.ckpt")
            let m, w = fresh ()
            DistributedCheckpoint.Save(new SingleRankGroup(), path, m, w)
            let m2, w2 = fresh ()
            let ex = throws<DistributedException> (fun () -> DistributedCheckpoint.Load(new ScriptedPeerGroup(0, 1L), path, m2, w2) |> ignore) "the peer failed"
            Expect.stringContains ex.Message "rank(s) 1 failed to load" "names the rank"
        }
        test "rank 1 learns that rank 0 failed to save" {
            let path = Path.Combine(tempDir "ckpt", "last.ckpt")
            let m, w = fresh ()
            let ex = throws<DistributedException> (fun () -> DistributedCheckpoint.Save(new ScriptedPeerGroup(1, 1L), path, m, w)) "rank 0 failed"
            Expect.stringContains ex.Message "rank 0 failed to write" "says so"
            Expect.isFalse (File.Exists path) "rank 1 writes nothing"
        }
        test "a corrupt file is this rank's CheckpointException and changes nothing" {
            let path = Path.Combine(tempDir "ckpt", "last.ckpt")
            let m, w = fresh ()
            DistributedCheckpoint.Save(new SingleRankGroup(), path, m, w)
            let bytes = File.ReadAllBytes path
            bytes.[bytes.Length / 2] <- bytes.[bytes.Length / 2] ^^^ 0xFFuy
            File.WriteAllBytes(path, bytes)
            let m2, w2 = fresh ()
            let before = weights m2
            Expect.throwsT<CheckpointException> (fun () -> DistributedCheckpoint.Load(new ScriptedPeerGroup(0, 0L), path, m2, w2) |> ignore) "checksum"
            for a, b in List.zip before (weights m2) do Expect.isTrue (a.allclose(b, 0.0, 0.0)) "unchanged"
        }
    ]

[<Tests>]
let singleProcessTests =
    testList "DistributedDataParallel (one rank, in process)" [
        test "module is the inner model; optimizer constructors see its names; no_sync skips the sync" {
            let inner = torch.nn.Sequential(("fc", torch.nn.Linear(3L, 2L) :> torch.nn.Module<torch.Tensor, torch.Tensor>))
            let group = new SingleRankGroup()
            use ddp = new DistributedDataParallel(inner, group)
            Expect.isTrue (obj.ReferenceEquals(ddp.``module``, inner)) "module"
            Expect.equal (ModuleFacts.NamedParameters(ModuleFacts.Unwrap ddp) |> Seq.map (fun struct (n, _) -> n) |> List.ofSeq) [ "fc.weight"; "fc.bias" ] "unwrapped names"
            Expect.equal (ddp.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> List.ofSeq) [ "module.fc.weight"; "module.fc.bias" ] "PyTorch's wrapped names"
            let wrapper = OptimWrapper(torch.optim.SGD(ddp.``module``.parameters(), 0.1), accumulative_counts = 2)
            for _ in 1 .. 4 do
                let out =
                    use _ = wrapper.optim_context ddp
                    ddp.forward(torch.ones(2L, 3L))
                wrapper.update_params(out.sum())
            Expect.equal ddp.SyncCount 2 "synchronised on the 2 update iterations of 4"
            Expect.isTrue ddp.require_backward_grad_sync "no_sync restored"
        }

        test "a forgotten synchronisation is an error at the next forward, not silent drift" {
            use ddp = new DistributedDataParallel(torch.nn.Linear(3L, 1L), new SingleRankGroup())
            let loss = ddp.forward(torch.ones(1L, 3L)).sum()
            loss.backward()
            let message =
                try ddp.forward(torch.ones(1L, 3L)) |> ignore; "no exception"
                with :? InvalidOperationException as e -> e.Message
            Expect.stringContains message "finish_backward" "the second forward says what to call"
            ddp.finish_backward()
            ddp.forward(torch.ones(1L, 3L)) |> ignore
            use _ = torch.no_grad()
            ddp.forward(torch.ones(1L, 3L)) |> ignore // evaluation under no_grad needs no backward
        }

        test "build_optim_wrapper on a DistributedDataParallel: paramwise rules see the inner names" {
            let inner = torch.nn.Sequential(("fc", torch.nn.Linear(3L, 2L) :> torch.nn.Module<torch.Tensor, torch.Tensor>))
            use ddp = new DistributedDataParallel(inner, new SingleRankGroup())
            let wrapper =
                Builder.build_optim_wrapper(ddp, """{ "optimizer": { "type": "SGD", "lr": 0.1 },
                    "paramwise_cfg": { "custom_keys": { "fc.bias": { "lr_mult": 0.5 } } } }""")
            Expect.equal (wrapper.get_lr().["lr"] |> List.ofSeq) [ 0.1; 0.05 ] "fc.bias matched its custom key"
            // Custom keys match by substring: a wrapped name would be "module.fc.bias".
            let prefixed =
                Builder.build_optim_wrapper(ddp, """{ "optimizer": { "type": "SGD", "lr": 0.1 },
                    "paramwise_cfg": { "custom_keys": { "module.": { "lr_mult": 0.5 } } } }""")
            Expect.equal (prefixed.get_lr().["lr"] |> List.ofSeq) [ 0.1; 0.1 ] "no name carries the wrapper's module. prefix"
        }

        test "bucket_cap_mb must be positive" {
            Expect.throwsT<ArgumentException> (fun () -> new DistributedDataParallel(torch.nn.Linear(3L, 1L), new SingleRankGroup(), bucket_cap_mb = 0.0) |> ignore) "zero cap"
        }

        test "DistributedSampler: per-epoch reshuffle from the seed, the same order on every rank" {
            let shards epoch = [ for r in 0 .. 1 -> let s = DistributedSampler(10, 2, r, seed = 3L) in s.set_epoch epoch; s.indices () ]
            let e0, e1 = shards 0, shards 1
            Expect.equal (Set.ofSeq (Array.append e0.[0] e0.[1])) (Set.ofList [ 0L .. 9L ]) "the ranks cover the data set"
            Expect.equal (Array.length e0.[0]) 5 "num_samples"
            Expect.notEqual e0.[0] e1.[0] "reshuffled per epoch"
            Expect.equal (shards 1) e1 "deterministic"
            let plain = DistributedSampler(5, 2, 1, shuffle = false)
            Expect.equal (plain.indices ()) [| 1L; 3L; 0L |] "unshuffled, padded by wrapping"
            Expect.throwsT<ArgumentException> (fun () -> DistributedSampler(5, 2, 2) |> ignore) "rank out of range"
        }
    ]

[<Tests>]
let mpiTests =
    testList "DistributedDataParallel (2 ranks, mpirun)" [
        test "SGD with momentum: 2 ranks on half batches == 1 process on the whole batch, update by update" {
            let r0, r1, reference = ranksAndReference "sgd"
            assertSameTraining "sgd" r0 r1 reference
            Expect.equal r0.Syncs [| 1; 2; 3; 4 |] "one synchronisation per update"
            Expect.equal r0.Buckets 1 "25 MB: one bucket"
        }
        test "SGD with ~100-byte buckets: several all-reduces per update, same training" {
            let r0, r1, reference = ranksAndReference "sgd-buckets"
            assertSameTraining "sgd-buckets" r0 r1 reference
            Expect.isGreaterThan r0.Buckets 2 "several buckets"
            Expect.equal r0.AllReduces (r0.Syncs |> Array.map (fun s -> s * r0.Buckets)) "one all-reduce per bucket per update"
        }
        test "AdamW: 2 ranks == 1 process" {
            let r0, r1, reference = ranksAndReference "adamw"
            assertSameTraining "adamw" r0 r1 reference
        }
        test "accumulation 3 over 7 iterations: all-reduce only on the 3 update iterations" {
            let r0, r1, reference = ranksAndReference "accum3"
            assertSameTraining "accum3" r0 r1 reference
            Expect.equal r0.Syncs [| 0; 0; 1; 1; 1; 2; 3 |] "synchronised at iterations 3, 6 and 7 (the remainder)"
            Expect.equal r1.Syncs r0.Syncs "both ranks"
            Expect.equal (Array.last r0.AllReduces) 3 "all-reduce count == number of updates (one bucket)"
        }
        test "clip by norm: the grad norm is the averaged gradients', identical on both ranks" {
            let r0, r1, reference = ranksAndReference "clip"
            assertSameTraining "clip" r0 r1 reference
            Expect.equal r0.GradNorms r1.GradNorms "bit-identical norms on both ranks"
            Array.iter2 (fun a e -> Expect.isTrue (close a e) $"norm {a} vs one process {e}") r0.GradNorms reference.GradNorms
            Expect.isTrue (r0.GradNorms |> Array.forall (fun n -> n > 0.05)) "clipping was active (norm > max_norm)"
        }
        test "AMP: an inf on one rank only (after the all-reduce) makes both ranks skip and back off" {
            let r0, r1, reference = ranksAndReference "amp"
            assertSameTraining "amp" r0 r1 reference
            Expect.equal r0.Scales [| 1024.0; 512.0; 512.0; 512.0 |] "rank 0, which saw no inf, backed off too"
            Expect.equal r1.Scales r0.Scales "same scales"
            Expect.equal r0.Params.[1] r0.Params.[0] "rank 0 skipped the step"
            Expect.equal r1.Params.[1] r1.Params.[0] "rank 1 skipped the step"
        }
        test "examples/DataParallel under mpirun -np 2: loss falls, rank 0's checkpoint restores the same weights on both ranks" {
            let dir = tempDir "example"
            let launch = mpirunProgram [ exampleDll (); "5"; dir ] (TimeSpan.FromMinutes 2.0)
            Expect.isFalse launch.TimedOut "finished"
            Expect.equal launch.ExitCode 0 $"exit code:\n{launch.Output}"
            let lines = launch.Output.Split('\n') |> Array.map (fun l -> l.Trim())
            let losses =
                lines |> Array.choose (fun l ->
                    let m = Text.RegularExpressions.Regex.Match(l, @"epoch \d+: mean loss ([0-9.]+) over 512 samples on 2 ranks")
                    if m.Success then Some(float m.Groups.[1].Value) else None)
            Expect.equal losses.Length 5 $"one line per epoch, from rank 0 only:\n{launch.Output}"
            Expect.isLessThan losses.[4] (losses.[0] * 0.9) "the loss falls"
            let checksums =
                lines |> Array.choose (fun l ->
                    let m = Text.RegularExpressions.Regex.Match(l, @"rank (\d): trained checksum (\S+), restored checksum (\S+), gradient syncs (\d+)")
                    if m.Success then Some(m.Groups.[1].Value, m.Groups.[2].Value, m.Groups.[3].Value, int m.Groups.[4].Value) else None)
            Expect.equal (checksums |> Array.map (fun (r, _, _, _) -> r) |> Array.sort) [| "0"; "1" |] "both ranks report"
            let _, trained, _, _ = checksums.[0]
            for (r, t, restored, syncs) in checksums do
                Expect.equal t trained $"rank {r}: the same trained weights as the other rank"
                Expect.equal restored trained $"rank {r}: rank 0's checkpoint restores them exactly"
                Expect.equal syncs 20 $"rank {r}: 5 epochs × 8 iterations / accumulation 2 = 20 all-reduces"
            Expect.equal (Directory.GetFiles dir |> Array.map Path.GetFileName) [| "last.ckpt" |] "one checkpoint file, written once (no temporary left)"
            // The file is a plain single-process checkpoint: it loads without MPI into an unwrapped model.
            let layer (name: string) (m: torch.nn.Module<torch.Tensor, torch.Tensor>) = struct (name, m)
            let plain = torch.nn.Sequential([| layer "fc1" (torch.nn.Linear(20L, 64L)); layer "act" (torch.nn.ReLU()); layer "fc2" (torch.nn.Linear(64L, 4L)) |])
            let wrapper = Builder.build_optim_wrapper(plain, """{ "type": "OptimWrapper", "accumulative_counts": 2, "clip_grad": { "max_norm": 5.0 }, "optimizer": { "type": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4 }, "paramwise_cfg": { "bias_decay_mult": 0.0 } }""")
            let meta = Optim.Checkpoint.Load(Path.Combine(dir, "last.ckpt"), plain, wrapper)
            Expect.equal (meta.["epochs"].GetValue<int>()) 5 "metadata passed through"
            let checksum = plain.parameters() |> Seq.sumBy (fun p -> p.detach().double().sum().item<double>())
            Expect.equal (checksum.ToString("R")) trained "the single-process model holds the trained weights"
        }
        test "examples/DataParallel without mpirun: a one-rank job" {
            let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
            for a in [ exampleDll (); "1"; tempDir "single" ] do psi.ArgumentList.Add a
            psi.Environment["OMPI_ALLOW_RUN_AS_ROOT"] <- "1"
            psi.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] <- "1"
            use p = Process.Start psi
            let out = p.StandardOutput.ReadToEndAsync()
            let err = p.StandardError.ReadToEndAsync()
            if not (p.WaitForExit(TimeSpan.FromMinutes 1.0)) then p.Kill(entireProcessTree = true); failtest "the one-rank run hung"
            Expect.equal p.ExitCode 0 $"exit code: {out.Result} {err.Result}"
            Expect.stringContains out.Result "over 512 samples on 1 ranks" "all 512 samples on the one rank"
            Expect.stringContains out.Result "gradient syncs 8" "16 iterations / accumulation 2"
        }
        test "ranks whose parameters have another shape fail on every rank with a clear error, not a hang" {
            let dir = tempDir "mismatch"
            let launch = mpirun "mismatch" dir (TimeSpan.FromMinutes 2.0)
            Expect.isFalse launch.TimedOut $"mpirun finished ({launch.Elapsed.TotalSeconds:F1} s)"
            Expect.notEqual launch.ExitCode 0 "the job failed"
            for r in 0 .. ranks - 1 do
                let path = errorPath dir r
                Expect.isTrue (File.Exists path) $"rank {r} raised DistributedException:\n{launch.Output}"
                let msg = File.ReadAllText path
                Expect.stringContains msg "parameter 'fc2.weight'" $"rank {r} names the parameter"
                Expect.stringContains msg "rank 0: [3, 5] float32" $"rank {r} shows rank 0's shape"
                Expect.stringContains msg "rank 1: [4, 5] float32" $"rank {r} shows rank 1's shape"
        }
        test "a rank that never joins a collective: a timeout error naming it, and the job is aborted" {
            let dir = tempDir "timeout"
            let launch = mpirun "timeout" dir (TimeSpan.FromMinutes 2.0)
            Expect.isFalse launch.TimedOut "mpirun ended by itself (MPI_Abort), not by the harness"
            Expect.isLessThan launch.Elapsed (TimeSpan.FromSeconds 50.0) "well before rank 1's 60 s sleep ends"
            Expect.notEqual launch.ExitCode 0 "the job failed"
            let msg = File.ReadAllText(errorPath dir 0)
            Expect.stringContains msg "all_reduce_ on rank 0 of 2 did not complete within 3 s" "names the collective and the timeout"
        }
    ]
