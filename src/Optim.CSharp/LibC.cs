using System.Runtime.InteropServices;

namespace Optim;

/// <summary>
/// The C library's file calls .NET does not expose: flushing a folder (so a rename in it survives a
/// power loss). POSIX only; elsewhere (Windows) the rename is already durable once the file is flushed.
/// </summary>
internal static class FileSystemSync
{
    private const int O_RDONLY = 0;

    /// <summary><c>int open(const char *pathname, int flags);</c></summary>
    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    private static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string pathname, int flags);

    /// <summary><c>int fsync(int fd);</c></summary>
    [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static extern int fsync(int fd);

    /// <summary><c>int close(int fd);</c></summary>
    [DllImport("libc", EntryPoint = "close", SetLastError = true)]
    private static extern int close(int fd);

    /// <summary>fsync(2) on a folder, best effort: the file itself was already flushed to disk.</summary>
    public static void SyncFolder(string folder)
    {
        if (OperatingSystem.IsWindows()) return;
        try
        {
            var fd = open(folder, O_RDONLY);
            if (fd < 0) return;
            try { fsync(fd); }
            finally { close(fd); }
        }
        catch (DllNotFoundException) { }
        catch (EntryPointNotFoundException) { }
    }
}
