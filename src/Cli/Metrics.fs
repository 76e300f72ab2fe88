/// What `optim train` leaves in `--out` besides checkpoints: `metrics.csv` (one row per
/// iteration) and `curves.png` (loss and learning rates against iteration, drawn with ScottPlot).
module Optim.Cli.Metrics

open System
open System.Globalization
open System.IO

/// One training iteration as recorded.
type Row =
    { Iter: int
      Epoch: int
      Loss: float
      /// The learning rate of each optimizer param group during the iteration.
      Lr: float list
      /// The momentum (SGD's momentum, Adam's beta1) of each group.
      Momentum: float list
      /// The gradient norm, on iterations that updated with clipping by norm.
      GradNorm: float option
      /// The loss scale after the iteration (AmpOptimWrapper only).
      LossScale: float option
      /// Whether the optimizer stepped (end of an accumulation) and whether the scaler skipped it.
      Stepped: bool
      Skipped: bool }

let private inv (x: float) = x.ToString("R", CultureInfo.InvariantCulture)
let private opt = Option.map inv >> Option.defaultValue ""

/// The CSV header for `groups` param groups.
let header (groups: int) =
    String.Join(",",
        [ yield "iter"; yield "epoch"; yield "loss"
          for g in 0 .. groups - 1 -> sprintf "lr_%d" g
          for g in 0 .. groups - 1 -> sprintf "momentum_%d" g
          yield "grad_norm"; yield "loss_scale"; yield "stepped"; yield "skipped" ])

/// A row as a CSV line.
let line (r: Row) =
    String.Join(",",
        [ yield string r.Iter; yield string r.Epoch; yield inv r.Loss
          yield! r.Lr |> List.map inv
          yield! r.Momentum |> List.map inv
          yield opt r.GradNorm; yield opt r.LossScale
          yield (if r.Stepped then "1" else "0"); yield (if r.Skipped then "1" else "0") ])

/// Appends rows to `metrics.csv` as they come, flushing each line (a crash keeps what was done).
type CsvWriter(path: string, groups: int, keepUpTo: int) =
    // On a resume into the same folder, the rows of the iterations being redone are dropped.
    let kept =
        if keepUpTo > 0 && File.Exists path then
            let lines = File.ReadAllLines path
            if lines.Length > 0 && lines.[0] = header groups then
                lines |> Array.skip 1 |> Array.filter (fun l -> match Int32.TryParse(l.Split(',').[0]) with | true, i -> i < keepUpTo | _ -> false)
            else [||]
        else [||]
    let writer =
        let w = new StreamWriter(path, false)
        w.WriteLine(header groups)
        for l in kept do w.WriteLine l
        w.Flush()
        w
    member _.Write(r: Row) =
        writer.WriteLine(line r)
        writer.Flush()
    interface IDisposable with
        member _.Dispose() = writer.Dispose()

/// Reads back the loss and learning-rate columns of a metrics.csv: (iters, losses, lr per group).
let readCurves (path: string) : float[] * float[] * float[][] =
    let lines = File.ReadAllLines path
    let head = lines.[0].Split ','
    let lrColumns = head |> Array.indexed |> Array.filter (fun (_, h) -> h.StartsWith "lr_") |> Array.map fst
    let rows = lines |> Array.skip 1 |> Array.map (fun l -> l.Split ',')
    let num (s: string) = Double.Parse(s, CultureInfo.InvariantCulture)
    rows |> Array.map (fun r -> num r.[0]),
    rows |> Array.map (fun r -> num r.[2]),
    lrColumns |> Array.map (fun c -> rows |> Array.map (fun r -> num r.[c]))

/// Groups with identical learning-rate curves, as (label, curve): `lr (groups 0-15)`.
let distinctCurves (curves: float[][]) : (string * float[]) list =
    curves
    |> Array.indexed
    |> Array.groupBy snd
    |> Array.map (fun (curve, members) ->
        let ids = members |> Array.map fst
        let label =
            if ids.Length = 1 then sprintf "lr (group %d)" ids.[0]
            elif ids.[ids.Length - 1] - ids.[0] = ids.Length - 1 then sprintf "lr (groups %d-%d)" ids.[0] ids.[ids.Length - 1]
            else sprintf "lr (groups %s)" (String.Join(",", ids))
        label, curve)
    |> List.ofArray

let private movingAverage (window: int) (xs: float[]) =
    let sums = Array.scan (+) 0.0 xs
    xs |> Array.mapi (fun i _ -> let lo = max 0 (i - window + 1) in (sums.[i + 1] - sums.[lo]) / float (i + 1 - lo))

/// Draws loss (raw and smoothed, left axis) and the distinct learning-rate curves (right axis)
/// against iteration into a PNG.
let plot (path: string) (title: string) (iters: float[]) (losses: float[]) (lrCurves: (string * float[]) list) =
    use plt = new ScottPlot.Plot()
    let raw = plt.Add.ScatterLine(iters, losses)
    raw.LegendText <- "loss"
    raw.LineWidth <- 1.0f
    raw.Color <- ScottPlot.Colors.SteelBlue.WithAlpha(0.35)
    let smooth = plt.Add.ScatterLine(iters, movingAverage 25 losses)
    smooth.LegendText <- "loss (moving average of 25)"
    smooth.LineWidth <- 2.0f
    smooth.Color <- ScottPlot.Colors.Navy
    let palette = [| ScottPlot.Colors.OrangeRed; ScottPlot.Colors.DarkGreen; ScottPlot.Colors.Purple; ScottPlot.Colors.GoldenRod |]
    lrCurves
    |> List.iteri (fun i (label, curve) ->
        let s = plt.Add.ScatterLine(iters, curve)
        s.LegendText <- label
        s.LineWidth <- 2.0f
        s.Color <- palette.[i % palette.Length]
        s.Axes.YAxis <- plt.Axes.Right)
    plt.Title(title)
    plt.XLabel("iteration")
    plt.YLabel("loss")
    plt.Axes.Right.Label.Text <- "learning rate"
    plt.ShowLegend(ScottPlot.Alignment.UpperRight) |> ignore
    plt.SavePng(path, 1000, 600) |> ignore

/// Writes curves.png from a metrics.csv.
let plotFromCsv (csv: string) (png: string) (title: string) =
    let iters, losses, lrs = readCurves csv
    if iters.Length > 0 then plot png title iters losses (distinctCurves lrs)
