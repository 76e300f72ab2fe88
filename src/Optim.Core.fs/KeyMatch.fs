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

/// The trie of `keys`: its edges, the number of states, each key's end state with the best (lowest)
/// rank of the keys ending there (a key listed twice keeps its first rank), and each key's end state
/// by rank, last rank first.
let private trie (keys: string list) =
    let insert (edges: Map<int64, int>, count: int, ends: Map<int, int>, endOf: int list) (rank: int, key: string) =
        let walk (edges: Map<int64, int>, count: int, state: int) (c: char) =
            match Map.tryFind (edgeKey state c) edges with
            | Some next -> edges, count, next
            | None -> Map.add (edgeKey state c) count edges, count + 1, count
        let edges, count, last = key |> Seq.fold walk (edges, count, 0)
        let ends = if Map.containsKey last ends then ends else Map.add last rank ends
        edges, count, ends, last :: endOf
    keys |> List.indexed |> List.fold insert (Map.empty, 1, Map.empty, [])

/// Builds the matcher for `keys` in rank order (the first key wins when several occur).
let create (keys: string list) : Matcher =
    let edges, count, ends, endOf = trie keys
    let children =
        edges
        |> Map.toList
        |> List.map (fun (k, child) -> int (k >>> 16), (char (k &&& 0xFFFFL), child))
        |> List.groupBy fst
        |> List.map (fun (parent, cs) -> parent, List.map snd cs)
        |> Map.ofList
    let childrenOf s = Map.tryFind s children |> Option.defaultValue []
    let own s = Map.tryFind s ends |> Option.defaultValue noMatch
    // Breadth first, so a state's fail link and best rank are known before its children's.
    let rec bfs (frontier: int list) (fail: Map<int, int>) (best: Map<int, int>) (order: int list) =
        match frontier with
        | [] -> fail, best, List.rev order
        | _ ->
            let visit (next: int list, fail: Map<int, int>, best: Map<int, int>) (parent: int) =
                let rec suffixState f c =
                    match Map.tryFind (edgeKey f c) edges with
                    | Some t -> t
                    | None when f = 0 -> 0
                    | None -> suffixState fail.[f] c
                childrenOf parent
                |> List.fold
                    (fun (next, fail: Map<int, int>, best: Map<int, int>) (c, child) ->
                        let f = if parent = 0 then 0 else suffixState fail.[parent] c
                        child :: next, Map.add child f fail, Map.add child (min (own child) best.[f]) best)
                    (next, fail, best)
            let next, fail, best = frontier |> List.fold visit ([], fail, best)
            bfs (List.rev next) fail best (List.rev frontier @ order)
    let fail, best, order = bfs [ 0 ] (Map.ofList [ 0, 0 ]) (Map.ofList [ 0, own 0 ]) []
    { Keys = ImmutableArray.CreateRange keys
      Edges = (edges |> Map.toSeq |> Seq.map KeyValuePair.Create).ToFrozenDictionary()
      Fail = ImmutableArray.CreateRange(Seq.init count (fun s -> fail.[s]))
      Best = ImmutableArray.CreateRange(Seq.init count (fun s -> best.[s]))
      Own = ImmutableArray.CreateRange(Seq.init count own)
      Ends = ImmutableArray.CreateRange(List.rev endOf)
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
