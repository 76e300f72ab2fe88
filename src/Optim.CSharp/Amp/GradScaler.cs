using Microsoft.Extensions.Logging;
using Microsoft.FSharp.Core;
using Optim.Core;
using TorchSharp;
using static TorchSharp.torch;

namespace Optim;

/// <summary>
/// Dynamic loss scaling for mixed-precision training: PyTorch's <c>torch.amp.GradScaler</c> for
/// TorchSharp. Multiply the loss by the scale before <c>backward</c> so small float16
/// gradients do not flush to zero; <c>unscale_</c> divides the gradients back and checks them for
/// inf/NaN with libtorch's fused kernel; <c>step</c> skips the optimizer step when any was found;
/// <c>update</c> backs the scale off after an overflow and grows it after
/// <c>growth_interval</c> clean steps.
/// </summary>
/// <remarks>
/// <para>The scale/tracker state machine lives in the F# core (<see cref="LossScaling"/>); this class
/// does the tensor work. The scale is kept on the host as the core's float32 and mirrored in a
/// one-element tensor on the loss's device, so <see cref="get_scale"/> never synchronises. Per step
/// there is exactly one device synchronisation: <see cref="step"/> reads the found-inf flag (one per
/// device holding gradients); <see cref="update(double?)"/> reuses what it read.</para>
/// <para>Typical loop: <c>scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update();</c>
/// (and <c>scaler.unscale_(optimizer)</c> before clipping gradients).</para>
/// <para>Not thread-safe: use one scaler from one training loop.</para>
/// <para><see cref="scale(Tensor)"/>, <see cref="unscale_"/>, <see cref="step"/> and
/// <see cref="update(double?)"/> are virtual so a subclass can observe or replace them.</para>
/// </remarks>
public class GradScaler
{
    private sealed class OptimizerState
    {
        public LossScaling.Stage Stage = LossScaling.Stage.Ready;
        /// <summary>One float32 found-inf flag per device holding gradients.</summary>
        public readonly List<Tensor> FoundInfPerDevice = new();
        /// <summary>The flags' sum read back to the host (null until read).</summary>
        public bool? FoundInf;
    }

    private readonly ILogger logger;
    private readonly LossScaling.Settings bounds;
    private LossScaling.State state;
    private Tensor? scaleTensor;
    private readonly Dictionary<optim.Optimizer, OptimizerState> perOptimizer = new(ReferenceEqualityComparer.Instance);

    /// <summary>Creates a scaler (torch's defaults: 2**16, 2.0, 0.5, 2000).</summary>
    /// <param name="init_scale">Initial scale.</param>
    /// <param name="growth_factor">Multiplier after <paramref name="growth_interval"/> clean steps; must be &gt; 1.</param>
    /// <param name="backoff_factor">Multiplier after a step with inf/NaN gradients; must be &lt; 1.</param>
    /// <param name="growth_interval">Consecutive clean steps before the scale grows.</param>
    /// <param name="enabled">False: every method is a pass-through (<c>step</c> just steps).</param>
    /// <param name="logger">Receives a Debug record for every skipped step (default: <see cref="OptimLogging"/>).</param>
    /// <exception cref="ArgumentException">growth_factor ≤ 1 or backoff_factor ≥ 1.</exception>
    /// <param name="min_scale">The floor (beyond torch): backing off stops here, with a warning. The default,
    /// 2**-126, keeps 1/scale finite and changes no usable torch trajectory.</param>
    /// <param name="max_scale">The ceiling (beyond torch): growth stops here, with a warning. Default: float32's largest value.</param>
    public GradScaler(double init_scale = 65536.0, double growth_factor = 2.0, double backoff_factor = 0.5,
                      long growth_interval = 2000, bool enabled = true, ILogger? logger = null,
                      double min_scale = LossScaling.defaultMinScale, double max_scale = LossScaling.defaultMaxScale)
        : this(new LossScaling.Settings(init_scale, growth_factor, backoff_factor, growth_interval, enabled, min_scale, max_scale), logger)
    {
    }

    /// <summary>Creates a scaler from the core's settings record (e.g. parsed from a config).</summary>
    /// <exception cref="ArgumentException">growth_factor ≤ 1 or backoff_factor ≥ 1.</exception>
    public GradScaler(LossScaling.Settings settings, ILogger? logger = null)
    {
        state = Raise.Unwrap(LossScaling.init(settings), nameof(settings));
        bounds = settings;
        this.logger = logger ?? OptimLogging.CreateLogger(nameof(GradScaler));
    }

    /// <summary>The core's view of the scaler: scale, factors, interval, tracker, enabled.</summary>
    public LossScaling.State State => state;

    /// <summary>Whether scaling is on.</summary>
    public bool is_enabled() => state.Enabled;

    /// <summary>The current scale (1.0 when disabled). Never synchronises the device.</summary>
    public double get_scale() => state.Enabled ? state.Scale : 1.0;

    /// <summary>The growth factor.</summary>
    public double get_growth_factor() => state.GrowthFactor;

    /// <summary>Sets the growth factor (not re-validated, as in torch).</summary>
    public void set_growth_factor(double new_factor) => state = LossScaling.withGrowthFactor(new_factor, state);

    /// <summary>The backoff factor.</summary>
    public double get_backoff_factor() => state.BackoffFactor;

    /// <summary>Sets the backoff factor (not re-validated, as in torch).</summary>
    public void set_backoff_factor(double new_factor) => state = LossScaling.withBackoffFactor(new_factor, state);

    /// <summary>The growth interval.</summary>
    public long get_growth_interval() => state.GrowthInterval;

    /// <summary>Sets the growth interval.</summary>
    public void set_growth_interval(long new_interval) => state = LossScaling.withGrowthInterval(new_interval, state);

    /// <summary>The number of consecutive clean updates since the scale last changed (0 when disabled).</summary>
    public long get_growth_tracker() => state.Enabled ? state.Tracker : 0;

    /// <summary>
    /// Multiplies <paramref name="outputs"/> (usually the loss) by the scale; returns it unchanged when
    /// disabled. The first call places the scale on the output's device.
    /// </summary>
    public virtual Tensor scale(Tensor outputs)
    {
        if (!state.Enabled) return outputs;
        // Long-lived: kept out of any DisposeScope the caller has open.
        scaleTensor ??= torch.tensor(state.Scale, ScalarType.Float32, outputs.device).DetachFromDisposeScope();
        if (scaleTensor.device_type == outputs.device_type && scaleTensor.device_index == outputs.device_index)
            return outputs * scaleTensor;
        using var moved = scaleTensor.to(outputs.device);
        return outputs * moved;
    }

    /// <summary>Scales every tensor of <paramref name="outputs"/> (a new list, same order).</summary>
    public IList<Tensor> scale(IEnumerable<Tensor> outputs) => outputs.Select(scale).ToList();

    /// <summary>
    /// Divides the gradients of <paramref name="optimizer"/>'s parameters by the scale, in place, and
    /// records whether any was inf/NaN. Gradients are grouped by device and dtype, and each group goes
    /// through libtorch's fused <c>_amp_foreach_non_finite_check_and_unscale_</c> (one kernel per
    /// group, no synchronisation). Call it before clipping; <see cref="step"/> calls it when you did not.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called twice since the last <see cref="update(double?)"/>,
    /// or after <see cref="step"/>; or no loss was scaled yet.</exception>
    /// <exception cref="ArgumentException">A gradient is float16 (fp32 master parameters are required).</exception>
    public virtual void unscale_(optim.Optimizer optimizer)
    {
        if (!state.Enabled) return;
        var opt = StateOf(optimizer);
        Raise.Unwrap(LossScaling.beginUnscale(opt.Stage), nameof(optimizer), runtime: true);
        if (scaleTensor is null) throw Raise.From(LossScaling.notInitialized("unscale_"), runtime: true);
        CheckGradients(optimizer, opt, LossScaling.invScale(state));
        opt.Stage = LossScaling.Stage.Unscaled;
    }

    /// <summary>
    /// Groups the gradients by device and dtype and runs the fused inf/NaN check on each group,
    /// multiplying them by <paramref name="inv"/> (1: check only, for an optimizer that unscales as it steps).
    /// </summary>
    private void CheckGradients(optim.Optimizer optimizer, OptimizerState opt, float inv)
    {
        // Group first (all-or-nothing: an fp16 gradient fails before anything is modified).
        var groups = new Dictionary<(DeviceType, int, ScalarType), List<Tensor>>();
        var devices = new List<(DeviceType, int)>();
        var grads = new List<Tensor>();
        try
        {
            foreach (var p in optimizer.parameters())
            {
                var g = p.grad;
                if (g is null) continue;
                grads.Add(g);
                if (g.dtype == ScalarType.Float16) throw Raise.From(LossScaling.fp16Gradients, nameof(optimizer));
                var key = (g.device_type, g.device_index, g.dtype);
                if (!groups.TryGetValue(key, out var list)) groups[key] = list = new List<Tensor>();
                list.Add(g);
                if (!devices.Contains((g.device_type, g.device_index))) devices.Add((g.device_type, g.device_index));
            }

            // A scale whose reciprocal is inf or 0 in float32 would unscale finite gradients into inf/NaN
            // after the kernel's check: count the step as an overflow and leave the gradients alone.
            var usable = LossScaling.invScaleUsable(state);
            foreach (var (type, index) in devices)
            {
                var device = new Device(type, index);
                // Lives until update() (disposed there), whatever DisposeScope the caller has open.
                var foundInf = torch.zeros(Array.Empty<long>(), ScalarType.Float32, device).DetachFromDisposeScope();
                if (!usable)
                {
                    using (var one = 1.0f.ToScalar()) foundInf.fill_(one);
                    opt.FoundInfPerDevice.Add(foundInf);
                    continue;
                }
                using var invScale = torch.tensor(inv, ScalarType.Float32, device);
                foreach (var ((t, i, _), list) in groups)
                    if (t == type && i == index)
                        AmpNative.NonFiniteCheckAndUnscale(list, foundInf, invScale);
                opt.FoundInfPerDevice.Add(foundInf);
            }
        }
        finally
        {
            foreach (var g in grads) g.Dispose();   // the wrappers only; the gradients live on
        }
    }

    /// <summary>
    /// Steps <paramref name="optimizer"/> unless its (unscaled) gradients contained inf/NaN, in which
    /// case the step is skipped and the parameters are left untouched. Unscales first when
    /// <see cref="unscale_"/> was not called — except for an <see cref="Torch.IAmpScalingOptimizer"/>
    /// (Optim's optimizers), whose gradients are only checked: it gets the scale and divides the
    /// gradients by it in the same pass as its update (PyTorch's fused-optimizer path). Returns what <c>optimizer.step()</c> returned, or null
    /// when skipped. Reads the found-inf flag from the device: the one synchronisation of the step.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called twice since the last <see cref="update(double?)"/>;
    /// no loss was scaled yet; or no parameter of the optimizer has a gradient.</exception>
    public virtual Tensor? step(optim.Optimizer optimizer)
    {
        if (!state.Enabled) return optimizer.step();
        if (scaleTensor is null) throw Raise.From(LossScaling.notInitialized("step"), runtime: true);
        var opt = StateOf(optimizer);
        var mustUnscale = Raise.Unwrap(LossScaling.beginStep(opt.Stage), nameof(optimizer), runtime: true);
        // An optimizer that unscales as it steps (Optim's) gets the scale instead: check only, then one pass.
        var scaling = mustUnscale ? optimizer as Torch.IAmpScalingOptimizer : null;
        if (scaling is not null) CheckGradients(optimizer, opt, 1f);
        else if (mustUnscale) unscale_(optimizer);
        if (opt.FoundInfPerDevice.Count == 0) throw Raise.From(LossScaling.noInfChecksForOptimizer, runtime: true);

        Tensor? result = null;
        if (!FoundInf(opt)) result = scaling is null ? optimizer.step() : scaling.step(scaleTensor, opt.FoundInfPerDevice[0]);
        else logger.LogDebug("GradScaler: inf/NaN gradients at scale {Scale}; optimizer step skipped", (double)state.Scale);
        opt.Stage = LossScaling.Stage.Stepped;
        return result;
    }

    /// <summary>
    /// Updates the scale for the next iteration and resets the per-optimizer stages. Without
    /// <paramref name="new_scale"/>: after an inf/NaN step the scale is multiplied by the backoff
    /// factor and the tracker reset; otherwise the tracker counts the clean step and the scale grows
    /// by the growth factor every <c>growth_interval</c> clean steps (never to inf). With
    /// <paramref name="new_scale"/>: the scale becomes that value and the tracker is unchanged (the
    /// static-scale path of AmpOptimWrapper).
    /// </summary>
    /// <exception cref="InvalidOperationException">No loss was scaled yet; or, without
    /// <paramref name="new_scale"/>, no gradients were checked since the last update.</exception>
    public virtual void update(double? new_scale = null)
    {
        if (!state.Enabled) return;
        if (scaleTensor is null) throw Raise.From(LossScaling.notInitialized("update"), runtime: true);
        FSharpOption<LossScaling.BoundHit> hit;
        if (new_scale is double s)
        {
            (state, hit) = LossScaling.updateWithScaleWithin(bounds, s, state).ToValueTuple();
        }
        else
        {
            var checkedOptimizers = perOptimizer.Values.Where(o => o.FoundInfPerDevice.Count > 0).ToList();
            if (checkedOptimizers.Count == 0) throw Raise.From(LossScaling.noInfChecksBeforeUpdate, runtime: true);
            var found = false;
            foreach (var o in checkedOptimizers) found |= FoundInf(o);
            (state, hit) = LossScaling.updateWithin(bounds, found, state).ToValueTuple();
        }
        if (FSharpOption<LossScaling.BoundHit>.get_IsSome(hit))
        {
            BoundHits++;
            if (hit.Value.IsFloor)
                logger.LogWarning("GradScaler: the loss scale reached its floor min_scale={Floor}; gradients keep overflowing (inf/NaN in the loss or the model?)", (double)state.Scale);
            else
                logger.LogWarning("GradScaler: the loss scale reached its ceiling max_scale={Ceiling}", (double)state.Scale);
        }
        using (var scale = state.Scale.ToScalar()) scaleTensor.fill_(scale);
        ResetOptimizerStates();
    }

    /// <summary>
    /// <c>update(new_scale)</c> with a one-element tensor (read once; it must not require grad).
    /// </summary>
    public void update(Tensor new_scale)
    {
        if (new_scale.numel() != 1) throw new OptimAssertionException("new_scale should be a 1-element tensor.");
        if (new_scale.requires_grad) throw new OptimAssertionException("new_scale should not require grad.");
        update((double)new_scale.to_type(ScalarType.Float32).item<float>());
    }

    /// <summary>
    /// The scaler's state: exactly <c>scale, growth_factor, backoff_factor, growth_interval,
    /// _growth_tracker</c> in that order (floats as <see cref="double"/>, ints as <see cref="long"/>);
    /// empty when disabled. <c>Py.Repr</c> prints it as Python does, e.g. a fresh scaler's
    /// <c>{'scale': 65536.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 2000, '_growth_tracker': 0}</c>.
    /// </summary>
    public virtual OrderedDictionary<string, object?> state_dict() =>
        (OrderedDictionary<string, object?>)Py.FromPy(LossScaling.toStateDict(state))!;

    /// <summary>Loads a state saved by <see cref="state_dict"/> (other entries are ignored; a disabled
    /// scaler ignores the call).</summary>
    /// <exception cref="InvalidOperationException">The dict is empty (saved from a disabled scaler).</exception>
    /// <exception cref="KeyNotFoundException">An entry is missing.</exception>
    public virtual void load_state_dict(IEnumerable<KeyValuePair<string, object?>> state_dict)
    {
        state = Raise.Unwrap(LossScaling.ofStateDict(PyValue.NewDict(Py.ToPyDict(state_dict)), state), nameof(state_dict));
        if (scaleTensor is not null)
            using (var scale = state.Scale.ToScalar()) scaleTensor.fill_(scale);
    }

    /// <summary>How many updates ran into <c>min_scale</c> or <c>max_scale</c> (each also logged as a warning).</summary>
    public long BoundHits { get; private set; }

    /// <summary>The floor and ceiling of the scale.</summary>
    public (double Min, double Max) scale_bounds => (bounds.MinScale, bounds.MaxScale);

    /// <summary>
    /// The found-inf flags of <paramref name="optimizer"/> since its <see cref="unscale_"/>, summed into one
    /// float32 tensor on the first gradient's device (no synchronisation), or null when nothing was checked.
    /// </summary>
    internal Tensor? FoundInfTensor(optim.Optimizer optimizer)
    {
        if (!perOptimizer.TryGetValue(optimizer, out var o) || o.FoundInfPerDevice.Count == 0) return null;
        var device = o.FoundInfPerDevice[0].device;
        var sum = o.FoundInfPerDevice[0].clone();
        using var one = 1.ToScalar();
        for (int i = 1; i < o.FoundInfPerDevice.Count; i++) sum.add_(o.FoundInfPerDevice[i].to(device), one);
        return sum;
    }

    /// <summary>Records a found-inf decision read elsewhere (the non-finite guard's one sync), so <see cref="step"/> and <see cref="update(double?)"/> do not read again.</summary>
    internal void SetFoundInf(optim.Optimizer optimizer, bool found)
    {
        if (perOptimizer.TryGetValue(optimizer, out var o)) o.FoundInf = found;
    }

    /// <summary>
    /// Ends the iteration of <paramref name="optimizer"/> without stepping after a failure between
    /// <see cref="unscale_"/> and <see cref="step"/> (e.g. clipping with <c>error_if_nonfinite</c>): the
    /// step counts as an overflow (the scale backs off) so the next iteration starts clean.
    /// </summary>
    internal void AbandonIteration(optim.Optimizer optimizer)
    {
        if (!state.Enabled || scaleTensor is null) return;
        if (perOptimizer.TryGetValue(optimizer, out var o) && o.FoundInfPerDevice.Count > 0)
        {
            o.FoundInf = true;
            update();
        }
        else ResetOptimizerStates();
    }

    /// <summary>Why <paramref name="state_dict"/> would not load (the core's checks), or null if it would.</summary>
    internal string? CheckState(IEnumerable<KeyValuePair<string, object?>> state_dict)
    {
        var r = LossScaling.ofStateDict(PyValue.NewDict(Py.ToPyDict(state_dict)), state);
        return r.IsError ? r.ErrorValue.Message : null;
    }

    private OptimizerState StateOf(optim.Optimizer optimizer)
    {
        if (!perOptimizer.TryGetValue(optimizer, out var s)) perOptimizer[optimizer] = s = new OptimizerState();
        return s;
    }

    /// <summary>
    /// Combines this process's found-inf flag with the other ranks' of a data-parallel job (true
    /// when any rank found inf/NaN), so that every rank skips or steps together; null (the default)
    /// for a single process. Called once per optimizer per step, by every rank.
    /// </summary>
    public Func<bool, bool>? FoundInfReducer { get; set; }

    /// <summary>Reads (once) whether any device — and, with <see cref="FoundInfReducer"/>, any rank — flagged inf/NaN for this optimizer.</summary>
    private bool FoundInf(OptimizerState o)
    {
        if (o.FoundInf is bool known) return known;
        var sum = 0f;
        foreach (var f in o.FoundInfPerDevice) sum += f.item<float>();
        var local = sum != 0f;
        o.FoundInf = FoundInfReducer is { } reduce ? reduce(local) : local;
        return o.FoundInf.Value;
    }

    private void ResetOptimizerStates()
    {
        foreach (var o in perOptimizer.Values)
            foreach (var f in o.FoundInfPerDevice) f.Dispose();
        perOptimizer.Clear();
    }
}
