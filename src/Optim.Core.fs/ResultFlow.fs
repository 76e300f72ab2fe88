/// `result { }` over Result (stateless), and list helpers for fallible steps.
module internal Optim.Core.ResultFlow

type ResultBuilder() =
    member _.Bind(r: Result<'a, 'e>, f: 'a -> Result<'b, 'e>) = Result.bind f r
    member _.Return(x: 'a) : Result<'a, 'e> = Ok x
    member _.ReturnFrom(r: Result<'a, 'e>) = r
    member _.Zero() : Result<unit, 'e> = Ok()
    member _.Delay(f: unit -> Result<'a, 'e>) = f
    member _.Run(f: unit -> Result<'a, 'e>) = f ()
    member _.Combine(r: Result<unit, 'e>, f: unit -> Result<'a, 'e>) = Result.bind f r

let result = ResultBuilder()

/// All values, or the first error.
let rec allOk (f: 'a -> Result<'b, 'e>) (xs: 'a list) : Result<'b list, 'e> =
    match xs with
    | [] -> Ok []
    | x :: rest ->
        match f x with
        | Error e -> Error e
        | Ok y -> allOk f rest |> Result.map (fun ys -> y :: ys)

/// All values, or the first error.
let sequence (xs: Result<'a, 'e> list) : Result<'a list, 'e> = allOk id xs

/// Threads a state through a list with a fallible step.
let foldResult (f: 's -> 'x -> Result<'s, 'e>) (init: 's) (xs: 'x list) : Result<'s, 'e> =
    List.fold (fun st x -> Result.bind (fun s -> f s x) st) (Ok init) xs
