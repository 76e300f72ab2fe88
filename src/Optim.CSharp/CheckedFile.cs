using System.Security.Cryptography;
using System.Text;

namespace Optim;

/// <summary>
/// The envelope of every file Optim writes (state dicts, checkpoints): an 8-byte magic, a format
/// version, the payload length, the payload, and a SHA-256 over all of it. Readers verify the hash
/// before they look at the payload, so a truncated or corrupted file is rejected as a whole; files are
/// written to a temporary file in the target's folder, flushed to disk and renamed over the target,
/// so a failed or killed save leaves the previous file as it was.
/// </summary>
internal static class CheckedFile
{
    private const int HeaderLength = 8 + 4 + 8;
    private const int HashLength = 32;

    /// <summary>Writes the envelope around a payload of known length, streamed through the hash.</summary>
    public static void Write(Stream stream, byte[] magic, int version, long payloadLength, Action<Stream> writePayload)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var header = new byte[HeaderLength];
        magic.CopyTo(header, 0);
        BitConverter.TryWriteBytes(header.AsSpan(8), version);
        BitConverter.TryWriteBytes(header.AsSpan(12), payloadLength);
        hash.AppendData(header);
        stream.Write(header);
        var counting = new HashingStream(stream, hash);
        writePayload(counting);
        if (counting.Written != payloadLength)
            throw new InvalidOperationException($"internal error: payload of {counting.Written} bytes where {payloadLength} were announced");
        stream.Write(hash.GetHashAndReset());
        stream.Flush();
    }

    /// <summary>
    /// Reads one envelope from the stream's current position (seekable or not), verifies the hash and
    /// returns the payload. Reads exactly the envelope's bytes, nothing after it.
    /// </summary>
    /// <exception cref="StateDictException">Not this kind of file, another version, truncated, or the
    /// checksum does not match.</exception>
    public static byte[] Read(Stream stream, byte[] magic, string what, int supportedVersion, Func<string, Exception> error)
    {
        var header = new byte[HeaderLength];
        var got = ReadFully(stream, header, 0, HeaderLength);
        if (got == 0) throw error($"empty input: not an Optim {what}");
        if (got < magic.Length && header.AsSpan(0, got).SequenceEqual(magic.AsSpan(0, got)))
            throw error($"truncated {what}: {got} bytes, the header alone needs {HeaderLength}");
        if (got < magic.Length || !header.AsSpan(0, magic.Length).SequenceEqual(magic))
            throw error($"not an Optim {what} (bad magic)");
        if (got < HeaderLength) throw error($"truncated {what}: {got} bytes, the header alone needs {HeaderLength}");
        var version = BitConverter.ToInt32(header, 8);
        // Before the length and the checksum: a file of another version may lay them out differently.
        var versionCheck = Optim.Core.Checkpointing.checkVersion(what, supportedVersion, version);
        if (versionCheck.IsError) throw error(versionCheck.ErrorValue.Message);
        var length = BitConverter.ToInt64(header, 12);
        if (length < 0 || length > Array.MaxLength)
            throw error($"corrupt {what}: payload length {length} (the checksum cannot be checked)");
        if (stream.CanSeek && length + HashLength > stream.Length - stream.Position)
            throw error($"truncated {what}: {stream.Length - stream.Position + HeaderLength} bytes after the header's start, the header announces {length + HashLength + HeaderLength}");
        var payload = new byte[length];
        var read = ReadFully(stream, payload, 0, (int)length);
        var storedHash = new byte[HashLength];
        var hashRead = read == length ? ReadFully(stream, storedHash, 0, HashLength) : 0;
        if (read < length || hashRead < HashLength)
            throw error($"truncated {what}: {HeaderLength + read + hashRead} bytes, the header announces {HeaderLength + length + HashLength}");
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(header);
        hash.AppendData(payload);
        if (!CryptographicOperations.FixedTimeEquals(hash.GetHashAndReset(), storedHash))
            throw error($"corrupt {what}: the SHA-256 checksum does not match its contents (the file was damaged or modified); nothing was loaded");
        return payload;
    }

    /// <summary>
    /// Writes a file atomically: a temporary file in the same folder, flushed to disk, renamed over
    /// <paramref name="path"/>, then the folder flushed. If anything fails, the temporary file is removed
    /// and the previous file (if any) is untouched.
    /// </summary>
    public static void WriteAtomically(string path, Action<Stream> write)
    {
        var full = Path.GetFullPath(path);
        var folder = Path.GetDirectoryName(full) ?? ".";
        var temp = Path.Combine(folder, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var f = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(f);
                f.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
            FileSystemSync.SyncFolder(folder);
        }
        catch
        {
            try { File.Delete(temp); } catch { /* the original error is the one to report */ }
            throw;
        }
    }

    private static int ReadFully(Stream stream, byte[] buffer, int offset, int count)
    {
        var total = 0;
        while (total < count)
        {
            var n = stream.Read(buffer, offset + total, count - total);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    /// <summary>Forwards writes to a stream and to the hash, counting bytes.</summary>
    private sealed class HashingStream(Stream inner, IncrementalHash hash) : Stream
    {
        public long Written { get; private set; }
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => Written;
        public override long Position { get => Written; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void Write(ReadOnlySpan<byte> buffer)
        {
            hash.AppendData(buffer);
            inner.Write(buffer);
            Written += buffer.Length;
        }
    }
}

/// <summary>Length-prefixed named sections inside a payload.</summary>
internal static class Sections
{
    /// <summary>A section to write: its name, byte length and writer.</summary>
    public sealed record Section(string Name, long Length, Action<Stream> Write);

    public static Section Bytes(string name, byte[] data) => new(name, data.LongLength, s => s.Write(data));

    /// <summary>Length of the table plus the sections.</summary>
    public static long TotalLength(IReadOnlyList<Section> sections) => TableBytes(sections).LongLength + sections.Sum(s => s.Length);

    private static byte[] TableBytes(IReadOnlyList<Section> sections)
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(sections.Count);
            foreach (var s in sections) { w.Write(s.Name); w.Write(s.Length); }
        }
        return ms.ToArray();
    }

    public static void WriteAll(Stream stream, IReadOnlyList<Section> sections)
    {
        stream.Write(TableBytes(sections));
        foreach (var s in sections)
        {
            var before = stream.Position;
            s.Write(stream);
            if (stream.Position - before != s.Length)
                throw new InvalidOperationException($"internal error: section '{s.Name}' wrote {stream.Position - before} bytes, {s.Length} announced");
        }
    }

    /// <summary>Splits a verified payload into its sections (by name, in order).</summary>
    public static OrderedDictionary<string, ArraySegment<byte>> ReadAll(byte[] payload, Func<string, Exception> error)
    {
        var result = new OrderedDictionary<string, ArraySegment<byte>>();
        try
        {
            using var r = new BinaryReader(new MemoryStream(payload, writable: false), Encoding.UTF8);
            var count = r.ReadInt32();
            if (count < 0 || count > 1_000_000) throw error($"corrupt section table ({count} sections)");
            var table = new List<(string, long)>();
            for (int i = 0; i < count; i++) table.Add((r.ReadString(), r.ReadInt64()));
            long offset = r.BaseStream.Position;
            foreach (var (name, length) in table)
            {
                if (length < 0 || offset + length > payload.Length) throw error($"corrupt section table: '{name}' runs past the end");
                if (!result.TryAdd(name, new ArraySegment<byte>(payload, (int)offset, (int)length)))
                    throw error($"corrupt section table: '{name}' appears twice");
                offset += length;
            }
            if (offset != payload.Length) throw error($"corrupt section table: {payload.Length - offset} bytes after the last section");
        }
        catch (EndOfStreamException) { throw error("corrupt section table (truncated)"); }
        return result;
    }
}
