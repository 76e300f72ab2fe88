using System.Diagnostics;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Distributed;

/// <summary>A reduction for <see cref="IProcessGroup.all_reduce_"/> (PyTorch's <c>dist.ReduceOp</c>).</summary>
public enum ReduceOp
{
    /// <summary>Element-wise sum over the ranks.</summary>
    SUM,
    /// <summary>Element-wise maximum over the ranks.</summary>
    MAX,
    /// <summary>Element-wise minimum over the ranks.</summary>
    MIN,
}

/// <summary>A collective operation failed, or the ranks disagree (their models differ, say).</summary>
public class DistributedException : Exception
{
    /// <summary>Creates the exception with a message naming what failed and where.</summary>
    public DistributedException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>
/// A collective did not complete within the process group's timeout: another rank crashed, hangs,
/// or called a different sequence of collectives. The group is unusable afterwards; disposing it
/// aborts the whole job (<c>MPI_Abort</c>), so no rank is left waiting.
/// </summary>
public class DistributedTimeoutException : DistributedException
{
    /// <summary>Creates the exception naming the collective and the timeout.</summary>
    public DistributedTimeoutException(string message) : base(message) { }
}

/// <summary>
/// The ranks of a data-parallel job and the collectives between them (PyTorch's
/// <c>ProcessGroup</c>). Every rank must call the same collectives in the same order with tensors of
/// the same size and dtype. The MPI implementation is <see cref="MpiProcessGroup"/>; a CUDA backend
/// (NCCL, or a CUDA-aware MPI) would implement this same interface.
/// </summary>
public interface IProcessGroup : IDisposable
{
    /// <summary>This process's rank, 0 ≤ rank &lt; <see cref="world_size"/>.</summary>
    int rank { get; }

    /// <summary>The number of ranks.</summary>
    int world_size { get; }

    /// <summary>Reduces <paramref name="tensor"/> element-wise over all ranks, in place, on every rank.</summary>
    void all_reduce_(Tensor tensor, ReduceOp op = ReduceOp.SUM);

    /// <summary>Overwrites <paramref name="tensor"/> on every rank with rank <paramref name="src"/>'s values.</summary>
    void broadcast_(Tensor tensor, int src = 0);

    /// <summary>Every rank's <paramref name="values"/> (all of the same length), concatenated in rank order.</summary>
    long[] all_gather(long[] values);

    /// <summary>Returns when every rank has called it.</summary>
    void barrier();
}

/// <summary>
/// <see cref="IProcessGroup"/> over MPI (Open MPI): the ranks are <c>MPI_COMM_WORLD</c> of a job
/// started with <c>mpirun -np N dotnet yourapp.dll</c>. Each collective is MPI's non-blocking one
/// (<c>MPI_Iallreduce</c>, <c>MPI_Ibcast</c>, <c>MPI_Iallgather</c>, <c>MPI_Ibarrier</c>) driven to
/// completion by <c>MPI_Test</c> against a deadline, so a rank that never arrives becomes a
/// <see cref="DistributedTimeoutException"/> instead of a hang.
/// </summary>
/// <remarks>
/// <para>Tensors on the CPU that are contiguous float32, float64 or int64 are reduced in place;
/// others (float16/bfloat16, non-contiguous, or on another device such as CUDA) go through a
/// contiguous CPU copy (float32 for the half types) and are copied back. One thread at a time
/// (<c>MPI_THREAD_SERIALIZED</c>); calls are serialised with a lock.</para>
/// <para>Dispose it when training ends: it calls <c>MPI_Finalize</c> if it initialised MPI, or
/// <c>MPI_Abort</c> if a collective timed out (so the other ranks do not wait forever).</para>
/// </remarks>
public sealed unsafe class MpiProcessGroup : IProcessGroup
{
    /// <summary>PyTorch's default collective timeout: 30 minutes.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(30);

    private readonly MpiNative.Api mpi;
    private readonly bool ownsMpi;
    private readonly object gate = new();
    private bool broken, disposed;

    private MpiProcessGroup(MpiNative.Api mpi, bool ownsMpi, TimeSpan timeout)
    {
        this.mpi = mpi;
        this.ownsMpi = ownsMpi;
        this.timeout = timeout;
        int r, n;
        Check(mpi.Comm_rank(mpi.CommWorld, &r), "MPI_Comm_rank");
        Check(mpi.Comm_size(mpi.CommWorld, &n), "MPI_Comm_size");
        rank = r;
        world_size = n;
    }

    /// <summary>
    /// Initialises MPI (unless the program already did) and returns the group of all ranks
    /// (<c>MPI_COMM_WORLD</c>). Run outside mpirun, it is a group of one rank. The MPI library is Open
    /// MPI's <c>libmpi.so.40</c> from the loader's search path, or the file named by the environment
    /// variable <c>OPTIM_MPI_LIBRARY</c>.
    /// </summary>
    /// <param name="timeout">How long any collective may wait for the other ranks (default 30 minutes).</param>
    /// <exception cref="DistributedException">Open MPI is not installed (or <c>OPTIM_MPI_LIBRARY</c> names no loadable library), or MPI failed to initialise.</exception>
    public static MpiProcessGroup Init(TimeSpan? timeout = null)
    {
        var t = timeout ?? DefaultTimeout;
        if (t <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(timeout), t, "timeout must be positive");
        var mpi = MpiNative.Get;
        int initialized, finalized;
        Check(mpi.Initialized(&initialized), "MPI_Initialized");
        Check(mpi.Finalized(&finalized), "MPI_Finalized");
        if (finalized != 0) throw new DistributedException("MPI was already finalized in this process; it cannot be initialised again");
        if (initialized == 0)
        {
            int provided;
            Check(mpi.Init_thread(null, null, MpiNative.MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
        }
        return new MpiProcessGroup(mpi, initialized == 0, t);
    }

    /// <inheritdoc />
    public int rank { get; }

    /// <inheritdoc />
    public int world_size { get; }

    /// <summary>How long each collective may wait.</summary>
    public TimeSpan timeout { get; }

    /// <summary>The MPI library's own description (<c>MPI_Get_library_version</c>).</summary>
    public string LibraryVersion
    {
        get
        {
            var buffer = stackalloc byte[MpiNative.MPI_MAX_LIBRARY_VERSION_STRING];
            int length;
            Check(mpi.Get_library_version(buffer, &length), "MPI_Get_library_version");
            return Marshal.PtrToStringUTF8((IntPtr)buffer, length).TrimEnd('\0', '\n');
        }
    }

    /// <inheritdoc />
    public void all_reduce_(Tensor tensor, ReduceOp op = ReduceOp.SUM)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        var opHandle = op switch { ReduceOp.SUM => mpi.OpSum, ReduceOp.MAX => mpi.OpMax, ReduceOp.MIN => mpi.OpMin, _ => throw new ArgumentOutOfRangeException(nameof(op)) };
        WithHostBuffer(tensor, "all_reduce_", (data, count, type) =>
        {
            IntPtr request;
            Check(mpi.Iallreduce(MpiNative.MPI_IN_PLACE, data, count, type, opHandle, mpi.CommWorld, &request), "MPI_Iallreduce");
            return request;
        });
    }

    /// <inheritdoc />
    public void broadcast_(Tensor tensor, int src = 0)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (src < 0 || src >= world_size) throw new ArgumentOutOfRangeException(nameof(src), src, $"src must be a rank in [0, {world_size - 1}]");
        WithHostBuffer(tensor, "broadcast_", (data, count, type) =>
        {
            IntPtr request;
            Check(mpi.Ibcast(data, count, type, src, mpi.CommWorld, &request), "MPI_Ibcast");
            return request;
        });
    }

    /// <inheritdoc />
    public long[] all_gather(long[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var result = new long[checked(values.Length * world_size)];
        lock (gate)
        {
            ThrowIfUnusable();
            fixed (long* send = values)
            fixed (long* receive = result)
            {
                IntPtr request;
                Check(mpi.Iallgather((IntPtr)send, values.Length, mpi.Int64, (IntPtr)receive, values.Length, mpi.Int64, mpi.CommWorld, &request), "MPI_Iallgather");
                Wait(request, "all_gather");
            }
        }
        return result;
    }

    /// <inheritdoc />
    public void barrier()
    {
        lock (gate)
        {
            ThrowIfUnusable();
            IntPtr request;
            Check(mpi.Ibarrier(mpi.CommWorld, &request), "MPI_Ibarrier");
            Wait(request, "barrier");
        }
    }

    /// <summary>
    /// MPI's own blocking <c>MPI_Allreduce</c> (sum, in place) on a float32 CPU tensor, with no
    /// timeout: the baseline the benchmarks compare <see cref="all_reduce_"/> against.
    /// </summary>
    public void AllReduceBlocking(Tensor cpuFloat32)
    {
        if (cpuFloat32.device_type != DeviceType.CPU || cpuFloat32.dtype != ScalarType.Float32 || !cpuFloat32.is_contiguous())
            throw new ArgumentException("a contiguous float32 CPU tensor is required", nameof(cpuFloat32));
        lock (gate)
        {
            ThrowIfUnusable();
            fixed (byte* data = cpuFloat32.bytes)
                Check(mpi.Allreduce(MpiNative.MPI_IN_PLACE, (IntPtr)data, checked((int)cpuFloat32.numel()), mpi.Float, mpi.OpSum, mpi.CommWorld), "MPI_Allreduce");
        }
    }

    /// <summary>
    /// Ends the job's use of MPI: <c>MPI_Finalize</c> when this group initialised MPI, or
    /// <c>MPI_Abort</c> (ending every rank) after a timed-out collective.
    /// </summary>
    public void Dispose()
    {
        lock (gate)
        {
            if (disposed) return;
            disposed = true;
            if (broken) { mpi.Abort(mpi.CommWorld, 1); return; }
            if (!ownsMpi) return;
            int finalized;
            mpi.Finalized(&finalized);
            if (finalized == 0) Check(mpi.Finalize(), "MPI_Finalize");
        }
    }

    /// <summary>Ends every rank of the job now (<c>MPI_Abort</c>) with <paramref name="errorCode"/>.</summary>
    public void Abort(int errorCode = 1)
    {
        disposed = true;
        mpi.Abort(mpi.CommWorld, errorCode);
    }

    private delegate IntPtr Start(IntPtr data, int count, IntPtr datatype);

    /// <summary>Runs a collective on the tensor's memory, or on a CPU staging copy of it, then copies back.</summary>
    private void WithHostBuffer(Tensor tensor, string name, Start start)
    {
        var direct = tensor.device_type == DeviceType.CPU && tensor.is_contiguous()
            && tensor.dtype is ScalarType.Float32 or ScalarType.Float64 or ScalarType.Int64;
        if (direct) { Run(tensor, name, start); return; }
        var stagingType = tensor.dtype switch
        {
            ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 => ScalarType.Float32,
            ScalarType.Float64 => ScalarType.Float64,
            ScalarType.Int64 or ScalarType.Int32 or ScalarType.Int16 or ScalarType.Int8 or ScalarType.Byte or ScalarType.Bool => ScalarType.Int64,
            var other => throw new ArgumentException($"{name}: tensors of dtype {other} are not supported", nameof(tensor)),
        };
        // Never the tensor's own memory: another device, another dtype, or a non-contiguous layout copies.
        using var staging = tensor.detach().to(stagingType, torch.CPU).contiguous();
        Run(staging, name, start);
        using (torch.no_grad()) tensor.copy_(staging);
    }

    private void Run(Tensor contiguousCpu, string name, Start start)
    {
        var datatype = contiguousCpu.dtype switch
        {
            ScalarType.Float32 => mpi.Float,
            ScalarType.Float64 => mpi.Double,
            ScalarType.Int64 => mpi.Int64,
            _ => throw new UnreachableException(),
        };
        var total = contiguousCpu.numel();
        var elementSize = contiguousCpu.element_size();
        lock (gate)
        {
            ThrowIfUnusable();
            if (total == 0) return;
            // Span<byte> is limited to 2 GB and MPI counts to int: go chunk by chunk.
            var chunk = Math.Min(int.MaxValue / elementSize, total);
            for (long offset = 0; offset < total; offset += chunk)
            {
                var count = (int)Math.Min(chunk, total - offset);
                using var part = count == total ? contiguousCpu.alias() : contiguousCpu.reshape(-1).narrow(0, offset, count);
                fixed (byte* data = part.bytes)
                {
                    var request = start((IntPtr)data, count, datatype);
                    Wait(request, name);
                }
            }
        }
    }

    /// <summary>Drives a non-blocking collective with <c>MPI_Test</c> until it completes or the timeout passes.</summary>
    private void Wait(IntPtr request, string name)
    {
        var clock = Stopwatch.StartNew();
        var spins = 0;
        while (true)
        {
            int done;
            Check(mpi.Test(&request, &done, IntPtr.Zero), "MPI_Test");
            if (done != 0) return;
            if (++spins % 1024 == 0)
            {
                if (clock.Elapsed > timeout)
                {
                    broken = true;
                    throw new DistributedTimeoutException(
                        $"{name} on rank {rank} of {world_size} did not complete within {timeout.TotalSeconds:0.###} s: another rank crashed, hangs, or called a different sequence of collectives. The process group is unusable; disposing it aborts the job.");
                }
                Thread.Yield();
            }
        }
    }

    private void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (broken) throw new DistributedException("the process group is unusable after a timed-out collective; dispose it to abort the job");
    }

    private static void Check(int code, string function)
    {
        if (code != MpiNative.MPI_SUCCESS) throw new DistributedException($"{function} failed with MPI error code {code}");
    }
}
