using BenchmarkDotNet.Running;

// Data-parallel measurements: a plain harness under mpirun (see DataParallelBench).
if (args.Length > 0 && args[0] == "--ddp") return Optim.Bench.DataParallelBench.Run(args);
// update_params vs the hand-written loop, alternated in one process (see PairedOverhead).
if (args.Length > 0 && args[0] == "--paired-overhead") { Optim.Bench.PairedOverhead.Run(args); return 0; }
// Optimizer steps timed with thread CPU time, for a quick look while developing (see QuickSteps).
if (args.Length > 0 && args[0] == "--quick-steps") { Optim.Bench.QuickSteps.Run(args); return 0; }
// Bit-for-bit hashes of every optimizer case (see Fingerprint); the per-group fixed cost (see GroupCost).
if (args.Length > 0 && args[0] == "--fingerprint") { Optim.Bench.Fingerprint.Run(); return 0; }
if (args.Length > 0 && args[0] == "--validate-probe") { Optim.Bench.ValidateProbe.Run(); return 0; }
if (args.Length > 0 && args[0] == "--group-cost") { Optim.Bench.GroupCost.Run(args); return 0; }
// build_optim_wrapper CPU time and allocated bytes, with the core's phases (see ConstructionCost).
if (args.Length > 0 && args[0] == "--construction-cost") { Optim.Bench.ConstructionCost.Run(args); return 0; }

// dotnet run -c Release --project bench -- --filter '*' --job short
// dotnet run -c Release --project bench -- memory 1000 bfloat16 library     (resident memory over a run; see MemoryRun)
// Benchmarks run in-process: BenchmarkDotNet's generated out-of-process project does not carry the
// libtorch package reference TorchSharp checks for at start-up (it fails with NotSupportedException).
if (args.Length > 0 && args[0] == "memory") return Optim.Bench.MemoryRun.Run(args[1..]);
var withInProcess = args.Contains("--inProcess") || args.Contains("-i") ? args : args.Append("--inProcess").ToArray();
BenchmarkSwitcher.FromAssembly(typeof(Optim.Bench.UnscaleBenchmarks).Assembly).Run(withInProcess);
return 0;
