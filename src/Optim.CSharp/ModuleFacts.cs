using Optim.Core;
using TorchSharp;
using TorchSharp.Modules;

namespace Optim;

/// <summary>
/// Marks a deformable-convolution module (mmcv's <c>DeformConv2d</c>/<c>ModulatedDeformConv2d</c>).
/// Parameters of a <c>Conv2d</c> child of such a module whose prefix contains <c>conv_offset</c> get
/// <c>dcn_offset_lr_mult</c>, and no child of it gets the bias/flat weight-decay multipliers.
/// </summary>
public interface IDeformableConv
{
}

/// <summary>
/// A model wrapper (PyTorch's <c>DataParallel</c>/<c>DistributedDataParallel</c>, or any module with a
/// <c>module</c> attribute): optimizer constructors build param groups from the inner module, so
/// parameter names do not carry a <c>module.</c> prefix.
/// </summary>
public interface IModelWrapper
{
    /// <summary>The wrapped model.</summary>
    torch.nn.Module module { get; }
}

/// <summary>
/// Walks a TorchSharp module tree the way MMEngine's <c>add_params</c> does — a module's own
/// parameters, then each child recursively (<c>named_children()</c>, not <c>named_modules()</c>, whose
/// order differs from PyTorch's) — and describes each parameter for the core's rules.
/// </summary>
public static class ModuleFacts
{
    /// <summary>The identity of a parameter object (what PyTorch compares with <c>is</c>): its native handle.</summary>
    public static long Identity(Parameter p) => p.Handle.ToInt64();

    /// <summary>Whether MMEngine treats the module as a normalization layer (BatchNorm*, InstanceNorm*, GroupNorm, LayerNorm).</summary>
    public static bool IsNorm(torch.nn.Module module) =>
        module is BatchNorm or InstanceNorm or GroupNorm or LayerNorm;

    /// <summary>The kind of a parameter's owning module as the rules see it.</summary>
    public static Paramwise.ModuleKind KindOf(torch.nn.Module module)
    {
        if (IsNorm(module)) return Paramwise.ModuleKind.Norm;
        if (module is Conv2d conv)
            return conv.in_channels == conv.groups ? Paramwise.ModuleKind.DepthwiseConv : Paramwise.ModuleKind.Conv2d;
        return Paramwise.ModuleKind.Other;
    }

    /// <summary>
    /// The facts of every parameter met walking <paramref name="module"/> (named <paramref name="prefix"/>),
    /// in MMEngine's order, with the parameter objects by identity. A parameter reachable under two
    /// names (weight tying, a shared module) is met twice with the same identity.
    /// </summary>
    /// <param name="module">The subtree's root.</param>
    /// <param name="prefix">The root's name (<c>""</c> for the model itself).</param>
    /// <param name="isDcnModule">Whether the root's parent is a deformable-conv module.</param>
    public static (List<Paramwise.ParamFact> Facts, Dictionary<long, Parameter> Params) Collect(
        torch.nn.Module module, string prefix = "", bool isDcnModule = false)
    {
        var facts = new List<Paramwise.ParamFact>();
        var byId = new Dictionary<long, Parameter>();
        Walk(module, prefix, isDcnModule, facts, byId);
        return (facts, byId);
    }

    private static void Walk(torch.nn.Module module, string prefix, bool isDcnModule,
        List<Paramwise.ParamFact> facts, Dictionary<long, Parameter> byId)
    {
        var kind = KindOf(module);
        foreach (var (name, p) in module.named_parameters(recurse: false))
        {
            var id = Identity(p);
            byId.TryAdd(id, p);
            facts.Add(new Paramwise.ParamFact(prefix, name, kind, isDcnModule, (int)p.dim(), p.requires_grad, id));
        }
        var childIsDcn = module is IDeformableConv;
        foreach (var (childName, child) in module.named_children())
            Walk(child, prefix == "" ? childName : prefix + "." + childName, childIsDcn, facts, byId);
    }

    /// <summary>The largest magnitude each of <paramref name="parameters"/> can hold: float64's when every one is float64, else float32's.</summary>
    internal static double LimitOf(IReadOnlyCollection<Parameter> parameters) =>
        parameters.Count > 0 && parameters.All(p => p.dtype == torch.ScalarType.Float64) ? OptimizerRules.float64Limit : OptimizerRules.float32Limit;

    /// <summary>The model an optimizer constructor works on: the inner module of a <see cref="IModelWrapper"/>.</summary>
    public static torch.nn.Module Unwrap(torch.nn.Module model) => model is IModelWrapper w ? w.module : model;

    /// <summary>
    /// PyTorch's <c>named_parameters()</c>: every parameter once (first name wins), own parameters before
    /// children's, in registration order.
    /// </summary>
    public static List<(string Name, Parameter Param)> NamedParameters(torch.nn.Module model)
    {
        var seen = new HashSet<long>();
        var result = new List<(string, Parameter)>();
        void Visit(torch.nn.Module m, string prefix)
        {
            foreach (var (name, p) in m.named_parameters(recurse: false))
                if (seen.Add(Identity(p))) result.Add((prefix == "" ? name : prefix + "." + name, p));
            foreach (var (childName, child) in m.named_children())
                Visit(child, prefix == "" ? childName : prefix + "." + childName);
        }
        Visit(model, "");
        return result;
    }
}

/// <summary>
/// One <see cref="ModuleFacts.Collect"/> walk of a model, shared by everything one build asks of the
/// module tree (the value limits, the param-group plan, the config lint), so a build walks it once.
/// </summary>
internal sealed class ModuleWalk
{
    private double? _limit;

    private ModuleWalk(torch.nn.Module root, List<Paramwise.ParamFact> facts, Dictionary<long, Parameter> parameters)
    {
        Root = root;
        Facts = facts;
        Parameters = parameters;
    }

    /// <summary>Walks <paramref name="root"/> (the model itself: prefix <c>""</c>, not in a DCN module).</summary>
    public static ModuleWalk Of(torch.nn.Module root)
    {
        var (facts, parameters) = ModuleFacts.Collect(root);
        return new ModuleWalk(root, facts, parameters);
    }

    /// <summary>The module walked.</summary>
    public torch.nn.Module Root { get; }

    /// <summary>Every parameter met, in MMEngine's order.</summary>
    public List<Paramwise.ParamFact> Facts { get; }

    /// <summary>The parameter objects by identity.</summary>
    public Dictionary<long, Parameter> Parameters { get; }

    /// <summary>The largest magnitude every parameter can hold (<see cref="ModuleFacts.LimitOf"/>), computed once.</summary>
    public double Limit => _limit ??= ModuleFacts.LimitOf(Parameters.Values);
}
