using System.Diagnostics;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using TorchSharp;

namespace Optim;

/// <summary>
/// Makes TorchSharp's native library loadable on Linux systems whose libstdc++ is older than the one
/// TorchSharp was built against (Debian 12, Ubuntu 22.04), wherever Optim is referenced: in
/// <c>dotnet fsi</c> scripts, in projects outside this repository, in any host.
/// </summary>
/// <remarks>
/// <para>TorchSharp 0.107's <c>libLibTorchSharp.so</c> records a need for <c>GLIBCXX_3.4.32</c> for one
/// symbol that nothing calls; without that version glibc refuses the library and every TorchSharp call
/// fails. When the libstdc++ mapped into this process lacks it, Optim writes a copy of the library with
/// that one requirement marked weak into a per-user cache folder (named after the original's SHA-256;
/// written to a temporary file, then renamed; the NuGet cache is never modified) and loads the copy,
/// with libtorch beside the original, before TorchSharp initialises. TorchSharp's own load then finds
/// the library already loaded under its name.</para>
/// <para>This runs from Optim's module initializer, i.e. as soon as code that mentions any Optim type is
/// compiled, which in a script or a <c>Main</c> method is before its first line runs. Code that touches
/// TorchSharp before any method mentioning Optim is compiled can call <see cref="Ensure"/> first.</para>
/// <para>Opt out with the environment variable <c>OPTIM_SKIP_NATIVE_FIX=1</c>; choose the cache folder
/// with <c>OPTIM_NATIVE_CACHE</c> (default <c>$XDG_CACHE_HOME/optim/native</c>, else
/// <c>~/.cache/optim/native</c>). When it loads a copy it writes one line starting with <c>Optim:</c> to
/// standard error.</para>
/// </remarks>
public static class NativeLoad
{
    /// <summary>Set to <c>1</c> or <c>true</c> to turn the run-time fix off.</summary>
    public const string OptOutVariable = "OPTIM_SKIP_NATIVE_FIX";

    /// <summary>The folder patched copies are written to (default <c>~/.cache/optim/native</c>).</summary>
    public const string CacheVariable = "OPTIM_NATIVE_CACHE";

    /// <summary>The one version requirement known to be safe to weaken (its only symbol is never called).</summary>
    internal const string WeakenableVersion = "GLIBCXX_3.4.32";

    private const string LibraryFile = "libLibTorchSharp.so";
    private static readonly object Gate = new();
    private static string? _outcome;

    /// <summary>
    /// Runs the check once per process (later calls return the first outcome): a sentence saying what
    /// was done, e.g. that nothing was needed or which patched copy was loaded.
    /// </summary>
    /// <exception cref="NativeLoadException">The patched copy could not be written or loaded.</exception>
    public static string Ensure()
    {
        lock (Gate)
        {
            if (_outcome is null)
            {
                var clock = Stopwatch.StartNew();
                var outcome = Run(out bool loadedCopy);
                _outcome = $"{outcome} ({clock.Elapsed.TotalMilliseconds:F1} ms)";
                if (loadedCopy) Console.Error.WriteLine("Optim: " + _outcome);
            }
            return _outcome;
        }
    }

    /// <summary>Runs before any Optim code (module initializer), hence before the caller's first TorchSharp call.</summary>
#pragma warning disable CA2255 // a library module initializer is the point: it must precede TorchSharp's static constructor
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void OnModuleLoad() => Ensure();

    private static string Run(out bool loadedCopy)
    {
        loadedCopy = false;
        var optOut = Environment.GetEnvironmentVariable(OptOutVariable);
        if (optOut is "1" || string.Equals(optOut, "true", StringComparison.OrdinalIgnoreCase))
            return $"native fix skipped ({OptOutVariable} is set)";
        if (!OperatingSystem.IsLinux()) return "no native fix needed (not Linux)";

        // typeof does not run TorchSharp's static constructor, which would load the library.
        var torchSharp = typeof(torch).Assembly;
        var original = FindTorchSharpNative(torchSharp);
        if (original is null) return $"no native fix attempted ({LibraryFile} not found beside TorchSharp)";
        var prepared = Prepare(original, MappedLibstdcxx, CacheRoot());
        if (prepared.Copy is null) return prepared.Description;

        LoadTorchBeside(original, torchSharp);
        try { NativeLibrary.Load(prepared.Copy); }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
        {
            throw new NativeLoadException($"Optim could not load its patched copy {prepared.Copy} of {original}: {e.Message}", e);
        }
        loadedCopy = true;
        return prepared.Description;
    }

    /// <summary>What <see cref="Prepare"/> decided: the copy to load (null: none needed or possible) and why.</summary>
    internal sealed record Preparation(string? Copy, string Description);

    /// <summary>
    /// Decides whether <paramref name="original"/> needs the fix against the libstdc++ that
    /// <paramref name="findLibstdcxx"/> names (asked only when it matters), and if so makes sure the
    /// patched copy exists under <paramref name="cacheRoot"/> (writing it atomically if missing).
    /// Does not load anything.
    /// </summary>
    internal static Preparation Prepare(string original, Func<string?> findLibstdcxx, string cacheRoot)
    {
        byte[] image = File.ReadAllBytes(original);
        if (!ElfVersions.IsElf64(image)) return new(null, $"no native fix attempted ({original} is not an ELF64 image)");
        var strong = ElfVersions.Needs(image).Where(n => n.File.StartsWith("libstdc++", StringComparison.Ordinal) && !n.Weak).ToList();
        // The common case (the build already patched this copy, or a TorchSharp built against an older
        // libstdc++) is decided without reading libstdc++ at all.
        if (!strong.Any(n => n.Version == WeakenableVersion))
            return new(null, $"no native fix needed ({original} does not strictly need {WeakenableVersion})");
        var libstdcxx = findLibstdcxx();
        if (libstdcxx is null) return new(null, "no native fix attempted (no libstdc++ found)");
        var provided = ElfVersions.Definitions(File.ReadAllBytes(libstdcxx));
        var missing = strong.Where(n => !provided.Contains(n.Version)).ToList();
        if (missing.Count == 0) return new(null, $"no native fix needed ({libstdcxx} provides every version {original} needs)");
        var unsafeToWeaken = missing.Where(n => n.Version != WeakenableVersion).Select(n => n.Version).ToList();
        if (unsafeToWeaken.Count > 0)
            return new(null, $"no native fix possible: {libstdcxx} lacks {string.Join(", ", unsafeToWeaken)}, which {original} really uses; install a newer libstdc++");

        string hash = Convert.ToHexStringLower(SHA256.HashData(image));
        string dir = Path.Combine(cacheRoot, hash);
        string copy = Path.Combine(dir, LibraryFile);
        string why = $"{WeakenableVersion} marked weak: {libstdcxx} lacks it";
        if (File.Exists(copy)) return new(copy, $"loaded the cached patched copy {copy} of {original} ({why})");

        foreach (var need in missing) ElfVersions.MarkWeak(image, need);
        string temp = Path.Combine(dir, $".{LibraryFile}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            Directory.CreateDirectory(dir);
            File.WriteAllBytes(temp, image);
            File.Move(temp, copy, overwrite: true);       // rename(2): readers see the old name or the whole file
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { File.Delete(temp); } catch (Exception) { /* the write itself failed; nothing to clean */ }
            throw new NativeLoadException(
                $"Optim could not write its patched copy of {original} to {dir}: {e.Message}. " +
                $"Point {CacheVariable} at a writable folder, or set {OptOutVariable}=1 and patch the library yourself.", e);
        }
        return new(copy, $"wrote and loaded the patched copy {copy} of {original} ({why})");
    }

    /// <summary>The cache root: <c>$OPTIM_NATIVE_CACHE</c>, else <c>$XDG_CACHE_HOME/optim/native</c>, else <c>~/.cache/optim/native</c>.</summary>
    internal static string CacheRoot()
    {
        var explicitRoot = Environment.GetEnvironmentVariable(CacheVariable);
        if (!string.IsNullOrEmpty(explicitRoot)) return Path.GetFullPath(explicitRoot);
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var root = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "optim", "native");
    }

    /// <summary>
    /// Where TorchSharp's own load will look first: the host's native search directories (an app's
    /// output folder), the folder of TorchSharp.dll, and the NuGet package layout (scripts load
    /// TorchSharp.dll from <c>torchsharp/&lt;version&gt;/lib/&lt;tfm&gt;/</c>).
    /// </summary>
    internal static string? FindTorchSharpNative(Assembly torchSharp)
    {
        foreach (var dir in NativeSearchDirectories(torchSharp))
        {
            var path = Path.Combine(dir, LibraryFile);
            if (File.Exists(path)) return Path.GetFullPath(path);
        }
        return null;
    }

    private static IEnumerable<string> NativeSearchDirectories(Assembly torchSharp)
    {
        if (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") is string hostDirs)
            foreach (var d in hostDirs.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)) yield return d;
        var asmDir = Path.GetDirectoryName(torchSharp.Location);
        if (string.IsNullOrEmpty(asmDir)) asmDir = AppContext.BaseDirectory;
        yield return asmDir;
        yield return Path.Combine(asmDir, "runtimes", "linux-x64", "native");
        yield return Path.Combine(asmDir, "..", "..", "runtimes", "linux-x64", "native");
    }

    /// <summary>The libstdc++ this process uses (the .NET runtime maps it), else the first in the usual folders.</summary>
    internal static string? MappedLibstdcxx()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                int slash = line.IndexOf('/');
                if (slash >= 0 && line.AsSpan(slash).Contains("/libstdc++.so", StringComparison.Ordinal)) return line[slash..].Trim();
            }
        }
        catch (IOException) { /* no procfs: fall back to the usual folders */ }
        string[] dirs = { "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib" };
        return dirs.Select(d => Path.Combine(d, "libstdc++.so.6")).FirstOrDefault(File.Exists);
    }

    /// <summary>
    /// Loads libtorch (which pulls libtorch_cpu and libc10) so that the copy, which lives away from
    /// them, finds its dependencies already loaded under their names: beside the original, else through
    /// the host's resolution for TorchSharp (fsi's package resolver), else from the NuGet packages folder.
    /// </summary>
    private static void LoadTorchBeside(string original, Assembly torchSharp)
    {
        var beside = Path.Combine(Path.GetDirectoryName(original)!, "libtorch.so");
        if (File.Exists(beside) && NativeLibrary.TryLoad(beside, out _)) return;
        if (NativeLibrary.TryLoad("torch", torchSharp, null, out _)) return;
        foreach (var candidate in LibtorchPackageCandidates(torchSharp))
            if (File.Exists(candidate) && NativeLibrary.TryLoad(candidate, out _)) return;
        throw new NativeLoadException(
            $"Optim found {original} but not libtorch.so: reference a libtorch backend package " +
            "(e.g. libtorch-cpu-linux-x64) next to TorchSharp.");
    }

    private static IEnumerable<string> LibtorchPackageCandidates(Assembly torchSharp)
    {
        // TorchSharp's libtorch version is a private constant; reading it does not run torch's static constructor.
        var raw = typeof(torch).GetField("libtorchPackageVersion", BindingFlags.NonPublic | BindingFlags.Static)?.GetRawConstantValue() as string;
        if (raw is null) yield break;
        var parts = raw.Split('.');
        var version = parts.Length == 4 && parts[3] == "0" ? string.Join('.', parts[..3]) : raw;
        var asmDir = Path.GetDirectoryName(torchSharp.Location) ?? "";
        var roots = new List<string> { Path.Combine(asmDir, "..", "..", "..", "..") };
        var nugetPackages = Environment.GetEnvironmentVariable("NUGET_PACKAGES");
        roots.Add(!string.IsNullOrEmpty(nugetPackages) ? nugetPackages : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages"));
        foreach (var root in roots)
            yield return Path.GetFullPath(Path.Combine(root, "libtorch-cpu-linux-x64", version, "runtimes", "linux-x64", "native", "libtorch.so"));
    }
}

/// <summary>Optim's native-load fix could not do its work (e.g. its cache folder is not writable); the message says what to do.</summary>
public class NativeLoadException : Exception
{
    /// <summary>Creates the exception with what failed and what to do about it.</summary>
    public NativeLoadException(string message, Exception? inner = null) : base(message, inner) { }
}
