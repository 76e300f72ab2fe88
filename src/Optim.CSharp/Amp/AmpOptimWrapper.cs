using Microsoft.Extensions.Logging;
using Microsoft.FSharp.Core;
using Optim.Core;
using TorchSharp;
using static TorchSharp.torch;
using Optimizer = TorchSharp.torch.optim.Optimizer;

namespace Optim;

/// <summary>
/// MMEngine's <c>AmpOptimWrapper</c>: an <see cref="OptimWrapper"/> for mixed-precision
/// training. The forward pass runs inside <see cref="optim_context"/> (autocast on the parameters'
/// device type); <see cref="backward"/> scales the loss through <see cref="loss_scaler"/>;
/// <see cref="step()"/> unscales (before clipping), skips the update when a gradient overflowed, and
/// updates the scale. Switching a loop from fp32 is one line: the wrapper's constructor.
/// </summary>
/// <remarks>
/// Unlike MMEngine, it works on the CPU: the default dtype there is bfloat16 (libtorch's CPU
/// autocast dtype), and float16, float32 and float64 are accepted too. On CUDA the default is
/// CUDA's autocast dtype (float16). Autocast state is per thread: run the forward pass on the
/// thread that entered <see cref="optim_context"/>. Building one fixes glibc's <c>mmap</c> threshold so that
/// the memory autocast frees goes back to the system (see <see cref="NativeAllocator"/>; opt out with
/// <see cref="NativeAllocator.Enabled"/>).
/// </remarks>
/// <example>
/// <code>
/// var wrapper = new AmpOptimWrapper(torch.optim.SGD(model.parameters(), 0.01));   // dynamic scaling
/// foreach (var (x, y) in data) {
///     Tensor loss;
///     using (wrapper.optim_context(model)) { loss = lossFn(model.forward(x), y); }
///     wrapper.update_params(loss);
/// }
/// </code>
/// </example>
public class AmpOptimWrapper : OptimWrapper
{
    private readonly Autocast.CastDtype? _castDtype;

    /// <summary>Wraps an optimizer for mixed-precision training.</summary>
    /// <param name="optimizer">Any TorchSharp optimizer over float32 (master) parameters.</param>
    /// <param name="loss_scale">
    /// <c>"dynamic"</c> or null (the default; C# cannot default an <c>object</c> to a string, so unlike
    /// MMEngine null is not an error): a <see cref="GradScaler"/> with torch's defaults;
    /// a floating-point number: a static scale, re-imposed after every step (overflowing steps are still
    /// skipped); a dict (<c>IDictionary&lt;string, object?&gt;</c>) of GradScaler arguments
    /// (<c>init_scale</c>, <c>growth_factor</c>, <c>backoff_factor</c>, <c>growth_interval</c>,
    /// <c>enabled</c>), or a <see cref="LossScaling.Settings"/> record: dynamic scaling with those settings.
    /// Anything else, including an integer such as 512, is an error naming the value (as in MMEngine).
    /// </param>
    /// <param name="dtype">
    /// The autocast dtype: null (bfloat16 on the CPU, float16 on CUDA), <c>"float16"</c>,
    /// <c>"bfloat16"</c>, <c>"float32"</c>, <c>"float64"</c>, or the matching <see cref="ScalarType"/>.
    /// </param>
    /// <param name="accumulative_counts">Backward passes per update (at least 1).</param>
    /// <param name="clip_grad">As for <see cref="OptimWrapper"/>; clipping sees unscaled gradients.</param>
    /// <exception cref="ArgumentException">A bad <paramref name="loss_scale"/>, <paramref name="dtype"/>,
    /// <paramref name="accumulative_counts"/> or <paramref name="clip_grad"/>.</exception>
    /// <param name="skip_nonfinite">As for <see cref="OptimWrapper"/>: the scaler's own inf check (no
    /// extra kernel) plus the losses decide; skipped steps also back the scale off.</param>
    /// <param name="loggerFactory">As for <see cref="OptimWrapper"/>; the loss scaler logs through it too.</param>
    public AmpOptimWrapper(Optimizer optimizer, object? loss_scale = null, object? dtype = null,
                           int accumulative_counts = 1, IDictionary<string, object?>? clip_grad = null, object? skip_nonfinite = null,
                           ILoggerFactory? loggerFactory = null)
        : base(optimizer, accumulative_counts, clip_grad, skip_nonfinite, loggerFactory)
    {
        var (settings, updateParam) = LossScaling.scalerOf(ParseLossScale(loss_scale)).ToValueTuple();
        scale_update_param = FSharpOption<double>.get_IsSome(updateParam) ? updateParam.Value : null;
        loss_scaler = new GradScaler(settings, CreateLogger(nameof(GradScaler)));
        var cast = Raise.Unwrap(Autocast.parseDtype(DtypeToPy(dtype)), nameof(dtype));
        _castDtype = FSharpOption<Autocast.CastDtype>.get_IsSome(cast) ? cast.Value : null;
        // Autocast's per-step weight copies fragment glibc's arenas; see NativeAllocator.
        if (NativeAllocator.Enabled) NativeAllocator.ReturnLargeBlocksToSystem();
    }

    /// <summary>
    /// The loss scaler. Settable so that a subclass of <see cref="GradScaler"/> can observe or replace
    /// scaling (MMEngine's tests substitute a mock).
    /// </summary>
    public GradScaler loss_scaler { get; set; }

    /// <summary>The scale passed to <c>loss_scaler.update</c> after each step: the static
    /// <c>loss_scale</c>, or null for dynamic scaling (MMEngine's <c>_scale_update_param</c>).</summary>
    public double? scale_update_param { get; }

    /// <summary>The autocast dtype given (MMEngine's <c>cast_dtype</c>); null means the device's default.</summary>
    public ScalarType? cast_dtype => _castDtype is null ? null : Amp.ToScalarType(_castDtype);

    /// <summary>Scales the loss with <see cref="loss_scaler"/>, back-propagates, and counts the backward pass.</summary>
    public override void backward(Tensor loss)
    {
        BeginBackward(loss);
        loss_scaler.scale(loss).backward();
        CountBackward();
    }

    /// <summary>
    /// With clipping: <c>loss_scaler.unscale_</c> first, so clipping (and the reported grad norm) sees
    /// real gradients. Then <c>loss_scaler.step</c> (skipped when a gradient is inf/NaN) and
    /// <c>loss_scaler.update(scale_update_param)</c>. With a data-parallel model (see
    /// <see cref="IDistributedModule"/>), inf/NaN on any rank skips the step on every rank.
    /// </summary>
    /// <remarks>If clipping throws (<c>error_if_nonfinite</c>), the iteration is abandoned as an overflow
    /// (the scale backs off; the next backward clears the gradients) before the exception leaves, so the next
    /// iteration works.</remarks>
    public override void step()
    {
        CountStep();
        // A data-parallel model: every rank skips or steps together, and the scales stay equal.
        loss_scaler.FoundInfReducer = DistributedModule is { } distributed ? distributed.any_rank : null;
        var guarded = skip_nonfinite.Enabled;
        if (ClipGrad is not null || guarded) loss_scaler.unscale_(optimizer);
        if (guarded)
        {
            bool allowed;
            try
            {
                var grads = loss_scaler.is_enabled() ? loss_scaler.FoundInfTensor(optimizer) : GradNonFinite.Check(optimizer);
                allowed = GuardAllowsStep(Combine(grads, TakeLossFlag()));
            }
            catch (NonFiniteTrainingException)
            {
                RecoverFromFailedStep();
                throw;
            }
            if (loss_scaler.is_enabled()) loss_scaler.SetFoundInf(optimizer, !allowed);
            else if (!allowed) return;
        }
        if (ClipGrad is not null) ClipOrRecover();
        loss_scaler.step(optimizer);
        loss_scaler.update(scale_update_param);
    }

    /// <summary>
    /// PyTorch's GradScaler does not support closures; with scaling enabled this throws before anything
    /// changes (a closure's backward would bypass the scale and move the parameters by the scale factor).
    /// With a disabled scaler it is <see cref="OptimWrapper.step(Func{Tensor})"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The scaler is enabled.</exception>
    public override void step(Func<Tensor> closure)
    {
        if (loss_scaler.is_enabled()) throw Raise.From(LossScaling.closureUnsupported);
        base.step(closure);
    }

    /// <summary>Abandons the scaler's iteration as an overflow (the scale backs off); the next backward clears the gradients.</summary>
    protected override void RecoverFromFailedStep()
    {
        loss_scaler.AbandonIteration(optimizer);
        base.RecoverFromFailedStep();
    }

    /// <summary>
    /// The base context (no gradient sync on accumulation iterations) plus autocast on the device
    /// type of the parameters (the optimizer's, else the model's) with <see cref="cast_dtype"/>.
    /// Dispose it on the thread that created it.
    /// </summary>
    public override IDisposable optim_context(nn.Module model)
    {
        var plan = Raise.Unwrap(Autocast.forWrapper(DeviceTypeOf(model),
            _castDtype is null ? FSharpOption<Autocast.CastDtype>.None : FSharpOption<Autocast.CastDtype>.Some(_castDtype)));
        var outer = base.optim_context(model);
        try
        {
            return new Nested(outer, AutocastScope.Enter(plan));
        }
        catch
        {
            outer.Dispose();
            throw;
        }
    }

    /// <summary>The base state plus a <c>loss_scaler</c> entry (the scaler's five values).</summary>
    public override OptimStateDict state_dict()
    {
        var sd = base.state_dict();
        sd.entries["loss_scaler"] = loss_scaler.state_dict();
        return sd;
    }

    /// <summary>
    /// Loads a state from <see cref="state_dict"/>; a state without <c>loss_scaler</c> (a plain
    /// <see cref="OptimWrapper"/>'s) leaves the scaler as it is. Everything is checked first (the
    /// scaler's five values too: a positive finite scale, growth factor &gt; 1, backoff factor in (0, 1),
    /// growth interval ≥ 1, tracker below the interval). The caller's object is not modified.
    /// </summary>
    /// <exception cref="StateDictException">The state does not fit; the wrapper and its scaler are left unchanged.</exception>
    public override void load_state_dict(OptimStateDict state)
    {
        ValidateState(state, "");
        var before = loss_scaler.state_dict();
        if (state.entries.TryGetValue("loss_scaler", out var saved))
            loss_scaler.load_state_dict((IEnumerable<KeyValuePair<string, object?>>)saved!);
        try
        {
            base.load_state_dict(state);
        }
        catch
        {
            if (before.Count > 0) loss_scaler.load_state_dict(before);
            throw;
        }
    }

    internal override void ValidateState(OptimStateDict state, string path)
    {
        base.ValidateState(state, path);
        if (!state.entries.TryGetValue("loss_scaler", out var saved)) return;
        var at = path.Length == 0 ? "entries.loss_scaler" : path + ".entries.loss_scaler";
        if (saved is not IEnumerable<KeyValuePair<string, object?>> scalerState)
            throw new CheckpointException(at, "the entry is not a dict");
        var error = loss_scaler.CheckState(scalerState);
        if (error is not null) throw new CheckpointException(at, error);
    }

    private string DeviceTypeOf(nn.Module model)
    {
        var p = optimizer.parameters().FirstOrDefault() ?? model.parameters().FirstOrDefault();
        if (p is null) return Autocast.defaultDeviceType(torch.cuda.is_available());
        return p.device_type switch
        {
            DeviceType.CPU => "cpu",
            DeviceType.CUDA => "cuda",
            var other => other.ToString().ToLowerInvariant(),
        };
    }

    private static LossScaling.LossScale ParseLossScale(object? lossScale)
    {
        switch (lossScale)
        {
            case null:
                return LossScaling.LossScale.Dynamic;
            case LossScaling.LossScale ls:
                return ls;
            case LossScaling.Settings s:
                return LossScaling.LossScale.NewCustom(Raise.Unwrap(LossScaling.validate(s), "loss_scale"));
        }
        PyValue value;
        try { value = Py.ToPy(lossScale); }
        catch (ArgumentException) { throw Raise.From(LossScaling.invalidLossScale(lossScale!.ToString() ?? lossScale.GetType().Name), "loss_scale"); }
        return Raise.Unwrap(LossScaling.parseLossScale(value), "loss_scale");
    }

    private static PyValue DtypeToPy(object? dtype) => dtype switch
    {
        null => PyValue.None,
        ScalarType st => PyValue.NewStr(Amp.NameOf(st)),
        string s => PyValue.NewStr(s),
        _ => TryToPy(dtype) ?? throw Raise.From(Autocast.invalidDtypeKind(dtype.ToString() ?? dtype.GetType().Name), nameof(dtype)),
    };

    private static PyValue? TryToPy(object value)
    {
        try { return Py.ToPy(value); }
        catch (ArgumentException) { return null; }
    }

    /// <summary>Two scopes disposed innermost first, the outer one even when the inner one throws.</summary>
    private sealed class Nested(IDisposable outer, IDisposable inner) : IDisposable
    {
        public void Dispose()
        {
            try { inner.Dispose(); }
            finally { outer.Dispose(); }
        }
    }
}
