/// NativeAllocator: building an AmpOptimWrapper fixes glibc's mmap threshold, so large blocks that
/// autocast frees go back to the system instead of fragmenting the heap.
module Optim.Tests.NativeAllocatorTests

open System
open Expecto
open TorchSharp
open Optim

let private mapped () =
    GC.Collect()
    GC.WaitForPendingFinalizers()
    match NativeAllocator.Statistics() with
    | null -> failtest "mallinfo2 is missing (not glibc?)"
    | s -> s.Mapped

let private mb = 1024L * 1024L

[<Tests>]
let tests =
    testList "native allocator" [
        test "an AmpOptimWrapper fixes the mmap threshold: a freed 16 MB tensor is unmapped, and the next one is mapped again (glibc would serve it from the heap)" {
            if not (OperatingSystem.IsLinux()) then skiptest "glibc only"
            let model = torch.nn.Linear(4L, 2L)
            AmpOptimWrapper(torch.optim.SGD(model.parameters(), 0.1)) |> ignore
            Expect.isTrue NativeAllocator.IsThresholdFixed "fixed when the wrapper was built"
            for round in 1..3 do
                let before = mapped ()
                let t = torch.empty([| 4L * 1024L * 1024L |], dtype = torch.float32)
                let during = mapped ()
                t.Dispose()
                let after = mapped ()
                Expect.isGreaterThanOrEqual (during - before) (16L * mb) (sprintf "round %d: the tensor is a mapping of its own" round)
                Expect.isGreaterThanOrEqual (during - after) (16L * mb) (sprintf "round %d: freeing it unmaps it" round)
        }
        test "malloc_trim and the statistics answer on glibc" {
            if not (OperatingSystem.IsLinux()) then skiptest "glibc only"
            NativeAllocator.Trim() |> ignore
            let s = NativeAllocator.Statistics()
            Expect.isNotNull s "mallinfo2"
            Expect.isGreaterThanOrEqual s.FreeInArenas 0L "free bytes"
            Expect.isGreaterThan s.Arenas 0L "the heap has arenas"
        }
    ]
