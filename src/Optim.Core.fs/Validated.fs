/// Applicative validation over `Result<_, ConfigError list>`: independent checks all run and their
/// errors are concatenated in order (a config with four problems reports four), unlike `Result.bind`.
module Optim.Core.Validated

/// A value, or every problem found on the way to it.
type Validated<'a> = Result<'a, ConfigError list>

/// Both values, or the errors of both (left first).
let map2 (f: 'a -> 'b -> 'c) (a: Validated<'a>) (b: Validated<'b>) : Validated<'c> =
    match a, b with
    | Ok x, Ok y -> Ok(f x y)
    | Error e1, Error e2 -> Error(e1 @ e2)
    | Error e, Ok _
    | Ok _, Error e -> Error e

/// Every value, or every error, in order.
let all (xs: Validated<'a> list) : Validated<'a list> =
    List.foldBack (map2 (fun x acc -> x :: acc)) xs (Ok [])

/// Applies a check to each element and gathers all errors.
let traverse (f: 'a -> Validated<'b>) (xs: 'a list) : Validated<'b list> = all (List.map f xs)

/// `value` when `errors` is empty, else the errors.
let ofErrors (value: 'a) (errors: ConfigError list) : Validated<'a> =
    if List.isEmpty errors then Ok value else Error errors

/// The errors of a validated value ([] when it is Ok).
let errors (v: Validated<'a>) : ConfigError list =
    match v with
    | Ok _ -> []
    | Error es -> es

/// One error.
let fail (e: ConfigError) : Validated<'a> = Error [ e ]

/// `validated { let! a = x and! b = y in return f a b }`: every `and!` branch is checked.
type ValidatedBuilder() =
    member _.BindReturn(v: Validated<'a>, f: 'a -> 'b) : Validated<'b> = Result.map f v
    member _.MergeSources(a: Validated<'a>, b: Validated<'b>) : Validated<'a * 'b> = map2 (fun x y -> x, y) a b
    member _.Bind(v: Validated<'a>, f: 'a -> Validated<'b>) : Validated<'b> = Result.bind f v
    member _.Return(x: 'a) : Validated<'a> = Ok x
    member _.ReturnFrom(v: Validated<'a>) = v

let validated = ValidatedBuilder()
