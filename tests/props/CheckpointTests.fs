/// Training checkpoints (Optim.Checkpoint): exact resume, validation before anything is applied
/// (full snapshots compared), atomic saves, checksums.
module Optim.Tests.CheckpointTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Optim
open Optim.Tests.TestSupport

let tensorBytes (t: torch.Tensor) =
    use c = t.detach().cpu().contiguous()
    c.bytes.ToArray()

/// Everything a checkpoint restores, as comparable data: model entries, grads, wrapper state
/// (header and optimizer bytes, per member for a dict), scheduler states, RNG.
let snapshot (model: torch.nn.Module) (w: OptimWrapper) (schedulers: ParamScheduler list) =
    let wrapperState (x: OptimWrapper) = let sd = x.state_dict() in sd.ToJson(false), sd.optimizer_state
    let wrappers =
        match w with
        | :? OptimWrapperDict as d -> [ for kv in d.items() -> kv.Key, wrapperState kv.Value ]
        | _ -> [ "", wrapperState w ]
    [ for kv in model.state_dict() -> kv.Key, tensorBytes kv.Value ],
    [ for struct (n, p) in model.named_parameters() -> n, (if isNull p.grad then None else Some(tensorBytes p.grad)) ],
    wrappers,
    [ for s in schedulers -> Py.Repr(s.state_dict()) ],
    tensorBytes (torch.random.get_rng_state())

let net seed =
    torch.manual_seed (int64 seed) |> ignore
    torch.nn.Sequential(torch.nn.Linear(3L, 5L), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(5L, 1L))

let data n =
    torch.manual_seed 1234L |> ignore
    [ for _ in 1..n -> torch.randn(4L, 3L), torch.randn(4L, 1L) ]

let step (model: torch.nn.Module) (w: OptimWrapper) (schedulers: ParamScheduler list) (x: torch.Tensor, y: torch.Tensor) =
    let dtype = (Seq.head (model.parameters())).dtype
    let loss =
        use _ = w.optim_context model
        torch.nn.functional.mse_loss((model :?> Modules.Sequential).forward(x.``to`` dtype), y.``to`` dtype)
    w.update_params loss
    ParamSchedulerHook.after_train_iter schedulers

let tempPath () = Path.Combine(Path.GetTempPath(), sprintf "optim-ckpt-%O.ckpt" (Guid.NewGuid()))

let tempFolder () =
    let d = Path.Combine(Path.GetTempPath(), sprintf "optim-ckpt-%O" (Guid.NewGuid()))
    Directory.CreateDirectory d |> ignore
    d

/// Runs this test assembly as a child `dotnet` process with the given arguments: exit code, stdout, stderr.
let runChild (args: string list) (timeout: TimeSpan) =
    let psi = Diagnostics.ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    psi.ArgumentList.Add(typeof<ResumeMatrix.Case>.Assembly.Location)
    for a in args do psi.ArgumentList.Add a
    use p = Diagnostics.Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit(int timeout.TotalMilliseconds)) then
        p.Kill true
        failtestf "child process timed out after %O" timeout
    p.ExitCode, out.Result, err.Result

/// Which part of two checkpoints of a case differs (for a failure message).
let private differingParts (c: ResumeMatrix.Case) (a: string) (b: string) : string list =
    let load (path: string) =
        let (m, w, s) as o = ResumeMatrix.build c 5
        Checkpoint.Load(path, m, w, s) |> ignore
        snapshot m w s
    let (m1, g1, w1, s1, r1), (m2, g2, w2, s2, r2) = load a, load b
    [ if m1 <> m2 then "model"
      if g1 <> g2 then "grads"
      if w1 <> w2 then "wrapper"
      if s1 <> s2 then "schedulers"
      if r1 <> r2 then "rng" ]

[<Tests>]
let tests =
    testList "checkpoint" [
        test "resume mid-accumulation from a file is bit-identical (params, grads, optimizer, counters, scheduler, RNG, metadata)" {
            let batches = data 10
            let build seed =
                let m = net seed
                let w = OptimWrapper(torch.optim.SGD(parametersOf m, 0.1, momentum = 0.9), 3)
                w.initialize_count_status(m, 0, 10)
                let s = LinearLR(w, start_factor = 0.25, ``end`` = 6L, by_epoch = false) :> ParamScheduler
                m, w, [ s ]
            let ma, wa, sa = build 1
            torch.manual_seed 7L |> ignore
            for b in batches do step ma wa sa b
            let mb, wb, sb = build 1
            torch.manual_seed 7L |> ignore
            for b in List.take 4 batches do step mb wb sb b
            let path = tempPath ()
            Checkpoint.Save(path, mb, wb, sb, JsonObject(dict [ "iteration", JsonValue.Create 4 :> JsonNode ]))
            let mc, wc, sc = build 2
            let meta = Checkpoint.Load(path, mc, wc, sc)
            File.Delete path
            Expect.equal (meta.["iteration"].GetValue<int>()) 4 "metadata"
            Expect.equal (snapshot mc wc sc) (snapshot mb wb sb) "everything restored"
            for b in List.skip 4 batches do step mc wc sc b
            Expect.equal (snapshot mc wc sc) (snapshot ma wa sa) "bit-identical to the uninterrupted run"
            // MMEngine's parts alone (model and wrapper state dicts, no pending gradients, no RNG) do not get there.
            let md, wd, sd = build 3
            md.load_state_dict(mb.state_dict()) |> ignore
            wd.load_state_dict(wb.state_dict())
            for b in List.skip 4 batches do step md wd sd b
            let paramsOf (m: torch.nn.Module) = [ for p in m.parameters() -> tensorBytes p ]
            Expect.notEqual (paramsOf md) (paramsOf ma) "without the checkpoint's extras the resumed run ends elsewhere"
        }
        test "checkpoints that do not fit are refused, naming where, and nothing changes (full snapshot)" {
            let ampWrapper (m: torch.nn.Module) = AmpOptimWrapper(torch.optim.SGD(parametersOf m, 0.1, momentum = 0.9), dtype = "bfloat16") :> OptimWrapper
            let plain (m: torch.nn.Module) = OptimWrapper(torch.optim.SGD(parametersOf m, 0.1, momentum = 0.9))
            let saved (make: torch.nn.Module -> OptimWrapper) (m: torch.nn.Module) (schedulers: OptimWrapper -> ParamScheduler list) =
                let w = make m
                let s = schedulers w
                for b in data 3 do step m w s b
                use ms = new MemoryStream()
                Checkpoint.Save(ms, m, w, s)
                ms.ToArray()
            let noSchedulers (_: OptimWrapper) : ParamScheduler list = []
            let oneLinear (w: OptimWrapper) : ParamScheduler list = [ LinearLR(w, by_epoch = false) ]
            let net64 seed = let m = net seed in m.``to``(torch.float64) |> ignore; m
            let wide seed =
                torch.manual_seed (int64 seed) |> ignore
                torch.nn.Sequential(torch.nn.Linear(3L, 6L), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(6L, 1L))
            let cases : (string * byte[] * (unit -> torch.nn.Module * OptimWrapper * ParamScheduler list) * string * string) list =
                [ "float64 model into float32", saved plain (net64 1) noSchedulers, (fun () -> let m = net 2 in m, plain m, []),
                  "model[\"0.weight\"]", "dtype float64 where the parameter is float32"
                  "other shapes", saved plain (wide 1) noSchedulers, (fun () -> let m = net 2 in m, plain m, []),
                  "model[\"0.weight\"]", "shape [6, 3] where the parameter has shape [5, 3]"
                  "AMP state into a plain wrapper", saved ampWrapper (net 1) noSchedulers, (fun () -> let m = net 2 in m, plain m, []),
                  "optim_wrapper", "an AmpOptimWrapper state where the wrapper is an OptimWrapper"
                  "plain state into an AMP wrapper", saved plain (net 1) noSchedulers, (fun () -> let m = net 2 in m, ampWrapper m, []),
                  "optim_wrapper", "an OptimWrapper state where the wrapper is an AmpOptimWrapper"
                  "one scheduler saved, none given", saved plain (net 1) oneLinear, (fun () -> let m = net 2 in m, plain m, []),
                  "schedulers", "1 schedulers saved, 0 given"
                  "Adam state into SGD", saved (fun m -> OptimWrapper(torch.optim.Adam(parametersOf m, 0.01))) (net 1) noSchedulers,
                  (fun () -> let m = net 2 in m, plain m, []), "optim_wrapper.optimizer_type", "state dict is for an Adam optimizer, the wrapper holds SGD"
                  "a single wrapper's state into a dict", saved plain (net 1) noSchedulers,
                  (fun () -> let m = net 2 in m, (new OptimWrapperDict([| struct ("gen", plain m) |]) :> OptimWrapper), []),
                  "optim_wrapper", "an OptimWrapper state where the wrapper is an OptimWrapperDict" ]
            for (name, bytes, make, path, reason) in cases do
                let (m, w, s) = make ()
                let trained = match w with :? OptimWrapperDict as d -> d.["gen"] | _ -> w
                for b in data 1 do step m trained s b
                let before = snapshot m w s
                use ms = new MemoryStream(bytes)
                let ex = throws<CheckpointException> (fun () -> Checkpoint.Load(ms, m, w, s) |> ignore) name
                Expect.equal (ex.Path, ex.Reason) (path, reason) name
                Expect.equal (snapshot m w s) before (name + ": nothing changed")
        }
        test "a load that does not fit changes nothing (full snapshot), and names where" {
            let m = net 3
            let w = OptimWrapper(torch.optim.Adam(parametersOf m, 0.01), 2)
            let s = [ LinearLR(w, by_epoch = false) :> ParamScheduler ]
            for b in data 3 do step m w s b
            use ms = new MemoryStream()
            Checkpoint.Save(ms, m, w, s)
            let m2 = net 4
            let w2 = OptimWrapper(torch.optim.Adam(parametersOf m2, 0.01), 2)
            let s2 = [ CosineAnnealingLR(w2, T_max = 5L, by_epoch = false) :> ParamScheduler ]
            for b in data 1 do step m2 w2 s2 b
            let before = snapshot m2 w2 s2
            ms.Position <- 0L
            let ex = throws<CheckpointException> (fun () -> Checkpoint.Load(ms, m2, w2, s2) |> ignore) "scheduler type"
            Expect.equal ex.Path "schedulers[0]" "where"
            Expect.stringContains ex.Message "a LinearLR state where the scheduler is a CosineAnnealingLR" "what"
            Expect.equal (snapshot m2 w2 s2) before "nothing changed"
        }
        test "exact resume in a fresh dotnet process: every optimizer, AMP on/off, accumulation 1-4, save points on/off the boundary" {
            let folder = tempFolder ()
            try
                let plan =
                    [ for c in ResumeMatrix.cases ->
                        let file name = Path.Combine(folder, c.Id + "." + name)
                        // Straight through, then interrupted at SaveAt; the same process, the same seeds.
                        torch.manual_seed ResumeMatrix.runSeed |> ignore
                        let (ma, wa, sa) as a = ResumeMatrix.build c 1
                        ResumeMatrix.run c a 0 c.Total
                        Checkpoint.Save(file "expected", ma, wa, sa)
                        torch.manual_seed ResumeMatrix.runSeed |> ignore
                        let (mb, wb, sb) as b = ResumeMatrix.build c 1
                        ResumeMatrix.run c b 0 c.SaveAt
                        Checkpoint.Save(file "resume", mb, wb, sb)
                        c, file "resume", file "out", file "reload", file "expected" ]
                let planPath = Path.Combine(folder, "plan.tsv")
                File.WriteAllLines(planPath, [ for (c, resume, out, reload, _) in plan -> String.Join("\t", c.Line, resume, out, reload) ])
                let code, stdout, stderr = runChild [ "--checkpoint-resume-child"; planPath ] (TimeSpan.FromMinutes 5.0)
                Expect.equal code 0 (sprintf "child failed: %s %s" stdout stderr)
                Expect.stringContains stdout (sprintf "resumed %d cases" plan.Length) "the child ran every case"
                let failures =
                    [ for (c, resume, out, reload, expected) in plan do
                        if File.ReadAllBytes reload <> File.ReadAllBytes resume then
                            yield sprintf "%s: loading did not restore everything (%A)" c.Id (differingParts c resume reload)
                        if File.ReadAllBytes out <> File.ReadAllBytes expected then
                            yield sprintf "%s: resumed run differs in %A" c.Id (differingParts c expected out) ]
                Expect.isEmpty failures (sprintf "%d failures over %d combinations" failures.Length plan.Length)
                Expect.isGreaterThanOrEqual plan.Length 150 "the matrix is whole"
            finally
                Directory.Delete(folder, true)
        }
        test "the README's C# example resumes in a new process to the same parameters (examples/Checkpointing)" {
            let rec up (d: DirectoryInfo) = if File.Exists(Path.Combine(d.FullName, "Optim.sln")) then d.FullName else up d.Parent
            let root = up (DirectoryInfo(AppContext.BaseDirectory))
            let dll = Path.Combine(root, "examples", "Checkpointing", "bin", "Debug", "net10.0", "Checkpointing.dll")
            Expect.isTrue (File.Exists dll) (sprintf "%s is built (dotnet fsi build.fsx build)" dll)
            let run (args: string list) =
                let psi = Diagnostics.ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
                psi.ArgumentList.Add dll
                for a in args do psi.ArgumentList.Add a
                use p = Diagnostics.Process.Start psi
                let out = p.StandardOutput.ReadToEnd()
                let err = p.StandardError.ReadToEnd()
                p.WaitForExit()
                Expect.equal p.ExitCode 0 (sprintf "%A failed: %s %s" args out err)
                out
            let path = tempPath ()
            let straight = run []
            let stopped = run [ path; "6" ]
            let resumed = run [ path ]
            File.Delete path
            Expect.stringContains stopped "saved after iteration 6" "saved mid-accumulation"
            Expect.stringContains resumed "resumed after iteration 6, inner_count 6" "resumed there"
            let final (text: string) = text.Split('\n') |> Array.find (fun l -> l.StartsWith "final ")
            Expect.equal (final resumed) (final straight) "the same final parameters"
        }
        test "the README's F# example" {
            // Verbatim from the README (the loop body abbreviated there as `train`).
            let path = tempPath ()
            let model = torch.nn.Sequential(torch.nn.Linear(4L, 8L), torch.nn.ReLU(), torch.nn.Linear(8L, 1L))
            let wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), 0.1, momentum = 0.9), accumulative_counts = 2)
            let schedulers : ParamScheduler list = [ LinearLR(wrapper, start_factor = 0.5, ``end`` = 4L, by_epoch = false) ]
            let train () =
                let loss = torch.nn.functional.mse_loss(model.forward(torch.ones(2L, 4L)), torch.zeros(2L, 1L))
                wrapper.update_params loss
                ParamSchedulerHook.after_train_iter schedulers
            for _ in 1..3 do train ()
            Checkpoint.Save(path, model, wrapper, schedulers, JsonObject(dict [ "iteration", JsonValue.Create 3 :> JsonNode ]))
            let meta = Checkpoint.Load(path, model, wrapper, schedulers)
            let iteration = meta.["iteration"].GetValue<int>()
            let message =
                try
                    Checkpoint.Load(path, torch.nn.Linear(4L, 1L), wrapper) |> ignore
                    ""
                with :? CheckpointException as e -> sprintf "%s: %s" e.Path e.Reason
            File.Delete path
            Expect.equal iteration 3 "metadata back"
            Expect.equal wrapper.inner_count 3 "mid-accumulation"
            Expect.stringStarts message "model: missing entries: \"weight\", \"bias\"; unexpected: \"0.weight\"" "the error the README shows"
        }
    ]
