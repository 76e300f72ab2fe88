// A consumer of Optim outside the repository: trains a small regression for a few steps with gradient
// accumulation and clipping, checks that the loss dropped, and prints one line. Shared by the
// package route (package/) and the ProjectReference route (projectref/); see routes.fsx.
using Optim;
using TorchSharp;
using static TorchSharp.torch;

var route = args.Length > 0 ? args[0] : "consumer";
torch.manual_seed(0);
var x = torch.randn(64, 4);
var y = x.matmul(torch.tensor(new float[] { 1f, -2f, 0.5f, 3f }).reshape(4, 1)) + 0.1f;
var model = nn.Sequential(("hidden", nn.Linear(4, 16)), ("act", nn.Tanh()), ("head", nn.Linear(16, 1)));
var wrapper = new OptimWrapper(torch.optim.SGD(model.parameters(), 0.05), accumulative_counts: 2,
    clip_grad: new Dictionary<string, object?> { ["max_norm"] = 5.0 });
const int steps = 40;
wrapper.initialize_count_status(model, 0, steps);
double first = double.NaN, last = double.NaN;
for (int i = 0; i < steps; i++)
{
    using var scope = torch.NewDisposeScope();
    Tensor loss;
    using (wrapper.optim_context(model)) loss = nn.functional.mse_loss(model.forward(x), y);
    if (i == 0) first = loss.item<float>();
    last = loss.item<float>();
    wrapper.update_params(loss);
}
if (!(last < 0.5 * first))
{
    Console.Error.WriteLine($"{route}: FAILED, loss {first:F4} -> {last:F4} did not drop by half in {steps} steps");
    return 1;
}
var optim = typeof(OptimWrapper).Assembly;
Console.WriteLine($"{route}: loss {first:F4} -> {last:F4} in {steps} steps, lr {wrapper.get_lr()}, " +
    $"Optim {optim.GetName().Version} from {optim.Location}; native: {NativeLoad.Ensure()}");
return 0;
