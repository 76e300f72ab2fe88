/// Data-parallel training as decisions on plain data: which gradients share an all-reduce bucket,
/// which samples each rank sees, and whether the ranks' models have the same layout.
/// (The facade does the tensor work and the MPI calls.)
module Optim.Core.DataParallel

/// One gradient as bucketing sees it: its position in the module's parameter order, its size and
/// where it lives (a bucket holds one device and one dtype, so it can be one flat tensor).
type GradSlot =
    { Index: int
      Numel: int64
      ElementSize: int
      Device: string
      Dtype: string }

/// PyTorch's default bucket cap: 25 MB (`bucket_cap_mb=25`, MiB).
let defaultBucketCapMb = 25.0

/// The bucket cap in bytes; it must be positive and finite.
let capBytes (bucketCapMb: float) : Result<int64, string> =
    if System.Double.IsFinite bucketCapMb && bucketCapMb > 0.0 then Ok(max 1L (int64 (bucketCapMb * 1024.0 * 1024.0)))
    else Error(sprintf "bucket_cap_mb must be a positive number of megabytes, got %g" bucketCapMb)

/// Buckets of slot indices (into `slots`), in reverse parameter order as PyTorch's reducer builds
/// them (the last layers' gradients are ready first), one (device, dtype) per bucket, each bucket
/// closed when the next gradient would take it past the cap; a gradient larger than the cap is a
/// bucket of its own.
let planBuckets (capBytes: int64) (slots: GradSlot list) : int list list =
    // Each bucket: (position of its first gradient in reverse order, key, members reversed, bytes, open).
    let step (buckets: (int * (string * string) * int list * int64 * bool) list) (pos: int, s: GradSlot) =
        let key = (s.Device, s.Dtype)
        let bytes = s.Numel * int64 s.ElementSize
        let isOpenFor (_, k, _, _, isOpen) = isOpen && k = key
        match List.tryFind isOpenFor buckets with
        | Some(first, _, members, size, _) when size + bytes <= capBytes ->
            buckets |> List.map (fun b -> if isOpenFor b then (first, key, s.Index :: members, size + bytes, true) else b)
        | Some _ ->
            let closedOld = buckets |> List.map (fun ((f, k, m, z, _) as b) -> if isOpenFor b then (f, k, m, z, false) else b)
            (pos, key, [ s.Index ], bytes, true) :: closedOld
        | None -> (pos, key, [ s.Index ], bytes, true) :: buckets
    slots
    |> List.rev
    |> List.indexed
    |> List.fold step []
    |> List.sortBy (fun (first, _, _, _, _) -> first)
    |> List.map (fun (_, _, members, _, _) -> List.rev members)

/// How many samples each rank gets per epoch (PyTorch's `num_samples`).
let samplesPerRank (datasetLength: int) (numReplicas: int) (dropLast: bool) =
    if dropLast && datasetLength % numReplicas <> 0 then datasetLength / numReplicas
    else (datasetLength + numReplicas - 1) / numReplicas

/// PyTorch's `DistributedSampler` index arithmetic: given the epoch's order of the data set's
/// indices (shuffled or not), pad by wrapping around to a multiple of the rank count (or drop the
/// tail when `dropLast`), and give rank `rank` every `numReplicas`-th index starting at `rank`.
let shard (order: int64[]) (numReplicas: int) (rank: int) (dropLast: bool) : Result<int64[], string> =
    if numReplicas < 1 then Error(sprintf "num_replicas must be at least 1, got %d" numReplicas)
    elif rank < 0 || rank >= numReplicas then Error(sprintf "Invalid rank %d, rank should be in the interval [0, %d]" rank (numReplicas - 1))
    else
        let n = order.Length
        let perRank = samplesPerRank n numReplicas dropLast
        if n = 0 then Ok [||]
        else Ok(Array.init perRank (fun k -> order.[(rank + k * numReplicas) % n]))

/// A tensor's layout as exchanged between ranks: dtype code, rank (number of dims), up to
/// `maxDims` sizes (unused ones -1) and the element count — fixed width so all ranks send equal counts.
let maxDims = 8
let layoutWidth = maxDims + 3

/// Encodes one tensor's layout in `layoutWidth` int64s.
let encodeLayout (dtypeCode: int64) (shape: int64[]) : int64[] =
    let numel = Array.fold (*) 1L shape
    Array.init layoutWidth (fun i ->
        if i = 0 then dtypeCode
        elif i = 1 then int64 shape.Length
        elif i - 2 < maxDims then (if i - 2 < shape.Length then shape.[i - 2] else -1L)
        else numel)

/// The shape written back from an encoded layout (`...` when it had more than `maxDims` dims).
let private describeLayout (dtypeName: int64 -> string) (layout: int64[]) =
    let ndim = int layout.[1]
    let dims = [ for d in 0 .. (min ndim maxDims) - 1 -> string layout.[2 + d] ]
    let dims = if ndim > maxDims then dims @ [ "..." ] else dims
    sprintf "[%s] %s" (String.concat ", " dims) (dtypeName layout.[0])

/// Checks that every rank holds the same tensors. `counts.[r]` is rank r's (parameter, buffer)
/// counts; `layouts.[r]` its tensors' encoded layouts concatenated (parameters then buffers);
/// `names` this rank's tensor names in the same order. Error: a message that every rank can print,
/// naming the first tensor that differs and each rank's view of it.
let checkSameLayout
    (dtypeName: int64 -> string)
    (names: string[])
    (counts: (int * int)[])
    (layouts: int64[][])
    : Result<unit, string> =
    let describeCounts () =
        counts |> Array.mapi (fun r (p, b) -> sprintf "rank %d: %d parameters, %d buffers" r p b) |> String.concat "; "
    if counts |> Array.distinct |> Array.length > 1 then
        Error(sprintf "DistributedDataParallel: the ranks' modules differ (%s); every rank must build the same model" (describeCounts ()))
    else
        let tensors = if layouts.Length = 0 then 0 else layouts.[0].Length / layoutWidth
        let layoutOf r i = layouts.[r].[i * layoutWidth .. (i + 1) * layoutWidth - 1]
        let firstDiff =
            seq { 0 .. tensors - 1 }
            |> Seq.tryFind (fun i -> layouts |> Array.mapi (fun r _ -> layoutOf r i) |> Array.distinct |> Array.length > 1)
        match firstDiff with
        | None -> Ok()
        | Some i ->
            let nParams = fst counts.[0]
            let kind = if i < nParams then "parameter" else "buffer"
            let name = if i < names.Length then names.[i] else string i
            let views =
                layouts |> Array.mapi (fun r _ -> sprintf "rank %d: %s" r (describeLayout dtypeName (layoutOf r i))) |> String.concat "; "
            Error(sprintf "DistributedDataParallel: %s '%s' (tensor %d) differs across ranks (%s); every rank must build the same model" kind name i views)
