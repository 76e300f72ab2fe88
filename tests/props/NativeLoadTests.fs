/// The run-time native-load fix (NativeLoad, ElfVersions) on real files: TorchSharp's library from the
/// NuGet cache (never modified), this machine's libstdc++, and scratch cache folders. The routes in
/// tests/consumers/routes.fsx prove the same in fresh processes (fsi, a project outside the repo).
module Optim.Tests.NativeLoadTests

open System
open System.IO
open System.Reflection
open System.Threading.Tasks
open Expecto
open Optim
open TorchSharp

/// TorchSharp's libLibTorchSharp.so as NuGet restored it (the build patches only its output copy).
let private pristineLibrary () =
    let version = (typeof<torch>.Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>().InformationalVersion.Split('+')).[0]
    let packages =
        match Environment.GetEnvironmentVariable "NUGET_PACKAGES" with
        | null | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages")
        | p -> p
    Path.Combine(packages, "torchsharp", version, "runtimes", "linux-x64", "native", "libLibTorchSharp.so")

let private libstdcxx () = NativeLoad.MappedLibstdcxx()

let private systemLacksVersion () =
    match libstdcxx () with
    | null -> false
    | p -> not ((ElfVersions.Definitions(File.ReadAllBytes p)).Contains NativeLoad.WeakenableVersion)

let private scratch () = Path.Combine(Path.GetTempPath(), "optim-native-test-" + Guid.NewGuid().ToString("N"))

let private needOf (path: string) =
    ElfVersions.Needs(File.ReadAllBytes path) |> Seq.find (fun n -> n.Version = NativeLoad.WeakenableVersion)

[<Tests>]
let tests =
    testList "native load" [
        test "TorchSharp's library strictly needs GLIBCXX_3.4.32 and this process maps a libstdc++ that is read correctly" {
            let need = needOf (pristineLibrary ())
            Expect.equal need.File "libstdc++.so.6" "the version is needed from libstdc++"
            Expect.isFalse need.Weak "restored as published: strict"
            let defs = ElfVersions.Definitions(File.ReadAllBytes(libstdcxx ()))
            Expect.contains defs "GLIBCXX_3.4.21" "a version every supported libstdc++ defines"
        }

        test "the build's output copy is already patched, so the run-time check does nothing in this host" {
            let outcome = NativeLoad.Ensure()
            Expect.stringContains outcome "no native fix needed" outcome
            if systemLacksVersion () then
                Expect.isTrue (needOf (NativeLoad.FindTorchSharpNative(typeof<torch>.Assembly))).Weak "the output copy marks it weak"
            Expect.equal (NativeLoad.Ensure()) outcome "idempotent: the first outcome, not a second run"
        }

        test "a patched copy is written under the cache, keyed by the original's hash, differing in that one flag only" {
            let original = pristineLibrary ()
            let before = File.ReadAllBytes original
            let cache = scratch ()
            try
                let prepared = NativeLoad.Prepare(original, Func<_>(libstdcxx), cache)
                if systemLacksVersion () then
                    Expect.isNotNull prepared.Copy prepared.Description
                    let hash = Convert.ToHexStringLower(Security.Cryptography.SHA256.HashData before)
                    Expect.equal prepared.Copy (Path.Combine(cache, hash, "libLibTorchSharp.so")) "named by the original's SHA-256"
                    Expect.stringContains prepared.Description "wrote" prepared.Description
                    let copy = File.ReadAllBytes prepared.Copy
                    let differing = [ for i in 0 .. before.Length - 1 do if before.[i] <> copy.[i] then i ]
                    let need = needOf prepared.Copy
                    Expect.isTrue need.Weak "weak in the copy"
                    Expect.equal differing [ need.FlagsOffset ] "one byte changed: the vna_flags of GLIBCXX_3.4.32"
                    Expect.equal (File.ReadAllBytes original) before "the NuGet cache's file is untouched"
                    let written = File.GetLastWriteTimeUtc prepared.Copy
                    let again = NativeLoad.Prepare(original, Func<_>(libstdcxx), cache)
                    Expect.equal again.Copy prepared.Copy "same copy"
                    Expect.stringContains again.Description "cached" again.Description
                    Expect.equal (File.GetLastWriteTimeUtc again.Copy) written "not rewritten"
                    Expect.isEmpty (Directory.GetFiles(Path.GetDirectoryName prepared.Copy, "*.tmp")) "no temporary files left"
                else
                    Expect.isNull prepared.Copy "a libstdc++ with the version needs no copy"
                    skiptest "this libstdc++ has GLIBCXX_3.4.32: nothing to patch"
            finally
                if Directory.Exists cache then Directory.Delete(cache, true)
        }

        test "concurrent preparations (threads of one process, or processes) end with one whole copy" {
            if systemLacksVersion () then
                let cache = scratch ()
                try
                    let results = Parallel.For(0, 8, fun _ -> NativeLoad.Prepare(pristineLibrary (), Func<_>(libstdcxx), cache) |> ignore)
                    Expect.isTrue results.IsCompleted "all finished"
                    let dir = Directory.GetDirectories cache |> Array.exactlyOne
                    Expect.equal (Directory.GetFiles dir |> Array.map Path.GetFileName) [| "libLibTorchSharp.so" |] "one file, no temporaries"
                    Expect.isTrue (needOf (Path.Combine(dir, "libLibTorchSharp.so"))).Weak "a whole, patched copy"
                finally
                    Directory.Delete(cache, true)
            else skiptest "this libstdc++ has GLIBCXX_3.4.32: nothing to patch"
        }

        test "an unwritable cache is a NativeLoadException naming the folder and the two variables" {
            if systemLacksVersion () then
                // A folder below a regular file cannot be created, whoever the user is (root included).
                let file = Path.GetTempFileName()
                try
                    let ex = try NativeLoad.Prepare(pristineLibrary (), Func<_>(libstdcxx), Path.Combine(file, "cache")) |> ignore; None with :? NativeLoadException as e -> Some e
                    Expect.isSome ex "throws NativeLoadException"
                    let msg = ex.Value.Message
                    Expect.stringContains msg (Path.Combine(file, "cache")) "names the folder"
                    Expect.stringContains msg NativeLoad.CacheVariable "says how to choose another folder"
                    Expect.stringContains msg NativeLoad.OptOutVariable "says how to opt out"
                finally
                    File.Delete file
            else skiptest "this libstdc++ has GLIBCXX_3.4.32: nothing to patch"
        }

        test "the cache root follows OPTIM_NATIVE_CACHE, else XDG_CACHE_HOME, else ~/.cache" {
            let saved = Environment.GetEnvironmentVariable NativeLoad.CacheVariable, Environment.GetEnvironmentVariable "XDG_CACHE_HOME"
            try
                Environment.SetEnvironmentVariable(NativeLoad.CacheVariable, "/tmp/explicit")
                Expect.equal (NativeLoad.CacheRoot()) "/tmp/explicit" "explicit"
                Environment.SetEnvironmentVariable(NativeLoad.CacheVariable, null)
                Environment.SetEnvironmentVariable("XDG_CACHE_HOME", "/tmp/xdg")
                Expect.equal (NativeLoad.CacheRoot()) "/tmp/xdg/optim/native" "XDG"
                Environment.SetEnvironmentVariable("XDG_CACHE_HOME", null)
                Expect.equal (NativeLoad.CacheRoot()) (Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".cache", "optim", "native")) "home"
            finally
                Environment.SetEnvironmentVariable(NativeLoad.CacheVariable, fst saved)
                Environment.SetEnvironmentVariable("XDG_CACHE_HOME", snd saved)
        }
    ]
