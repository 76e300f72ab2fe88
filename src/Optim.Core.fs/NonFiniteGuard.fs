/// The opt-in non-finite guard (`skip_nonfinite`, beyond MMEngine; Optax's `apply_if_finite`): a step
/// whose loss or gradients hold inf/NaN is skipped, leaving parameters and optimizer state untouched,
/// and counted; after `max_consecutive` skips in a row the next one raises instead. The facade makes
/// one fused check per step into one flag and asks this module what to do with it.
module Optim.Core.NonFiniteGuard

/// The guard's settings: off, or on with an optional limit of consecutive skips.
type Settings =
    { Enabled: bool
      /// None: skip for ever; Some n: the (n+1)-th skip in a row raises.
      MaxConsecutive: int option }

let off = { Enabled = false; MaxConsecutive = None }

/// Skips so far: in a row (reset by a clean step) and in total.
type Counts = { Consecutive: int; Total: int64 }

let zero = { Consecutive = 0; Total = 0L }

/// What the wrapper does with this step.
[<RequireQualifiedAccess>]
type Decision =
    | Step
    | Skip
    /// Too many skips in a row: raise (with this message) instead of skipping again.
    | Fail of string

/// The decision for a step whose fused check found (or did not find) a non-finite value, and the counts after it.
let decide (s: Settings) (nonFinite: bool) (c: Counts) : Decision * Counts =
    if not s.Enabled || not nonFinite then Decision.Step, { c with Consecutive = 0 }
    else
        let next = { Consecutive = c.Consecutive + 1; Total = c.Total + 1L }
        match s.MaxConsecutive with
        | Some n when next.Consecutive > n ->
            Decision.Fail(
                sprintf "skip_nonfinite: %d consecutive steps had a non-finite loss or gradient (max_consecutive=%d); training is diverging" next.Consecutive n
            ),
            next
        | _ -> Decision.Skip, next

/// The log line of a skipped step.
let skippedMessage (c: Counts) =
    sprintf "skip_nonfinite: non-finite loss or gradient; optimizer step skipped (%d in a row, %d in total)" c.Consecutive c.Total

/// Parses `skip_nonfinite`: true/false/null, or `{"max_consecutive": N}` with N ≥ 1 (on). Problems
/// are (key under skip_nonfinite, error); "" for the value itself.
let parse (v: PyValue) : Result<Settings, (string * RuleError) list> =
    match v with
    | PyValue.None -> Ok off
    | PyValue.Bool b -> Ok { Enabled = b; MaxConsecutive = None }
    | PyValue.Dict kvs ->
        let problems =
            [ for (k, x) in kvs do
                  match k, x with
                  | "max_consecutive", PyValue.Int n when n >= 1L && n <= int64 System.Int32.MaxValue -> ()
                  | "max_consecutive", PyValue.Int n ->
                      yield k, RuleError.value (sprintf "max_consecutive must be a positive integer, got %d" n)
                  | "max_consecutive", PyValue.None -> ()
                  | "max_consecutive", other ->
                      yield k, RuleError.typeError (sprintf "max_consecutive must be a positive integer, got %s" (PyValue.kind other))
                  | other, _ ->
                      yield other, RuleError.typeError (sprintf "unexpected key '%s' (accepted: max_consecutive)%s" other (Suggest.didYouMean other [ "max_consecutive" ])) ]
        if not problems.IsEmpty then Error problems
        else
            let n =
                match PyValue.tryFind "max_consecutive" kvs with
                | Some(PyValue.Int n) -> Some(int n)
                | _ -> None
            Ok { Enabled = true; MaxConsecutive = n }
    | other -> Error [ "", RuleError.typeError (sprintf "skip_nonfinite must be true, false, null or {\"max_consecutive\": N}, got %s" (PyValue.kind other)) ]
