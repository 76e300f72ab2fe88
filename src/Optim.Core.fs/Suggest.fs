/// "Did you mean ...?": the closest of the known names to a misspelt one (registries, keyword
/// arguments, config keys).
module Optim.Core.Suggest

/// Levenshtein distance (insertions, deletions, substitutions each cost 1).
let editDistance (a: string) (b: string) =
    let prev = Array.init (b.Length + 1) id
    let cur = Array.zeroCreate (b.Length + 1)
    for i in 1 .. a.Length do
        cur.[0] <- i
        for j in 1 .. b.Length do
            let cost = if a.[i - 1] = b.[j - 1] then 0 else 1
            cur.[j] <- min (min (prev.[j] + 1) (cur.[j - 1] + 1)) (prev.[j - 1] + cost)
        Array.blit cur 0 prev 0 cur.Length
    prev.[b.Length]

/// The candidate closest to `name`: smallest edit distance ignoring case, then with case, then
/// candidate order; None when nothing is reasonably close (more than half the name's length away,
/// and more than 2).
let closest (name: string) (candidates: string list) : string option =
    candidates
    |> List.mapi (fun i c -> (editDistance (name.ToLowerInvariant()) (c.ToLowerInvariant()), editDistance name c, i), c)
    |> List.sortBy fst
    |> List.tryHead
    |> Option.bind (fun ((d, _, _), c) -> if d <= max 2 (name.Length / 2) then Some c else None)

/// ` Did you mean 'x'?` (with the leading space), or "" when no candidate is close.
let didYouMean (name: string) (candidates: string list) =
    match closest name candidates with
    | Some c -> sprintf " Did you mean '%s'?" c
    | None -> ""
