/// `optim train --distributed`, run as a user runs it: the built CLI under `mpirun -np 2` (loopback
/// only, oversubscribed, root allowed; every collective with a 120 s timeout and every launch killed
/// with its ranks after a few minutes, so a failure is never a hang). The 2-rank training is compared
/// with a one-process computation here on the same global batches, its files and checksums with
/// what the checkpoint holds, its resumes with the uninterrupted run.
module Optim.Tests.DistributedCliTests

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open System.Text.RegularExpressions
open Expecto
open TorchSharp
open Optim
open Optim.Cli
open Optim.Tests.CliTests

/// One launch: exit code, every output line as (rank, stream, text) (rank -1: mpirun's own lines), time.
type Run =
    { ExitCode: int
      Lines: (int * string * string) list
      Elapsed: TimeSpan
      TimedOut: bool }
    member r.Text = String.Join("\n", r.Lines |> List.map (fun (rank, stream, l) -> sprintf "[%d %s] %s" rank stream l))
    /// The stdout lines of one rank.
    member r.Stdout(rank: int) = r.Lines |> List.choose (fun (k, s, l) -> if k = rank && s = "stdout" then Some l else None)
    /// The lines of one rank on both streams.
    member r.Of(rank: int) = r.Lines |> List.choose (fun (k, _, l) -> if k = rank then Some l else None)

let private tag = Regex(@"^\[\d+,(\d+)\]<(stdout|stderr)>:(.*)$")

/// `mpirun <mpirunOptions> ... dotnet Optim.Cli.dll args` (loopback only, oversubscribed, root
/// allowed), or with None `dotnet Optim.Cli.dll args` alone, in the repository root; `onLine` sees
/// every line as it comes (and the process started); killed with its whole process tree after `limit`.
let launch (mpirunOptions: string list option) (env: (string * string) list) (args: string list) (onLine: Process -> int * string * string -> unit) (limit: TimeSpan) : Run =
    let ranks = match mpirunOptions with None -> 0 | Some _ -> 2
    let file, prefix =
        match mpirunOptions with
        | None -> "dotnet", [ cliDll ]
        | Some options ->
            "mpirun",
            options
            @ [ "--oversubscribe"; "--allow-run-as-root"; "--tag-output"; "--mca"; "btl"; "self,tcp"; "--mca"; "oob_tcp_if_include"; "lo" ]
            @ (if List.contains "btl_tcp_if_include" options then [] else [ "--mca"; "btl_tcp_if_include"; "lo" ])
            @ [ "dotnet"; cliDll ]
    let psi = ProcessStartInfo(file, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = repoRoot)
    for a in prefix @ args do psi.ArgumentList.Add a
    psi.Environment["OMPI_ALLOW_RUN_AS_ROOT"] <- "1"
    psi.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] <- "1"
    psi.Environment["NO_COLOR"] <- "1"
    // mpirun gives each rank a pseudo-terminal, and .NET's console then writes the terminal's
    // keypad-mode codes (ESC[?1h ESC=) to it, an unterminated line that mpirun merges into the next
    // rank's; a terminal without such codes keeps each rank's lines its own.
    psi.Environment["TERM"] <- "dumb"
    for k, v in env do psi.Environment[k] <- v
    let lines = ResizeArray<int * string * string>()
    let clock = Stopwatch.StartNew()
    use p =
        try Process.Start psi
        with :? ComponentModel.Win32Exception as e -> failwithf "%s could not be started (%s): install Open MPI (apt-get install openmpi-bin libopenmpi-dev)" file e.Message
    let receive (stream: string) (data: string) =
        if not (isNull data) then
            let line =
                let m = tag.Match data
                if m.Success then int m.Groups.[1].Value, m.Groups.[2].Value, m.Groups.[3].Value
                elif ranks = 0 then 0, stream, data
                else -1, stream, data
            lock lines (fun () -> lines.Add line)
            onLine p line
    p.OutputDataReceived.Add(fun e -> receive "stdout" e.Data)
    p.ErrorDataReceived.Add(fun e -> receive "stderr" e.Data)
    p.BeginOutputReadLine()
    p.BeginErrorReadLine()
    let finished = p.WaitForExit(limit)
    if not finished then p.Kill(entireProcessTree = true)
    p.WaitForExit()
    { ExitCode = (if finished then p.ExitCode else -1); Lines = lock lines (fun () -> List.ofSeq lines); Elapsed = clock.Elapsed; TimedOut = not finished }

let private minutes (m: float) = TimeSpan.FromMinutes m
let private noLines = fun (_: Process) (_: int * string * string) -> ()

/// The README's two `optim train --distributed` commands: (mpirun's options, the CLI's arguments).
let private readmeCommands =
    lazy
        (let lines = File.ReadAllLines(Path.Combine(repoRoot, "README.md"))
         let one = lines |> Array.find (fun l -> l.StartsWith "mpirun -np 2 --bind-to none dotnet src/Cli/")
         let hostfileAt = lines |> Array.findIndex (fun l -> l.StartsWith "mpirun -np 2 --hostfile hosts ")
         let split (mpirun: string) (rest: string) =
             let words (t: string) = t.Split(' ', StringSplitOptions.RemoveEmptyEntries) |> List.ofArray
             let m, dll = (words mpirun) |> List.tail, rest.Substring(0, rest.IndexOf " ")
             m, dll, words (rest.Substring(rest.IndexOf " "))
         let at (l: string) = l.IndexOf " dotnet "
         let m1, dll1, args1 = split (one.Substring(0, at one)) (one.Substring(at one + 8))
         let two = lines.[hostfileAt].TrimEnd('\\').TrimEnd() + " " + lines.[hostfileAt + 1].Trim()
         let m2, dll2, args2 = split (two.Substring(0, at two)) (two.Substring(at two + 8))
         Expect.equal args2 args1 "the README's two-machine command runs the same optim arguments"
         Expect.stringEnds dll1 "Optim.Cli.dll" "the README runs the built CLI"
         if cliDll.Contains "/Debug/" then Expect.equal (Path.GetFullPath(Path.Combine(repoRoot, dll1))) cliDll "the README's path is the built CLI's"
         Expect.stringEnds dll2 ("/" + dll1) "the same build on the other machines"
         (m1, args1), (m2, args2))

/// The small run every 2-rank test uses, as the README shows it: 256 training images, batch 64 (4
/// iterations per epoch), 2 epochs, accumulation 2 and clipping from configs/fashion_mnist.json; with
/// `--out` in a temporary folder, one thread per rank, the logs that show each rank's checksum, a line
/// per iteration and a 120 s bound on every collective.
let private trainLimit, epochs = 256, 2
let private small (out: string) =
    let (_, args), _ = readmeCommands.Force()
    Expect.containsAll args [ "--train-limit"; string trainLimit; "--epochs"; string epochs; "--embedded"; "--distributed" ] "the README's quick run"
    (args |> List.map (fun a -> if a = "runs/ddp" then out else a))
    @ [ "--threads"; "1"; "--log-level"; "information"; "--log-every"; "1"; "--dist-timeout"; "120" ]

/// mpirun's options of the README's one-machine command.
let private onOneMachine () = Some(fst (fst (readmeCommands.Force())))

/// mpirun's options of the README's two-machine command, with a hostfile naming this machine twice
/// and the loopback interface for eth0.
let private withHostfile () =
    let hosts = Path.Combine(tempDir "dist-hosts", "hosts")
    File.WriteAllText(hosts, "localhost slots=2\n")
    let options = fst (snd (readmeCommands.Force()))
    Some(options |> List.map (function "hosts" -> hosts | "eth0" -> "lo" | o -> o))

let private expectDone (what: string) (r: Run) =
    if r.TimedOut || r.ExitCode <> 0 then failtestf "%s: exit code %d (timed out %b, %.1f s)\n%s" what r.ExitCode r.TimedOut r.Elapsed.TotalSeconds r.Text

/// Each rank's "final parameters: SHA-256 ..." log line, by rank.
let private checksums (r: Run) =
    r.Lines
    |> List.choose (fun (rank, _, l) ->
        let m = Regex.Match(l, @"=> rank (\d)/2 final parameters: SHA-256 ([0-9a-f]{64})")
        if m.Success then Some(int m.Groups.[1].Value, (rank, m.Groups.[2].Value)) else None)
    |> List.map (fun (logged, (tagged, sum)) -> Expect.equal logged tagged "the log line's rank scope is the rank mpirun tagged it with"; logged, sum)
    |> List.sort

let private options (out: string) : Train.Options =
    let cfg = RunConfig.load (Some(config "fashion_mnist.json")) |> Result.defaultWith (fun ps -> failtestf "%A" ps)
    { Config = cfg; Data = FashionMnist.Embedded; Epochs = Some epochs; MaxIters = None; TrainLimit = Some trainLimit
      Out = out; Resume = None; Device = torch.CPU; Seed = None; LogEvery = 50 }

let private embedded = lazy (FashionMnist.load FashionMnist.Embedded |> Result.defaultWith (fun e -> failtest e.Message))

/// A checkpoint of the small run loaded into a fresh one-process setup: (setup, metadata).
let private loadCheckpoint (path: string) =
    let setup = Train.build (options "") embedded.Value
    let meta = Checkpoint.Load(path, setup.Model, setup.Wrapper, setup.Schedulers)
    setup, meta

/// The model's state (parameters and buffers) as float arrays, by name.
let private stateOf (m: torch.nn.Module) =
    [ for kv in m.state_dict() -> kv.Key, (use d = kv.Value.detach().double().contiguous().reshape(-1L) in d.data<float>().ToArray()) ]

/// SHA-256 of the parameters in named order as float32 bytes (what the CLI logs and summary.json holds).
let private sha256 (m: torch.nn.Module) =
    use sha = Security.Cryptography.IncrementalHash.CreateHash(Security.Cryptography.HashAlgorithmName.SHA256)
    for struct (_, p) in m.named_parameters() do
        use c = p.detach().contiguous()
        sha.AppendData(c.bytes)
    Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant()

/// float32 tolerance: |a − e| ≤ 1e-6 + 1e-5·|e|.
let private near (a: float) (e: float) = abs (a - e) <= 1e-6 + 1e-5 * abs e

let private expectNearStates (what: string) (actual: (string * float[]) list) (expected: (string * float[]) list) =
    Expect.equal (List.map fst actual) (List.map fst expected) $"{what}: the same tensors"
    let mutable worst = 0.0
    for (name, a), (_, e) in List.zip actual expected do
        Array.iteri2 (fun i x y ->
            worst <- max worst (abs (x - y))
            if not (near x y) then failtestf "%s: %s[%d] = %.9g, expected %.9g" what name i x y) a e
    worst

/// What the 2-rank run must compute, computed here in one process: the same model, wrapper and
/// schedulers (Train.build), the same global batches; each global batch's shards batch[0::2] and
/// batch[1::2] go through the model separately (BatchNorm normalises over each rank's 32 images, not
/// over all 64), the loss is their mean, and the BatchNorm running statistics keep shard 0's update
/// only (each rank's forward starts from rank 0's buffers). Returns the setup after `iters`
/// iterations and per iteration (loss, lr of group 0, grad norm).
let private reference (iters: int) =
    let setup = Train.build (options "") embedded.Value
    let model, wrapper = setup.Model, setup.Wrapper
    wrapper.initialize_count_status (model, 0, setup.Epochs * setup.EpochLength)
    let norm = ref None
    wrapper.GradNormReported.Add(fun n -> norm.Value <- Some n)
    model.train()
    let rows =
        [ for it in 0 .. iters - 1 do
            let epoch, b = it / setup.EpochLength, it % setup.EpochLength
            let batch = (setup.EpochBatches epoch).[b]
            let shards = [| for r in 0 .. 1 -> [| for i in r .. 2 .. batch.Length - 1 -> batch.[i] |] |]
            let lr = wrapper.get_lr().["lr"] |> Seq.head
            norm.Value <- None
            use _scope = torch.NewDisposeScope()
            let lossOf (idx: int[]) =
                let x, y = FashionMnist.batch setup.Train idx torch.CPU
                torch.nn.functional.cross_entropy (model.forward x, y)
            let mutable rank0Buffers = []
            let loss =
                use _ctx = wrapper.optim_context model
                let l0 = lossOf shards.[0]
                rank0Buffers <- [ for b in model.buffers() -> b.detach().clone() ]
                let l1 = lossOf shards.[1]
                (l0 + l1) / torch.tensor(2.0f)
            wrapper.update_params loss
            // After backward: BatchNorm's backward reads the running statistics it saw.
            (use _ = torch.no_grad()
             for b, saved in Seq.zip (model.buffers()) rank0Buffers do b.copy_(saved) |> ignore)
            yield float (loss.item<float32>()), lr, norm.Value
            ParamSchedulerHook.after_train_iter setup.Schedulers
            if b = setup.EpochLength - 1 then ParamSchedulerHook.after_train_epoch setup.Schedulers ]
    setup, rows

/// The uninterrupted 2-rank run of 8 iterations, shared by the tests below.
let private full =
    lazy
        (let out = tempDir "dist-full"
         let r = launch (onOneMachine ()) [] (small out) noLines (minutes 4.0)
         expectDone "mpirun -np 2 optim train --distributed" r
         out, r)

/// The process id of `rank` among mpirun's children (its environment's OMPI_COMM_WORLD_RANK).
let private rankProcess (mpirun: int) (rank: int) : int =
    let children =
        [ for d in Directory.GetDirectories "/proc" do
            match Int32.TryParse(Path.GetFileName d) with
            | true, pid ->
                try
                    let stat = File.ReadAllText(sprintf "/proc/%d/stat" pid)
                    let parent = int (stat.Substring(stat.LastIndexOf ')' + 2).Split(' ').[1])
                    if parent = mpirun then yield pid, File.ReadAllText(sprintf "/proc/%d/environ" pid).Split('\000')
                with _ -> ()
            | _ -> () ]
    match children |> List.tryFind (fun (_, env) -> Array.contains (sprintf "OMPI_COMM_WORLD_RANK=%d" rank) env) with
    | Some(pid, _) -> pid
    | None -> failtestf "no child of mpirun (%d) is rank %d" mpirun rank

let private checkpointIter (path: string) = (snd (loadCheckpoint path)).["iter"].GetValue<int>()

[<Tests>]
let tests =
    testList "optim train --distributed" [
        test "the shard rule: batch[rank::world] partitions each global batch into equal parts, in order" {
            let batch = [| 10 .. 73 |]
            for world in [ 1; 2; 4 ] do
                let parts = [ for r in 0 .. world - 1 -> Train.shard r world batch ]
                for r, part in List.indexed parts do
                    Expect.equal part [| for i in r .. world .. batch.Length - 1 -> batch.[i] |] $"rank {r} of {world}"
                Expect.equal (parts |> Array.concat |> Array.sort) batch "every image once"
        }
        test "a batch size that is not a multiple of the ranks is refused naming train_dataloader.batch_size" {
            // Rank 0 of 3 ranks (in process; its peers' all_gather contributions say they succeeded).
            let group =
                { new Optim.Distributed.IProcessGroup with
                    member _.rank = 0
                    member _.world_size = 3
                    member _.all_reduce_(_t, _op) = ()
                    member _.broadcast_(_t, _src) = ()
                    member _.all_gather(values) = Array.concat [ values; Array.zeroCreate (2 * values.Length) ]
                    member _.barrier() = ()
                    member _.Dispose() = () }
            match (try Choice1Of2(Train.buildIn (Some group) OptimLogging.LoggerFactory (options "") embedded.Value) with e -> Choice2Of2 e) with
            | Choice2Of2(Train.UsageError [ p ]) ->
                Expect.equal p.Path "train_dataloader.batch_size" "path"
                Expect.stringContains p.Message "batch size 64 does not split evenly over 3 ranks" "message"
            | other -> failtestf "expected a usage error, got %A" other
        }
        test "mpirun -np 2: both ranks end with the same parameters, rank 0 alone writes --out, and the run equals one process on the same global batches" {
            let out, r = full.Force()
            // Output: rank 0 prints, rank 1 is quiet on stdout.
            Expect.isEmpty (r.Stdout 1) $"rank 1 prints nothing on stdout:\n{r.Text}"
            let rank0 = r.Stdout 0
            Expect.equal (rank0 |> List.filter (fun l -> l.StartsWith "epoch 1/2 iter ")).Length 4 "rank 0 prints every iteration of epoch 1 once"
            Expect.isTrue (rank0 |> List.exists (fun l -> l.Contains "data parallel: 2 ranks, 32 images of each batch per rank")) "says how the batch is split"
            // build_optim_wrapper saw the CNN's own names through DistributedDataParallel.
            for rank in 0 .. 1 do
                let paramwise = r.Of rank |> List.filter (fun l -> l.Contains "paramwise_options -- ")
                Expect.contains paramwise "info: DefaultOptimWrapperConstructor[0] paramwise_options -- head.weight:lr=0.025" $"rank {rank}: the head's custom key"
                Expect.isFalse (paramwise |> List.exists (fun l -> l.Contains "module.")) $"rank {rank}: no module. prefix"
            // Both ranks: the same final parameters, which are the checkpoint's.
            let sums = checksums r
            Expect.equal (List.map fst sums) [ 0; 1 ] $"both ranks log their checksum:\n{r.Text}"
            Expect.equal (snd sums.[1]) (snd sums.[0]) "rank 1's parameters are rank 0's"
            let trained, meta = loadCheckpoint (Path.Combine(out, "last.ckpt"))
            Expect.equal (meta.["iter"].GetValue<int>()) 8 "last.ckpt after 8 iterations"
            Expect.equal (sha256 trained.Model) (snd sums.[0]) "the checkpoint holds the ranks' parameters"
            let summary = readSummary out
            Expect.equal (summary.["world_size"].GetValue<int>()) 2 "summary.json: 2 ranks"
            Expect.equal (summary.["parameter_checksum"].GetValue<string>()) (snd sums.[0]) "summary.json's checksum"
            Expect.equal (summary.["batch_size"].GetValue<int>(), summary.["epoch_length"].GetValue<int>()) (64, 4) "the config's global batch and epoch"
            // Files: one set, written once by rank 0 (no temporaries, nothing per rank).
            Expect.equal (Directory.GetFiles out |> Array.map Path.GetFileName |> Array.sort)
                [| "curves.png"; "epoch_1.ckpt"; "epoch_2.ckpt"; "last.ckpt"; "metrics.csv"; "summary.json" |] "the files of a one-process run"
            let rows = csvRows (Path.Combine(out, "metrics.csv"))
            Expect.equal [ for row in rows -> row.["iter"] ] [ for i in 0 .. 7 -> string i ] "metrics.csv: one row per iteration, once"
            // The same training as one process on the same global batches (shard-wise BatchNorm).
            let expected, expectedRows = reference 8
            let worst = expectNearStates "parameters and buffers vs one process" (stateOf trained.Model) (stateOf expected.Model)
            printfn "optim train --distributed: max |2 ranks - 1 process| over parameters and buffers after 8 iterations = %.3g" worst
            for row, (loss, lr, norm) in List.zip rows expectedRows do
                let it = row.["iter"]
                Expect.isTrue (near (float row.["loss"]) loss) (sprintf "iteration %s: loss %s (mean over the ranks) vs %g" it row.["loss"] loss)
                Expect.equal (float row.["lr_0"]) lr $"iteration {it}: the config's schedule"
                match norm with
                | Some n -> Expect.isTrue (near (float row.["grad_norm"]) n) (sprintf "iteration %s: grad norm %s vs %g" it row.["grad_norm"] n)
                | None -> Expect.equal row.["grad_norm"] "" $"iteration {it}: no update, no norm"
            let acc, vloss = Train.evaluate expected torch.CPU
            Expect.isTrue (near (num summary.["val_loss"]) vloss) (sprintf "validation loss %O vs %g" summary.["val_loss"] vloss)
            Expect.isLessThanOrEqual (abs (num summary.["val_accuracy"] - acc)) 0.002 "validation accuracy (within 2 of 1,000 images)"
        }
        test "mpirun -np 2 --resume: from an epoch checkpoint bit-exactly, from a mid-accumulation stop to float32 tolerance" {
            let a, _ = full.Force()
            let _, stateA, optimA = checkpointState (Path.Combine(a, "last.ckpt")) trainLimit epochs
            // From epoch_1.ckpt (iteration 4, just after an update) into a new folder.
            let c = tempDir "dist-resume-epoch"
            // With a hostfile, as on two machines (the README's second command).
            let r = launch (withHostfile ()) [] (small c @ [ "--resume"; Path.Combine(a, "epoch_1.ckpt") ]) noLines (minutes 4.0)
            expectDone "resume from epoch_1.ckpt" r
            Expect.isTrue (r.Stdout 0 |> List.exists (fun l -> l.StartsWith(sprintf "resumed from %s at iteration 4" (Path.Combine(a, "epoch_1.ckpt"))))) "resumed at 4"
            let iterC, stateC, optimC = checkpointState (Path.Combine(c, "last.ckpt")) trainLimit epochs
            Expect.equal iterC 8 "ends at 8"
            Expect.isTrue (stateC = stateA) "bit-identical parameters and buffers"
            Expect.equal optimC optimA "identical optimizer state"
            Expect.equal (File.ReadAllLines(Path.Combine(c, "metrics.csv")).[1..]) (File.ReadAllLines(Path.Combine(a, "metrics.csv")).[5..]) "the same rows for iterations 4-7"
            // Stopped by --max-iters 3: each rank holds half an accumulation of its own gradients.
            let b = tempDir "dist-resume-mid"
            let r = launch (onOneMachine ()) [] (small b @ [ "--max-iters"; "3" ]) noLines (minutes 4.0)
            expectDone "stop at 3" r
            Expect.equal (checkpointIter (Path.Combine(b, "last.ckpt"))) 3 "last.ckpt at 3"
            let r = launch (onOneMachine ()) [] (small b @ [ "--resume"; Path.Combine(b, "last.ckpt") ]) noLines (minutes 4.0)
            expectDone "resume from 3" r
            let resumed, _ = loadCheckpoint (Path.Combine(b, "last.ckpt"))
            let uninterrupted, _ = loadCheckpoint (Path.Combine(a, "last.ckpt"))
            let worst = expectNearStates "resumed mid-accumulation vs uninterrupted" (stateOf resumed.Model) (stateOf uninterrupted.Model)
            printfn "optim train --distributed: max |resumed at 3 - uninterrupted| after 8 iterations = %.3g" worst
            let rowsA, rowsB = csvRows (Path.Combine(a, "metrics.csv")), csvRows (Path.Combine(b, "metrics.csv"))
            Expect.equal (List.take 3 rowsB) (List.take 3 rowsA) "iterations 0-2 as before the stop"
            for ra, rb in List.zip rowsA rowsB do
                Expect.isTrue (near (float rb.["loss"]) (float ra.["loss"])) (sprintf "iteration %s: loss %s vs %s" ra.["iter"] rb.["loss"] ra.["loss"])
        }
        test "SIGUSR1 to rank 1 alone: both ranks stop after the same step, rank 0 writes last.ckpt, exit 130, no hang" {
            let out = tempDir "dist-stop"
            let args = [ "train"; "--distributed"; "--embedded"; "--threads"; "1"; "--epochs"; "2"; "--out"; out; "--log-level"; "information"; "--log-every"; "1"; "--dist-timeout"; "120" ]
            let signalled = ref false
            let onLine (p: Process) (rank: int, _: string, l: string) =
                if rank = 0 && l.StartsWith "epoch 1/2 iter 3/" && not signalled.Value then
                    signalled.Value <- true
                    use kill = Process.Start("kill", [ "-USR1"; string (rankProcess p.Id 1) ])
                    kill.WaitForExit()
            let r = launch (onOneMachine ()) [] args onLine (minutes 4.0)
            Expect.isTrue signalled.Value $"the run got to iteration 3:\n{r.Text}"
            Expect.isFalse r.TimedOut "ended by itself"
            Expect.equal r.ExitCode 130 $"exit code 130 (interrupted):\n{r.Text}"
            Expect.isTrue (r.Of 1 |> List.exists (fun l -> l.Contains "rank 1/2: SIGUSR1: stopping after this step")) $"rank 1 got the signal:\n{r.Text}"
            Expect.isFalse (r.Of 0 |> List.exists (fun l -> l.Contains "SIGUSR1")) "rank 0 did not"
            let stopped = (readSummary out).["iterations"].GetValue<int>()
            Expect.isTrue (stopped >= 3 && stopped < 280) $"stopped early ({stopped})"
            Expect.equal (checkpointIter (Path.Combine(out, "last.ckpt"))) stopped "last.ckpt at the iteration it stopped"
            Expect.equal (r.Stdout 0 |> List.filter (fun l -> l.StartsWith(sprintf "interrupted after iteration %d; checkpoint %s" stopped (Path.Combine(out, "last.ckpt"))))).Length 1 "said once, by rank 0"
            let sums = checksums r
            Expect.equal (List.map fst sums) [ 0; 1 ] "both ranks finished and logged a checksum"
            Expect.equal (snd sums.[1]) (snd sums.[0]) "both stopped after the same step"
        }
        test "--distributed without mpirun is a job of one rank, identical to a plain run; without an MPI library it exits 2 naming it" {
            let single, plain = tempDir "dist-single", tempDir "dist-plain"
            let common = [ "--embedded"; "--threads"; "1"; "--train-limit"; string trainLimit; "--epochs"; string epochs; "--max-iters"; "3" ]
            // Open MPI named by OPTIM_MPI_LIBRARY (the system's own, by its full path).
            let library =
                [ "/usr/lib/x86_64-linux-gnu/libmpi.so.40"; "/usr/lib/aarch64-linux-gnu/libmpi.so.40"; "/usr/lib64/openmpi/lib/libmpi.so.40" ]
                |> List.tryFind File.Exists
                |> Option.defaultWith (fun () -> failtest "libmpi.so.40 not found where Debian/Ubuntu/Fedora install it")
            expectDone "--distributed, no mpirun" (launch None [ "OPTIM_MPI_LIBRARY", library ] ([ "train"; "--distributed"; "--out"; single ] @ common) noLines (minutes 3.0))
            expectDone "plain" (launch None [] ([ "train"; "--out"; plain ] @ common) noLines (minutes 3.0))
            Expect.equal (File.ReadAllLines(Path.Combine(single, "metrics.csv"))) (File.ReadAllLines(Path.Combine(plain, "metrics.csv"))) "the same metrics"
            let _, s1, o1 = checkpointState (Path.Combine(single, "last.ckpt")) trainLimit epochs
            let _, s2, o2 = checkpointState (Path.Combine(plain, "last.ckpt")) trainLimit epochs
            Expect.isTrue (s1 = s2) "bit-identical parameters and buffers"
            Expect.equal o1 o2 "identical optimizer state"
            Expect.equal ((readSummary single).["world_size"].GetValue<int>()) 1 "one rank"
            let r = launch None [ "OPTIM_MPI_LIBRARY", "/nonexistent/libmpi.so.40" ] [ "train"; "--distributed"; "--embedded"; "--out"; tempDir "dist-nompi" ] noLines (minutes 2.0)
            Expect.equal r.ExitCode 2 $"exit 2:\n{r.Text}"
            Expect.isTrue (r.Lines |> List.exists (fun (_, s, l) -> s = "stderr" && l.StartsWith "error: --distributed: the MPI library /nonexistent/libmpi.so.40 named by OPTIM_MPI_LIBRARY could not be loaded")) $"names the library:\n{r.Text}"
        }
        test "rank 0 fails before training (--out is a file): every rank stops with an error naming rank 0, exit 1, no abort" {
            let file = Path.Combine(tempDir "dist-outfile", "a-file")
            File.WriteAllText(file, "not a folder")
            let r = launch (onOneMachine ()) [] (small file) noLines (minutes 3.0)
            Expect.isFalse r.TimedOut "ended by itself"
            Expect.equal r.ExitCode 1 $"exit 1:\n{r.Text}"
            Expect.isTrue (r.Of 0 |> List.exists (fun l -> l.StartsWith "rank 0/2: error: " && l.Contains file)) $"rank 0 names the path:\n{r.Text}"
            Expect.isTrue (r.Of 1 |> List.exists (fun l -> l.StartsWith "rank 1/2: error: rank 0 of 2 failed while creating the output folder (--out)")) $"rank 1 names rank 0:\n{r.Text}"
            Expect.isFalse (r.Text.Contains "MPI_ABORT") "a clean stop, not an abort"
        }
        test "rank 0 fails once training has begun (metrics.csv cannot be written): the job is aborted with its error, no hang" {
            let out = tempDir "dist-abort"
            Directory.CreateDirectory(Path.Combine(out, "metrics.csv")) |> ignore
            let r = launch (onOneMachine ()) [] (small out) noLines (minutes 3.0)
            Expect.isFalse r.TimedOut "ended by itself"
            Expect.notEqual r.ExitCode 0 $"failed:\n{r.Text}"
            Expect.isTrue (r.Of 0 |> List.exists (fun l -> l.StartsWith "rank 0/2: error: " && l.Contains "metrics.csv" && l.EndsWith "; aborting the MPI job")) $"rank 0 says why:\n{r.Text}"
            Expect.stringContains r.Text "MPI_ABORT was invoked on rank 0" "mpirun reports the abort"
            Expect.isFalse (File.Exists(Path.Combine(out, "last.ckpt"))) "no checkpoint"
        }
    ]
