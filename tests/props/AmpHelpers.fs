/// Helpers shared by the mixed-precision tests.
module Optim.Tests.AmpHelpers

open System
open Expecto

/// Runs `f`, expecting an exception of type 'e whose message contains `fragment`.
let throwsWith<'e when 'e :> exn> (f: unit -> unit) (fragment: string) (what: string) =
    let raised =
        try
            f ()
            None
        with e ->
            Some e
    match raised with
    | None -> failtestf "%s: no exception" what
    | Some(:? 'e as e) -> Expect.stringContains e.Message fragment what
    | Some other -> failtestf "%s: expected %s, got %s: %s" what typeof<'e>.Name (other.GetType().Name) other.Message

/// A float32's bits, for bit-identical comparisons.
let bits (x: float32) = BitConverter.SingleToInt32Bits x
