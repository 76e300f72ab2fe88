namespace Optim.Core

/// What kind of failure MMEngine reports for a rule, so the facade can raise the matching .NET
/// exception (Python's AssertionError/ValueError/TypeError/KeyError/RuntimeError).
[<RequireQualifiedAccess>]
type ErrorKind =
    | Assertion
    | Value
    | Type
    | Key
    | Runtime

/// A rule violated: its kind and MMEngine's message (tests match on message substrings).
type RuleError = { Kind: ErrorKind; Message: string }

module RuleError =
    let assertion msg = { Kind = ErrorKind.Assertion; Message = msg }
    let value msg = { Kind = ErrorKind.Value; Message = msg }
    let typeError msg = { Kind = ErrorKind.Type; Message = msg }
    let key msg = { Kind = ErrorKind.Key; Message = msg }
    let runtime msg = { Kind = ErrorKind.Runtime; Message = msg }
