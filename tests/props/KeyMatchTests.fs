/// The custom-key matcher (Optim.Core.KeyMatch, used by Paramwise.plan) against the rule as stated:
/// the longest key that is a substring of "{prefix}.{name}" wins, equal lengths in code-point order.
module Optim.Tests.KeyMatchTests

open Expecto
open FsCheck
open FsCheck.FSharp
open Optim.Core
open Optim.Core.Paramwise

/// Pieces that overlap a lot (so keys are often suffixes and prefixes of one another), a dot,
/// non-ASCII text, a surrogate pair and, rarely, a lone surrogate.
let private piece = Gen.elements [ "a"; "b"; "ab"; "ba"; "aab"; "."; ".a"; "b."; "é"; "𝔞"; "\uD835"; "\uDD1E"; "x" ]

let private text maxPieces =
    gen {
        let! n = Gen.choose (0, maxPieces)
        let! parts = Gen.listOfLength n piece
        return String.concat "" parts
    }

let private factOf (prefix, name) =
    { Prefix = prefix
      Name = name
      Kind = ModuleKind.Other
      InDcnModule = false
      Ndim = 2
      RequiresGrad = true
      Identity = 0L }

type private Case = { Keys: string list; Names: (string * string) list }

let private caseGen =
    gen {
        let! k = Gen.choose (0, 40)
        let! keys = Gen.listOfLength k (text 4)
        let! n = Gen.choose (1, 8)
        let! names =
            Gen.listOfLength n (
                gen {
                    let! root = Gen.elements [ true; false; false ]
                    let! prefix = if root then Gen.constant "" else text 6
                    let! name = text 3
                    return prefix, name
                })
        return { Keys = keys; Names = names }
    }

[<Tests>]
let tests =
    let config = { FsCheckConfig.defaultConfig with maxTest = 1000 }
    testList "custom-key matcher" [
        testPropertyWithConfig config "the automaton picks the key the straightforward rule picks (matchKey over sortedKeys), on random names and keys" <|
            Prop.forAll (Arb.fromGen caseGen) (fun case ->
                let matcher = keyMatcher case.Keys
                let sorted = sortedKeys case.Keys
                case.Names
                |> List.forall (fun n ->
                    let fact = factOf n
                    matchKeyWith matcher fact = matchKey sorted fact))

        testPropertyWithConfig config "over any ranked list (unsorted, repeats allowed), find = the first key that is an ordinal substring" <|
            Prop.forAll (Arb.fromGen (Gen.zip (Gen.listOf (text 3)) (text 10))) (fun (keys, target) ->
                KeyMatch.find (KeyMatch.create keys) target
                    = (keys |> List.tryFind (fun k -> target.Contains(k, System.StringComparison.Ordinal))))

        test "keys that are suffixes of each other (he, she, his, hers in ushers)" {
            let m = KeyMatch.create [ "hers"; "she"; "his"; "he" ]
            Expect.equal (KeyMatch.find m "ushers") (Some "hers") "hers ranks first"
            Expect.equal (KeyMatch.find m "ushe") (Some "she") "she ends where he ends"
            Expect.equal (KeyMatch.find (KeyMatch.create [ "he"; "she" ]) "ushers") (Some "he") "rank, not length, decides"
            Expect.equal (KeyMatch.find m "hi") None "no key"
        }

        test "no keys match nothing; the empty key matches every name, after any other" {
            let none = keyMatcher []
            Expect.equal (matchKeyWith none (factOf ("backbone", "weight"))) None "no keys"
            let withEmpty = keyMatcher [ ""; "bone" ]
            Expect.equal (matchKeyWith withEmpty (factOf ("backbone", "weight"))) (Some "bone") "longer first"
            Expect.equal (matchKeyWith withEmpty (factOf ("head", "weight"))) (Some "") "'' in s is True"
        }

        test "the match target has the dot, also at the root and across the prefix/name boundary" {
            let m = keyMatcher [ "w"; ".w"; "a.b" ]
            Expect.equal (matchKeyWith m (factOf ("", "w"))) (Some ".w") "root: '.w'"
            Expect.equal (matchKeyWith m (factOf ("xa", "bias"))) (Some "a.b") "spans prefix, dot and name"
            Expect.equal (matchKeyWith (keyMatcher [ "backbone.layer1" ]) (factOf ("backbone.layer10.0", "weight")))
                (Some "backbone.layer1") "substring, not prefix"
        }

        test "a thousand keys over a long name: only keys in the name count, the longest wins" {
            let keys = [ for i in 0..999 -> sprintf "block%d." i ] @ [ "stage3"; "conv" ]
            let m = keyMatcher keys
            Expect.equal (matchKeyWith m (factOf ("stage3.block17.conv", "weight"))) (Some "block17.") "block17."
            Expect.equal (matchKeyWith m (factOf ("stage3.block1000.conv", "weight"))) (Some "stage3") "no block1000."
            Expect.equal (matchKeyWith m (factOf ("stage2.block1000.bn", "weight"))) None "nothing"
        }
    ]
