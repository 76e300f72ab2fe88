// Every way a user reaches Optim, tried from outside the repository after `dotnet fsi build.fsx pack`:
//   packages    the packed .nuspec files: dependencies, license, readme, symbols, one version
//   core        a C# app using the Optim.Core package alone (compiles only if it declares FSharp.Core)
//   package     a C# console app restoring Optim from the local feed into its own NuGet packages folder
//   projectref  a C# console app outside the repository with a ProjectReference to src/Optim.CSharp
//   scripts     examples/scripts/*.fsx under `dotnet fsi` (`#r "nuget: Optim"`), and fsi's printing
//   dotnet-test `dotnet test tests/props` runs the suite (a filtered run here)
// Each route trains a few steps, checks that the loss dropped and prints one line; any failure prints
// the command's output and exits 1.   Usage: dotnet fsi tests/consumers/routes.fsx [route ...]
open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open System.Security.Cryptography
open System.Text.RegularExpressions
open System.Xml.Linq

let root = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", ".."))
let artifacts = Path.Combine(root, "artifacts")
let version =
    let props = File.ReadAllText(Path.Combine(root, "Directory.Build.props"))
    Regex.Match(props, "<Version>([^<]+)</Version>").Groups[1].Value

let fail (route: string) (message: string) : 'a =
    eprintfn "route %s: FAILED: %s" route message
    exit 1

/// Runs a command with extra environment variables; returns (exit code, stdout + stderr).
let run (cwd: string) (env: (string * string) list) (file: string) (args: string) (stdin: string option) =
    let psi = ProcessStartInfo(file, args, WorkingDirectory = cwd, RedirectStandardOutput = true,
                               RedirectStandardError = true, RedirectStandardInput = stdin.IsSome, UseShellExecute = false)
    for k, v in env do psi.Environment[k] <- v
    use p = new Process(StartInfo = psi)
    let out = Text.StringBuilder()
    let add (e: DataReceivedEventArgs) = if not (isNull e.Data) then lock out (fun () -> out.AppendLine(e.Data) |> ignore)
    p.OutputDataReceived.Add add
    p.ErrorDataReceived.Add add
    p.Start() |> ignore
    p.BeginOutputReadLine()
    p.BeginErrorReadLine()
    stdin |> Option.iter (fun text -> p.StandardInput.Write(text); p.StandardInput.Close())
    p.WaitForExit()
    p.ExitCode, out.ToString()

/// Runs a command that must succeed; on failure prints its output and stops.
let mustRun route cwd env file args =
    let code, output = run cwd env file args None
    if code <> 0 then
        eprintfn "%s" output
        fail route (sprintf "`%s %s` exited with %d" file args code)
    output

let lineStarting (prefix: string) (output: string) =
    output.Split('\n') |> Array.map (fun l -> l.TrimEnd()) |> Array.tryFind (fun l -> l.StartsWith prefix)

let timed route (f: unit -> string) =
    let clock = Stopwatch.StartNew()
    let line = f ()
    printfn "route %s (%.0f s): %s" route clock.Elapsed.TotalSeconds line

let copyDir (source: string) (target: string) =
    for dir in Directory.GetDirectories(source, "*", SearchOption.AllDirectories) do
        if not (dir.Contains "/bin" || dir.Contains "/obj") then
            Directory.CreateDirectory(Path.Combine(target, Path.GetRelativePath(source, dir))) |> ignore
    Directory.CreateDirectory target |> ignore
    for file in Directory.GetFiles(source, "*", SearchOption.AllDirectories) do
        let rel = Path.GetRelativePath(source, file)
        if not (rel.StartsWith "bin/" || rel.StartsWith "obj/" || rel.Contains "/bin/" || rel.Contains "/obj/") then
            File.Copy(file, Path.Combine(target, rel), true)

// A scratch folder outside the repository: nothing of the repository's MSBuild files reaches it.
let work = Path.Combine(Path.GetTempPath(), "optim-routes-" + Guid.NewGuid().ToString("N").Substring(0, 8))
if Path.GetFullPath(work).StartsWith(root + "/") then fail "setup" (sprintf "%s is inside the repository" work)
Directory.CreateDirectory work |> ignore
let feed = Path.Combine(work, "artifacts")
let packages = Path.Combine(work, "packages")                 // the consumers' own NuGet packages folder
let nativeCache = Path.Combine(work, "native-cache")          // a fresh cache: the first route to need it writes the copy
let privateEnv = [ "NUGET_PACKAGES", packages; "OPTIM_FEED", feed; "OPTIM_NATIVE_CACHE", nativeCache ]

let nupkg id = Path.Combine(artifacts, sprintf "%s.%s.nupkg" id version)

let packagesRoute () =
    timed "packages" (fun () ->
        for id in [ "Optim.Core"; "Optim" ] do
            for ext in [ "nupkg"; "snupkg" ] do
                let p = Path.Combine(artifacts, sprintf "%s.%s.%s" id version ext)
                if not (File.Exists p) then fail "packages" (sprintf "%s is missing: run `dotnet fsi build.fsx pack` first" p)
        let read id =
            use zip = ZipFile.OpenRead(nupkg id)
            let entries = zip.Entries |> Seq.map (fun e -> e.FullName) |> Set.ofSeq
            let nuspec = zip.GetEntry(id + ".nuspec")
            use s = nuspec.Open()
            XDocument.Load(s), entries
        let el (doc: XDocument) name = doc.Descendants() |> Seq.filter (fun e -> e.Name.LocalName = name) |> List.ofSeq
        let value doc name = match el doc name with e :: _ -> e.Value | [] -> ""
        let deps doc = el doc "dependency" |> List.map (fun e -> e.Attribute(XName.Get "id").Value, e.Attribute(XName.Get "version").Value)
        let check id (expectedDeps: string list) (expectedFiles: string list) =
            let doc, entries = read id
            let got = deps doc |> List.map fst |> List.sort
            if got <> List.sort expectedDeps then fail "packages" (sprintf "%s depends on %A, expected %A" id got expectedDeps)
            if value doc "version" <> version then fail "packages" (sprintf "%s has version %s, Directory.Build.props says %s" id (value doc "version") version)
            let license = el doc "license"
            if value doc "license" <> "MIT" || (license |> List.exists (fun e -> e.Attribute(XName.Get "type").Value = "expression") |> not) then
                fail "packages" (sprintf "%s: license should be the MIT expression" id)
            for name in [ "description"; "tags"; "readme"; "projectUrl" ] do
                if String.IsNullOrWhiteSpace(value doc name) then fail "packages" (sprintf "%s: <%s> is empty" id name)
            let repo = el doc "repository"
            if repo |> List.exists (fun e -> (e.Attribute(XName.Get "url") |> isNull |> not) && e.Attribute(XName.Get "type").Value = "git") |> not then
                fail "packages" (sprintf "%s: no git <repository url>" id)
            for f in "README.md" :: "LICENSE" :: expectedFiles do
                if not (entries.Contains f) then fail "packages" (sprintf "%s lacks %s (has %A)" id f entries)
            if entries |> Set.exists (fun e -> e.StartsWith "runtimes/") then fail "packages" (sprintf "%s ships native runtimes" id)
            deps doc
        let coreDeps = check "Optim.Core" [ "FSharp.Core" ] [ "lib/net10.0/Optim.Core.dll"; "lib/net10.0/Optim.Core.xml" ]
        let optimDeps =
            check "Optim" [ "Optim.Core"; "TorchSharp"; "Microsoft.Extensions.Logging.Abstractions" ]
                [ "lib/net10.0/Optim.dll"; "lib/net10.0/Optim.xml"; "build/Optim.targets"; "buildTransitive/Optim.targets" ]
        if optimDeps |> List.exists (fun (id, v) -> id = "Optim.Core" && v <> version) then fail "packages" "Optim depends on another Optim.Core version"
        for id, pdb in [ "Optim.Core", "lib/net10.0/Optim.Core.pdb"; "Optim", "lib/net10.0/Optim.pdb" ] do
            use zip = ZipFile.OpenRead(Path.Combine(artifacts, sprintf "%s.%s.snupkg" id version))
            if zip.GetEntry pdb |> isNull then fail "packages" (sprintf "%s.snupkg lacks %s" id pdb)
        sprintf "Optim %s -> %s; Optim.Core -> %s; MIT, readme, symbols"
            version (optimDeps |> List.map fst |> String.concat ", ") (coreDeps |> List.map fst |> String.concat ", "))

let coreRoute () =
    timed "core" (fun () ->
        let project = Path.Combine(work, "consumers", "core")
        let output = mustRun "core" project privateEnv "dotnet" (sprintf "run -c Release -p:OptimVersion=%s" version)
        match lineStarting "core:" output with
        | Some line -> line
        | None -> eprintfn "%s" output; fail "core" "no result line")

let packageRoute () =
    timed "package" (fun () ->
        let project = Path.Combine(work, "consumers", "package")
        let output = mustRun "package" project privateEnv "dotnet" (sprintf "run -c Release -p:OptimVersion=%s -- package" version)
        // Optim came from the local feed into the private folder, byte for byte.
        let restored = Path.Combine(packages, "optim", version, sprintf "optim.%s.nupkg" version)
        if not (File.Exists restored) then fail "package" (sprintf "%s not restored into the private packages folder" restored)
        let sha (p: string) = Convert.ToHexString(SHA512.HashData(File.ReadAllBytes p))
        if sha restored <> sha (nupkg "Optim") then fail "package" "the restored Optim package is not the one in artifacts/"
        match lineStarting "package:" output with
        | Some line -> line
        | None -> eprintfn "%s" output; fail "package" "no result line")

/// True when this machine's libstdc++ lacks the version TorchSharp's library asks for (Debian 12, Ubuntu 22.04).
let oldLibstdcxx =
    [ "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"; "/lib64/libstdc++.so.6"; "/usr/lib64/libstdc++.so.6" ]
    |> List.tryFind File.Exists
    |> Option.map (fun p -> not ((File.ReadAllText p).Contains "GLIBCXX_3.4.32"))
    |> Option.defaultValue false

let projectRefRoute () =
    timed "projectref" (fun () ->
        let project = Path.Combine(work, "consumers", "projectref")
        let env = [ "OPTIM_REPO", root; "OPTIM_NATIVE_CACHE", nativeCache ]
        mustRun "projectref" project env "dotnet" "build -nologo -v q -clp:NoSummary" |> ignore
        let dll = Path.Combine(project, "bin", "Debug", "net10.0", "Consumer.ProjectRef.dll")
        let output = mustRun "projectref" project env "dotnet" (sprintf "\"%s\" projectref" dll)
        let line = match lineStarting "projectref:" output with Some l -> l | None -> eprintfn "%s" output; fail "projectref" "no result line"
        if oldLibstdcxx then
            if not (line.Contains "patched copy") then fail "projectref" ("the run-time fix should have loaded a patched copy: " + line)
            if (lineStarting "Optim: " output).IsNone then fail "projectref" "the run-time fix printed no `Optim: ...` line to standard error"
            // The opt-out really turns it off (and is what makes this route work): TorchSharp then fails to load.
            let code, _ = run project (("OPTIM_SKIP_NATIVE_FIX", "1") :: env) "dotnet" (sprintf "\"%s\" projectref" dll) None
            if code = 0 then fail "projectref" "with OPTIM_SKIP_NATIVE_FIX=1 the consumer still trained: the check proves nothing"
        line + (if oldLibstdcxx then "; with OPTIM_SKIP_NATIVE_FIX=1 it fails, as it must" else ""))

let scriptsRoute () =
    let scripts = Path.Combine(work, "examples", "scripts")
    for script in Directory.GetFiles(scripts, "*.fsx") |> Array.sort do
        let name = Path.GetFileName script
        timed ("scripts/" + name) (fun () ->
            let text = File.ReadAllText script
            if not (text.Contains(sprintf "#r \"nuget: Optim, %s\"" version)) then
                fail "scripts" (sprintf "%s should reference Optim %s (Directory.Build.props)" name version)
            let output = mustRun "scripts" scripts privateEnv "dotnet" (sprintf "fsi \"%s\"" script)
            // MSBuild never sees a script: on an old libstdc++ only the run-time fix can have loaded TorchSharp.
            if oldLibstdcxx && not (output.Contains "Optim: " && output.Contains "patched copy") then
                eprintfn "%s" output; fail "scripts" (name + ": no `Optim: ... patched copy` line from the run-time fix")
            match lineStarting (name + ":") output with
            | Some line -> line
            | None -> eprintfn "%s" output; fail "scripts" (name + ": no result line"))
    // The README's `#r` lines for assemblies built from the clone instead of packages.
    timed "scripts/built-assemblies" (fun () ->
        mustRun "scripts" root [] "dotnet" "build src/Optim.CSharp -nologo -v q -clp:NoSummary" |> ignore
        let bin = Path.Combine(root, "src", "Optim.CSharp", "bin", "Debug", "net10.0")
        let script = Path.Combine(work, "built.fsx")
        File.WriteAllText(script, String.concat "\n" [
            "#r \"nuget: TorchSharp, 0.107.0\""
            "#r \"nuget: libtorch-cpu-linux-x64, 2.10.0\""
            "#r \"nuget: Microsoft.Extensions.Logging.Abstractions, 10.0.0\""
            sprintf "#r \"%s/Optim.Core.dll\"" bin
            sprintf "#r \"%s/Optim.dll\"" bin
            "open TorchSharp"
            "torch.manual_seed 0L |> ignore"
            "let model = torch.nn.Linear(1L, 1L)"
            "let w = Optim.OptimWrapper(torch.optim.SGD(model.parameters(), 0.1))"
            "let x, y = torch.ones(8L, 1L), torch.full(8L, 1L, 3.0f)"
            "let loss () = torch.nn.functional.mse_loss(model.forward x, y)"
            "let first = loss().item<float32>()"
            "for _ in 1 .. 10 do w.update_params(loss ())"
            "let last = loss().item<float32>()"
            "if not (last < first) then failwith \"loss did not drop\""
            "printfn \"built.fsx: mse %.4f -> %.4f in 10 steps with %s\" first last typeof<Optim.OptimWrapper>.Assembly.Location" ])
        let output = mustRun "scripts" work privateEnv "dotnet" (sprintf "fsi \"%s\"" script)
        match lineStarting "built.fsx:" output with
        | Some line -> line
        | None -> eprintfn "%s" output; fail "scripts" "built.fsx: no result line")
    // fsi echoes wrapper values the way the seed prints them.
    timed "scripts/fsi-printing" (fun () ->
        let session =
            String.concat "\n" [
                sprintf "#r \"nuget: Optim, %s\";;" version
                "#r \"nuget: libtorch-cpu-linux-x64, 2.10.0\";;"
                "let w = Optim.OptimWrapper(TorchSharp.torch.optim.SGD(TorchSharp.torch.nn.Linear(1L, 1L).parameters(), 0.01));;"
                "w.get_lr();;"
                "w.param_groups.[0];;"
                "w.state_dict();;"
                "#quit;;" ]
        let code, output = run scripts privateEnv "dotnet" "fsi" (Some session)
        let expected =
            [ "val it: Optim.HyperParameterValues = {'lr': [0.01]}"
              "{'lr': 0.01, 'momentum': 0, 'dampening': 0, 'weight_decay': 0, 'nesterov': False, 'maximize': False}"
              "val it: Optim.OptimStateDict =" ]
        match expected |> List.tryFind (fun e -> not (output.Contains e)) with
        | Some missing -> eprintfn "%s" output; fail "scripts" (sprintf "fsi printed no `%s` (exit %d)" missing code)
        | None -> "get_lr() echoes {'lr': [0.01]}; param groups and state dicts print as Python dicts")

let dotnetTestRoute () =
    timed "dotnet-test" (fun () ->
        let output = mustRun "dotnet-test" root [] "dotnet" "test tests/props -nologo -p:OptimTestArgs=\"--filter-test-list platform\""
        match Regex.Match(output, @"(\d+) passed, (\d+) failed") with
        | m when m.Success && int m.Groups[1].Value > 0 && m.Groups[2].Value = "0" -> sprintf "`dotnet test tests/props` ran the suite: %s" m.Value
        | _ -> eprintfn "%s" output; fail "dotnet-test" "`dotnet test` did not run the suite")

let all = [ "packages", packagesRoute; "core", coreRoute; "package", packageRoute; "projectref", projectRefRoute; "scripts", scriptsRoute; "dotnet-test", dotnetTestRoute ]
let chosen = match fsi.CommandLineArgs |> Array.toList |> List.tail with [] -> all |> List.map fst | names -> names
for name in chosen do
    if not (List.exists (fun (n, _) -> n = name) all) then fail name (sprintf "unknown route (known: %s)" (all |> List.map fst |> String.concat ", "))

copyDir (Path.Combine(root, "tests", "consumers")) (Path.Combine(work, "consumers"))
copyDir (Path.Combine(root, "examples", "scripts")) (Path.Combine(work, "examples", "scripts"))
Directory.CreateDirectory feed |> ignore
for f in Directory.GetFiles(artifacts, "*.nupkg") do File.Copy(f, Path.Combine(feed, Path.GetFileName f), true)
let clock = Stopwatch.StartNew()
try
    for name, route in all do
        if List.contains name chosen then route ()
finally
    try Directory.Delete(work, true) with _ -> ()
printfn "routes: %d checked in %.0f s" chosen.Length clock.Elapsed.TotalSeconds
