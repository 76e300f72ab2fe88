using BenchmarkDotNet.Running;

// dotnet run -c Release --project bench -- --filter '*' --job short
BenchmarkSwitcher.FromAssembly(typeof(Optim.Bench.UnscaleBenchmarks).Assembly).Run(args);
