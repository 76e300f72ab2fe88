using BenchmarkDotNet.Running;

// Data-parallel measurements: a plain harness under mpirun (see DataParallelBench).
if (args.Length > 0 && args[0] == "--ddp") return Optim.Bench.DataParallelBench.Run(args);

// dotnet run -c Release --project bench -- --filter '*' --job short
// Benchmarks run in-process: BenchmarkDotNet's generated out-of-process project does not carry the
// libtorch package reference TorchSharp checks for at start-up (it fails with NotSupportedException).
var withInProcess = args.Contains("--inProcess") || args.Contains("-i") ? args : args.Append("--inProcess").ToArray();
BenchmarkSwitcher.FromAssembly(typeof(Optim.Bench.UnscaleBenchmarks).Assembly).Run(withInProcess);
return 0;
