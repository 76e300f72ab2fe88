/// Shared test helpers: a logger that keeps what it is told, small models, and tensor shortcuts.
module Optim.Tests.TestSupport

open System
open System.Collections.Concurrent
open Microsoft.Extensions.Logging
open TorchSharp
open Optim

/// One log record.
type Record = { Level: LogLevel; Category: string; Message: string }

/// An ILoggerProvider that keeps every record, for asserting on Optim's logs.
type CapturingProvider() =
    let records = ConcurrentQueue<Record>()
    member _.Records = List.ofSeq records
    member _.Clear() = records.Clear()
    interface ILoggerProvider with
        member _.CreateLogger(category) =
            { new ILogger with
                member _.BeginScope(_state) = { new IDisposable with member _.Dispose() = () }
                member _.IsEnabled(_) = true
                member _.Log(level, _eventId, state, ex, formatter) =
                    records.Enqueue { Level = level; Category = category; Message = formatter.Invoke(state, ex) } }
        member _.Dispose() = ()

/// Routes Optim's logging into a fresh capturing provider for the duration of the scope.
let captureLogs () =
    let provider = new CapturingProvider()
    let previous = OptimLogging.LoggerFactory
    let factory = LoggerFactory.Create(fun b -> b.SetMinimumLevel(LogLevel.Trace).AddProvider(provider) |> ignore)
    OptimLogging.LoggerFactory <- factory
    provider, { new IDisposable with member _.Dispose() = OptimLogging.LoggerFactory <- previous; factory.Dispose() }

/// MMEngine's test ToyModel: conv1, conv2, conv3 = Conv2d(1, 1, 1); forward uses conv1 then conv2.
type ToyModel() as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("ToyModel")
    let conv1 = torch.nn.Conv2d(1L, 1L, 1L)
    let conv2 = torch.nn.Conv2d(1L, 1L, 1L)
    let conv3 = torch.nn.Conv2d(1L, 1L, 1L)
    do this.RegisterComponents()
    member _.Conv1 = conv1
    // Unused in forward, as in MMEngine's test; a member keeps F# from dropping the field.
    member _.Conv3 = conv3
    override _.forward(x) = conv2.forward(conv1.forward x)

/// The parameters of a module as a sequence for an optimizer.
let parametersOf (m: torch.nn.Module) = m.parameters() |> Seq.cast<Modules.Parameter>

/// A float32 tensor from values.
let floats (xs: float32 list) = torch.tensor(Array.ofList xs)

/// A tensor's values.
let valuesOf (t: torch.Tensor) = t.data<float32>().ToArray()

/// Runs f, expecting an exception of type 'E, and returns it (failing the test otherwise).
let throws<'E when 'E :> exn> (f: unit -> unit) (what: string) : 'E =
    let thrown = try f (); None with e -> Some e
    match thrown with
    | Some (:? 'E as e) -> e
    | Some e -> Expecto.Tests.failtestf "%s: expected %s, got %s: %s" what typeof<'E>.Name (e.GetType().Name) e.Message
    | None -> Expecto.Tests.failtestf "%s: expected %s, nothing was thrown" what typeof<'E>.Name

/// Runs body inside a scope and disposes the scope afterwards.
let inside (scope: IDisposable) (body: unit -> unit) =
    try body () finally scope.Dispose()

/// A Python-style kwargs dict (e.g. clip_grad) from pairs.
let kwargs (kvs: (string * obj) list) : System.Collections.Generic.IDictionary<string, obj> =
    let d = System.Collections.Generic.Dictionary<string, obj>()
    for (k, v) in kvs do d.[k] <- v
    d
