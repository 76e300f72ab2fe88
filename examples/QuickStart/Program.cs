// The seed's examples (optim_wrapper.zh.md) ported line by line to C#: MMEngine's names, TorchSharp's tensors.
using Microsoft.Extensions.Logging;
using Optim;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

OptimLogging.LoggerFactory = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true));
torch.manual_seed(0);

// 1.1 plain TorchSharp SGD, fp32
var inputs = Enumerable.Repeat(torch.zeros(10, 1, 1), 10).ToList();
var targets = Enumerable.Repeat(torch.ones(10, 1, 1), 10).ToList();
var model = nn.Linear(1, 1);
var optimizer = torch.optim.SGD(model.parameters(), learningRate: 0.01);
optimizer.zero_grad();
foreach (var (input, target) in inputs.Zip(targets))
{
    var output = model.forward(input);
    var loss = F.l1_loss(output, target);
    loss.backward();
    optimizer.step();
    optimizer.zero_grad();
}
Console.WriteLine("1.1 plain SGD:      final bias " + model.bias!.item<float>().ToString("R"));

// 1.2 the same with OptimWrapper: update_params scales, back-propagates, steps and zeroes.
var optim_wrapper = new OptimWrapper(optimizer: optimizer);
foreach (var (input, target) in inputs.Zip(targets))
{
    var output = model.forward(input);
    var loss = F.l1_loss(output, target);
    optim_wrapper.update_params(loss);
}
Console.WriteLine("1.2 OptimWrapper:   final bias " + model.bias!.item<float>().ToString("R"));

// Gradient accumulation (3.2 without AMP): two backward passes per update; the context is where a
// data-parallel model would skip gradient synchronisation.
optim_wrapper = new OptimWrapper(optimizer: optimizer, accumulative_counts: 2);
foreach (var (input, target) in inputs.Zip(targets))
{
    Tensor output;
    using (optim_wrapper.optim_context(model)) output = model.forward(input);
    var loss = F.l1_loss(output, target);
    optim_wrapper.update_params(loss);
}
Console.WriteLine($"accumulation x2:    {optim_wrapper.inner_count} backward passes, bias " + model.bias!.item<float>().ToString("R"));

// The fine-grained interface: backward, step, zero_grad.
int idx = 0;
foreach (var (input, target) in inputs.Zip(targets))
{
    optimizer.zero_grad();
    Tensor output;
    using (optim_wrapper.optim_context(model)) output = model.forward(input);
    var loss = F.l1_loss(output, target);
    optim_wrapper.backward(loss);
    if (idx % 2 == 0)
    {
        optim_wrapper.step();
        optim_wrapper.zero_grad();
    }
    idx++;
}

// Gradient clipping by norm, with the grad norm reported (MMEngine's train/grad_norm).
var clipped = new OptimWrapper(optimizer, clip_grad: new Dictionary<string, object?> { ["max_norm"] = 0.5 });
clipped.GradNormReported += (_, norm) => Console.WriteLine($"clipping by norm:   grad_norm {norm:R}");
clipped.update_params(F.l1_loss(model.forward(inputs[0]), targets[0]));

// get_lr / get_momentum, as the seed prints them.
model = nn.Linear(1, 1);
optimizer = torch.optim.SGD(model.parameters(), learningRate: 0.01);
optim_wrapper = new OptimWrapper(optimizer);
Console.WriteLine();
Console.WriteLine(Py.Repr(OptimizerGroups.Of(optimizer)[0]["lr"]));        // 0.01
Console.WriteLine(Py.Repr(OptimizerGroups.Of(optimizer)[0]["momentum"]));  // 0
Console.WriteLine(optim_wrapper.get_lr());                                 // {'lr': [0.01]}
Console.WriteLine(optim_wrapper.get_momentum());                           // {'momentum': [0]}
