using Optim;
using Optim.Core;
using TorchSharp;

namespace LayerDecay;

/// <summary>
/// The seed's LayerDecayOptimWrapperConstructor: each level deeper in the module tree gets the
/// learning rate of its parent times <c>decay_factor</c> (paramwise_cfg, default 0.5). Only
/// <see cref="add_params"/> is overridden, as in MMEngine; the optimizer and wrapper are built by
/// <see cref="DefaultOptimWrapperConstructor"/>.
/// </summary>
public class LayerDecayOptimWrapperConstructor : DefaultOptimWrapperConstructor
{
    private readonly double decay_factor;

    /// <summary>Reads <c>decay_factor</c> from paramwise_cfg (MMEngine passes it beside the config).</summary>
    public LayerDecayOptimWrapperConstructor(Config.OptimWrapperConfig optim_wrapper_cfg) : base(optim_wrapper_cfg)
    {
        decay_factor = paramwise_cfg.TryGetValue("decay_factor", out var f) && f is not null ? Convert.ToDouble(f) : 0.5;
    }

    /// <inheritdoc />
    public override void add_params(List<IParamGroup> @params, torch.nn.Module module, string prefix = "", bool is_dcn_module = false) =>
        add_params(@params, module, prefix, lr: null);

    /// <summary>The seed's <c>add_params(params, module, prefix='', lr=None)</c>.</summary>
    public void add_params(List<IParamGroup> @params, torch.nn.Module module, string prefix, double? lr)
    {
        lr ??= base_lr;
        foreach (var (name, param) in module.named_parameters(recurse: false))
        {
            var param_group = new PlainParamGroup(new Dictionary<string, object?> { ["lr"] = lr }, new[] { param });
            @params.Add(param_group);
            var full_name = prefix != "" ? $"{prefix}.{name}" : name;
            print_log($"{full_name} : lr={PyFormat.@float(lr!.Value)}");
        }
        foreach (var (name, child) in module.named_children())
        {
            var child_prefix = prefix != "" ? $"{prefix}.{name}" : name;
            add_params(@params, child, child_prefix, lr * decay_factor);
        }
    }
}

/// <summary>The seed's ToyModel: <c>layer = ModuleDict(linear=Linear(1, 1))</c>, <c>linear = Linear(1, 1)</c>.</summary>
public class ToyModel : torch.nn.Module<torch.Tensor, torch.Tensor>
{
    private readonly TorchSharp.Modules.ModuleDict<torch.nn.Module<torch.Tensor, torch.Tensor>> layer =
        torch.nn.ModuleDict<torch.nn.Module<torch.Tensor, torch.Tensor>>(("linear", torch.nn.Linear(1, 1)));
    private readonly TorchSharp.Modules.Linear linear = torch.nn.Linear(1, 1);

    /// <summary>Creates the model with fresh weights.</summary>
    public ToyModel() : base(nameof(ToyModel)) => RegisterComponents();

    /// <inheritdoc />
    public override torch.Tensor forward(torch.Tensor x) => linear.forward(layer["linear"].forward(x));
}
