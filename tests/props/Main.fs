module Optim.Tests.Main

open Expecto
open Expecto.Impl

/// Runs every [<Tests>] in this assembly, sequenced (TorchSharp's RNG and autocast state are
/// process/thread global), and ends with the line CI reads: `N passed, N failed`.
[<EntryPoint>]
let main argv =
  // Under mpirun, this assembly is the 2-rank tests' worker (see DataParallelScenarios.worker).
  if argv.Length >= 1 && argv.[0] = "--ddp-worker" then DataParallelScenarios.worker argv.[1..]
  else
    let mutable closing = ""
    let printer =
        { defaultConfig.printer with
            summary =
                fun config summary ->
                    async {
                        do! defaultConfig.printer.summary config summary
                        let passed = summary.passed.Length
                        let failed = summary.failed.Length + summary.errored.Length
                        let skipped = summary.ignored.Length
                        closing <-
                            if skipped > 0 then sprintf "%d passed, %d failed, %d skipped" passed failed skipped
                            else sprintf "%d passed, %d failed" passed failed
                    } }
    let code = runTestsInAssemblyWithCLIArgs [ Sequenced; No_Spinner; Printer printer ] argv
    // Expecto logs asynchronously; let its last writes land before the closing line.
    System.Threading.Thread.Sleep 200
    stdout.Flush()
    // On a line of its own (Expecto may leave a colour reset code on the current one).
    printfn "\n%s" closing
    code
