/// Which of many ranked keys occurs in a name: the best-ranked key that is an ordinal substring of
/// it, found in one pass over the name whatever the number of keys (an Aho–Corasick automaton
/// whose states each know the best-ranked key ending there). Built once per key list; immutable.
module Optim.Core.KeyMatch

open System.Collections.Frozen
open System.Collections.Generic
open System.Collections.Immutable

/// The automaton over a ranked key list (rank = position in the list; 0 is best).
type Matcher =
    private
        { Keys: ImmutableArray<string>
          /// Trie edges: (state <<< 16 ||| char) → next state. State 0 is the root.
          Edges: FrozenDictionary<int64, int>
          /// The state of the longest proper suffix of a state's string that is also a trie state.
          Fail: ImmutableArray<int>
          /// The best rank among keys that are suffixes of a state's string (`NoMatch` if none).
          Best: ImmutableArray<int>
          /// The rank of the key that ends exactly at a state (`NoMatch` if none).
          Own: ImmutableArray<int>
          /// By rank: the state where that key ends (a key listed twice ends where its first copy does).
          Ends: ImmutableArray<int>
          /// Every state in breadth-first order: a state's fail link comes before it.
          Order: ImmutableArray<int> }

let private noMatch = System.Int32.MaxValue

let inline private edgeKey (state: int) (c: char) = (int64 state <<< 16) ||| int64 c

/// Builds the matcher for `keys` in rank order (the first key wins when several occur): the trie,
/// then each state's fail link and best rank breadth first (a state's fail link is shallower, so it
/// is done before the state). Built in local tables, linear in the total length of the keys; only
/// the frozen result leaves the call.
let create (keys: string list) : Matcher =
    let edges = Dictionary<int64, int>()
    let children = ResizeArray<ResizeArray<struct (char * int)>>()
    let own = ResizeArray<int>()
    let newState () =
        children.Add(ResizeArray())
        own.Add noMatch
        own.Count - 1
    newState () |> ignore
    // Each key's end state by rank; a key listed twice keeps its first rank at that state.
    let ends =
        keys
        |> List.mapi (fun rank key ->
            let last =
                key
                |> Seq.fold
                    (fun state c ->
                        match edges.TryGetValue(edgeKey state c) with
                        | true, next -> next
                        | _ ->
                            let next = newState ()
                            edges.[edgeKey state c] <- next
                            children.[state].Add(struct (c, next))
                            next)
                    0
            if own.[last] = noMatch then own.[last] <- rank
            last)
    let count = own.Count
    let fail = Array.zeroCreate<int> count
    let best = Array.create count noMatch
    best.[0] <- own.[0]
    let rec suffixState f c =
        match edges.TryGetValue(edgeKey f c) with
        | true, t -> t
        | _ when f = 0 -> 0
        | _ -> suffixState fail.[f] c
    let order = ResizeArray<int>(count)
    order.Add 0
    let rec bfs head =
        if head < order.Count then
            let parent = order.[head]
            for struct (c, child) in children.[parent] do
                let f = if parent = 0 then 0 else suffixState fail.[parent] c
                fail.[child] <- f
                best.[child] <- min own.[child] best.[f]
                order.Add child
            bfs (head + 1)
    bfs 0
    { Keys = ImmutableArray.CreateRange keys
      Edges = edges.ToFrozenDictionary()
      Fail = ImmutableArray.Create<int>(fail)
      Best = ImmutableArray.Create<int>(best)
      Own = ImmutableArray.CreateRange own
      Ends = ImmutableArray.CreateRange ends
      Order = ImmutableArray.CreateRange order }

/// The state after reading `c` in `state`.
let rec private step (m: Matcher) (state: int) (c: char) =
    match m.Edges.TryGetValue(edgeKey state c) with
    | true, next -> next
    | _ when state = 0 -> 0
    | _ -> step m m.Fail.[state] c

/// Reads `text` from index `i` in `state`, keeping the best rank seen; stops early at rank 0.
let rec private scan (m: Matcher) (text: string) (i: int) (state: int) (rank: int) =
    if i = text.Length || rank = 0 then
        struct (state, rank)
    else
        let next = step m state text.[i]
        scan m text (i + 1) next (min rank m.Best.[next])

let private keyOf (m: Matcher) rank = if rank = noMatch then None else Some m.Keys.[rank]

/// The rank (position in the key list) of the best key in `prefix + "." + name`, without building
/// that string and without allocating.
let rankIn (m: Matcher) (prefix: string) (name: string) : int voption =
    let struct (state, rank) = scan m prefix 0 0 m.Best.[0]
    let struct (state, rank) = scan m "." 0 state rank
    let struct (_, rank) = scan m name 0 state rank
    if rank = noMatch then ValueNone else ValueSome rank

/// The best-ranked key that is an ordinal substring of `text`.
let find (m: Matcher) (text: string) : string option =
    let struct (_, rank) = scan m text 0 0 m.Best.[0]
    keyOf m rank

/// `find m (prefix + "." + name)` without building that string.
let findIn (m: Matcher) (prefix: string) (name: string) : string option =
    match rankIn m prefix name with
    | ValueSome rank -> Some m.Keys.[rank]
    | ValueNone -> None

/// What one pass of the automaton over many match targets found.
type Scan =
    { /// For each target, in order: the rank of the best key in it, or -1 when none occurs.
      Best: ImmutableArray<int>
      /// For each key, by rank: whether it is an ordinal substring of at least one target.
      Occurs: ImmutableArray<bool> }

/// `rankIn` for each target (`prefix + "." + name`, never built), and which keys occur in any of them,
/// reading each target once: O(total length of the targets + size of the automaton), whatever the
/// number of keys and however many of them occur. A key occurs in some target exactly when its end
/// state is a state the pass visited or a fail-link ancestor of one (its string is then a suffix of
/// what had been read), so the pass only marks the states it visits and the marks are pushed down
/// the fail links once at the end, deepest states first. The arrays are local to the call.
let scanTargets (m: Matcher) (targets: struct (string * string) seq) : Scan =
    let visited = Array.zeroCreate<bool> m.Fail.Length
    let rec read (text: string) (i: int) (state: int) (rank: int) =
        if i = text.Length then
            struct (state, rank)
        else
            let next = step m state text.[i]
            visited.[next] <- true
            read text (i + 1) next (min rank m.Best.[next])
    let best =
        targets
        |> Seq.map (fun (struct (prefix, name)) ->
            // The root (the empty key) is where every target starts; with no target nothing occurs.
            visited.[0] <- true
            let struct (state, rank) = read prefix 0 0 m.Best.[0]
            let struct (state, rank) = read "." 0 state rank
            let struct (_, rank) = read name 0 state rank
            if rank = noMatch then -1 else rank)
        |> ImmutableArray.CreateRange
    for i in m.Order.Length - 1 .. -1 .. 1 do
        let s = m.Order.[i]
        if visited.[s] then visited.[m.Fail.[s]] <- true
    { Best = best
      Occurs = ImmutableArray.CreateRange(m.Ends |> Seq.map (fun e -> visited.[e])) }
