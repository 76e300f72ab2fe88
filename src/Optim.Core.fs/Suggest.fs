/// "Did you mean ...?": the closest of the known names to a misspelt one (registries, keyword
/// arguments, config keys, parameter names).
module Optim.Core.Suggest

/// Levenshtein distance of `a` and `b` (insertions, deletions, substitutions each cost 1), computed
/// in the two rows given (each at least `b.Length + 1` long), so that many comparisons share them.
let private distanceIn (prev: int[]) (cur: int[]) (a: string) (b: string) =
    for j in 0 .. b.Length do
        prev.[j] <- j
    for i in 1 .. a.Length do
        cur.[0] <- i
        for j in 1 .. b.Length do
            let cost = if a.[i - 1] = b.[j - 1] then 0 else 1
            cur.[j] <- min (min (prev.[j] + 1) (cur.[j - 1] + 1)) (prev.[j - 1] + cost)
        Array.blit cur 0 prev 0 (b.Length + 1)
    prev.[b.Length]

/// Levenshtein distance (insertions, deletions, substitutions each cost 1).
let editDistance (a: string) (b: string) =
    distanceIn (Array.zeroCreate (b.Length + 1)) (Array.zeroCreate (b.Length + 1)) a b

/// Candidate names prepared once for many `closestIn` queries (each lowercased once, not per query).
type Candidates =
    private
        { Names: string[]
          Lower: string[]
          Longest: int }

/// Prepares `names` (in order: on a tie the first wins).
let candidates (names: string seq) : Candidates =
    let names = Array.ofSeq names
    { Names = names
      Lower = names |> Array.map (fun n -> n.ToLowerInvariant())
      Longest = names |> Array.fold (fun m n -> max m n.Length) 0 }

/// The candidate closest to `name`: smallest edit distance ignoring case, then with case, then
/// candidate order; None when nothing is reasonably close (more than half the name's length away,
/// and more than 2). A candidate whose length alone puts it further than the best so far (or than
/// the cut-off) is not compared; nothing is allocated per candidate.
let closestIn (c: Candidates) (name: string) : string option =
    let lower = name.ToLowerInvariant()
    let cutoff = max 2 (name.Length / 2)
    let prev = Array.zeroCreate (c.Longest + 1)
    let cur = Array.zeroCreate (c.Longest + 1)
    // Best so far: (index, distance ignoring case, distance with case); index -1 = none within the cut-off.
    let rec search i (best: struct (int * int * int)) =
        if i = c.Names.Length then
            best
        else
            let struct (bi, bl, bc) = best
            let bound = if bi < 0 then cutoff else bl
            if abs (c.Lower.[i].Length - lower.Length) > bound then
                search (i + 1) best
            else
                let dl = distanceIn prev cur lower c.Lower.[i]
                if dl > bound || (bi >= 0 && dl = bl && bc = 0) then
                    search (i + 1) best
                else
                    let dc = distanceIn prev cur name c.Names.[i]
                    if bi < 0 || dl < bl || dc < bc then search (i + 1) (struct (i, dl, dc)) else search (i + 1) best
    match search 0 (struct (-1, 0, 0)) with
    | struct (i, _, _) when i >= 0 -> Some c.Names.[i]
    | _ -> None

/// `closestIn` over candidates given as a list.
let closest (name: string) (known: string list) : string option = closestIn (candidates known) name

/// ` Did you mean 'x'?` (with the leading space), or "" when no candidate is close.
let didYouMeanIn (c: Candidates) (name: string) =
    match closestIn c name with
    | Some s -> " Did you mean '" + s + "'?"
    | None -> ""

/// `didYouMeanIn` over candidates given as a list.
let didYouMean (name: string) (known: string list) = didYouMeanIn (candidates known) name
