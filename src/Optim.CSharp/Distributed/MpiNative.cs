using System.Runtime.InteropServices;

namespace Optim.Distributed;

/// <summary>
/// The MPI C API, bound to Open MPI's <c>libmpi.so.40</c> (Debian/Ubuntu <c>libopenmpi3</c>, Open MPI
/// 4.x) through function pointers resolved once. Every entry documents the C declaration it binds.
/// </summary>
/// <remarks>
/// <para>Why not the MPI.NET package (1.4.0, the one served): it P/Invokes <c>msmpi.dll</c> (Microsoft
/// MPI) and bakes MS-MPI's handle values into its code. On Linux it fails with
/// <c>DllNotFoundException: msmpi.dll</c>; redirected to Open MPI's library with a DllImport resolver it
/// crashes (SIGSEGV) at its first call that passes a handle, because MS-MPI's handles are ints
/// (MPICH's ABI: <c>MPI_COMM_WORLD == 0x44000000</c>) while Open MPI's are pointers.</para>
/// <para>Open MPI's handles are the addresses of global objects: <c>MPI_COMM_WORLD</c> is
/// <c>&amp;ompi_mpi_comm_world</c>, <c>MPI_FLOAT</c> <c>&amp;ompi_mpi_float</c>, <c>MPI_SUM</c>
/// <c>&amp;ompi_mpi_op_sum</c>; <c>MPI_IN_PLACE</c> is <c>(void*)1</c>; <c>MPI_STATUS_IGNORE</c> is
/// <c>NULL</c>; <c>MPI_Request</c> is a pointer. They are resolved from the library's exports
/// (<see cref="NativeLibrary.GetExport"/>), so this binding is Open MPI's ABI only: another MPI (MPICH,
/// Intel MPI: int handles, <c>MPI_IN_PLACE == (void*)-1</c>) is refused with a clear error rather than
/// mis-called.</para>
/// <para>The library is opened with <c>RTLD_GLOBAL</c>, as Open MPI requires: its components
/// (<c>mca_*.so</c>, loaded by <c>MPI_Init</c>) resolve symbols of <c>libmpi</c> globally.</para>
/// </remarks>
internal static unsafe class MpiNative
{
    public const int MPI_SUCCESS = 0;
    /// <summary><c>MPI_THREAD_SERIALIZED</c> (any thread, one at a time).</summary>
    public const int MPI_THREAD_SERIALIZED = 2;
    /// <summary><c>#define MPI_IN_PLACE ((void *) 1)</c> in Open MPI's mpi.h.</summary>
    public static readonly IntPtr MPI_IN_PLACE = new(1);
    public const int MPI_MAX_LIBRARY_VERSION_STRING = 256;

    private static readonly string[] LibraryNames = ["libmpi.so.40", "libmpi.so"];
    private const int RTLD_NOW = 2, RTLD_GLOBAL = 0x100;

    /// <summary><c>void *dlopen(const char *filename, int flags);</c> (glibc's libc.so.6)</summary>
    [DllImport("libc.so.6", EntryPoint = "dlopen")]
    private static extern IntPtr dlopen([MarshalAs(UnmanagedType.LPUTF8Str)] string filename, int flags);

    private static readonly Lazy<Api> Loaded = new(Load);

    /// <summary>The bound entry points and handles; throws <see cref="DistributedException"/> when Open MPI is missing.</summary>
    public static Api Get => Loaded.Value;

    internal sealed class Api
    {
        /// <summary><c>int MPI_Initialized(int *flag);</c></summary>
        public delegate* unmanaged<int*, int> Initialized;
        /// <summary><c>int MPI_Finalized(int *flag);</c></summary>
        public delegate* unmanaged<int*, int> Finalized;
        /// <summary><c>int MPI_Init_thread(int *argc, char ***argv, int required, int *provided);</c></summary>
        public delegate* unmanaged<int*, IntPtr*, int, int*, int> Init_thread;
        /// <summary><c>int MPI_Finalize(void);</c></summary>
        public delegate* unmanaged<int> Finalize;
        /// <summary><c>int MPI_Abort(MPI_Comm comm, int errorcode);</c></summary>
        public delegate* unmanaged<IntPtr, int, int> Abort;
        /// <summary><c>int MPI_Comm_rank(MPI_Comm comm, int *rank);</c></summary>
        public delegate* unmanaged<IntPtr, int*, int> Comm_rank;
        /// <summary><c>int MPI_Comm_size(MPI_Comm comm, int *size);</c></summary>
        public delegate* unmanaged<IntPtr, int*, int> Comm_size;
        /// <summary><c>int MPI_Get_library_version(char *version, int *resultlen);</c></summary>
        public delegate* unmanaged<byte*, int*, int> Get_library_version;
        /// <summary><c>int MPI_Allreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype datatype, MPI_Op op, MPI_Comm comm);</c></summary>
        public delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int> Allreduce;
        /// <summary><c>int MPI_Iallreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype datatype, MPI_Op op, MPI_Comm comm, MPI_Request *request);</c></summary>
        public delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, IntPtr*, int> Iallreduce;
        /// <summary><c>int MPI_Ibcast(void *buffer, int count, MPI_Datatype datatype, int root, MPI_Comm comm, MPI_Request *request);</c></summary>
        public delegate* unmanaged<IntPtr, int, IntPtr, int, IntPtr, IntPtr*, int> Ibcast;
        /// <summary><c>int MPI_Iallgather(const void *sendbuf, int sendcount, MPI_Datatype sendtype, void *recvbuf, int recvcount, MPI_Datatype recvtype, MPI_Comm comm, MPI_Request *request);</c></summary>
        public delegate* unmanaged<IntPtr, int, IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr*, int> Iallgather;
        /// <summary><c>int MPI_Ibarrier(MPI_Comm comm, MPI_Request *request);</c></summary>
        public delegate* unmanaged<IntPtr, IntPtr*, int> Ibarrier;
        /// <summary><c>int MPI_Test(MPI_Request *request, int *flag, MPI_Status *status);</c> (status: <c>MPI_STATUS_IGNORE</c>, NULL)</summary>
        public delegate* unmanaged<IntPtr*, int*, IntPtr, int> Test;

        /// <summary><c>MPI_COMM_WORLD</c>: <c>&amp;ompi_mpi_comm_world</c> (<c>struct ompi_predefined_communicator_t</c>).</summary>
        public IntPtr CommWorld;
        /// <summary><c>MPI_FLOAT</c>, <c>MPI_DOUBLE</c>, <c>MPI_INT64_T</c>, <c>MPI_BYTE</c>: <c>&amp;ompi_mpi_float</c>, ... (<c>struct ompi_predefined_datatype_t</c>).</summary>
        public IntPtr Float, Double, Int64, Byte;
        /// <summary><c>MPI_SUM</c>, <c>MPI_MAX</c>, <c>MPI_MIN</c>: <c>&amp;ompi_mpi_op_sum</c>, ... (<c>struct ompi_predefined_op_t</c>).</summary>
        public IntPtr OpSum, OpMax, OpMin;
    }

    /// <summary>The environment variable naming the MPI library to load instead of <c>libmpi.so.40</c>
    /// (an Open MPI installed outside the loader's search path, e.g. <c>/opt/openmpi/lib/libmpi.so.40</c>).</summary>
    public const string LibraryVariable = "OPTIM_MPI_LIBRARY";

    private static Api Load()
    {
        IntPtr lib = IntPtr.Zero;
        string? loadedName = null;
        var chosen = Environment.GetEnvironmentVariable(LibraryVariable);
        if (!string.IsNullOrEmpty(chosen))
        {
            lib = OperatingSystem.IsLinux() ? dlopen(chosen, RTLD_NOW | RTLD_GLOBAL) : IntPtr.Zero;
            if (lib == IntPtr.Zero && !NativeLibrary.TryLoad(chosen, out lib))
                throw new DistributedException(
                    $"the MPI library {chosen} named by {LibraryVariable} could not be loaded: point {LibraryVariable} at Open MPI's libmpi.so.40, or unset it to use the system's");
            loadedName = chosen;
        }
        else foreach (var name in LibraryNames)
        {
            lib = OperatingSystem.IsLinux() ? dlopen(name, RTLD_NOW | RTLD_GLOBAL) : IntPtr.Zero;
            if (lib == IntPtr.Zero) NativeLibrary.TryLoad(name, out lib);
            if (lib != IntPtr.Zero) { loadedName = name; break; }
        }
        if (lib == IntPtr.Zero)
            throw new DistributedException(
                "Open MPI's libmpi.so.40 could not be loaded: install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev) and launch with mpirun");
        if (!NativeLibrary.TryGetExport(lib, "ompi_mpi_comm_world", out var commWorld))
            throw new DistributedException(
                $"{loadedName} is not Open MPI (no ompi_mpi_comm_world export): this binding speaks Open MPI's ABI only (MPICH and its derivatives use int handles)");
        IntPtr F(string symbol) => NativeLibrary.GetExport(lib, symbol);
        return new Api
        {
            Initialized = (delegate* unmanaged<int*, int>)F("MPI_Initialized"),
            Finalized = (delegate* unmanaged<int*, int>)F("MPI_Finalized"),
            Init_thread = (delegate* unmanaged<int*, IntPtr*, int, int*, int>)F("MPI_Init_thread"),
            Finalize = (delegate* unmanaged<int>)F("MPI_Finalize"),
            Abort = (delegate* unmanaged<IntPtr, int, int>)F("MPI_Abort"),
            Comm_rank = (delegate* unmanaged<IntPtr, int*, int>)F("MPI_Comm_rank"),
            Comm_size = (delegate* unmanaged<IntPtr, int*, int>)F("MPI_Comm_size"),
            Get_library_version = (delegate* unmanaged<byte*, int*, int>)F("MPI_Get_library_version"),
            Allreduce = (delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int>)F("MPI_Allreduce"),
            Iallreduce = (delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, IntPtr*, int>)F("MPI_Iallreduce"),
            Ibcast = (delegate* unmanaged<IntPtr, int, IntPtr, int, IntPtr, IntPtr*, int>)F("MPI_Ibcast"),
            Iallgather = (delegate* unmanaged<IntPtr, int, IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr*, int>)F("MPI_Iallgather"),
            Ibarrier = (delegate* unmanaged<IntPtr, IntPtr*, int>)F("MPI_Ibarrier"),
            Test = (delegate* unmanaged<IntPtr*, int*, IntPtr, int>)F("MPI_Test"),
            CommWorld = commWorld,
            Float = F("ompi_mpi_float"),
            Double = F("ompi_mpi_double"),
            Int64 = F("ompi_mpi_int64_t"),
            Byte = F("ompi_mpi_byte"),
            OpSum = F("ompi_mpi_op_sum"),
            OpMax = F("ompi_mpi_op_max"),
            OpMin = F("ompi_mpi_op_min"),
        };
    }
}
