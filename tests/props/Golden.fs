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
