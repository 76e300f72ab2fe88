using System.Buffers.Binary;
using System.Text;

namespace Optim;

/// <summary>
/// The symbol-version tables of a little-endian ELF64 shared library: which versions it needs from
/// which library (<c>.gnu.version_r</c>, section type SHT_GNU_verneed) and which versions it defines
/// (<c>.gnu.version_d</c>, SHT_GNU_verdef), and the one edit Optim makes: marking a needed version weak
/// (VER_FLG_WEAK), which tells glibc's loader to accept a library that lacks it.
/// </summary>
internal static class ElfVersions
{
    private const uint ShtGnuVerdef = 0x6ffffffd;
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    /// <summary>One version a library needs: from which file, its name, whether it is weak, and where its flags are.</summary>
    internal readonly record struct Need(string File, string Version, bool Weak, int FlagsOffset);

    /// <summary>True for a little-endian 64-bit ELF image.</summary>
    internal static bool IsElf64(ReadOnlySpan<byte> b) =>
        b.Length >= 64 && b[0] == 0x7f && b[1] == (byte)'E' && b[2] == (byte)'L' && b[3] == (byte)'F' && b[4] == 2 && b[5] == 1;

    /// <summary>Every version the image needs (Elf64_Verneed entries, each with its Elf64_Vernaux list).</summary>
    internal static List<Need> Needs(ReadOnlySpan<byte> b)
    {
        var needs = new List<Need>();
        foreach (var (offset, strtab) in Sections(b, ShtGnuVerneed))
        {
            long need = offset;
            while (true)
            {
                // Elf64_Verneed: vn_version u16, vn_cnt u16, vn_file u32, vn_aux u32, vn_next u32
                int count = U16(b, need + 2);
                string file = Str(b, strtab + U32(b, need + 4));
                long aux = need + U32(b, need + 8);
                for (int i = 0; i < count; i++)
                {
                    // Elf64_Vernaux: vna_hash u32, vna_flags u16, vna_other u16, vna_name u32, vna_next u32
                    int flagsAt = checked((int)(aux + 4));
                    needs.Add(new Need(file, Str(b, strtab + U32(b, aux + 8)), (U16(b, flagsAt) & VerFlgWeak) != 0, flagsAt));
                    long next = U32(b, aux + 12);
                    if (next == 0) break;
                    aux += next;
                }
                long nextNeed = U32(b, need + 12);
                if (nextNeed == 0) break;
                need += nextNeed;
            }
        }
        return needs;
    }

    /// <summary>Every version name the image defines (the first Elf64_Verdaux of each Elf64_Verdef).</summary>
    internal static HashSet<string> Definitions(ReadOnlySpan<byte> b)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (offset, strtab) in Sections(b, ShtGnuVerdef))
        {
            long def = offset;
            while (true)
            {
                // Elf64_Verdef: vd_version u16, vd_flags u16, vd_ndx u16, vd_cnt u16, vd_hash u32, vd_aux u32, vd_next u32
                long aux = def + U32(b, def + 12);
                names.Add(Str(b, strtab + U32(b, aux)));          // Elf64_Verdaux: vda_name u32, vda_next u32
                long next = U32(b, def + 16);
                if (next == 0) break;
                def += next;
            }
        }
        return names;
    }

    /// <summary>Sets VER_FLG_WEAK on one needed version, in place.</summary>
    internal static void MarkWeak(Span<byte> b, Need need)
    {
        ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(b[need.FlagsOffset..]);
        BinaryPrimitives.WriteUInt16LittleEndian(b[need.FlagsOffset..], (ushort)(flags | VerFlgWeak));
    }

    /// <summary>(file offset, string-table file offset) of each section of the given type.</summary>
    private static List<(long Offset, long StrTab)> Sections(ReadOnlySpan<byte> b, uint type)
    {
        if (!IsElf64(b)) throw new InvalidDataException("not a little-endian ELF64 image");
        long shoff = (long)BinaryPrimitives.ReadUInt64LittleEndian(b[0x28..]);
        int shentsize = U16(b, 0x3A), shnum = U16(b, 0x3C);
        var found = new List<(long, long)>();
        for (int s = 0; s < shnum; s++)
        {
            long sh = shoff + (long)s * shentsize;
            if (U32(b, sh + 4) != type) continue;
            long link = U32(b, sh + 0x28);
            long strSh = shoff + link * shentsize;
            found.Add(((long)BinaryPrimitives.ReadUInt64LittleEndian(b[checked((int)(sh + 0x18))..]),
                       (long)BinaryPrimitives.ReadUInt64LittleEndian(b[checked((int)(strSh + 0x18))..])));
        }
        return found;
    }

    private static int U16(ReadOnlySpan<byte> b, long at) => BinaryPrimitives.ReadUInt16LittleEndian(b[checked((int)at)..]);

    private static long U32(ReadOnlySpan<byte> b, long at) => BinaryPrimitives.ReadUInt32LittleEndian(b[checked((int)at)..]);

    private static string Str(ReadOnlySpan<byte> b, long at)
    {
        var rest = b[checked((int)at)..];
        int end = rest.IndexOf((byte)0);
        return Encoding.ASCII.GetString(end < 0 ? rest : rest[..end]);
    }
}
