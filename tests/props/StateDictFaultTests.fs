/// The per-object state dicts under bad input: OptimWrapperDict all-or-nothing, non-finite values,
/// other schedulers' states, bad counters and scaler states, dtype mismatches, damaged files. Each
/// failure names what differs, and the object is left exactly as it was.
module Optim.Tests.StateDictFaultTests

open System
open System.IO
open System.Security.Cryptography
open System.Text
open Expecto
open TorchSharp
open Optim
open Optim.Tests.TestSupport

let private mlp seed =
    torch.manual_seed (int64 seed) |> ignore
    torch.nn.Sequential(torch.nn.Linear(3L, 4L), torch.nn.ReLU(), torch.nn.Linear(4L, 1L))

let private train (model: Modules.Sequential) (w: OptimWrapper) n =
    torch.manual_seed 5L |> ignore
    let dtype = (Seq.head (model.parameters())).dtype
    for _ in 1..n do
        let x, y = torch.randn(2L, 3L, dtype = dtype), torch.randn(2L, 1L, dtype = dtype)
        w.update_params(torch.nn.functional.mse_loss(model.forward x, y))

let private fingerprint (w: OptimWrapper) =
    let sd = w.state_dict()
    sd.ToJson(false), sd.optimizer_state

/// An Optim state-dict file written independently of the library, from the documented layout:
/// "OPTIMSD\0", int32 version, int64 payload length, payload, SHA-256 of all that; the payload is an
/// int32-prefixed JSON header and an int64-prefixed optimizer state.
let private handWritten (header: string) (state: byte[]) =
    use payload = new MemoryStream()
    (use w = new BinaryWriter(payload, Encoding.UTF8, true)
     let h = Encoding.UTF8.GetBytes header
     w.Write h.Length
     w.Write h
     w.Write(int64 state.Length)
     w.Write state)
    use file = new MemoryStream()
    (use w = new BinaryWriter(file, Encoding.UTF8, true)
     w.Write(Encoding.ASCII.GetBytes "OPTIMSD\000")
     w.Write 2
     w.Write(payload.Length)
     w.Write(payload.ToArray()))
    let all = file.ToArray()
    Array.append all (SHA256.HashData all)

/// A saved state's lossless header text (to edit and rewrite with `handWritten`).
let private headerOf (sd: OptimStateDict) =
    use ms = new MemoryStream()
    sd.save ms
    let bytes = ms.ToArray()
    let len = BitConverter.ToInt32(bytes, 20)
    Encoding.UTF8.GetString(bytes, 24, len)

[<Tests>]
let tests =
    testList "state dict faults" [
        test "OptimWrapperDict loads all or nothing: a bad 'disc' state leaves 'gen' untouched" {
            let m1, m2 = mlp 1, mlp 2
            let gen = OptimWrapper(torch.optim.SGD(parametersOf m1, 0.1, momentum = 0.9))
            let disc = OptimWrapper(torch.optim.SGD(parametersOf m2, 0.1, momentum = 0.9))
            train m1 gen 2
            train m2 disc 2
            let d = new OptimWrapperDict(("gen", gen), ("disc", disc))
            let genOther = OptimWrapper(torch.optim.SGD(parametersOf (mlp 3), 0.3, momentum = 0.5))
            train (mlp 3) genOther 1
            let adam = OptimWrapper(torch.optim.Adam(parametersOf (mlp 4), 0.01))
            let states = dict [ "gen", genOther.state_dict(); "disc", adam.state_dict() ]
            let before = fingerprint gen, fingerprint disc
            let ex = throws<StateDictException> (fun () -> d.load_state_dict(Collections.Generic.Dictionary states)) "disc"
            Expect.stringContains ex.Message "disc" "names the wrapper"
            Expect.stringContains ex.Message "Adam" "and the mismatch"
            Expect.equal (fingerprint gen, fingerprint disc) before "nothing changed"
        }
        test "NaN and infinite group values and extra keys round-trip through a file" {
            let m = mlp 1
            let w = OptimWrapper(torch.optim.SGD(parametersOf m, 0.1, momentum = 0.9))
            w.param_groups.[0].["lr"] <- box nan
            w.param_groups.[0].["weight_decay"] <- box infinity
            w.param_groups.[0].["note"] <- box "nan"
            w.param_groups.[0].["bounds"] <- box (struct (-infinity, infinity))
            let path = Path.Combine(Path.GetTempPath(), sprintf "optim-%O.sd" (Guid.NewGuid()))
            w.state_dict().save path
            let w2 = OptimWrapper(torch.optim.SGD(parametersOf (mlp 2), 0.5, momentum = 0.9))
            w2.load_state_dict(OptimStateDict.load path)
            File.Delete path
            Expect.isTrue (Double.IsNaN(unbox<float> w2.param_groups.[0].["lr"])) "lr NaN"
            Expect.equal (w2.param_groups.[0].["weight_decay"]) (box infinity) "weight_decay inf"
            Expect.equal (w2.param_groups.[0].["bounds"]) (box (struct (-infinity, infinity))) "a tuple of infinities"
            Expect.equal (w2.param_groups.[0].["note"]) (box "nan") "the string 'nan' stays a string"
        }
        test "a scheduler state of another kind or for another parameter is refused, the scheduler unchanged" {
            let m = mlp 1
            let w = OptimWrapper(torch.optim.SGD(parametersOf m, 0.1, momentum = 0.9))
            let linear = LinearLR(w, start_factor = 0.5, ``end`` = 4L, by_epoch = false)
            linear.step ()
            let cosine = CosineAnnealingLR(w, T_max = 5L, by_epoch = false)
            let before = Py.Repr(cosine.state_dict())
            let ex = throws<ArgumentException> (fun () -> cosine.load_state_dict(linear.state_dict())) "LinearLR into CosineAnnealingLR"
            Expect.stringContains ex.Message "'start_factor'" "names a key the scheduler does not have"
            Expect.stringContains ex.Message "another kind of scheduler" "says why"
            Expect.equal (Py.Repr(cosine.state_dict())) before "unchanged"
            let momentum = LinearMomentum(w, start_factor = 0.5, ``end`` = 4L, by_epoch = false)
            let linearBefore = Py.Repr(linear.state_dict())
            let ex2 = throws<ArgumentException> (fun () -> linear.load_state_dict(momentum.state_dict())) "momentum into LinearLR"
            Expect.isTrue (ex2.Message.Contains "'use_betas'" || ex2.Message.Contains "'momentum'") ex2.Message
            Expect.equal (Py.Repr(linear.state_dict())) linearBefore "unchanged"
            let onlyParam = Collections.Generic.Dictionary<string, obj>(dict [ "param_name", box "momentum" ])
            let ex3 = throws<ArgumentException> (fun () -> linear.load_state_dict(onlyParam)) "param_name"
            Expect.stringContains ex3.Message "schedules 'momentum', this LinearLR schedules 'lr'" "names both"
        }
        test "counters that are missing, out of range, negative or past the run length are refused, naming the counter" {
            let m = mlp 1
            let w = OptimWrapper(torch.optim.SGD(parametersOf m, 0.1, momentum = 0.9), 3)
            w.initialize_count_status(m, 0, 10)
            train m w 4
            let sd = w.state_dict()
            let header = headerOf sd
            Expect.stringContains header "\"inner_count\":4" "the header as saved"
            let before = fingerprint w
            let cases =
                [ header.Replace("\"inner_count\":4,", ""), "inner_count: missing"
                  header.Replace("\"inner_count\":4", "\"inner_count\":4294967297"), "inner_count: 4294967297 is out of range"
                  header.Replace("\"inner_count\":4", "\"inner_count\":-1"), "inner_count must be an integer in [0, 2147483647], got -1"
                  header.Replace("\"inner_count\":4", "\"inner_count\":11"), "inner_count 11 is past max_counts 10"
                  header.Replace("\"max_counts\":10", "\"max_counts\":-5"), "max_counts must be -1 (unknown)"
                  header.Replace("\"inner_count\":4", "\"inner_count\":4.5"), "inner_count: must be an integer, got 4.5" ]
            for (text, expected) in cases do
                Expect.notEqual text header "the edit applies"
                use ms = new MemoryStream(handWritten text sd.optimizer_state)
                let ex = throws<StateDictException> (fun () -> w.load_state_dict(OptimStateDict.load ms)) expected
                Expect.stringContains ex.Message expected "specific"
                Expect.equal (fingerprint w) before "unchanged"
            // The hand-written file itself is valid: unedited, it loads.
            use ok = new MemoryStream(handWritten header sd.optimizer_state)
            w.load_state_dict(OptimStateDict.load ok)
        }
        test "scaler states with scale 0, inf or NaN, growth_factor below 1, backoff outside (0, 1) are refused; wrapper and scaler unchanged" {
            let m = mlp 1
            let w = AmpOptimWrapper(torch.optim.SGD(parametersOf m, 0.1, momentum = 0.9), dtype = "bfloat16")
            train m w 2
            let before = fingerprint w, Py.Repr(w.loss_scaler.state_dict())
            for (key, value: obj, expected) in
                [ "scale", box 0.0, "'scale' must be a positive finite float32, got 0.0"
                  "scale", box infinity, "got inf"
                  "scale", box nan, "got nan"
                  "growth_factor", box 0.1, "'growth_factor' must be a finite number > 1, got 0.1"
                  "backoff_factor", box 1.5, "'backoff_factor' must be a number in (0, 1)"
                  "growth_interval", box 0L, "'growth_interval' must be an integer >= 1"
                  "_growth_tracker", box 5000L, "'_growth_tracker' must be an integer in [0, growth_interval)" ] do
                let sd = w.state_dict()
                let scaler = sd.entries.["loss_scaler"] :?> Collections.Generic.OrderedDictionary<string, obj>
                scaler.[key] <- value
                let ex = throws<StateDictException> (fun () -> w.load_state_dict sd) key
                Expect.stringContains ex.Message expected "specific"
                Expect.stringContains ex.Message "loss_scaler" "where"
                Expect.equal (fingerprint w, Py.Repr(w.loss_scaler.state_dict())) before "unchanged"
        }
        test "a float64 optimizer state into a float32 model names the dtypes (not 'read beyond the end of the stream')" {
            let m64 = mlp 1
            m64.``to``(torch.float64) |> ignore
            let w64 = OptimWrapper(torch.optim.Adam(parametersOf m64, 0.01))
            train m64 w64 2
            let m = mlp 1
            let w = OptimWrapper(torch.optim.Adam(parametersOf m, 0.01))
            train m w 1
            let before = fingerprint w
            let ex = throws<StateDictException> (fun () -> w.load_state_dict(w64.state_dict())) "float64"
            Expect.stringContains ex.Message "dtype float64 where the parameter is float32" "names both dtypes"
            Expect.stringContains ex.Message "param_groups[0].params[0]" "and the parameter"
            Expect.equal (fingerprint w) before "unchanged"
            // SGD's momentum buffer is created lazily: the check must see it too.
            let s64 = OptimWrapper(torch.optim.SGD(parametersOf m64, 0.01, momentum = 0.9))
            train m64 s64 1
            let s = OptimWrapper(torch.optim.SGD(parametersOf m, 0.01, momentum = 0.9))
            let ex2 = throws<StateDictException> (fun () -> s.load_state_dict(s64.state_dict())) "lazy float64"
            Expect.stringContains ex2.Message "dtype float64 where the parameter is float32" "lazy buffers too"
        }
        test "a state-dict save that fails leaves the previous file intact; flipped bits and truncations are rejected" {
            let m = mlp 1
            let w = OptimWrapper(torch.optim.SGD(parametersOf m, 0.1, momentum = 0.9))
            train m w 2
            let path = Path.Combine(Path.GetTempPath(), sprintf "optim-%O.sd" (Guid.NewGuid()))
            w.state_dict().save path
            let good = File.ReadAllBytes path
            w.param_groups.[0].["handle"] <- box (obj ())
            throws<ArgumentException> (fun () -> w.state_dict().save path) "unserialisable extra key" |> ignore
            Expect.equal (File.ReadAllBytes path) good "previous file intact"
            w.param_groups.[0].Remove "handle" |> ignore
            let before = fingerprint w
            let rng = Random 7
            for i in 1..600 do
                let flipped = Array.copy good
                let pos = if i <= good.Length then i - 1 else rng.Next good.Length
                flipped.[pos] <- flipped.[pos] ^^^ (1uy <<< rng.Next 8)
                use ms = new MemoryStream(flipped)
                throws<StateDictException> (fun () -> w.load_state_dict(OptimStateDict.load ms)) (sprintf "flip at %d" pos) |> ignore
            for n in 0 .. good.Length - 1 do
                use ms = new MemoryStream(good, 0, n)
                let ex = throws<StateDictException> (fun () -> OptimStateDict.load ms |> ignore) (sprintf "%d bytes" n)
                Expect.isTrue (ex.Message.Contains "truncated" || n = 0) ex.Message
            Expect.equal (fingerprint w) before "unchanged"
            File.Delete path
            // A file of the first format (no checksum, version 1) is refused by its version.
            let v1 = Array.append (Encoding.ASCII.GetBytes "OPTIMSD\000") (Array.append (BitConverter.GetBytes 1) (Array.zeroCreate 40))
            use old = new MemoryStream(v1)
            let ex = throws<StateDictException> (fun () -> OptimStateDict.load old |> ignore) "version 1"
            Expect.stringContains ex.Message "state dict format version 1 is not supported (this library reads 2)" "names the versions"
        }
    ]
