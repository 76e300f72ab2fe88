/// The exact-resume matrix: every registered optimizer (LBFGS aside, see below), with and without
/// AMP (bf16 autocast, dynamic loss scale that grows during the run), accumulative_counts 1–4, save
/// points on and off the accumulation boundary and inside the trailing remainder, with LR and momentum
/// schedulers, dropout (so the RNG matters) and paramwise groups (so base_param_settings matters).
/// The parent runs N iterations straight and k iterations then saves; a child `dotnet` process
/// loads each checkpoint into freshly built objects (other seeds, another RNG state) and runs the
/// remaining N − k iterations; the final states must be byte-identical checkpoints.
module Optim.Tests.ResumeMatrix

open System
open System.IO
open TorchSharp
open Optim
open Optim.Tests.TestSupport

type Case =
    { Optimizer: string
      Amp: bool
      Acc: int
      Total: int
      SaveAt: int
      Dict: bool }

    member c.Id =
        sprintf "%s%s%s-acc%d-save%d" c.Optimizer (if c.Amp then "-amp" else "") (if c.Dict then "-dict" else "") c.Acc c.SaveAt

    member c.Line = String.Join("|", c.Optimizer, c.Amp, c.Acc, c.Total, c.SaveAt, c.Dict)

    static member Parse(line: string) =
        match line.Split '|' with
        | [| o; a; acc; t; s; d |] -> { Optimizer = o; Amp = bool.Parse a; Acc = int acc; Total = int t; SaveAt = int s; Dict = bool.Parse d }
        | _ -> failwithf "bad case line %s" line

/// Learning rates small enough that every optimizer stays finite over the run.
let private lrOf name =
    match name with
    | "Adadelta" -> 1.0
    | "SGD" | "Adagrad" | "Rprop" | "ASGD" -> 0.05
    | _ -> 0.01

let private hasMomentum name = List.contains name [ "SGD"; "RMSprop"; "Adam"; "AdamW"; "Adamax"; "NAdam"; "RAdam" ]

/// LBFGS is TorchSharp's native optimizer: it has no state dict, and stepping it without a closure
/// crashes the process (0.107), so it cannot run this protocol.
let optimizers = Registries.TORCH_OPTIMIZERS |> Seq.filter (fun n -> n <> "LBFGS") |> List.ofSeq

let cases =
    [ for o in optimizers do
        for amp in [ false; true ] do
            for acc in 1..4 do
                let total = 10
                let points = if acc = 1 then [ 4 ] else [ acc; acc + 1; total - 1 ]
                for k in points -> { Optimizer = o; Amp = amp; Acc = acc; Total = total; SaveAt = k; Dict = false } ]
    @ [ for o in [ "SGD"; "Adam" ] do
            for amp in [ false; true ] -> { Optimizer = o; Amp = amp; Acc = 2; Total = 7; SaveAt = 3; Dict = true } ]

let private model seed =
    torch.manual_seed (int64 seed) |> ignore
    torch.nn.Sequential(torch.nn.Linear(6L, 8L), torch.nn.ReLU(), torch.nn.Dropout(0.25), torch.nn.Linear(8L, 2L))

let private wrapperConfig (c: Case) =
    let optimizer =
        sprintf "\"type\": \"%s\", \"lr\": %g%s" c.Optimizer (lrOf c.Optimizer)
            (if c.Optimizer = "SGD" || c.Optimizer = "RMSprop" then ", \"momentum\": 0.9" else "")
    let amp = if c.Amp then ", \"loss_scale\": {\"init_scale\": 256.0, \"growth_interval\": 2}, \"dtype\": \"bfloat16\"" else ""
    let clip = if c.Acc % 2 = 0 then ", \"clip_grad\": {\"max_norm\": 0.5}" else ""
    sprintf "{\"type\": \"%s\", \"optimizer\": {%s}, \"accumulative_counts\": %d%s%s, \"paramwise_cfg\": {\"bias_lr_mult\": 2.0}}"
        (if c.Amp then "AmpOptimWrapper" else "OptimWrapper") optimizer c.Acc amp clip

/// Fresh objects for a case (the seed decides the initial weights only).
let build (c: Case) (seed: int) : torch.nn.Module * OptimWrapper * ParamScheduler list =
    let m = model seed
    if c.Dict then
        let part (name: string) = m.named_parameters() |> Seq.filter (fun struct (n, _) -> n.StartsWith(name + ".")) |> Seq.map (fun struct (_, p) -> p) |> List.ofSeq
        let make (ps: Modules.Parameter list) : torch.optim.Optimizer =
            if c.Optimizer = "SGD" then torch.optim.SGD(ps, 0.05, momentum = 0.9) else torch.optim.Adam(ps, 0.01)
        let wrap ps : OptimWrapper =
            if c.Amp then AmpOptimWrapper(make ps, kwargs [ "init_scale", box 256.0; "growth_interval", box 2L ], "bfloat16", c.Acc)
            else OptimWrapper(make ps, c.Acc)
        let gen, disc = wrap (part "0"), wrap (part "3")
        for w in [ gen; disc ] do w.initialize_count_status(m, 0, c.Total)
        let d = new OptimWrapperDict(("gen", gen), ("disc", disc))
        m, (d :> OptimWrapper), [ LinearLR(gen, start_factor = 0.5, ``end`` = 3L, by_epoch = false) ]
    else
        let w = Builder.build_optim_wrapper(m, wrapperConfig c)
        w.initialize_count_status(m, 0, c.Total)
        let schedulers: ParamScheduler list =
            [ LinearLR(w, start_factor = 0.5, ``end`` = 3L, by_epoch = false)
              CosineAnnealingLR(w, T_max = int64 (c.Total - 3), ``begin`` = 3L, ``end`` = int64 c.Total, by_epoch = false)
              if hasMomentum c.Optimizer then LinearMomentum(w, start_factor = 0.8, ``end`` = 4L, by_epoch = false) ]
        m, w, schedulers

/// The data of iteration i, from its own generator (the global RNG is the run's, used by dropout).
let private batch (i: int) =
    use g = new torch.Generator(uint64 (1000 + i))
    torch.randn([| 4L; 6L |], generator = g), torch.randn([| 4L; 2L |], generator = g)

let private forward (m: torch.nn.Module) (w: OptimWrapper) (x: torch.Tensor) (y: torch.Tensor) =
    use _ = w.optim_context m
    torch.nn.functional.mse_loss((m :?> Modules.Sequential).forward x, y)

/// Iterations [first, last) of a case.
let run (c: Case) (m: torch.nn.Module, w: OptimWrapper, schedulers: ParamScheduler list) (first: int) (last: int) =
    for i in first .. last - 1 do
        use scope = torch.NewDisposeScope()
        let x, y = batch i
        match w with
        | :? OptimWrapperDict as d ->
            d.["gen"].update_params(forward m d.["gen"] x y)
            d.["disc"].update_params(forward m d.["disc"] (x * 0.5) y)
        | _ -> w.update_params(forward m w x y)
        ParamSchedulerHook.after_train_iter schedulers

/// The global RNG seed both runs of the parent start from.
let runSeed = 77L

/// The child's side: for each case line `case|resume|out|reload`, build fresh objects, load, save the
/// loaded state again (reload: must equal resume), run to the end, save (out). Returns the exit code.
let child (planPath: string) =
    torch.manual_seed 424242L |> ignore
    let mutable n = 0
    for line in File.ReadAllLines planPath do
        let parts = line.Split('\t')
        let c = Case.Parse parts.[0]
        let objects = build c 99
        let (m, w, s) = objects
        Checkpoint.Load(parts.[1], m, w, s) |> ignore
        Checkpoint.Save(parts.[3], m, w, s)
        run c objects c.SaveAt c.Total
        Checkpoint.Save(parts.[2], m, w, s)
        n <- n + 1
    printfn "resumed %d cases" n
    0

/// The model the save-loop child writes (about 17 MB of parameters, 34 MB of checkpoint with momentum).
let bigModel () : Modules.Sequential =
    torch.manual_seed 5L |> ignore
    torch.nn.Sequential(torch.nn.Linear(2048L, 2048L))

let bigWrapper (m: torch.nn.Module) =
    let w = OptimWrapper(torch.optim.SGD(m.parameters(), 0.01, momentum = 0.9))
    w

/// The other child: gives the momentum buffer a value (one step of a zero loss gradient keeps the
/// weights), then saves to `path` over and over, numbering each save in the metadata, until killed.
let saveLoop (path: string) =
    let m = bigModel ()
    let w = bigWrapper m
    use x = torch.zeros(1L, 2048L)
    w.update_params(m.forward(x).sum() * 0.0)
    let mutable generation = 0
    while true do
        Checkpoint.Save(path, m, w, [], Text.Json.Nodes.JsonObject(dict [ "generation", Text.Json.Nodes.JsonValue.Create generation :> Text.Json.Nodes.JsonNode ]))
        printfn "saved %d" generation
        generation <- generation + 1
    0
