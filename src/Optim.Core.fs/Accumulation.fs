/// Gradient accumulation as MMEngine's OptimWrapper does it: counters, the loss
/// factor, when to step and when to synchronise gradients. Counts are backward calls (iterations).
module Optim.Core.Accumulation

/// The counters. `Max = -1` and `Remainder = -1` until `initialize` is called.
type Counts =
    { Accumulative: int
      Inner: int
      Max: int
      Remainder: int }

/// What `initialize` warns about (MMEngine logs each at WARNING, once).
type Warning =
    /// The resumed iteration is not a multiple of the accumulation count: some gradients are lost.
    | ResumedMidAccumulation
    /// Accumulating over micro-batches changes BatchNorm statistics.
    | BatchNormWithAccumulation

/// MMEngine's warning texts.
let message (w: Warning) =
    match w with
    | ResumedMidAccumulation ->
        "Resumed iteration number is not divisible by `_accumulative_counts` in `GradientCumulativeOptimizerHook`, which means the gradient of some iterations is lost and the result may be influenced slightly."
    | BatchNormWithAccumulation ->
        "Gradient accumulative may slightly decrease performance because the model has BatchNorm layers."

/// Python's `%` for a positive divisor (never negative).
let private pyMod (a: int) (n: int) = ((a % n) + n) % n

/// Fresh counters; the accumulation count must be at least 1.
let create (accumulative: int) : Result<Counts, RuleError> =
    if accumulative > 0 then Ok { Accumulative = accumulative; Inner = 0; Max = -1; Remainder = -1 }
    else Error(RuleError.assertion "_accumulative_counts at least greater than or equal to 1")

/// `initialize_count_status(model, init_counts, max_counts)`: the new counters and the warnings to log.
let initialize (modelHasBatchNorm: bool) (initCounts: int) (maxCounts: int) (c: Counts) : Counts * Warning list =
    let warnings =
        [ if pyMod initCounts c.Accumulative <> 0 then ResumedMidAccumulation
          if modelHasBatchNorm && c.Accumulative > 1 then BatchNormWithAccumulation ]
    { c with Inner = initCounts; Max = maxCounts; Remainder = pyMod maxCounts c.Accumulative }, warnings

/// The divisor of the loss for the next backward (evaluated with the count before it): the
/// accumulation count, or the remainder for the trailing iterations of a run whose length is known.
let lossFactor (c: Counts) : Result<int, RuleError> =
    if c.Accumulative = 1 then Ok 1
    elif c.Max = -1 then Ok c.Accumulative
    else
        let factor = if c.Inner < c.Max - c.Remainder then c.Accumulative else c.Remainder
        if factor > 0 then Ok factor
        else
            Error(
                RuleError.assertion
                    "loss_factor should be larger than zero! This error could happened when initialize_iter_status called with an error `init_counts` or `max_counts`"
            )

/// The counters after one backward.
let afterBackward (c: Counts) = { c with Inner = c.Inner + 1 }

/// Whether to step now (after the backward increment).
let shouldUpdate (c: Counts) = c.Inner % c.Accumulative = 0 || c.Inner = c.Max

/// Whether the coming backward should synchronise gradients (before its increment).
let shouldSync (c: Counts) = (c.Inner + 1) % c.Accumulative = 0 || c.Inner + 1 = c.Max

/// The counters restored from a saved state (`inner_count`, `max_counts`, read as 64-bit integers so
/// that out-of-range values are caught rather than wrapped): `inner` must lie in [0, 2^31 − 1],
/// `max` is -1 (length unknown) or in [0, 2^31 − 1], and a known length cannot be behind the count.
/// The remainder is recomputed from `max`, as `initialize` does.
let restore (inner: int64) (maxCounts: int64) (c: Counts) : Result<Counts, RuleError> =
    let limit = int64 System.Int32.MaxValue
    if inner < 0L || inner > limit then
        Error(RuleError.value (sprintf "inner_count must be an integer in [0, %d], got %d" limit inner))
    elif maxCounts < -1L || maxCounts > limit then
        Error(RuleError.value (sprintf "max_counts must be -1 (unknown) or an integer in [0, %d], got %d" limit maxCounts))
    elif maxCounts >= 0L && inner > maxCounts then
        Error(RuleError.value (sprintf "inner_count %d is past max_counts %d" inner maxCounts))
    elif maxCounts = -1L then
        Ok { c with Inner = int inner; Max = -1; Remainder = -1 }
    else
        Ok(fst (initialize false (int inner) (int maxCounts) c))
