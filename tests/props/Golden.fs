/// Locating and reading ../shared/golden (read-only: it defines correct).
module Optim.Tests.Golden

open System
open System.IO
open System.Text.Json.Nodes

/// The shared/golden folder: $OPTIM_GOLDEN, else the first `shared/golden` found walking up from here.
let dir : string =
    match Environment.GetEnvironmentVariable "OPTIM_GOLDEN" with
    | null | "" ->
        let rec up (d: DirectoryInfo) =
            if isNull d then failwith "shared/golden not found: set OPTIM_GOLDEN to its path"
            else
                let candidate = Path.Combine(d.FullName, "shared", "golden")
                if Directory.Exists candidate then candidate else up d.Parent
        up (DirectoryInfo AppContext.BaseDirectory)
    | d -> d

/// Parses one golden file.
let load (name: string) : JsonNode = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, name)))

/// A golden tensor `{tensor, dtype, shape, data}` as float32 values (parsed as double, cast to float32:
/// the exact recorded bits) with its shape.
let tensorValues (node: JsonNode) : float32[] * int64[] =
    let shape = node.["shape"].AsArray() |> Seq.map (fun x -> x.GetValue<int64>()) |> Array.ofSeq
    let rec flatten (n: JsonNode) : float32 seq =
        match n with
        | :? JsonArray as a -> a |> Seq.collect flatten
        | v ->
            match v.GetValueKind() with
            | System.Text.Json.JsonValueKind.String ->
                match v.GetValue<string>() with
                | "nan" | "NaN" -> Seq.singleton nanf
                | "inf" | "Infinity" -> Seq.singleton infinityf
                | _ -> Seq.singleton -infinityf
            | _ -> Seq.singleton (float32 (v.GetValue<double>()))
    Array.ofSeq (flatten node.["data"]), shape

/// A golden tensor as a TorchSharp float32 tensor.
let tensor (node: JsonNode) : TorchSharp.torch.Tensor =
    let values, shape = tensorValues node
    TorchSharp.torch.tensor(values).reshape(shape)

/// Whether |a − e| ≤ atol + rtol·|e| for every element (NaNs must match NaNs).
let allClose (atol: float) (rtol: float) (actual: float32[]) (expected: float32[]) =
    actual.Length = expected.Length
    && Array.forall2 (fun (a: float32) (e: float32) ->
        (Single.IsNaN a && Single.IsNaN e) || (a = e) || abs (float a - float e) <= atol + rtol * abs (float e)) actual expected

/// The worst relative error max |a − e| / |e| over the elements with |e| ≥ floor (below it the absolute
/// tolerance is what bounds a float32 value, and a relative figure says nothing).
let worstRelative (floor: float) (actual: float32[]) (expected: float32[]) =
    Array.fold2 (fun acc (a: float32) (e: float32) ->
        if a = e || abs (float e) < floor then acc else max acc (abs (float a - float e) / abs (float e))) 0.0 actual expected
