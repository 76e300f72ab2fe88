/// `optim schedule`: the learning rate and momentum of every param group at each iteration, as the
/// config's `param_scheduler` list sets them on the wrapper the config builds for a model —
/// the same schedulers `optim train` steps, stepped as MMEngine's ParamSchedulerHook does, with no
/// training.
module Optim.Cli.Schedule

open System
open System.Globalization
open System.Text.Json.Nodes
open TorchSharp
open Optim
open Optim.Cli.RunConfig
open Spectre.Console

/// One iteration: the values in effect while it runs, one per optimizer param group.
type Point = { Iter: int; Lr: float list; Momentum: float list }

/// Steps the schedulers of `paramScheduler` on the wrapper `optimWrapper` builds for `m`, for
/// `iters` iterations of `epochLength` each.
/// The build, the wrapper and the schedulers log through `loggerFactory`.
let simulate (loggerFactory: Microsoft.Extensions.Logging.ILoggerFactory) (m: torch.nn.Module) (optimWrapper: JsonNode) (paramScheduler: string option) (iters: int) (epochLength: int) : Result<Point list, Problem list> =
    try
        let wrapper = Builder.build_optim_wrapper (m, optimWrapper, loggerFactory)
        let maxEpochs = (iters + epochLength - 1) / epochLength
        let schedulers =
            match paramScheduler with
            | None -> []
            | Some text -> ParamSchedulers.build_list (text, SchedulerTarget.Of wrapper, int64 epochLength, int64 maxEpochs, int64 iters) |> List.ofSeq
        let points =
            [ for i in 0 .. iters - 1 do
                  yield { Iter = i; Lr = List.ofSeq (wrapper.get_lr().["lr"]); Momentum = List.ofSeq (wrapper.get_momentum().["momentum"]) }
                  ParamSchedulerHook.after_train_iter schedulers
                  if (i + 1) % epochLength = 0 then ParamSchedulerHook.after_train_epoch schedulers ]
        Ok points
    with
    | :? OptimConfigException as e ->
        Error [ for err in e.Errors -> let p = Optim.Core.ConfigError.under "optim_wrapper" err in { Path = p.Path; Message = sprintf "%s (%s)" p.Message (Inspection.KindName err.Kind) } ]
    | :? ParamSchedulerException as e -> Error [ { Path = e.Path; Message = sprintf "%s (%s)" e.PythonMessage e.PythonType } ]
    | :? Collections.Generic.KeyNotFoundException as e -> Error [ { Path = "param_scheduler"; Message = e.Message } ]
    | :? InvalidOperationException as e -> Error [ { Path = "param_scheduler"; Message = e.Message } ]
    | :? ArgumentException as e -> Error [ { Path = "optim_wrapper"; Message = e.Message } ]

/// `{"per_iter": [{"iter": i, "lr": [...], "momentum": [...]}]}`.
let toJson (points: Point list) : JsonObject =
    let nums (xs: float list) = JsonArray(xs |> List.map (fun x -> JsonValue.Create x :> JsonNode) |> Array.ofList)
    let o = JsonObject()
    o.["per_iter"] <-
        JsonArray(
            points
            |> List.map (fun p ->
                let e = JsonObject()
                e.["iter"] <- JsonValue.Create p.Iter
                e.["lr"] <- nums p.Lr
                e.["momentum"] <- nums p.Momentum
                e :> JsonNode)
            |> Array.ofList)
    o

let private inv (x: float) = x.ToString("R", CultureInfo.InvariantCulture)

/// `iter,lr_0,...,momentum_0,...` lines.
let toCsv (points: Point list) : string list =
    match points with
    | [] -> [ "iter" ]
    | p0 :: _ ->
        let n = p0.Lr.Length
        String.Join(",", [ yield "iter"; for g in 0 .. n - 1 do yield sprintf "lr_%d" g
                           for g in 0 .. n - 1 do yield sprintf "momentum_%d" g ])
        :: [ for p in points -> String.Join(",", [ yield string p.Iter; yield! List.map inv p.Lr; yield! List.map inv p.Momentum ]) ]

/// Groups whose curves are identical share one column: (label, curve).
let private columns (name: string) (curves: float[][]) =
    Metrics.distinctCurves curves |> List.map (fun (label, c) -> label.Replace("lr", name), c)

/// A table: one row per iteration, one column per distinct lr curve and per distinct momentum curve.
let render (points: Point list) =
    let esc = Spectre.Console.Markup.Escape
    let lr = points |> List.map (fun p -> p.Lr) |> List.transpose |> List.map Array.ofList |> Array.ofList
    let mom = points |> List.map (fun p -> p.Momentum) |> List.transpose |> List.map Array.ofList |> Array.ofList
    let cols = columns "lr" lr @ columns "momentum" mom
    let table = Spectre.Console.Table()
    table.AddColumn("iter") |> ignore
    for (label, _) in cols do table.AddColumn(Spectre.Console.TableColumn(esc label).RightAligned()) |> ignore
    points
    |> List.iteri (fun i p ->
        let cells = [| yield string p.Iter; for (_, c) in cols do yield c.[i].ToString("0.######", CultureInfo.InvariantCulture) |]
        table.AddRow(cells) |> ignore)
    Spectre.Console.AnsiConsole.Write table

/// Draws the distinct lr curves (left axis) and momentum curves (right axis) into a PNG.
let plot (path: string) (points: Point list) =
    let iters = points |> List.map (fun p -> float p.Iter) |> Array.ofList
    let lr = points |> List.map (fun p -> p.Lr) |> List.transpose |> List.map Array.ofList |> Array.ofList
    let mom = points |> List.map (fun p -> p.Momentum) |> List.transpose |> List.map Array.ofList |> Array.ofList
    use plt = new ScottPlot.Plot()
    for (label, c) in columns "lr" lr do
        let s = plt.Add.ScatterLine(iters, c)
        s.LegendText <- label
        s.LineWidth <- 2.0f
    for (label, c) in columns "momentum" mom do
        let s = plt.Add.ScatterLine(iters, c)
        s.LegendText <- label
        s.LineWidth <- 1.5f
        s.LinePattern <- ScottPlot.LinePattern.Dashed
        s.Axes.YAxis <- plt.Axes.Right
    plt.Title "optim schedule"
    plt.XLabel "iteration"
    plt.YLabel "learning rate"
    plt.Axes.Right.Label.Text <- "momentum"
    plt.ShowLegend(ScottPlot.Alignment.UpperRight) |> ignore
    plt.SavePng(path, 1000, 600) |> ignore
