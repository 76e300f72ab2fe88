// The seed's custom constructor example (optim_wrapper.zh.md, LayerDecayOptimWrapperConstructor),
// ported to C#: register the constructor, build from a JSON config, see one lr per depth.
using LayerDecay;
using Microsoft.Extensions.Logging;
using Optim;

using var loggerFactory = LoggerFactory.Create(b => b.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "MM/dd HH:mm:ss "; }));

// @OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)
Registries.register_constructor<LayerDecayOptimWrapperConstructor>(force: true);

var model = new ToyModel();
var optim_wrapper = """
    {
      "optimizer": {"type": "SGD", "lr": 0.01, "weight_decay": 0.0001},
      "paramwise_cfg": {"decay_factor": 0.5},
      "constructor": "LayerDecayOptimWrapperConstructor"
    }
    """;
var optimizer = Builder.build_optim_wrapper(model, optim_wrapper, loggerFactory);

Console.WriteLine(optimizer.get_lr());
