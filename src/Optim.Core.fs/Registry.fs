/// MMEngine's registry semantics as an immutable value: names → entries in registration
/// order, `force` to overwrite, and lookups whose failure names every registered entry and suggests
/// the closest one. The facade keeps one of these per registry behind a lock.
module Optim.Core.Registry

open Optim.Core

/// A registry: its name (`optimizer`, `optim_wrapper`, `optimizer wrapper constructor`) and its
/// entries in registration order.
type Registry<'T> = { Name: string; Entries: (string * 'T) list }

/// An empty registry called `name`.
let create (name: string) : Registry<'T> = { Name = name; Entries = [] }

/// The registered names, in registration order.
let names (reg: Registry<'T>) = reg.Entries |> List.map fst

/// The entry under `name` (exact, case-sensitive, as MMEngine).
let tryFind (name: string) (reg: Registry<'T>) =
    reg.Entries |> List.tryFind (fun (k, _) -> k = name) |> Option.map snd

/// Registers `value` under each of `names` (aliases). A name already present is a KeyError unless
/// `force`, which overwrites it in place. An empty or blank name is a ValueError.
let register (names: string list) (force: bool) (value: 'T) (reg: Registry<'T>) : Result<Registry<'T>, RuleError> =
    match names |> List.tryFind (fun n -> System.String.IsNullOrWhiteSpace n) with
    | Some _ -> Error(RuleError.value (sprintf "a name in the %s registry cannot be empty" reg.Name))
    | None ->
        match names |> List.tryFind (fun n -> not force && (tryFind n reg).IsSome) with
        | Some n -> Error(RuleError.key (sprintf "%s is already registered in %s" n reg.Name))
        | None ->
            let entries =
                (reg.Entries, names)
                ||> List.fold (fun acc n ->
                    if acc |> List.exists (fun (k, _) -> k = n) then
                        acc |> List.map (fun (k, v) -> if k = n then (k, value) else (k, v))
                    else
                        acc @ [ n, value ])
            Ok { reg with Entries = entries }

/// Levenshtein distance (insertions, deletions, substitutions each cost 1).
let editDistance (a: string) (b: string) = Suggest.editDistance a b

/// The registered name closest to `name` (`Suggest.closest`).
let closest (name: string) (candidates: string list) : string option = Suggest.closest name candidates

/// The message for a name that is not registered: what was asked, the closest name, and every
/// registered name.
let notFoundMessage (name: string) (reg: Registry<'T>) =
    let registered = names reg
    let suggestion =
        match closest name registered with
        | Some c -> sprintf " Did you mean '%s'?" c
        | None -> ""
    let listing =
        if registered.IsEmpty then "Nothing is registered."
        else "Registered: " + System.String.Join(", ", registered) + "."
    sprintf "%s is not in the %s registry.%s %s" name reg.Name suggestion listing

/// The entry under `name`, or a KeyError listing the registered names and suggesting the closest.
let find (name: string) (reg: Registry<'T>) : Result<'T, RuleError> =
    match tryFind name reg with
    | Some v -> Ok v
    | None -> Error(RuleError.key (notFoundMessage name reg))
