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
    ]
