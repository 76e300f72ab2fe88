module Optim.Tests.Main

open Expecto
open Expecto.Impl

/// Runs every [<Tests>] in this assembly, sequenced (TorchSharp's RNG and autocast state are
/// process/thread global), and ends with the line CI reads: `N passed, N failed`.
let private runSuite argv =
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

/// The suite, or one of the child processes tests start: the 2-rank tests' worker under mpirun (see
/// DataParallelScenarios.worker), the checkpoint resume matrix, the save loop that gets killed.
[<EntryPoint>]
let main argv =
    match argv with
    | _ when argv.Length >= 1 && argv.[0] = "--ddp-worker" -> DataParallelScenarios.worker argv.[1..]
    | [| "--checkpoint-resume-child"; plan |] -> Optim.Tests.ResumeMatrix.child plan
    | [| "--checkpoint-save-loop"; path |] -> Optim.Tests.ResumeMatrix.saveLoop path
    | _ -> runSuite argv
