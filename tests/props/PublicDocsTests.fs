/// The public doc comments are read by users who have no SPEC: they must not send them to one.
module Optim.Tests.PublicDocsTests

open System.IO
open Expecto

let private docFileOf (t: System.Type) = Path.ChangeExtension(t.Assembly.Location, ".xml")

[<Tests>]
let tests =
    testList "public docs" [
        for name, t in [ "Optim", typeof<Optim.OptimWrapper>; "Optim.Core", typeof<Optim.Core.PyValue> ] do
            test (sprintf "%s's doc comments cite no SPEC section" name) {
                let file = docFileOf t
                Expect.isTrue (File.Exists file) (sprintf "%s is generated next to the assembly" file)
                let citing =
                    File.ReadLines file
                    |> Seq.filter (fun l -> l.Contains "SPEC")
                    |> List.ofSeq
                Expect.isEmpty citing (sprintf "lines of %s naming the SPEC" file)
            }
    ]
