using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Optimizer = TorchSharp.torch.optim.Optimizer;

namespace Optim;

/// <summary>
/// Checks TorchSharp's binary optimizer state against an optimizer without changing it: the stream is
/// read through TorchSharp's own <c>LoadStateDict</c> into scratch copies of each group's options and
/// each parameter's state (made for a CPU stand-in of the parameter), and every tensor of a scratch
/// state must have its parameter's dtype and shape. Works for any <see cref="OptimizerHelper"/>
/// whose options have a parameterless constructor and whose states a <c>(Parameter)</c> one, as all of
/// TorchSharp's do; for others only the rollback of <see cref="OptimStateDict"/> protects the optimizer.
/// </summary>
internal static class OptimizerStateCheck
{
    public static void Validate(Optimizer optimizer, byte[] state, string path)
    {
        if (optimizer is not OptimizerHelper helper)
            throw new CheckpointException(path, $"{OptimizerGroups.PyTorchName(optimizer)} has no state dict in TorchSharp, but the state holds one");
        var live = helper.state_dict();
        var groups = optimizer.ParamGroups.Cast<ParamGroup>().ToList();
        using var reader = new BinaryReader(new MemoryStream(state, writable: false));
        int g = 0, j = 0;
        try
        {
            var name = reader.ReadString();
            if (name != helper.GetType().Name)
                throw new CheckpointException(path, $"TorchSharp state of a {name} optimizer where the optimizer is a {helper.GetType().Name}");
            var options = reader.Read7BitEncodedInt64();
            var states = reader.Read7BitEncodedInt64();
            if (options != live.Options.Count)
                throw new CheckpointException(path, $"{options} groups of options where the optimizer has {live.Options.Count}");
            if (states != live.State.Count)
                throw new CheckpointException(path, $"{states} parameter states where the optimizer has {live.State.Count}");
            var scratchOptions = new List<OptimizerOptions>();
            foreach (var o in live.Options)
            {
                if (Activator.CreateInstance(o.GetType()) is not OptimizerOptions copy) return;   // cannot check: rely on rollback
                copy.LoadStateDict(reader);
                scratchOptions.Add(copy);
            }
            for (g = 0; g < groups.Count; g++)
            {
                var ps = groups[g].Parameters.ToList();
                for (j = 0; j < ps.Count; j++)
                {
                    var index = live.StateIndexRef[g][j];
                    var p = ps[j];
                    using var standIn = new Parameter(torch.zeros(p.shape, p.dtype, torch.CPU), requires_grad: false);
                    OptimizerState? scratch;
                    try { scratch = Activator.CreateInstance(live.State[index].GetType(), standIn) as OptimizerState; }
                    catch (MissingMethodException) { return; }
                    if (scratch is null) return;
                    scratch.Initialize(scratchOptions[g]);
                    try
                    {
                        var before = reader.BaseStream.Position;
                        try { scratch.LoadStateDict(reader); }
                        catch (ArgumentException ex) when (ex.Message.Contains("data types"))
                        {
                            // TorchSharp read the saved dtype code (one LEB128 byte) just before it threw.
                            var code = (ScalarType)state[reader.BaseStream.Position - 1];
                            throw new CheckpointException(At(path, g, j), $"dtype {Dtypes.Name(code)} where the parameter is {Dtypes.Name(p.dtype)}");
                        }
                        catch (ArgumentException ex) when (ex.Message.Contains("shape"))
                        {
                            throw new CheckpointException(At(path, g, j), $"a state tensor whose shape is not the parameter's [{string.Join(", ", p.shape)}]");
                        }
                        foreach (var (field, t) in Tensors(scratch))
                        {
                            if (t.dtype != p.dtype)
                                throw new CheckpointException(At(path, g, j) + "." + field, $"dtype {Dtypes.Name(t.dtype)} where the parameter is {Dtypes.Name(p.dtype)}");
                            if (!t.shape.SequenceEqual(p.shape))
                                throw new CheckpointException(At(path, g, j) + "." + field,
                                    $"shape [{string.Join(", ", t.shape)}] where the parameter has shape [{string.Join(", ", p.shape)}]");
                        }
                    }
                    finally
                    {
                        foreach (var (_, t) in Tensors(scratch)) t.Dispose();
                    }
                }
            }
            if (reader.BaseStream.Position != state.Length)
                throw new CheckpointException(path, $"{state.Length - reader.BaseStream.Position} bytes left after the optimizer state");
        }
        catch (CheckpointException) { throw; }
        catch (Exception ex) when (ex is EndOfStreamException or IOException or ArgumentException or InvalidCastException or OverflowException or NullReferenceException)
        {
            throw new CheckpointException(At(path, g, j), $"the optimizer state does not fit this optimizer: {ex.Message}", ex);
        }
    }

    private static string At(string path, int g, int j) => $"{path}[param_groups[{g}].params[{j}]]";

    /// <summary>The state's tensors (TorchSharp keeps them in public fields).</summary>
    private static IEnumerable<(string, Tensor)> Tensors(OptimizerState state) =>
        state.GetType().GetFields(BindingFlags.Public | BindingFlags.Instance)
            .Where(f => typeof(Tensor).IsAssignableFrom(f.FieldType))
            .Select(f => (f.Name, f.GetValue(state) as Tensor))
            .Where(x => x.Item2 is not null && !x.Item2.IsInvalid)
            .Select(x => (x.Name, x.Item2!));
}
