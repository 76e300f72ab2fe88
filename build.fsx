// Optim's build script: plain F# (FAKE does not restore here).
//   dotnet fsi build.fsx build     restore and build the solution (the native-load fix runs as part of it)
//   dotnet fsi build.fsx test      build, then run the Expecto suite in tests/props
//   dotnet fsi build.fsx bench     run the BenchmarkDotNet suite in bench/ (Release, short job), then a 1,000-step memory run
//   dotnet fsi build.fsx bench --smoke   every benchmark once (dry job, optimizer steps on 100 k parameters) and a 20-step memory run
//   dotnet fsi build.fsx bench <args>    passes BenchmarkDotNet arguments
//   dotnet fsi build.fsx pack      pack Optim.Core and Optim (+ .snupkg symbols) into ./artifacts, the local feed
open System
open System.Diagnostics

let root = __SOURCE_DIRECTORY__

/// Runs a command in the repository root, echoing its output with trailing blanks trimmed
/// (Expecto's console pads lines), and returns its exit code.
let run (file: string) (args: string) : int =
    printfn "> %s %s" file args
    let psi = ProcessStartInfo(file, args, WorkingDirectory = root, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    use p = new Process(StartInfo = psi)
    p.OutputDataReceived.Add(fun e -> if not (isNull e.Data) then Console.Out.WriteLine(e.Data.TrimEnd()))
    p.ErrorDataReceived.Add(fun e -> if not (isNull e.Data) then Console.Error.WriteLine(e.Data.TrimEnd()))
    p.Start() |> ignore
    p.BeginOutputReadLine()
    p.BeginErrorReadLine()
    p.WaitForExit()
    p.ExitCode

let orFail code = if code <> 0 then exit code

let build () = run "dotnet" "build Optim.sln -nologo -clp:NoSummary" |> orFail

let test (extra: string) =
    build ()
    run "dotnet" ("run --project tests/props --no-build -- " + extra) |> exit

match fsi.CommandLineArgs |> Array.toList |> List.tail with
| [] | [ "build" ] -> build ()
| "test" :: rest -> test (String.Join(" ", rest))
| [ "bench" ] ->
    run "dotnet" "run -c Release --project bench -- --filter * --job short" |> orFail
    run "dotnet" "run -c Release --no-build --project bench -- memory 1000 bfloat16 library" |> exit
| [ "bench"; "--smoke" ] ->
    // Everything runs once, nothing more (the step harness on 100 k parameters).
    Environment.SetEnvironmentVariable("OPTIM_BENCH_SMOKE", "1")
    run "dotnet" "run -c Release --project bench -- --filter * --job dry" |> orFail
    run "dotnet" "run -c Release --no-build --project bench -- memory 20 bfloat16 library mlp 8" |> exit
| "bench" :: args -> run "dotnet" ("run -c Release --project bench -- " + String.Join(" ", args)) |> exit
| [ "pack" ] ->
    // The two packages only (the solution's other projects are not packable): Optim.Core, then Optim.
    for project in [ "src/Optim.Core.fs"; "src/Optim.CSharp" ] do
        run "dotnet" ("pack " + project + " -c Release -o artifacts -nologo") |> orFail
| other -> eprintfn "usage: dotnet fsi build.fsx [build|test|bench|pack] (got %A)" other; exit 2
