// The seed's mixed-precision examples (optim_wrapper.zh.md, examples 2.2 and 3.2, and the state_dict
// example), line by line on TorchSharp. MMEngine runs them on CUDA with float16; here they run on the
// CPU, where AmpOptimWrapper's autocast uses bfloat16.
using Optim;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

torch.manual_seed(0);
var inputs = Enumerable.Repeat(torch.zeros(10, 1, 1, 1), 10).ToList();
var targets = Enumerable.Repeat(torch.ones(10, 1, 1, 1), 10).ToList();

// ---- 2.2 Mixed-precision training with AmpOptimWrapper --------------------------------------------
Console.WriteLine("2.2 AmpOptimWrapper: mixed-precision training");
{
    var model = nn.Linear(1, 1);
    var optimizer = torch.optim.SGD(model.parameters(), 0.01);
    var optim_wrapper = new AmpOptimWrapper(optimizer: optimizer);

    foreach (var (input, target) in inputs.Zip(targets))
    {
        Tensor output;
        using (optim_wrapper.optim_context(model))
            output = model.forward(input);
        var loss = F.l1_loss(output, target);
        optim_wrapper.update_params(loss);
        Console.WriteLine($"  output {output.dtype}, loss {loss.dtype} {loss.item<float>():F4}");
    }
    Console.WriteLine($"  loss_scaler: {Py.Repr(optim_wrapper.loss_scaler.state_dict())}");
}

// ---- 3.2 Mixed precision and gradient accumulation ------------------------------------------------
Console.WriteLine("3.2 AmpOptimWrapper with accumulative_counts=2");
{
    var model = nn.Linear(1, 1);
    var optimizer = torch.optim.SGD(model.parameters(), 0.01);
    var optim_wrapper = new AmpOptimWrapper(optimizer: optimizer, accumulative_counts: 2);

    foreach (var (input, target) in inputs.Zip(targets))
    {
        Tensor output;
        using (optim_wrapper.optim_context(model))
            output = model.forward(input);
        var loss = F.l1_loss(output, target);
        optim_wrapper.update_params(loss);
        Console.WriteLine($"  inner_count {optim_wrapper.inner_count}: loss {loss.item<float>():F4}{(optim_wrapper.should_update() ? "  (step)" : "")}");
    }
    Console.WriteLine($"  loss_scaler: {Py.Repr(optim_wrapper.loss_scaler.state_dict())}");

    // The finer-grained interface: backward, step and zero_grad by hand.
    Console.WriteLine("  the same with backward/step/zero_grad:");
    foreach (var (idx, (input, target)) in inputs.Zip(targets).Index())
    {
        optimizer.zero_grad();
        Tensor output;
        using (optim_wrapper.optim_context(model))
            output = model.forward(input);
        var loss = F.l1_loss(output, target);
        optim_wrapper.backward(loss);
        if (idx % 2 == 0)
        {
            optim_wrapper.step();
            optim_wrapper.zero_grad();
        }
    }
    Console.WriteLine($"  loss_scaler: {Py.Repr(optim_wrapper.loss_scaler.state_dict())}");
}

// ---- Exporting and loading state dicts ------------------------------------------------------------
Console.WriteLine("state_dict / load_state_dict");
{
    var model = nn.Linear(1, 1);
    var optimizer = torch.optim.SGD(model.parameters(), 0.01);

    var optim_wapper = new OptimWrapper(optimizer: optimizer);
    var amp_optim_wapper = new AmpOptimWrapper(optimizer: optimizer);

    // export the state dicts
    var optim_state_dict = optim_wapper.state_dict();
    var amp_optim_state_dict = amp_optim_wapper.state_dict();

    Console.WriteLine(Describe(optim_state_dict));
    Console.WriteLine(Describe(amp_optim_state_dict));
    var optim_wapper_new = new OptimWrapper(optimizer: optimizer);
    var amp_optim_wapper_new = new AmpOptimWrapper(optimizer: optimizer);

    // load the state dicts
    amp_optim_wapper_new.load_state_dict(amp_optim_state_dict);
    optim_wapper_new.load_state_dict(optim_state_dict);
    Console.WriteLine($"loaded loss_scaler: {Py.Repr(amp_optim_wapper_new.loss_scaler.state_dict())}");
}

// PyTorch's state-dict layout: the optimizer state (TorchSharp keeps it in binary form; fresh SGD has
// none), the param groups, and any extra entry such as 'loss_scaler'.
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
