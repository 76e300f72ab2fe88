/// Fashion-MNIST for `optim train`: the embedded 10k test split (shipped in the assembly, MIT,
/// see data/fashion-mnist/), or the full 60k/10k split from a folder (`--data DIR`, or Debian's
/// `dataset-fashion-mnist` package when installed), as normalised float tensors.
module Optim.Cli.FashionMnist

open System
open System.IO
open TorchSharp
open Optim.Cli.Idx

/// Where Debian's `dataset-fashion-mnist` package puts the files.
let debianFolder = "/usr/share/datasets/fashion-mnist"

/// The class names, by label.
let classes =
    [| "T-shirt/top"; "Trouser"; "Pullover"; "Dress"; "Coat"; "Sandal"; "Shirt"; "Sneaker"; "Bag"; "Ankle boot" |]

/// Images kept for validation out of the embedded 10k (the rest train).
let embeddedValidation = 1000

/// Training and validation sets, and where they came from.
type DataSet =
    { Train: LabelledImages
      Validation: LabelledImages
      Source: string }

/// Which data to train on.
type Choice =
    /// The 10k test split shipped with Optim, split 9,000 / 1,000.
    | Embedded
    /// A folder with train-* and t10k-* IDX files (gzip or raw).
    | Folder of string

/// The default: Debian's folder when the package is installed, otherwise the embedded split.
let defaultChoice () = if Directory.Exists debianFolder then Folder debianFolder else Embedded

let private readResource (name: string) (dims: int) =
    let asm = typeof<DataSet>.Assembly
    use s = asm.GetManifestResourceStream name
    if isNull s then Error { File = "embedded:" + name; Problem = "resource missing from the assembly" }
    else read ("embedded:" + name) dims s

/// The IDX file `stem` (e.g. `train-images-idx3-ubyte`) in `dir`, gzip-compressed or not.
let private findIn (dir: string) (stem: string) =
    [ stem + ".gz"; stem ] |> List.map (fun f -> Path.Combine(dir, f)) |> List.tryFind File.Exists
    |> Option.defaultValue (Path.Combine(dir, stem + ".gz"))

let private pair (imagesName, images) (labelsName, labels) =
    images |> Result.bind (fun i -> labels |> Result.bind (fun l -> labelled (imagesName, i) (labelsName, l) classes.Length))

/// Selects `indices` of a set (a permutation's slice).
let subset (set: LabelledImages) (indices: int[]) : LabelledImages =
    let size = set.Rows * set.Cols
    let pixels = Array.zeroCreate (indices.Length * size)
    indices |> Array.iteri (fun j i -> Array.blit set.Pixels (i * size) pixels (j * size) size)
    { set with Count = indices.Length; Pixels = pixels; Labels = indices |> Array.map (fun i -> set.Labels.[i]) }

/// A permutation of 0..n-1 from a seed (Fisher-Yates over .NET's seeded Random, stable across runs).
let permutation (seed: int) (n: int) : int[] =
    let rng = Random(seed)
    let p = Array.init n id
    for i in n - 1 .. -1 .. 1 do
        let j = rng.Next(i + 1)
        let t = p.[i]
        p.[i] <- p.[j]
        p.[j] <- t
    p

/// Loads the chosen data.
let load (choice: Choice) : Result<DataSet, IdxError> =
    match choice with
    | Embedded ->
        let images = "fashion-mnist/t10k-images-idx3-ubyte.gz"
        let labels = "fashion-mnist/t10k-labels-idx1-ubyte.gz"
        pair ("embedded:" + images, readResource images 3) ("embedded:" + labels, readResource labels 1)
        |> Result.map (fun all ->
            // A fixed split, independent of the training seed, so that runs compare.
            let p = permutation 0 all.Count
            { Train = subset all p.[embeddedValidation..]
              Validation = subset all p.[.. embeddedValidation - 1]
              Source = sprintf "embedded Fashion-MNIST test split (%d train / %d validation)" (all.Count - embeddedValidation) embeddedValidation })
    | Folder dir ->
        if not (Directory.Exists dir) then Error { File = dir; Problem = "no such folder" }
        else
            let file stem = findIn dir stem
            let read dims path = readFile dims path
            let trainImages, trainLabels = file "train-images-idx3-ubyte", file "train-labels-idx1-ubyte"
            let testImages, testLabels = file "t10k-images-idx3-ubyte", file "t10k-labels-idx1-ubyte"
            pair (trainImages, read 3 trainImages) (trainLabels, read 1 trainLabels)
            |> Result.bind (fun train ->
                pair (testImages, read 3 testImages) (testLabels, read 1 testLabels)
                |> Result.bind (fun test ->
                    if (train.Rows, train.Cols) <> (test.Rows, test.Cols) then
                        Error { File = testImages; Problem = sprintf "images are %dx%d, the training images %dx%d" test.Rows test.Cols train.Rows train.Cols }
                    else
                        Ok { Train = train; Validation = test
                             Source = sprintf "%s (%d train / %d validation)" dir train.Count test.Count }))

// Fashion-MNIST's pixel mean and standard deviation (over the training set, in [0, 1]).
let private mean, std = 0.2860f, 0.3530f

/// The images `indices` of a set as a normalised float32 tensor [N, 1, rows, cols] and their labels
/// as int64 [N], on `device`.
let batch (set: LabelledImages) (indices: int[]) (device: torch.Device) : torch.Tensor * torch.Tensor =
    let size = set.Rows * set.Cols
    let pixels = Array.zeroCreate<float32> (indices.Length * size)
    indices
    |> Array.iteri (fun j i ->
        let src = i * size
        let dst = j * size
        for k in 0 .. size - 1 do
            pixels.[dst + k] <- (float32 set.Pixels.[src + k] / 255.0f - mean) / std)
    let labels = indices |> Array.map (fun i -> int64 set.Labels.[i])
    let x = torch.tensor(pixels).reshape(int64 indices.Length, 1L, int64 set.Rows, int64 set.Cols).``to``(device)
    let y = torch.tensor(labels).``to``(device)
    x, y
