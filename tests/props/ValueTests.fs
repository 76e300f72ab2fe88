module Optim.Tests.ValueTests

open Expecto
open Optim.Core

[<Tests>]
let tests =
    testList "PyFormat" [
        test "float repr matches CPython on the values MMEngine logs" {
            let cases =
                [ 0.0, "0.0"; 0.001, "0.001"; 1e-05, "1e-05"; 0.010000000000000002, "0.010000000000000002"
                  0.9 * 0.1, "0.09000000000000001"; 65536.0, "65536.0"; 1e16, "1e+16"; 1e15, "1000000000000000.0"
                  0.0001, "0.0001"; 1.5e-07, "1.5e-07"; -2.5, "-2.5"; 123456789.125, "123456789.125"
                  1.0 / 3.0, "0.3333333333333333"; 2e-4 * 0.1, "2e-05"; 5e-324, "5e-324"; 1.7976931348623157e308, "1.7976931348623157e+308" ]
            for (x, expected) in cases do
                Expect.equal (PyFormat.float x) expected (sprintf "repr(%g)" x)
        }
        test "dict repr is Python's" {
            let v =
                PyValue.Dict [ "scale", PyValue.Float 65536.0; "growth_factor", PyValue.Float 2.0
                               "growth_interval", PyValue.Int 2000L; "ok", PyValue.Bool true; "t", PyValue.Tuple [ PyValue.Float 0.9; PyValue.Float 0.999 ] ]
            Expect.equal (PyFormat.repr v) "{'scale': 65536.0, 'growth_factor': 2.0, 'growth_interval': 2000, 'ok': True, 't': (0.9, 0.999)}" "repr"
        }
    ]
