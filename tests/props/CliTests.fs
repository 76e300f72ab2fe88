/// The `optim` command, run as a user runs it: the built CLI as a child process (exit codes,
/// stdout, stderr, the files it leaves), its JSON checked against values computed here
/// independently; plus the IDX reader on good and bad files. Every training run passes `--embedded`
/// or `--data` (CI machines may or may not have Debian's dataset-fashion-mnist) and is kept small.
module Optim.Tests.CliTests

open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Optim
open Optim.Cli

/// The repository root (where Optim.sln is), found walking up from the test binaries.
let repoRoot =
    let rec up (d: DirectoryInfo) =
        if isNull d then failwith "Optim.sln not found above the test binaries"
        elif File.Exists(Path.Combine(d.FullName, "Optim.sln")) then d.FullName
        else up d.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

/// The CLI built next to these tests: src/Cli/bin/<configuration>/<tfm>/Optim.Cli.dll.
let cliDll =
    let baseDir = DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar))
    Path.Combine(repoRoot, "src", "Cli", "bin", baseDir.Parent.Name, baseDir.Name, "Optim.Cli.dll")

let config name = Path.Combine(repoRoot, "configs", name)

/// Runs `dotnet Optim.Cli.dll args` in `cwd`; returns (exit code, stdout, stderr).
let runIn (cwd: string) (args: string list) : int * string * string =
    let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = cwd)
    psi.ArgumentList.Add cliDll
    for a in args do psi.ArgumentList.Add a
    psi.Environment.["NO_COLOR"] <- "1"
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit 600_000) then
        p.Kill true
        failwithf "optim %s did not finish in 10 minutes" (String.Join(" ", args))
    p.ExitCode, out.Result, err.Result

let run args = runIn repoRoot args

let tempDir (name: string) =
    let d = Path.Combine(Path.GetTempPath(), sprintf "optim-cli-%s-%s" name (Guid.NewGuid().ToString("N").[..7]))
    Directory.CreateDirectory d |> ignore
    d

let expectExit (expected: int) (code: int, out: string, err: string) (what: string) =
    if code <> expected then failtestf "%s: exit code %d, expected %d\nstdout:\n%s\nstderr:\n%s" what code expected out err

let noStackTrace (err: string) (what: string) =
    Expect.isFalse (err.Contains "   at ") (sprintf "%s: no stack trace without --verbose:\n%s" what err)

// ---- IDX files -------------------------------------------------------------------------------

/// An IDX file of unsigned bytes: magic 0x0000080N, the dimensions big-endian, the data.
let idxBytes (dims: int list) (data: byte[]) =
    let be (n: int) = [| byte (n >>> 24); byte (n >>> 16); byte (n >>> 8); byte n |]
    Array.concat [ [| 0uy; 0uy; 8uy; byte dims.Length |]; yield! dims |> List.map be; data ]

let gzip (bytes: byte[]) =
    use ms = new MemoryStream()
    (use z = new GZipStream(ms, CompressionLevel.Fastest) in z.Write(bytes, 0, bytes.Length))
    ms.ToArray()

/// A folder of Fashion-MNIST-shaped IDX files (raw or gz): `train` and `test` images of random
/// pixels, labels cycling 0..9.
let writeDataset (dir: string) (train: int) (test: int) (compress: bool) =
    let rng = Random(7)
    let write (stem: string) (bytes: byte[]) =
        if compress then File.WriteAllBytes(Path.Combine(dir, stem + ".gz"), gzip bytes)
        else File.WriteAllBytes(Path.Combine(dir, stem), bytes)
    for prefix, n in [ "train", train; "t10k", test ] do
        let pixels = Array.zeroCreate<byte> (n * 784)
        rng.NextBytes pixels
        write (prefix + "-images-idx3-ubyte") (idxBytes [ n; 28; 28 ] pixels)
        write (prefix + "-labels-idx1-ubyte") (idxBytes [ n ] (Array.init n (fun i -> byte (i % 10))))

let private idxTests =
    testList "IDX reader" [
        test "reads raw and gzip files with their dimensions and bytes" {
            let data = Array.init (3 * 2 * 2) byte
            let raw = idxBytes [ 3; 2; 2 ] data
            for bytes in [ raw; gzip raw ] do
                match Idx.read "x" 3 (new MemoryStream(bytes)) with
                | Ok a ->
                    Expect.equal a.Dims [ 3; 2; 2 ] "dims"
                    Expect.equal a.Data data "data"
                | Error e -> failtestf "unexpected error %s" e.Message
        }
        test "the embedded split is Fashion-MNIST's 10k test set: 28x28, 1,000 of each class" {
            match FashionMnist.load FashionMnist.Embedded with
            | Error e -> failtest e.Message
            | Ok d ->
                Expect.equal (d.Train.Count, d.Validation.Count) (9000, 1000) "9,000 / 1,000"
                Expect.equal (d.Train.Rows, d.Train.Cols) (28, 28) "28x28"
                let counts = Array.append d.Train.Labels d.Validation.Labels |> Array.countBy id |> Array.sortBy fst
                Expect.equal counts [| for c in 0uy .. 9uy -> c, 1000 |] "balanced classes"
        }
        let bad (name: string) (bytes: byte[]) (expected: string) =
            test name {
                match Idx.read "some/file-idx3-ubyte" 3 (new MemoryStream(bytes)) with
                | Ok _ -> failtest "accepted"
                | Error e ->
                    Expect.stringContains e.Message "some/file-idx3-ubyte" "names the file"
                    Expect.stringContains e.Message expected "says what is wrong"
            }
        let good = idxBytes [ 4; 28; 28 ] (Array.zeroCreate (4 * 784))
        bad "truncated data" good.[.. good.Length - 101] "truncated: dimensions 4x28x28 need 3136 bytes of data, the file has 3036"
        bad "truncated header" good.[.. 9] "truncated"
        bad "truncated gzip" ((gzip good).[.. 40]) "truncated"
        bad "wrong magic (a labels file where images are expected)" (idxBytes [ 4 ] (Array.zeroCreate 4)) "wrong magic number 0x00000801: 1 dimensions, expected 3"
        bad "not IDX at all" ("hello world, no IDX here"B) "not an IDX file"
        bad "extra bytes" (Array.append good [| 1uy |]) "1 bytes after the data"
        bad "float data" (Array.concat [ [| 0uy; 0uy; 0x0Duy; 3uy |]; good.[4..] ]) "data type 0x0d"
        test "images and labels of different counts: an error naming the labels file and both counts" {
            let images = idxBytes [ 5; 28; 28 ] (Array.zeroCreate (5 * 784))
            let labels = idxBytes [ 4 ] (Array.zeroCreate 4)
            let i = Idx.read "imgs" 3 (new MemoryStream(images)) |> Result.defaultWith (fun e -> failtest e.Message)
            let l = Idx.read "lbls" 1 (new MemoryStream(labels)) |> Result.defaultWith (fun e -> failtest e.Message)
            match Idx.labelled ("imgs", i) ("lbls", l) 10 with
            | Ok _ -> failtest "accepted"
            | Error e -> Expect.equal e.Message "lbls: 4 labels, but imgs holds 5 images" "message"
        }
        test "a label outside 0..9 is an error naming file and index" {
            let i = Idx.read "imgs" 3 (new MemoryStream(idxBytes [ 2; 28; 28 ] (Array.zeroCreate (2 * 784)))) |> Result.defaultWith (fun e -> failtest e.Message)
            let l = Idx.read "lbls" 1 (new MemoryStream(idxBytes [ 2 ] [| 3uy; 12uy |])) |> Result.defaultWith (fun e -> failtest e.Message)
            match Idx.labelled ("imgs", i) ("lbls", l) 10 with
            | Ok _ -> failtest "accepted"
            | Error e -> Expect.equal e.Message "lbls: label 12 at index 1, expected 0..9" "message"
        }
    ]

// ---- helpers on outputs ------------------------------------------------------------------------

let json (text: string) = JsonNode.Parse text
let num (n: JsonNode) = n.GetValue<float>()
let close (a: float) (e: float) = abs (a - e) <= 1e-12 + 1e-9 * abs e

/// The lr of fashion_mnist.json (base lr `baseLr`) at iteration t, computed here from MMEngine's
/// definitions: LinearLR from 0.1x at iteration 0 to 1x at iteration 99 (MMEngine's LinearLR
/// reaches end_factor at `end - 1`: its total_iters is end - begin - 1), then constant, then from epoch 1
/// CosineAnnealingLR (converted to iterations) down to eta_min 1e-4 at the end of `epochs` epochs.
let expectedLr (baseLr: float) (epochLength: int) (epochs: int) (t: int) =
    let begin_ = epochLength
    let tMax = float ((epochs - 1) * epochLength)
    if t < begin_ then baseLr * (0.1 + 0.9 * float (min t 99) / 99.0)
    else 1e-4 + (baseLr - 1e-4) * (1.0 + cos (Math.PI * float (t - begin_) / tMax)) / 2.0

let readSummary (dir: string) = json (File.ReadAllText(Path.Combine(dir, "summary.json")))

let csvRows (path: string) =
    let lines = File.ReadAllLines path
    let head = lines.[0].Split ','
    [ for l in lines.[1..] -> Array.zip head (l.Split ',') |> Map.ofArray ]

let isPng (path: string) =
    File.Exists path && (File.ReadAllBytes path).[..7] = [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 0x0Duy; 0x0Auy; 0x1Auy; 0x0Auy |]

/// The CNN's parameter names, in order, as the CLI documents them.
let cnnParams =
    [ "stem.conv.weight"; "stem.bn.weight"; "stem.bn.bias"
      for b in [ "block1"; "block2" ] do
          for part in [ "dw"; "pw" ] do
              yield! [ sprintf "%s.%s.conv.weight" b part; sprintf "%s.%s.bn.weight" b part; sprintf "%s.%s.bn.bias" b part ]
      "fc.linear.weight"; "fc.linear.bias"; "head.weight"; "head.bias" ]

/// Loads a checkpoint of `optim train --embedded --train-limit n --epochs e` into the objects the
/// CLI builds for that run, and returns the model's state (parameters and buffers) as bytes.
let checkpointState (path: string) (trainLimit: int) (epochs: int) =
    let cfg = RunConfig.load (Some(config "fashion_mnist.json")) |> Result.defaultWith (fun ps -> failtestf "%A" ps)
    let options : Train.Options =
        { Config = cfg; Data = FashionMnist.Embedded; Epochs = Some epochs; MaxIters = None; TrainLimit = Some trainLimit
          Out = ""; Resume = None; Device = torch.CPU; Seed = None; LogEvery = 50 }
    let data = FashionMnist.load FashionMnist.Embedded |> Result.defaultWith (fun e -> failtest e.Message)
    let setup = Train.build options data
    let meta = Checkpoint.Load(path, setup.Model, setup.Wrapper, setup.Schedulers)
    let state = [ for kv in setup.Model.state_dict() -> kv.Key, (use c = kv.Value.detach().contiguous() in c.bytes.ToArray()) ]
    let optimizer = setup.Wrapper.state_dict().ToJson(false)
    meta.["iter"].GetValue<int>(), state, optimizer

let private small = [ "train"; "--embedded"; "--threads"; "1"; "--train-limit"; "256"; "--epochs"; "2" ]

let private commandTests =
    testList "optim CLI" [
        test "--help exits 0 and lists the commands; a missing or unknown command exits 2" {
            let code, out, _ = run [ "--help" ]
            Expect.equal code 0 "help"
            for c in [ "train"; "inspect"; "schedule" ] do Expect.stringContains out c c
            expectExit 2 (run []) "no command"
            expectExit 2 (run [ "frobnicate" ]) "unknown command"
        }
        test "bad arguments exit 2 with a message naming the option" {
            for args, expected in
                [ [ "train"; "--embedded"; "--epochs"; "0" ], "--epochs: expected a positive integer, got 0"
                  [ "train"; "--embedded"; "--epochs"; "many" ], "--epochs"
                  [ "train"; "--embedded"; "--device"; "tpu" ], "--device: 'tpu': expected cpu or cuda"
                  [ "train"; "--embedded"; "--data"; "/nonexistent/fm" ], "--data and --embedded exclude each other"
                  [ "train"; "--data"; "/nonexistent/fm" ], "/nonexistent/fm: no such folder"
                  [ "train"; "--config"; "/nonexistent.json" ], "--config: /nonexistent.json: no such file"
                  [ "train"; "--embedded"; "--resume"; "/nonexistent.ckpt" ], "--resume: /nonexistent.ckpt: no such file"
                  [ "inspect"; "--config"; config "fashion_mnist.json"; "--model"; "vgg99" ], "unknown model 'vgg99'"
                  [ "schedule"; "--config"; config "fashion_mnist.json" ], "--iters" ] do
                let code, out, err = run args
                expectExit 2 (code, out, err) (String.Join(" ", args))
                Expect.stringContains err expected (String.Join(" ", args))
                noStackTrace err (String.Join(" ", args))
        }
        test "a bad config: every problem at once with its JSON path, exit 2, no stack trace" {
            let dir = tempDir "badcfg"
            let path = Path.Combine(dir, "bad.json")
            File.WriteAllText(path, """{
              "optim_wrapper": {"optimizer": {"type": "SGDD", "lr": 0.1}},
              "param_scheduler": [{"type": "LinearLR", "start_factor": 0.1, "by_epoch": false}, {"type": "CosineAnealingLR"}],
              "train_cfg": {"max_epochs": -1, "val_interval": 1},
              "optimiser": {}
            }""")
            let code, out, err = run [ "train"; "--embedded"; "--config"; path ]
            expectExit 2 (code, out, err) "bad config"
            for p in [ "optim_wrapper.optimizer.type"; "param_scheduler[1]"; "train_cfg.max_epochs: expected a positive integer, got -1"; "train_cfg.val_interval: unknown key"; "optimiser: unknown key" ] do
                Expect.stringContains err p p
            Expect.stringContains err "5 problems" "all at once"
            noStackTrace err "bad config"
            File.WriteAllText(path, """{"optim_wrapper": {"optimizer": {"type": "SGD", "lr": 0.1}},, }""")
            let code, out, err = run [ "train"; "--embedded"; "--config"; path ]
            expectExit 2 (code, out, err) "invalid JSON"
            Expect.stringContains err "not valid JSON (line 1" "line named"
        }
        test "a failure while running exits 1; --verbose adds the stack trace" {
            let dir = tempDir "outfile"
            let file = Path.Combine(dir, "a-file")
            File.WriteAllText(file, "not a folder")
            let code, out, err = run (small @ [ "--out"; file ])
            expectExit 1 (code, out, err) "--out is a file"
            Expect.stringContains err "(--verbose shows the stack trace)" "hint"
            noStackTrace err "without --verbose"
            let code, out, err = run (small @ [ "--out"; file; "--verbose" ])
            expectExit 1 (code, out, err) "--out is a file, verbose"
            Expect.stringContains err "   at " "stack trace"
        }
        test "train --data: IDX folders raw and gzip train on the full split; bad files exit 2 naming the file" {
            for compress in [ false; true ] do
                let dir = tempDir "data"
                writeDataset dir 320 64 compress
                let out = Path.Combine(dir, "out")
                expectExit 0 (run [ "train"; "--data"; dir; "--threads"; "1"; "--epochs"; "2"; "--max-iters"; "2"; "--out"; out ]) "train --data"
                let s = readSummary out
                Expect.equal (s.["train_images"].GetValue<int>(), s.["validation_images"].GetValue<int>()) (320, 64) "the folder's split"
                Expect.equal (s.["epoch_length"].GetValue<int>()) 5 "320 / 64"
            let dir = tempDir "baddata"
            writeDataset dir 320 64 true
            let images = Path.Combine(dir, "train-images-idx3-ubyte.gz")
            let good = File.ReadAllBytes images
            File.WriteAllBytes(images, good.[.. good.Length / 2])
            let code, out, err = run [ "train"; "--data"; dir; "--threads"; "1" ]
            expectExit 2 (code, out, err) "truncated"
            Expect.stringContains err images "names the file"
            Expect.stringContains err "truncated" "truncated"
            File.WriteAllBytes(images, gzip (idxBytes [ 300; 28; 28 ] (Array.zeroCreate (300 * 784))))
            let code, out, err = run [ "train"; "--data"; dir; "--threads"; "1" ]
            expectExit 2 (code, out, err) "mismatched counts"
            Expect.stringContains err (Path.Combine(dir, "train-labels-idx1-ubyte.gz") + ": 320 labels, but " + images + " holds 300 images") "counts"
            File.WriteAllBytes(images, gzip (idxBytes [ 300 ] (Array.zeroCreate 300)))
            let code, out, err = run [ "train"; "--data"; dir; "--threads"; "1" ]
            expectExit 2 (code, out, err) "wrong magic"
            Expect.stringContains err (images + ": wrong magic number 0x00000801") "magic"
        }
        test "train --max-iters: metrics.csv per iteration against the schedule computed here, summary.json, curves.png" {
            let out = tempDir "train"
            let code, stdout, err = run [ "train"; "--embedded"; "--threads"; "1"; "--train-limit"; "640"; "--epochs"; "2"; "--max-iters"; "6"; "--out"; out; "--log-level"; "information" ]
            expectExit 0 (code, stdout, err) "train"
            Expect.stringContains err "paramwise_options -- head.weight:lr=0.025" "--log-level information shows MMEngine's paramwise lines on stderr"
            Expect.isFalse (stdout.Contains "paramwise_options") "logs stay off stdout"
            Expect.stringContains stdout "stopped at --max-iters 6" "says it stopped"
            Expect.stringContains stdout "Resume with: optim train --resume" "says how to resume"
            let rows = csvRows (Path.Combine(out, "metrics.csv"))
            Expect.equal rows.Length 6 "one row per iteration"
            for i, r in List.indexed rows do
                Expect.equal r.["iter"] (string i) "iter"
                let lr0 = float r.["lr_0"]
                Expect.isTrue (close lr0 (expectedLr 0.05 10 2 i)) (sprintf "lr_0 at %d: %g vs %g" i lr0 (expectedLr 0.05 10 2 i))
                Expect.isTrue (close (float r.["lr_18"]) (expectedLr 0.025 10 2 i)) "the head's lr (custom key lr_mult 0.5)"
                Expect.equal r.["momentum_0"] "0.9" "momentum"
                // Accumulation 2: every second iteration steps, and clipping reports the grad norm then.
                Expect.equal r.["stepped"] (if i % 2 = 1 then "1" else "0") "steps every 2nd iteration"
                Expect.equal (r.["grad_norm"] <> "") (i % 2 = 1) "grad norm on steps"
                Expect.equal r.["loss_scale"] "" "no loss scale in fp32"
                Expect.isTrue (float r.["loss"] > 0.0) "a loss"
            let s = readSummary out
            Expect.equal (s.["iterations"].GetValue<int>(), s.["steps"].GetValue<int>(), s.["skipped_steps"].GetValue<int>()) (6, 3, 0) "counts"
            Expect.equal (s.["optim_wrapper"].GetValue<string>()) "OptimWrapper" "wrapper"
            let acc = num s.["val_accuracy"]
            Expect.isTrue (acc >= 0.0 && acc <= 1.0) "an accuracy"
            Expect.isTrue (isPng (Path.Combine(out, "curves.png"))) "curves.png"
            Expect.isTrue (File.Exists(Path.Combine(out, "last.ckpt"))) "last.ckpt"
        }
        test "train with configs/fashion_mnist_amp.json: AmpOptimWrapper, loss scale recorded, the bf16 note on this CPU" {
            let out = tempDir "amp"
            let code, stdout, err = run [ "train"; "--config"; config "fashion_mnist_amp.json"; "--embedded"; "--threads"; "1"; "--train-limit"; "640"; "--epochs"; "2"; "--max-iters"; "4"; "--out"; out ]
            expectExit 0 (code, stdout, err) "amp train"
            let s = readSummary out
            Expect.equal (s.["optim_wrapper"].GetValue<string>()) "AmpOptimWrapper" "wrapper"
            let rows = csvRows (Path.Combine(out, "metrics.csv"))
            Expect.equal rows.Length 4 "rows"
            for r in rows do Expect.equal (float r.["loss_scale"]) 65536.0 "dynamic scale starts at 2^16 and grows only after 2000 clean steps"
            let cpuinfo = try File.ReadAllText "/proc/cpuinfo" with _ -> ""
            if not (cpuinfo.Contains "avx512_bf16" || cpuinfo.Contains "amx_bf16") then
                Expect.stringContains stdout "this CPU has no bf16/fp16 arithmetic units" "the slowness is explained"
        }
        test "resume is exact: 2 epochs equal 1 epoch + resume + 1, at an epoch end, mid-epoch and mid-accumulation" {
            let a = tempDir "resumeA"
            expectExit 0 (run (small @ [ "--out"; a ])) "A: 2 epochs"
            let iterA, stateA, optA = checkpointState (Path.Combine(a, "last.ckpt")) 256 2
            Expect.equal iterA 8 "8 iterations"
            let iter1, state1, _ = checkpointState (Path.Combine(a, "epoch_1.ckpt")) 256 2
            Expect.equal iter1 4 "epoch 1 ends at 4"
            Expect.notEqual state1 stateA "the second epoch changed the parameters"
            // 1 + resume + 1, from A's epoch-1 checkpoint into another folder.
            let c = tempDir "resumeC"
            expectExit 0 (run (small @ [ "--resume"; Path.Combine(a, "epoch_1.ckpt"); "--out"; c ])) "C: resume"
            let iterC, stateC, optC = checkpointState (Path.Combine(c, "last.ckpt")) 256 2
            Expect.equal iterC 8 "C ends at 8"
            Expect.isTrue (stateC = stateA) "identical parameters and buffers"
            Expect.equal optC optA "identical optimizer state"
            // Stopped by --max-iters mid-epoch (after an update) and mid-accumulation, resumed in the same folder.
            for stop in [ 2; 3 ] do
                let b = tempDir (sprintf "resume%d" stop)
                let code, stdout, err = run (small @ [ "--max-iters"; string stop; "--out"; b ])
                expectExit 0 (code, stdout, err) "B: stopped"
                expectExit 0 (run (small @ [ "--resume"; Path.Combine(b, "last.ckpt"); "--out"; b ])) "B: resumed"
                let iterB, stateB, optB = checkpointState (Path.Combine(b, "last.ckpt")) 256 2
                Expect.equal iterB 8 "B ends at 8"
                Expect.isTrue (stateB = stateA) (sprintf "identical parameters after stopping at %d" stop)
                Expect.equal optB optA (sprintf "identical optimizer state after stopping at %d" stop)
                Expect.equal (File.ReadAllLines(Path.Combine(b, "metrics.csv"))) (File.ReadAllLines(Path.Combine(a, "metrics.csv"))) "metrics.csv continues identically"
                Expect.equal (num (readSummary b).["val_loss"]) (num (readSummary a).["val_loss"]) "same validation loss"
        }
        test "a corrupt checkpoint given to --resume exits 2 naming it" {
            let dir = tempDir "corrupt"
            let path = Path.Combine(dir, "bad.ckpt")
            File.WriteAllText(path, "OPTIMCKP but not really")
            let code, out, err = run (small @ [ "--resume"; path; "--out"; dir ])
            expectExit 2 (code, out, err) "corrupt"
            Expect.stringContains err ("--resume: " + path) "names it"
            noStackTrace err "corrupt checkpoint"
        }
        test "Ctrl-C (SIGINT) stops after the step, writes last.ckpt, says how to resume, exits 130; the resume runs" {
            let out = tempDir "sigint"
            // Through `env --default-signal=INT`: a suite started in the background by a non-interactive
            // shell (nohup ... &, some CI runners) inherits SIGINT ignored, and .NET leaves an ignored SIGINT
            // ignored — a terminal's Ctrl-C, which this test stands for, never meets that. env execs dotnet
            // in place, so the pid is the CLI's.
            let psi = ProcessStartInfo("env", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = repoRoot)
            for x in [ "--default-signal=INT"; "dotnet"; cliDll; "train"; "--embedded"; "--threads"; "1"; "--log-every"; "1"; "--out"; out ] do psi.ArgumentList.Add x
            use p = Process.Start psi
            let err = p.StandardError.ReadToEndAsync()
            let lines = ResizeArray<string>()
            let mutable line = p.StandardOutput.ReadLine()
            while not (isNull line) && not (line.StartsWith "epoch 1/8 iter 3/") do
                lines.Add line
                line <- p.StandardOutput.ReadLine()
            use kill = Process.Start("kill", [ "-INT"; string p.Id ])
            kill.WaitForExit()
            let rest = p.StandardOutput.ReadToEnd()
            p.WaitForExit()
            Expect.equal p.ExitCode 130 (sprintf "exit code 130\n%s\n%s" rest err.Result)
            Expect.stringContains rest "interrupted after iteration" "says so"
            Expect.stringContains rest ("Resume with: optim train --resume " + Path.Combine(out, "last.ckpt")) "how to resume"
            let stoppedAt = JsonNode.Parse(File.ReadAllText(Path.Combine(out, "summary.json"))).["iterations"].GetValue<int>()
            Expect.isTrue (stoppedAt >= 3 && stoppedAt < 1120) "stopped early"
            let code, o, e = run [ "train"; "--embedded"; "--threads"; "1"; "--resume"; Path.Combine(out, "last.ckpt"); "--max-iters"; string (stoppedAt + 2); "--out"; out ]
            expectExit 0 (code, o, e) "resumed"
            Expect.stringContains o (sprintf "resumed from %s at iteration %d" (Path.Combine(out, "last.ckpt")) stoppedAt) "resumed where it stopped"
        }
        test "inspect --format json: groups, options and provenance of fashion_mnist.json on the CNN, as MMEngine's rules give them" {
            let code, out, err = run [ "inspect"; "--config"; config "fashion_mnist.json"; "--format"; "json" ]
            expectExit 0 (code, out, err) "inspect"
            let o = json out
            let groups = o.["groups"].AsArray() |> List.ofSeq
            Expect.equal [ for g in groups -> g.["params"].AsArray() |> Seq.map (fun p -> p.GetValue<string>()) |> List.ofSeq ] [ for p in cnnParams -> [ p ] ] "one group per parameter, in order"
            for name, g in List.zip cnnParams groups do
                let options = g.["options"]
                let provenance = g.["provenance"]
                let isNorm = name.Contains ".bn."
                let isHead = name.StartsWith "head."
                let isBias = name.EndsWith ".bias"
                let lr, wd, wdRule, lrRule =
                    if isHead then 0.025, 0.0005, "custom_keys[\"head\"]", "custom_keys[\"head\"]"
                    elif isNorm then 0.05, 0.0, "norm_decay_mult", "optimizer"
                    elif isBias then 0.05, 0.0, "bias_decay_mult", "optimizer"
                    else 0.05, 0.0005, "optimizer", "optimizer"
                Expect.isTrue (close (num options.["lr"]) lr) (sprintf "%s lr" name)
                Expect.isTrue (close (num options.["weight_decay"]) wd) (sprintf "%s weight_decay" name)
                Expect.equal (provenance.["weight_decay"].GetValue<string>()) wdRule (sprintf "%s weight_decay provenance" name)
                Expect.equal (provenance.["lr"].GetValue<string>()) lrRule (sprintf "%s lr provenance" name)
                Expect.equal (num options.["momentum"]) 0.9 "momentum from the optimizer"
                Expect.equal (provenance.["momentum"].GetValue<string>()) "optimizer" "momentum provenance"
            Expect.equal (o.["warnings"].AsArray().Count) 0 "nothing ignored"
            Expect.equal (o.["frozen"].AsArray().Count) 0 "nothing frozen"
            Expect.isTrue (o.["logs"].AsArray() |> Seq.exists (fun l -> l.["msg"].GetValue<string>() = "paramwise_options -- head.weight:lr=0.025")) "MMEngine's log lines"
            let code, table, err = run [ "inspect"; "--config"; config "fashion_mnist.json" ]
            expectExit 0 (code, table, err) "inspect table"
            Expect.stringContains table "custom_keys[\"head\"]" "the table shows the provenance"
        }
        test "inspect warns for custom keys matching nothing and unknown paramwise_cfg keys (MMEngine ignores both)" {
            let dir = tempDir "warn"
            let path = Path.Combine(dir, "warn.json")
            File.WriteAllText(path, """{"optimizer": {"type": "SGD", "lr": 0.1, "weight_decay": 0.0001},
                "paramwise_cfg": {"custom_keys": {"head": {"lr_mult": 2.0}, "backbone.nomatch": {"lr_mult": 0.1}}, "bias_lr_multt": 2.0}}""")
            let code, out, err = run [ "inspect"; "--config"; path; "--format"; "json" ]
            expectExit 0 (code, out, err) "inspect"
            let warnings = (json out).["warnings"].AsArray() |> Seq.map (fun w -> w.GetValue<string>()) |> List.ofSeq
            Expect.equal warnings.Length 2 (sprintf "two warnings: %A" warnings)
            Expect.isTrue (warnings |> List.exists (fun w -> w.StartsWith "paramwise_cfg.bias_lr_multt: unknown paramwise_cfg key")) "unknown key"
            Expect.isTrue (warnings |> List.exists (fun w -> w.StartsWith "paramwise_cfg.custom_keys[\"backbone.nomatch\"]: " && w.Contains "matches no parameter")) "unmatched key"
        }
        test "inspect --model-spec: a golden model's tied and frozen parameters, as the spec declares them" {
            let dir = tempDir "spec"
            let cfg = Path.Combine(dir, "sgd.json")
            File.WriteAllText(cfg, """{"optimizer": {"type": "SGD", "lr": 0.01}}""")
            let spec = Path.Combine(Golden.dir, "paramgroups_tied_frozen.json")
            let code, out, err = run [ "inspect"; "--config"; cfg; "--model-spec"; spec; "--format"; "json" ]
            expectExit 0 (code, out, err) "inspect spec"
            let o = json out
            let s = (Golden.load "paramgroups_tied_frozen.json").["model"].["spec"]
            let ties = [ for t in s.["ties"].AsArray() -> t.["param"].GetValue<string>(), t.["shares"].GetValue<string>() ] |> List.sort
            let dups = [ for d in o.["duplicates"].AsArray() -> d.["param"].GetValue<string>(), d.["same_as"].GetValue<string>() ] |> List.sort
            Expect.equal dups ties "duplicates are the ties"
            let frozen = [ for f in s.["frozen"].AsArray() -> f.GetValue<string>() ] |> List.sort
            Expect.equal ([ for f in o.["frozen"].AsArray() -> f.GetValue<string>() ] |> List.sort) frozen "frozen"
            for m in [ "resnet18"; "mobilenet_v2" ] do
                let code, out, err = run [ "inspect"; "--config"; cfg; "--model"; m; "--format"; "json" ]
                expectExit 0 (code, out, err) m
                Expect.isGreaterThan ((json out).["groups"].AsArray().Count) 0 m
        }
        test "schedule --format json/csv against LinearLR warm-up + cosine computed here; --plot writes a PNG" {
            let png = Path.Combine(tempDir "sched", "schedule.png")
            let code, out, err = run [ "schedule"; "--config"; config "fashion_mnist.json"; "--iters"; "360"; "--epoch-length"; "120"; "--format"; "json"; "--plot"; png ]
            expectExit 0 (code, out, err) "schedule"
            Expect.isFalse (err.Contains "before `optimizer.step()`") "no order warning: schedule steps no optimizer on purpose"
            let points = (json out).["per_iter"].AsArray() |> List.ofSeq
            Expect.equal points.Length 360 "one entry per iteration"
            for t, p in List.indexed points do
                Expect.equal (p.["iter"].GetValue<int>()) t "iter"
                let lr = p.["lr"].AsArray() |> Seq.map num |> Array.ofSeq
                Expect.equal lr.Length 19 "every group"
                for g in 0 .. 18 do
                    let baseLr = if g >= 17 then 0.025 else 0.05
                    Expect.isTrue (close lr.[g] (expectedLr baseLr 120 3 t)) (sprintf "lr[%d] at %d: %g vs %g" g t lr.[g] (expectedLr baseLr 120 3 t))
                Expect.isTrue (p.["momentum"].AsArray() |> Seq.forall (fun m -> num m = 0.9)) "momentum unscheduled"
            Expect.isTrue (isPng png) "plot"
            let code, csv, err = run [ "schedule"; "--config"; config "fashion_mnist.json"; "--iters"; "5"; "--epoch-length"; "2"; "--format"; "csv" ]
            expectExit 0 (code, csv, err) "csv"
            let lines = csv.Trim().Split('\n')
            Expect.equal lines.Length 6 "header + 5"
            Expect.stringStarts lines.[0] "iter,lr_0,lr_1," "header"
            Expect.isTrue (close (float (lines.[2].Split(',').[1])) (0.05 * (0.1 + 0.9 / 99.0))) "iteration 1: 0.05 * (0.1 + 0.9 / 99)"
        }
        test "the README's inspect and schedule examples are what the commands print" {
            let readme = File.ReadAllText(Path.Combine(repoRoot, "README.md"))
            for command in [ "inspect --config configs/fashion_mnist.json"; "schedule --config configs/fashion_mnist.json --iters 1120 --every 140" ] do
                let marker = "$ dotnet run --project src/Cli -- " + command + "\n"
                let start = readme.IndexOf marker
                Expect.isGreaterThan start 0 (sprintf "README shows `%s`" command)
                let body = readme.Substring(start + marker.Length)
                let shown = body.Substring(0, body.IndexOf "```").TrimEnd()
                let code, out, err = run (List.ofArray (command.Split ' '))
                expectExit 0 (code, out, err) command
                Expect.equal (out.TrimEnd()) shown command
        }
        test "examples/Seed runs every code block of the seed and prints what the seed prints" {
            let baseDir = DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar))
            let dll = Path.Combine(repoRoot, "examples", "Seed", "bin", baseDir.Parent.Name, baseDir.Name, "Seed.dll")
            let psi = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
            psi.ArgumentList.Add dll
            use p = Process.Start psi
            let out = p.StandardOutput.ReadToEnd()
            p.WaitForExit()
            Expect.equal p.ExitCode 0 out
            Expect.stringContains out "every printed value matches" "no unexplained difference"
            for section in [ "1.1"; "1.2"; "2.1"; "2.2"; "3.1"; "3.2"; "OptimWrapperDict"; "norm_decay_mult=0"; "custom_keys"; "LayerDecayOptimWrapperConstructor" ] do
                Expect.stringContains out section section
        }
    ]

[<Tests>]
let tests = testList "CLI" [ idxTests; commandTests ]
