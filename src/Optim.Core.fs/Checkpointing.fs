/// What a saved training state must satisfy before any of it is applied: the format version, tensors
/// that fit the live ones (names, dtypes, shapes), schedulers of the same kind. Each check names the
/// place (a JSON-like path such as `model["fc.weight"]` or `schedulers[1]`) and what differs.
module Optim.Core.Checkpointing

/// A tensor as it is saved: dtype name (`float32`, `bfloat16`, ...) and shape.
type TensorSpec = { Dtype: string; Shape: int64 list }

/// The checkpoint format this library writes; it reads this version only.
let formatVersion = 1

/// The version found in a file must be one this library reads.
let checkVersion (what: string) (supported: int) (found: int) : Result<unit, ConfigError> =
    if found = supported then Ok()
    elif found > supported then
        Error(ConfigError.at "version" ErrorKind.Value (sprintf "%s format version %d is newer than this library reads (%d); update Optim" what found supported))
    else Error(ConfigError.at "version" ErrorKind.Value (sprintf "%s format version %d is not supported (this library reads %d)" what found supported))

let private shapeText (s: int64 list) = "[" + System.String.Join(", ", s) + "]"

/// A saved tensor against the live one (`role` names the live one: "parameter", "buffer", "gradient").
let checkTensor (path: string) (role: string) (saved: TensorSpec) (live: TensorSpec) : Result<unit, ConfigError> =
    if saved.Dtype <> live.Dtype then
        Error(ConfigError.at path ErrorKind.Type (sprintf "dtype %s where the %s is %s" saved.Dtype role live.Dtype))
    elif saved.Shape <> live.Shape then
        Error(ConfigError.at path ErrorKind.Value (sprintf "shape %s where the %s has shape %s" (shapeText saved.Shape) role (shapeText live.Shape)))
    else Ok()

/// Saved names against live ones, both in order: every live name saved and nothing more (a strict
/// load, as `load_state_dict(strict=True)`). Lists up to five names of each kind.
let checkNames (path: string) (what: string) (saved: string list) (live: string list) : Result<unit, ConfigError> =
    let savedSet = Set.ofList saved
    let liveSet = Set.ofList live
    let missing = live |> List.filter (fun n -> not (savedSet.Contains n))
    let unexpected = saved |> List.filter (fun n -> not (liveSet.Contains n))
    let some (xs: string list) =
        let shown = xs |> List.truncate 5 |> List.map ConfigError.quote
        System.String.Join(", ", shown) + (if xs.Length > 5 then sprintf " and %d more" (xs.Length - 5) else "")
    let duplicates = saved |> List.countBy id |> List.filter (fun (_, n) -> n > 1) |> List.map fst
    match missing, unexpected, duplicates with
    | [], [], [] -> Ok()
    | _, _, d :: _ -> Error(ConfigError.at path ErrorKind.Value (sprintf "%s %s is saved twice" what (ConfigError.quote d)))
    | m, [], _ -> Error(ConfigError.at path ErrorKind.Key (sprintf "missing %s: %s" what (some m)))
    | [], u, _ -> Error(ConfigError.at path ErrorKind.Key (sprintf "unexpected %s: %s" what (some u)))
    | m, u, _ -> Error(ConfigError.at path ErrorKind.Key (sprintf "missing %s: %s; unexpected: %s" what (some m) (some u)))

/// How many of something were saved against how many there are now (schedulers, wrappers).
let checkCount (path: string) (what: string) (saved: int) (live: int) : Result<unit, ConfigError> =
    if saved = live then Ok()
    else Error(ConfigError.at path ErrorKind.Value (sprintf "%d %s saved, %d given" saved what live))

/// "a LinearLR", "an ExponentialLR" (by the first letter; "a OneCycleLR" reads "a one-cycle").
let article (name: string) =
    if name.Length > 0 && "AEIOU".Contains name.[0] && not (name.StartsWith "One") then "an " + name else "a " + name

/// A scheduler's saved type and parameter against the live scheduler's: a LinearLR state does not
/// load into a CosineAnnealingLR, nor a `momentum` schedule into an `lr` one.
let checkScheduler (path: string) (savedType: string) (savedParam: string) (liveType: string) (liveParam: string) : Result<unit, ConfigError> =
    if savedType <> liveType then
        Error(ConfigError.at path ErrorKind.Type (sprintf "%s state where the scheduler is %s" (article savedType) (article liveType)))
    elif savedParam <> liveParam then
        Error(ConfigError.at path ErrorKind.Value (sprintf "a schedule of '%s' where the scheduler schedules '%s'" savedParam liveParam))
    else Ok()
