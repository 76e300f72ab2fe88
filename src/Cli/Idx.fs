/// Reading IDX files (the format of MNIST and Fashion-MNIST), plain or gzip-compressed: a magic
/// number (two zero bytes, a type code, the number of dimensions), the dimensions as big-endian
/// 32-bit integers, then the data. Only unsigned-byte data (type 0x08) is used here. Every problem
/// is an error naming the file, never a partial array.
module Optim.Cli.Idx

open System
open System.IO
open System.IO.Compression

/// An IDX array of unsigned bytes: its dimensions and its data in row-major order.
type IdxArray = { Dims: int list; Data: byte[] }

/// Why an IDX file could not be used; `File` is the name given for it.
type IdxError =
    { File: string
      Problem: string }
    member e.Message = sprintf "%s: %s" e.File e.Problem

let private unsignedByte = 0x08uy

let private isGzip (bytes: byte[]) = bytes.Length >= 2 && bytes.[0] = 0x1fuy && bytes.[1] = 0x8buy

let private gunzip (name: string) (bytes: byte[]) : Result<byte[], IdxError> =
    try
        use input = new GZipStream(new MemoryStream(bytes), CompressionMode.Decompress)
        use output = new MemoryStream()
        input.CopyTo output
        Ok(output.ToArray())
    with
    | :? InvalidDataException
    | :? EndOfStreamException as e ->
        Error { File = name; Problem = sprintf "corrupt or truncated gzip data (%s)" e.Message }

let private bigEndianInt (b: byte[]) (offset: int) =
    (int b.[offset] <<< 24) ||| (int b.[offset + 1] <<< 16) ||| (int b.[offset + 2] <<< 8) ||| int b.[offset + 3]

/// Parses the (decompressed) bytes of an IDX file of unsigned bytes with `expectedDims` dimensions.
let parse (name: string) (expectedDims: int) (raw: byte[]) : Result<IdxArray, IdxError> =
    let fail fmt = Printf.ksprintf (fun p -> Error { File = name; Problem = p }) fmt
    if raw.Length < 4 then fail "truncated: %d bytes, too short for the 4-byte IDX magic number" raw.Length
    elif raw.[0] <> 0uy || raw.[1] <> 0uy then
        fail "not an IDX file: magic number 0x%02x%02x%02x%02x does not start with two zero bytes" raw.[0] raw.[1] raw.[2] raw.[3]
    elif raw.[2] <> unsignedByte then fail "IDX data type 0x%02x, expected 0x08 (unsigned byte)" raw.[2]
    elif int raw.[3] <> expectedDims then
        fail "wrong magic number 0x%08x: %d dimensions, expected %d (0x%08x)" (bigEndianInt raw 0) raw.[3] expectedDims (0x800 + expectedDims)
    else
        let headerLength = 4 + 4 * expectedDims
        if raw.Length < headerLength then fail "truncated: %d bytes, the header alone needs %d" raw.Length headerLength
        else
            let dims = [ for i in 0 .. expectedDims - 1 -> bigEndianInt raw (4 + 4 * i) ]
            if dims |> List.exists (fun d -> d < 0) then fail "negative dimension in %A" dims
            else
                let expected = dims |> List.fold (fun acc d -> acc * int64 d) 1L
                let actual = int64 (raw.Length - headerLength)
                if actual < expected then
                    fail "truncated: dimensions %s need %d bytes of data, the file has %d" (String.Join("x", dims)) expected actual
                elif actual > expected then
                    fail "%d bytes after the data of dimensions %s (expected exactly %d)" (actual - expected) (String.Join("x", dims)) expected
                else Ok { Dims = dims; Data = raw.[headerLength..] }

/// Reads an IDX array from a stream (gzip-compressed or not, told by its first bytes).
let read (name: string) (expectedDims: int) (stream: Stream) : Result<IdxArray, IdxError> =
    use buffer = new MemoryStream()
    stream.CopyTo buffer
    let bytes = buffer.ToArray()
    (if isGzip bytes then gunzip name bytes else Ok bytes) |> Result.bind (parse name expectedDims)

/// Reads an IDX file (gzip-compressed or not).
let readFile (expectedDims: int) (path: string) : Result<IdxArray, IdxError> =
    try
        use s = File.OpenRead path
        read path expectedDims s
    with
    | :? FileNotFoundException
    | :? DirectoryNotFoundException -> Error { File = path; Problem = "no such file" }
    | :? UnauthorizedAccessException as e -> Error { File = path; Problem = e.Message }

/// Labelled images: `Count` images of `Rows` x `Cols` bytes each, and one label byte per image.
type LabelledImages =
    { Count: int
      Rows: int
      Cols: int
      Pixels: byte[]
      Labels: byte[] }

/// Pairs an images array (3 dimensions) with a labels array (1 dimension): the counts must agree
/// and every label must be below `classes`.
let labelled (imagesName: string, images: IdxArray) (labelsName: string, labels: IdxArray) (classes: int) : Result<LabelledImages, IdxError> =
    match images.Dims, labels.Dims with
    | [ n; rows; cols ], [ m ] when n <> m ->
        Error { File = labelsName; Problem = sprintf "%d labels, but %s holds %d images" m imagesName n }
    | [ n; rows; cols ], [ _ ] ->
        match labels.Data |> Array.tryFindIndex (fun l -> int l >= classes) with
        | Some i -> Error { File = labelsName; Problem = sprintf "label %d at index %d, expected 0..%d" labels.Data.[i] i (classes - 1) }
        | None -> Ok { Count = n; Rows = rows; Cols = cols; Pixels = images.Data; Labels = labels.Data }
    | d, _ -> Error { File = imagesName; Problem = sprintf "expected 3 dimensions, got %A" d }
