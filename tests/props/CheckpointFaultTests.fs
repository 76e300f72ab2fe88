/// A user's bad day: saves that fail or are killed part way, truncated and bit-flipped files,
/// streams that break, non-seekable streams. Every failure is specific, and nothing is applied.
module Optim.Tests.CheckpointFaultTests

open System
open System.IO
open System.IO.Compression
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Optim
open Optim.Tests.TestSupport
open Optim.Tests.CheckpointTests

/// A stream that accepts (or yields) n bytes, then throws IOException; optionally not seekable.
type Faulty(inner: Stream, failAfter: int64, seekable: bool) =
    inherit Stream()
    let mutable count = 0L
    member _.Count = count
    override _.CanRead = inner.CanRead
    override _.CanSeek = seekable && inner.CanSeek
    override _.CanWrite = inner.CanWrite
    override _.Length = if seekable then inner.Length else raise (NotSupportedException())
    override _.Position
        with get () = if seekable then inner.Position else raise (NotSupportedException())
        and set v = if seekable then inner.Position <- v else raise (NotSupportedException())
    override _.Flush() = inner.Flush()
    override _.Seek(o, origin) = if seekable then inner.Seek(o, origin) else raise (NotSupportedException())
    override _.SetLength v = inner.SetLength v
    override _.Read(buffer: byte[], offset, n) =
        if count >= failAfter then raise (IOException "simulated read failure")
        let r = inner.Read(buffer, offset, int (min (int64 n) (failAfter - count)))
        count <- count + int64 r
        r
    override _.Write(buffer: byte[], offset, n) =
        if count + int64 n > failAfter then
            let part = int (failAfter - count)
            inner.Write(buffer, offset, part)
            count <- failAfter
            raise (IOException "simulated write failure (disk full)")
        inner.Write(buffer, offset, n)
        count <- count + int64 n

/// A small but complete training state: AMP, accumulation mid-way (pending grads), two schedulers.
let private trainingState seed =
    let m = net seed
    let w = AmpOptimWrapper(torch.optim.Adam(parametersOf m, 0.01), kwargs [ "init_scale", box 512.0; "growth_interval", box 2L ], "bfloat16", 3) :> OptimWrapper
    w.initialize_count_status(m, 0, 20)
    let s: ParamScheduler list = [ LinearLR(w, start_factor = 0.5, ``end`` = 4L, by_epoch = false); LinearMomentum(w, start_factor = 0.9, ``end`` = 4L, by_epoch = false) ]
    for b in data 5 do step m w s b
    m, w, s

let private checkpointBytes (m, w, s) =
    use ms = new MemoryStream()
    Checkpoint.Save(ms, m, w, s, JsonObject(dict [ "epoch", JsonValue.Create 3 :> JsonNode ]))
    ms.ToArray()

[<Tests>]
let tests =
    testList "checkpoint faults" [
        test "every truncation of a real checkpoint is rejected, naming the truncation, and nothing is applied" {
            let bytes = checkpointBytes (trainingState 1)
            let (m, w, s) = trainingState 2
            let before = snapshot m w s
            for n in 0 .. bytes.Length - 1 do
                use ms = new MemoryStream(bytes, 0, n)
                let ex = throws<CheckpointException> (fun () -> Checkpoint.Load(ms, m, w, s) |> ignore) (sprintf "%d bytes" n)
                Expect.isTrue (ex.Message.Contains "truncated checkpoint" || (n = 0 && ex.Message.Contains "empty input"))
                    (sprintf "%d of %d bytes: %s" n bytes.Length ex.Message)
            Expect.equal (snapshot m w s) before "nothing applied"
            Expect.isGreaterThan bytes.Length 1000 "a real checkpoint"
        }
        test "sampled single-bit flips anywhere in a checkpoint are rejected (checksum, magic, version or length), nothing applied" {
            let bytes = checkpointBytes (trainingState 1)
            let (m, w, s) = trainingState 2
            let before = snapshot m w s
            let rng = Random 2024
            let positions = [ yield! [ 0 .. 20 ]; yield! [ bytes.Length - 40 .. bytes.Length - 1 ]; for _ in 1..2000 -> rng.Next bytes.Length ]
            for pos in positions do
                let bit = rng.Next 8
                let flipped = Array.copy bytes
                flipped.[pos] <- flipped.[pos] ^^^ (1uy <<< bit)
                use ms = new MemoryStream(flipped)
                let ex = throws<CheckpointException> (fun () -> Checkpoint.Load(ms, m, w, s) |> ignore) (sprintf "bit %d of byte %d" bit pos)
                let specific = [ "checksum"; "bad magic"; "format version"; "truncated"; "payload length" ]
                Expect.isTrue (specific |> List.exists ex.Message.Contains) (sprintf "byte %d bit %d: %s" pos bit ex.Message)
            Expect.equal (snapshot m w s) before "nothing applied"
        }
        test "a save that fails part way through the file leaves the previous checkpoint intact and loadable" {
            let path = tempPath ()
            let (m, w, s) = trainingState 1
            Checkpoint.Save(path, m, w, s, JsonObject(dict [ "good", JsonValue.Create true :> JsonNode ]))
            let good = File.ReadAllBytes path
            // A buffer on the meta device has no data: writing it throws after the manifest and the
            // parameters are already written.
            let broken = net 1
            (broken.children() |> Seq.last).register_buffer("zz_meta", torch.empty([| 3L |], device = torch.META))
            Expect.isTrue (broken.state_dict().ContainsKey "3.zz_meta") "the buffer is in the state dict"
            let wb = OptimWrapper(torch.optim.SGD(parametersOf broken, 0.1))
            throws<exn> (fun () -> Checkpoint.Save(path, broken, wb)) "meta buffer" |> ignore
            Expect.equal (File.ReadAllBytes path) good "previous file untouched"
            let folder = Path.GetDirectoryName path
            Expect.isEmpty (Directory.GetFiles(folder, "." + Path.GetFileName path + ".*.tmp")) "temporary file removed"
            let (m2, w2, s2) = trainingState 3
            let meta = Checkpoint.Load(path, m2, w2, s2)
            Expect.isTrue (meta.["good"].GetValue<bool>()) "the previous checkpoint loads"
            Expect.equal (snapshot m2 w2 s2) (snapshot m w s) "and restores its state"
            File.Delete path
        }
        test "a stream that fails after n bytes: Save throws the stream's error; Load reports it and applies nothing" {
            let (m, w, s) = trainingState 1
            let bytes = checkpointBytes (m, w, s)
            for n in [ 0L; 7L; 20L; 100L; int64 bytes.Length / 2L; int64 bytes.Length - 1L ] do
                use target = new MemoryStream()
                use faulty = new Faulty(target, n, false)
                throws<IOException> (fun () -> Checkpoint.Save(faulty, m, w, s, JsonObject(dict [ "epoch", JsonValue.Create 3 :> JsonNode ]))) (sprintf "write after %d" n) |> ignore
            let (m2, w2, s2) = trainingState 2
            let before = snapshot m2 w2 s2
            for n in [ 0L; 7L; 20L; 100L; int64 bytes.Length / 2L; int64 bytes.Length - 1L ] do
                use faulty = new Faulty(new MemoryStream(bytes), n, false)
                Expect.throws (fun () -> Checkpoint.Load(faulty, m2, w2, s2) |> ignore) (sprintf "read after %d" n)
            Expect.equal (snapshot m2 w2 s2) before "nothing applied"
        }
        test "checkpoints and state dicts load from non-seekable streams (GZip), reading exactly their bytes" {
            let (m, w, s) = trainingState 1
            use packed = new MemoryStream()
            do
                use gz = new GZipStream(packed, CompressionLevel.Fastest, true)
                Checkpoint.Save(gz, m, w, s)
                w.state_dict().save gz
                gz.Write([| 42uy |])
            packed.Position <- 0L
            use gz = new GZipStream(packed, CompressionMode.Decompress)
            let (m2, w2, s2) = trainingState 2
            Checkpoint.Load(gz, m2, w2, s2) |> ignore
            Expect.equal (snapshot m2 w2 s2) (snapshot m w s) "checkpoint from a GZipStream"
            let sd = OptimStateDict.load gz
            Expect.equal (sd.ToJson()) (w.state_dict().ToJson()) "state dict from the same stream, right after"
            Expect.equal (gz.ReadByte()) 42 "nothing read past the end"
        }
        test "a save killed mid-write (SIGKILL of a child process) leaves the previous checkpoint loadable" {
            let folder = tempFolder ()
            try
                let path = Path.Combine(folder, "big.ckpt")
                let tmpFiles () = Directory.GetFiles(folder, ".big.ckpt.*.tmp")
                let mutable killedMidWrite = 0
                let mutable attempt = 0
                while killedMidWrite = 0 && attempt < 5 do
                    attempt <- attempt + 1
                    let psi = Diagnostics.ProcessStartInfo("dotnet", RedirectStandardOutput = true, UseShellExecute = false)
                    psi.ArgumentList.Add(typeof<ResumeMatrix.Case>.Assembly.Location)
                    psi.ArgumentList.Add "--checkpoint-save-loop"
                    psi.ArgumentList.Add path
                    use p = Diagnostics.Process.Start psi
                    // Wait for a first complete save, then for the next one to be part-written.
                    let first = p.StandardOutput.ReadLine()
                    Expect.stringStarts first "saved" "the child saved once"
                    let deadline = DateTime.UtcNow.AddSeconds 60.0
                    while DateTime.UtcNow < deadline && not (tmpFiles () |> Array.exists (fun f -> FileInfo(f).Length > 1_000_000L)) do
                        Threading.Thread.Sleep 1
                    p.Kill()
                    p.WaitForExit()
                    if tmpFiles () |> Array.exists (fun f -> FileInfo(f).Length > 0L) then killedMidWrite <- killedMidWrite + 1
                    for f in tmpFiles () do File.Delete f
                Expect.isGreaterThan killedMidWrite 0 "the kill landed mid-write (a partial temporary file was left)"
                let m = ResumeMatrix.bigModel ()
                let w = ResumeMatrix.bigWrapper m
                let meta = Checkpoint.Load(path, m, w)
                Expect.isGreaterThanOrEqual (meta.["generation"].GetValue<int>()) 0 "a whole checkpoint"
                let expected = ResumeMatrix.bigModel ()
                Expect.equal (tensorBytes (m.parameters() |> Seq.head)) (tensorBytes (expected.parameters() |> Seq.head)) "its parameters"
            finally
                Directory.Delete(folder, true)
        }
    ]
