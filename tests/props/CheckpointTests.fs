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
    let loss =
        use _ = w.optim_context model
        torch.nn.functional.mse_loss((model :?> Modules.Sequential).forward x, y)
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
    ]
