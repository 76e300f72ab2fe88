/// How `optim train` shows progress: a Spectre.Console live progress bar on a terminal, plain
/// lines otherwise (CI logs, pipes), and the closing summary table either way.
module Optim.Cli.Display

open System
open Spectre.Console

/// The state of training after an iteration.
type Status =
    { Iter: int
      TotalIters: int
      Epoch: int
      Epochs: int
      Loss: float
      Lr: float
      GradNorm: float option
      LossScale: float option
      ImagesPerSecond: float
      Elapsed: TimeSpan }

/// Where a training run reports to.
type Reporter =
    { /// After every iteration.
      Progress: Status -> unit
      /// A message line (epoch results, notes).
      Message: string -> unit }

let private fmtOpt (name: string) (f: float option) = match f with Some v -> sprintf " %s %.3g" name v | None -> ""

let private eta (s: Status) =
    let done_ = s.Iter
    if done_ = 0 then "?"
    else
        let remaining = s.Elapsed.TotalSeconds / float done_ * float (s.TotalIters - done_)
        TimeSpan.FromSeconds(remaining).ToString(@"hh\:mm\:ss")

/// One plain line for a status.
let statusLine (s: Status) =
    sprintf "epoch %d/%d iter %d/%d loss %.4f lr %.4g%s%s images/s %.0f eta %s"
        s.Epoch s.Epochs s.Iter s.TotalIters s.Loss s.Lr (fmtOpt "grad_norm" s.GradNorm) (fmtOpt "loss_scale" s.LossScale) s.ImagesPerSecond (eta s)

/// True when stdout is an interactive terminal (then the live display is used).
let interactive () =
    not Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive

/// Plain lines: one every `every` iterations and at the last one.
let plain (every: int) (body: Reporter -> 'T) : 'T =
    body
        { Progress = fun s -> if s.Iter % every = 0 || s.Iter = s.TotalIters then Console.Out.WriteLine(statusLine s); Console.Out.Flush()
          Message = fun m -> Console.Out.WriteLine m; Console.Out.Flush() }

/// No output at all (the ranks other than 0 of a data-parallel run).
let quiet (body: Reporter -> 'T) : 'T =
    body { Progress = ignore; Message = ignore }

/// The live display: a progress bar whose description carries loss, lr, grad norm, loss scale and images/s.
let live (body: Reporter -> 'T) : 'T =
    AnsiConsole
        .Progress()
        .AutoClear(false)
        .HideCompleted(false)
        .Columns(TaskDescriptionColumn(Alignment = Justify.Left), ProgressBarColumn(), PercentageColumn(), ElapsedTimeColumn(), RemainingTimeColumn(), SpinnerColumn())
        .Start(fun ctx ->
            let task = ctx.AddTask("starting")
            let mutable started = false
            body
                { Progress =
                    fun s ->
                        if not started then
                            task.MaxValue <- float s.TotalIters
                            started <- true
                        task.Value <- float s.Iter
                        task.Description <-
                            Markup.Escape(
                                sprintf "epoch %d/%d  loss %.4f  lr %.3g%s%s  %.0f img/s" s.Epoch s.Epochs s.Loss s.Lr
                                    (fmtOpt "grad_norm" s.GradNorm) (fmtOpt "scale" s.LossScale) s.ImagesPerSecond)
                  Message = fun m -> AnsiConsole.MarkupLine(Markup.Escape m) })

/// The closing table: one row per (name, value).
let summary (title: string) (rows: (string * string) list) =
    let table = Table(Title = TableTitle(Markup.Escape title))
    table.AddColumn("") |> ignore
    table.AddColumn(TableColumn("value").RightAligned()) |> ignore
    for (k, v) in rows do table.AddRow(Markup.Escape k, Markup.Escape v) |> ignore
    AnsiConsole.Write table
