using Optim.Native;

namespace Optim;

/// <summary>
/// Keeps the C library's allocator from holding on to memory that mixed-precision training frees.
/// </summary>
/// <remarks>
/// <para>
/// libtorch's CPU tensors come from <c>malloc</c>. glibc serves large requests with <c>mmap</c> (and
/// returns them to the system when freed), but each time such a block is freed it raises its
/// <c>mmap</c> threshold to that block's size (up to 32 MB), so from then on blocks of that size come
/// from the heap arenas instead, and the trim threshold rises with it. Autocast allocates a
/// reduced-precision copy of every weight in every forward pass and frees it at the end of the scope,
/// interleaved with activations and gradients of other sizes and lifetimes: the arenas fill with free
/// holes glibc never gives back. Resident memory then climbs step after step (hundreds of megabytes
/// over a few hundred steps of a 10 M-parameter model on 2 threads) while the live tensors stay the same.
/// </para>
/// <para>
/// <see cref="ReturnLargeBlocksToSystem"/> fixes the <c>mmap</c> threshold at glibc's own default,
/// 128 KiB (<c>mallopt(M_MMAP_THRESHOLD, 131072)</c>, which also stops the dynamic adjustment of the
/// trim threshold): every large block is then mapped on allocation and unmapped when freed, and the
/// arenas keep only small blocks. The cost is a page fault per 4 KiB page of each large tensor
/// allocated; what it costs and saves on a training loop is in the project's benchmark results.
/// <see cref="AmpOptimWrapper"/> calls it when it is built unless <see cref="Enabled"/> is false. The
/// setting is process-wide; it only takes effect on Linux with glibc, and is a no-op elsewhere.
/// </para>
/// </remarks>
public static class NativeAllocator
{
    private static readonly object Gate = new();

    /// <summary>glibc's default <c>mmap</c> threshold, which <see cref="ReturnLargeBlocksToSystem"/> makes fixed.</summary>
    public const int MmapThresholdBytes = 128 * 1024;

    /// <summary>
    /// Whether <see cref="AmpOptimWrapper"/> calls <see cref="ReturnLargeBlocksToSystem"/> when built. True
    /// unless the environment variable <c>OPTIM_KEEP_MALLOC_DEFAULTS</c> is set (to anything) at start-up;
    /// set it to false before building wrappers to leave the allocator alone.
    /// </summary>
    public static bool Enabled { get; set; } = Environment.GetEnvironmentVariable("OPTIM_KEEP_MALLOC_DEFAULTS") is null;

    /// <summary>Whether the threshold has been fixed in this process.</summary>
    public static bool IsThresholdFixed { get; private set; }

    /// <summary>
    /// Fixes glibc's <c>mmap</c> threshold at <see cref="MmapThresholdBytes"/> (once per process), so freed
    /// large blocks go back to the system. Returns whether the threshold is fixed (false off glibc).
    /// </summary>
    public static bool ReturnLargeBlocksToSystem()
    {
        lock (Gate)
        {
            if (!IsThresholdFixed) IsThresholdFixed = LibC.SetOption(LibC.M_MMAP_THRESHOLD, MmapThresholdBytes);
            return IsThresholdFixed;
        }
    }

    /// <summary>
    /// <c>malloc_trim(0)</c>: gives every arena's free pages back to the system, holes in the middle
    /// included (milliseconds on a fragmented heap; for occasional use, e.g. after an epoch). Returns
    /// whether any memory was released (false off glibc).
    /// </summary>
    public static bool Trim() => LibC.Trim();

    /// <summary>What the allocator holds (glibc's <c>mallinfo2</c>), or null off glibc.</summary>
    public static AllocatorStatistics? Statistics() =>
        LibC.Info() is { } i ? new AllocatorStatistics((long)i.fordblks, (long)i.hblkhd, (long)i.arena) : null;
}

/// <summary>What the C library's allocator holds, from glibc's <c>mallinfo2</c>.</summary>
/// <param name="FreeInArenas">Free bytes kept in the heap arenas (<c>fordblks</c>): memory the process holds but does not use.</param>
/// <param name="Mapped">Bytes in blocks served by <c>mmap</c> (<c>hblkhd</c>), returned to the system when freed.</param>
/// <param name="Arenas">Bytes the heap arenas have taken from the system (<c>arena</c>).</param>
public sealed record AllocatorStatistics(long FreeInArenas, long Mapped, long Arenas);
