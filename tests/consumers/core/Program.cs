// Optim.Core from C#, without TorchSharp: check an optim_wrapper config and report what it asks for.
var parsed = Optim.Core.Config.parseText("""
    {"type": "OptimWrapper", "optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9}, "accumulative_counts": 4}
    """);
if (!parsed.IsOk)
{
    Console.Error.WriteLine("core: FAILED, the config was rejected: " + string.Join("; ", parsed.ErrorValue));
    return 1;
}
var bad = Optim.Core.Config.parseText("""{"optimizer": {"type": "SGD", "lr": "fast"}}""");
if (bad.IsOk)
{
    Console.Error.WriteLine("core: FAILED, a string lr was accepted");
    return 1;
}
var cfg = parsed.ResultValue;
Console.WriteLine($"core: Optim.Core alone parsed a {cfg.Type} config ({cfg.WrapperArgs.Length} wrapper args) and rejected a bad one: {bad.ErrorValue.Head}");
return 0;
