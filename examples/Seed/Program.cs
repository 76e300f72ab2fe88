// Every code block of the seed (optim_wrapper.zh.md), in order, on TorchSharp with Optim: each
// section prints what Optim prints, then "seed:" and what the seed shows. Where current MMEngine
// prints something else than the seed (the seed's output is from an older version), the expected
// lines are MMEngine's, recorded in ../shared/golden, and a comment says why. The seed's CUDA
// examples run on the CPU, where autocast uses bfloat16.
using Microsoft.Extensions.Logging;
using Optim;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

var logs = new LogLines();
OptimLogging.LoggerFactory = LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Information).AddProvider(logs));
torch.manual_seed(0);

// ---- 1.1 SGD, fp32, plain PyTorch ------------------------------------------------------------------
Section("1.1 single-precision training with PyTorch's SGD");
var inputs = Enumerable.Repeat(torch.zeros(10, 1, 1), 10).ToList();
var targets = Enumerable.Repeat(torch.ones(10, 1, 1), 10).ToList();
var model = nn.Linear(1, 1);
var optimizer = torch.optim.SGD(model.parameters(), 0.01);
optimizer.zero_grad();
foreach (var (input, target) in inputs.Zip(targets))
{
    var output = model.forward(input);
    var loss = F.l1_loss(output, target);
    loss.backward();
    optimizer.step();
    optimizer.zero_grad();
}
Console.WriteLine($"bias after 10 steps: {model.bias!.item<float>():R}   (the seed prints nothing here)");

// ---- 1.2 the same with OptimWrapper ---------------------------------------------------------------
Section("1.2 single-precision training with OptimWrapper");
var optim_wrapper = new OptimWrapper(optimizer: optimizer);
foreach (var (input, target) in inputs.Zip(targets))
{
    var output = model.forward(input);
    var loss = F.l1_loss(output, target);
    optim_wrapper.update_params(loss);
}
Console.WriteLine($"bias after 10 more steps: {model.bias!.item<float>():R}   (the seed prints nothing here)");

// ---- 2.1 mixed precision by hand (PyTorch's autocast; CPU bfloat16 here) ---------------------------
Section("2.1 mixed precision with PyTorch's autocast (CPU, bfloat16)");
inputs = Enumerable.Repeat(torch.zeros(10, 1, 1, 1), 10).ToList();
targets = Enumerable.Repeat(torch.ones(10, 1, 1, 1), 10).ToList();
foreach (var (input, target) in inputs.Zip(targets))
{
    Tensor output;
    using (Amp.autocast("cpu"))
        output = model.forward(input);
    var loss = F.l1_loss(output, target);
    loss.backward();
    optimizer.step();
    optimizer.zero_grad();
}
Console.WriteLine($"autocast output dtype: {AutocastOutput(model, inputs[0])}   (the seed prints nothing here)");

// ---- 2.2 mixed precision with AmpOptimWrapper -----------------------------------------------------
Section("2.2 mixed precision with AmpOptimWrapper");
var amp_wrapper = new AmpOptimWrapper(optimizer: optimizer);
foreach (var (input, target) in inputs.Zip(targets))
{
    Tensor output;
    using (amp_wrapper.optim_context(model))
        output = model.forward(input);
    var loss = F.l1_loss(output, target);
    amp_wrapper.update_params(loss);
}
Console.WriteLine($"loss scale after 10 steps: {amp_wrapper.loss_scaler.get_scale()}   (the seed prints nothing here)");

// ---- 3.1 mixed precision and accumulation by hand -------------------------------------------------
Section("3.1 mixed precision and gradient accumulation by hand");
foreach (var (idx, (input, target)) in inputs.Zip(targets).Index())
{
    Tensor output;
    using (Amp.autocast("cpu"))
        output = model.forward(input);
    var loss = F.l1_loss(output, target);
    loss.backward();
    if (idx % 2 == 0)
    {
        optimizer.step();
        optimizer.zero_grad();
    }
}
Console.WriteLine("done   (the seed prints nothing here)");

// ---- 3.2 the same with AmpOptimWrapper(accumulative_counts=2) -------------------------------------
Section("3.2 mixed precision and gradient accumulation with AmpOptimWrapper");
amp_wrapper = new AmpOptimWrapper(optimizer: optimizer, accumulative_counts: 2);
var steps = 0;
foreach (var (input, target) in inputs.Zip(targets))
{
    Tensor output;
    using (amp_wrapper.optim_context(model))
        output = model.forward(input);
    var loss = F.l1_loss(output, target);
    amp_wrapper.update_params(loss);
    if (amp_wrapper.should_update()) steps++;
}
Console.WriteLine($"{amp_wrapper.inner_count} backward passes, {steps} optimizer steps   (the seed prints nothing here)");

// ---- the fine-grained interface: backward, step, zero_grad ----------------------------------------
Section("backward / step / zero_grad");
foreach (var (idx, (input, target)) in inputs.Zip(targets).Index())
{
    optimizer.zero_grad();
    Tensor output;
    using (amp_wrapper.optim_context(model))
        output = model.forward(input);
    var loss = F.l1_loss(output, target);
    amp_wrapper.backward(loss);
    if (idx % 2 == 0)
    {
        amp_wrapper.step();
        amp_wrapper.zero_grad();
    }
}
Console.WriteLine("done   (the seed prints nothing here)");

// ---- get_lr / get_momentum -------------------------------------------------------------------------
Section("get_lr / get_momentum");
{
    var m = nn.Linear(1, 1);
    var sgd = torch.optim.SGD(m.parameters(), 0.01);
    var w = new OptimWrapper(sgd);
    Show(new[]
    {
        Py.Repr(OptimizerGroups.Of(sgd)[0]["lr"]),
        Py.Repr(OptimizerGroups.Of(sgd)[0]["momentum"]),
        w.get_lr().ToString(),
        w.get_momentum().ToString(),
    }, "0.01", "0", "{'lr': [0.01]}", "{'momentum': [0]}");
}

// ---- state_dict / load_state_dict -----------------------------------------------------------------
Section("state_dict / load_state_dict");
{
    var m = nn.Linear(1, 1);
    var sgd = torch.optim.SGD(m.parameters(), 0.01);
    var optim_wapper = new OptimWrapper(optimizer: sgd);
    var amp_optim_wapper = new AmpOptimWrapper(optimizer: sgd);
    var optim_state_dict = optim_wapper.state_dict();
    var amp_optim_state_dict = amp_optim_wapper.state_dict();
    // torch 1.13's SGD groups also hold 'foreach': None (the seed's output); TorchSharp's SGD has no
    // foreach option, so Optim's groups do not have that key. Everything else is PyTorch's.
    const string foreachNote = "torch's 'foreach': None key; TorchSharp's SGD has no foreach option";
    ShowExplained(new[] { Describe(optim_state_dict), Describe(amp_optim_state_dict) }, s => s.Replace(", 'foreach': None", ""), foreachNote,
        "{'state': {}, 'param_groups': [{'lr': 0.01, 'momentum': 0, 'dampening': 0, 'weight_decay': 0, 'nesterov': False, 'maximize': False, 'foreach': None, 'params': [0, 1]}]}",
        "{'state': {}, 'param_groups': [{'lr': 0.01, 'momentum': 0, 'dampening': 0, 'weight_decay': 0, 'nesterov': False, 'maximize': False, 'foreach': None, 'params': [0, 1]}], 'loss_scaler': {'scale': 65536.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 2000, '_growth_tracker': 0}}");
    var optim_wapper_new = new OptimWrapper(optimizer: sgd);
    var amp_optim_wapper_new = new AmpOptimWrapper(optimizer: sgd);
    amp_optim_wapper_new.load_state_dict(amp_optim_state_dict);
    optim_wapper_new.load_state_dict(optim_state_dict);
}

// ---- OptimWrapperDict ------------------------------------------------------------------------------
Section("OptimWrapperDict");
{
    var gen = nn.Linear(1, 1);
    var disc = nn.Linear(1, 1);
    var optimizer_gen = torch.optim.SGD(gen.parameters(), 0.01);
    var optimizer_disc = torch.optim.SGD(disc.parameters(), 0.01);
    var optim_wapper_gen = new OptimWrapper(optimizer: optimizer_gen);
    var optim_wapper_disc = new OptimWrapper(optimizer: optimizer_disc);
    var optim_dict = new OptimWrapperDict(("gen", optim_wapper_gen), ("disc", optim_wapper_disc));
    Show(new[] { optim_dict.get_lr().ToString(), optim_dict.get_momentum().ToString() },
        "{'gen.lr': [0.01], 'disc.lr': [0.01]}", "{'gen.momentum': [0], 'disc.momentum': [0]}");
}

// ---- simple configs --------------------------------------------------------------------------------
Section("configs: OptimWrapper, type omitted, AmpOptimWrapper with accumulation");
foreach (var cfg in new[]
{
    """{"type": "OptimWrapper", "optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001}}""",
    """{"optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001}}""",
    """{"type": "AmpOptimWrapper", "optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001}, "accumulative_counts": 2}""",
})
{
    var w = Builder.build_optim_wrapper(nn.Linear(1, 1), cfg);
    Console.WriteLine($"{w.GetType().Name}: accumulative_counts={w.accumulative_counts}, {w.get_lr()}, {w.get_momentum()}   (the seed prints nothing here)");
}

// ---- per-group hyper-parameters in plain PyTorch ---------------------------------------------------
Section("PyTorch param groups: backbone lr 0.01, head lr 1e-3");
{
    var m = nn.ModuleDict<nn.Module>(("backbone", nn.Linear(1, 1)), ("head", nn.Linear(1, 1)));
    // TorchSharp 0.107 gives a group without options the lr of a later group that has one (both
    // groups end up at 1e-3), so the backbone's group states its lr explicitly.
    var sgd = torch.optim.SGD(new[]
    {
        new TorchSharp.Modules.SGD.ParamGroup(m["backbone"].parameters(), new TorchSharp.Modules.SGD.Options { LearningRate = 0.01 }),
        new TorchSharp.Modules.SGD.ParamGroup(m["head"].parameters(), new TorchSharp.Modules.SGD.Options { LearningRate = 1e-3 }),
    }, 0.01, momentum: 0.9);
    // MMEngine's OptimWrapper over several groups also reports base_lr (its base_param_settings).
    Show(new[] { new OptimWrapper(sgd).get_lr().ToString() }, "{'base_lr': [0.01], 'lr': [0.01, 0.001]}");
}

// ---- paramwise_cfg: norm_decay_mult=0 on the seed's ToyModel ---------------------------------------
Section("paramwise_cfg norm_decay_mult=0");
{
    var optimizer_cfg = """{"optimizer": {"type": "SGD", "lr": 0.01, "weight_decay": 0.0001}, "paramwise_cfg": {"norm_decay_mult": 0}}""";
    logs.Clear();
    Builder.build_optim_wrapper(new SeedToyModel(), optimizer_cfg);
    // The seed's output also lists lr/weight_decay lines for every bias: an older MMEngine. Current
    // MMEngine (golden/paramgroups_*.json, SPEC §9.4) sets no key on biases unless a bias
    // multiplier is given, so it logs only the two norm lines.
    Show(logs.Take(), "paramwise_options -- head.bn.weight:weight_decay=0.0", "paramwise_options -- head.bn.bias:weight_decay=0.0");
}

// ---- paramwise_cfg: custom_keys --------------------------------------------------------------------
Section("paramwise_cfg custom_keys");
{
    var optimizer_cfg = """
        {"optimizer": {"type": "SGD", "lr": 0.01, "weight_decay": 0.0001},
         "paramwise_cfg": {"custom_keys": {"backbone.layer0": {"lr_mult": 0, "decay_mult": 0}, "backbone": {"lr_mult": 1}, "head": {"lr_mult": 0.1}}}}
        """;
    logs.Clear();
    Builder.build_optim_wrapper(new SeedToyModel(), optimizer_cfg);
    var expected = new List<string>();
    foreach (var (name, lr, wd, mults) in new[]
    {
        ("backbone.layer0.weight", "0.0", "0.0", new[] { "lr_mult=0", "decay_mult=0" }),
        ("backbone.layer0.bias", "0.0", "0.0", new[] { "lr_mult=0", "decay_mult=0" }),
        ("backbone.layer1.weight", "0.01", "0.0001", new[] { "lr_mult=1" }),
        ("backbone.layer1.bias", "0.01", "0.0001", new[] { "lr_mult=1" }),
        ("head.linear.weight", "0.001", "0.0001", new[] { "lr_mult=0.1" }),
        ("head.linear.bias", "0.001", "0.0001", new[] { "lr_mult=0.1" }),
        ("head.bn.weight", "0.001", "0.0001", new[] { "lr_mult=0.1" }),
        ("head.bn.bias", "0.001", "0.0001", new[] { "lr_mult=0.1" }),
    })
    {
        expected.Add($"paramwise_options -- {name}:lr={lr}");
        expected.Add($"paramwise_options -- {name}:weight_decay={wd}");
        expected.AddRange(mults.Select(k => $"paramwise_options -- {name}:{k}"));
    }
    Show(logs.Take(), expected.ToArray());
}

// ---- the ToyModel's parameter names ----------------------------------------------------------------
Section("named_parameters of the ToyModel");
Show(new SeedToyModel().named_parameters().Select(np => np.name).ToArray(),
    "backbone.layer0.weight", "backbone.layer0.bias", "backbone.layer1.weight", "backbone.layer1.bias",
    "head.linear.weight", "head.linear.bias", "head.bn.weight", "head.bn.bias");

// ---- a custom constructor: LayerDecayOptimWrapperConstructor (examples/LayerDecay) -----------------
Section("LayerDecayOptimWrapperConstructor");
{
    Registries.register_constructor<LayerDecay.LayerDecayOptimWrapperConstructor>(force: true);
    logs.Clear();
    Builder.build_optim_wrapper(new LayerDecay.ToyModel(), """
        {"optimizer": {"type": "SGD", "lr": 0.01, "weight_decay": 0.0001},
         "paramwise_cfg": {"decay_factor": 0.5},
         "constructor": "LayerDecayOptimWrapperConstructor"}
        """);
    Show(logs.Take(), "layer.linear.weight : lr=0.0025", "layer.linear.bias : lr=0.0025", "linear.weight : lr=0.005", "linear.bias : lr=0.005");
}

// ---- a constructor for several optimizers (the seed's `MultipleOptimiWrapperConstructor: ...`) -------
Section("a constructor returning several wrappers");
{
    Registries.register_constructor<MultipleOptimiWrapperConstructor>();
    var built = Builder.build_optim_wrapper<OptimWrapperDict>(new SeedToyModel(), """
        {"optimizer": {"type": "SGD", "lr": 0.01}, "constructor": "MultipleOptimiWrapperConstructor"}
        """);
    Console.WriteLine($"{built.get_lr()}   (the seed leaves the body as '...')");
}
Console.WriteLine();
Console.WriteLine(Mismatches == 0 ? "every printed value matches" : $"{Mismatches} printed values differ");
return Mismatches == 0 ? 0 : 1;

// ---- helpers -----------------------------------------------------------------------------------------
static void Section(string title) => Console.WriteLine($"\n== {title}");

static void Show(IReadOnlyList<string> actual, params string[] seed)
{
    for (var i = 0; i < Math.Max(actual.Count, seed.Length); i++)
    {
        var a = i < actual.Count ? actual[i] : "(nothing)";
        var s = i < seed.Length ? seed[i] : "(nothing)";
        Console.WriteLine(a == s ? $"  {a}" : $"  {a}\n    seed: {s}   <-- differs");
        if (a != s) Mismatches++;
    }
    Console.WriteLine(actual.Count == seed.Length && actual.SequenceEqual(seed) ? "  (as expected)" : "");
}

// Lines that differ from the seed's only by `normalise` (a difference explained by `why`).
static void ShowExplained(IReadOnlyList<string> actual, Func<string, string> normalise, string why, params string[] seed)
{
    for (var i = 0; i < Math.Max(actual.Count, seed.Length); i++)
    {
        var a = i < actual.Count ? actual[i] : "(nothing)";
        var s = i < seed.Length ? seed[i] : "(nothing)";
        if (a == s) Console.WriteLine($"  {a}");
        else if (a == normalise(s)) Console.WriteLine($"  {a}\n    seed: {s}\n    (only difference: {why})");
        else { Console.WriteLine($"  {a}\n    seed: {s}   <-- differs"); Mismatches++; }
    }
}

static string AutocastOutput(nn.Module<Tensor, Tensor> m, Tensor x)
{
    using var _ = Amp.autocast("cpu");
    return m.forward(x).dtype.ToString();
}

// PyTorch's state-dict layout: the optimizer state (fresh SGD has none), the param groups, extras.
static string Describe(OptimStateDict sd)
{
    var d = new OrderedDictionary<string, object?>
    {
        ["state"] = new OrderedDictionary<string, object?>(),
        ["param_groups"] = sd.param_groups,
    };
    foreach (var (k, v) in sd.entries) d[k] = v;
    return Py.Repr(d);
}

partial class Program
{
    static int Mismatches;
}

/// <summary>The seed's ToyModel: backbone = ModuleDict(layer0, layer1 = Linear(1, 1)); head = Sequential(linear, bn).</summary>
class SeedToyModel : nn.Module<Tensor, Tensor>
{
    private readonly TorchSharp.Modules.ModuleDict<nn.Module<Tensor, Tensor>> backbone =
        nn.ModuleDict<nn.Module<Tensor, Tensor>>(("layer0", nn.Linear(1, 1)), ("layer1", nn.Linear(1, 1)));
    private readonly TorchSharp.Modules.Sequential head = nn.Sequential(("linear", nn.Linear(1, 1)), ("bn", nn.BatchNorm1d(1)));

    public SeedToyModel() : base("ToyModel") => RegisterComponents();

    public override Tensor forward(Tensor x) => head.forward(x);
}

/// <summary>The seed's MultipleOptimiWrapperConstructor, filled in: one SGD wrapper for the backbone, one for the head.</summary>
class MultipleOptimiWrapperConstructor : IOptimWrapperConstructor
{
    private readonly double lr;

    public MultipleOptimiWrapperConstructor(Optim.Core.Config.OptimWrapperConfig cfg) =>
        lr = Convert.ToDouble(Py.FromPy(cfg.Optimizer.Value.Get("lr")));

    public object Invoke(nn.Module model)
    {
        var children = model.named_children().ToDictionary(c => c.name, c => c.module);
        return new OptimWrapperDict(
            ("backbone", new OptimWrapper(torch.optim.SGD(children["backbone"].parameters(), lr))),
            ("head", new OptimWrapper(torch.optim.SGD(children["head"].parameters(), lr))));
    }
}

/// <summary>Keeps Optim's log lines in order, to print them beside the seed's.</summary>
sealed class LogLines : ILoggerProvider
{
    private readonly List<string> lines = new();
    public void Clear() { lock (lines) lines.Clear(); }
    public string[] Take() { lock (lines) { var a = lines.ToArray(); lines.Clear(); return a; } }
    public ILogger CreateLogger(string categoryName) => new Sink(this);
    public void Dispose() { }
    private sealed class Sink(LogLines owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= LogLevel.Information) lock (owner.lines) owner.lines.Add(formatter(state, exception));
        }
    }
}
