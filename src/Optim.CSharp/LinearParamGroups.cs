using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using OptimizerState = TorchSharp.Modules.OptimizerState;

namespace Optim;

/// <summary>
/// Adds param groups to a TorchSharp optimizer in time linear in the number of parameters.
/// </summary>
/// <remarks>
/// TorchSharp's <c>add_param_group</c> records each parameter's state with
/// <c>_state[p.Handle] = state</c>, and that <c>OrderedDict</c> indexer searches its whole list, so
/// building an optimizer over N parameters costs O(N²) (28,000 tensors: seconds, and gigabytes of
/// boxed keys). Here each group is added while the optimizer's <c>_state</c> is swapped for an empty
/// scratch dictionary, and the group's parameters are handed to <c>add_param_group</c> through an
/// enumerator that, before each parameter, moves what the scratch holds into the real dictionary with
/// the constant-time <c>Add</c>: the indexer only ever searches a list of at most one entry. Everything
/// else <c>add_param_group</c> does (filling the group's options from the defaults, creating and
/// initialising each state) is TorchSharp's own code, for every optimizer type, subclasses included.
/// The result is the same optimizer: same groups in the same order, same states in the same order.
/// </remarks>
internal static class LinearParamGroups
{
    private static readonly FieldInfo? StateField =
        typeof(OptimizerHelper).GetField("_state", BindingFlags.NonPublic | BindingFlags.Instance);

    /// <summary>Whether <paramref name="optimizer"/> can be filled this way (an <see cref="OptimizerHelper"/> of a TorchSharp that keeps <c>_state</c>).</summary>
    public static bool Supports(torch.optim.Optimizer optimizer) =>
        optimizer is OptimizerHelper && StateField?.FieldType == typeof(TorchSharp.Utils.OrderedDict<IntPtr, OptimizerState>);

    /// <summary>Calls <c>add_param_group</c> for each group, in order, in linear time.</summary>
    /// <exception cref="NotSupportedException">The optimizer is not <see cref="Supports">supported</see>.</exception>
    public static void AddAll(torch.optim.Optimizer optimizer, IEnumerable<ParamGroup> groups)
    {
        if (!Supports(optimizer)) throw new NotSupportedException($"{optimizer.GetType().Name} keeps no TorchSharp _state dictionary");
        var helper = (OptimizerHelper)optimizer;
        var state = (TorchSharp.Utils.OrderedDict<IntPtr, OptimizerState>)StateField!.GetValue(helper)!;
        var scratch = new TorchSharp.Utils.OrderedDict<IntPtr, OptimizerState>();
        StateField.SetValue(helper, scratch);
        try
        {
            foreach (var group in groups)
            {
                var parameters = group.Parameters as IReadOnlyList<Parameter> ?? group.Parameters.ToList();
                group.Parameters = Draining(parameters, scratch, state);
                try
                {
                    helper.add_param_group(group);
                }
                finally
                {
                    group.Parameters = parameters;
                    Drain(scratch, state);
                }
            }
        }
        finally
        {
            StateField.SetValue(helper, state);
        }
    }

    private static IEnumerable<Parameter> Draining(IReadOnlyList<Parameter> parameters,
        TorchSharp.Utils.OrderedDict<IntPtr, OptimizerState> scratch, TorchSharp.Utils.OrderedDict<IntPtr, OptimizerState> state)
    {
        foreach (var p in parameters)
        {
            Drain(scratch, state);
            yield return p;
        }
    }

    private static void Drain(TorchSharp.Utils.OrderedDict<IntPtr, OptimizerState> scratch, TorchSharp.Utils.OrderedDict<IntPtr, OptimizerState> state)
    {
        if (scratch.Count == 0) return;
        foreach (var (key, value) in scratch)
        {
            // A parameter met again replaces its state in place, as TorchSharp's indexer does (slow path, never taken
            // by Optim's builders, which reject a parameter in two groups first).
            if (state.ContainsKey(key)) state[key] = value;
            else state.Add(key, value);
        }
        scratch.Clear();
    }
}
