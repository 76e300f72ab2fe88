using System.Runtime.InteropServices;

namespace Optim.Native;

/// <summary>
/// The C library's allocator controls Optim uses (glibc, <c>&lt;malloc.h&gt;</c>). Every entry point is
/// optional: on a C library without them (musl, macOS, Windows) the calls report that they did nothing.
/// </summary>
internal static class LibC
{
    private const string Lib = "libc";

    /// <summary><c>mallopt</c> parameter: free memory at the top of the heap above this is returned to the system.</summary>
    public const int M_TRIM_THRESHOLD = -1;

    /// <summary><c>mallopt</c> parameter: requests at least this large are served by <c>mmap</c> (and unmapped when freed).</summary>
    public const int M_MMAP_THRESHOLD = -3;

    /// <summary><c>mallopt</c> parameter: the largest number of malloc arenas.</summary>
    public const int M_ARENA_MAX = -8;

    /// <summary><c>int malloc_trim(size_t pad);</c> — returns free memory of every arena to the system
    /// (<c>madvise(MADV_DONTNEED)</c> on free pages); 1 if some was released, 0 otherwise.</summary>
    [DllImport(Lib, EntryPoint = "malloc_trim", ExactSpelling = true)]
    private static extern int malloc_trim(nuint pad);

    /// <summary><c>int mallopt(int param, int value);</c> — sets an allocator parameter; 1 on success, 0 on error.</summary>
    [DllImport(Lib, EntryPoint = "mallopt", ExactSpelling = true)]
    private static extern int mallopt(int param, int value);

    /// <summary>
    /// <c>struct mallinfo2 mallinfo2(void);</c> (glibc 2.33+): ten <c>size_t</c> fields —
    /// arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost.
    /// </summary>
    [DllImport(Lib, EntryPoint = "mallinfo2", ExactSpelling = true)]
    private static extern MallInfo2 mallinfo2();

    /// <summary>glibc's <c>struct mallinfo2</c>, field for field.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct MallInfo2
    {
        /// <summary>Bytes obtained from the system with <c>sbrk</c>/arena mappings (not <c>mmap</c>ped chunks).</summary>
        public nuint arena;
        /// <summary>Free chunks.</summary>
        public nuint ordblks;
        /// <summary>Free fastbin chunks.</summary>
        public nuint smblks;
        /// <summary>Chunks served by <c>mmap</c>.</summary>
        public nuint hblks;
        /// <summary>Bytes in <c>mmap</c>ped chunks.</summary>
        public nuint hblkhd;
        /// <summary>Unused (always 0).</summary>
        public nuint usmblks;
        /// <summary>Bytes in free fastbin chunks.</summary>
        public nuint fsmblks;
        /// <summary>Bytes in use in the arenas.</summary>
        public nuint uordblks;
        /// <summary>Free bytes held by the arenas.</summary>
        public nuint fordblks;
        /// <summary>Releasable bytes at the top of the main heap.</summary>
        public nuint keepcost;
    }

    private static bool _missing;

    private static bool Available => !_missing && OperatingSystem.IsLinux();

    /// <summary><c>malloc_trim(0)</c>, or false when the C library has none.</summary>
    public static bool Trim()
    {
        if (!Available) return false;
        try { return malloc_trim(0) != 0; }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException) { _missing = true; return false; }
    }

    /// <summary><c>mallopt(param, value)</c>, or false when the C library has none or refuses.</summary>
    public static bool SetOption(int param, int value)
    {
        if (!Available) return false;
        try { return mallopt(param, value) != 0; }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException) { _missing = true; return false; }
    }

    /// <summary><c>mallinfo2()</c>, or null when the C library has none.</summary>
    public static MallInfo2? Info()
    {
        if (!Available) return null;
        try { return mallinfo2(); }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException) { return null; }
    }
}
