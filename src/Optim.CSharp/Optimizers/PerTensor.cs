using TorchSharp;
using static TorchSharp.torch;

namespace Optim.Torch;

/// <summary>
/// PyTorch 2.x's per-tensor update rules (<c>torch.optim.*._single_tensor_*</c>, non-capturable,
/// non-differentiable), one parameter at a time, with the same tensor operations in the same order,
/// so the result is PyTorch's to the last bit where libtorch computes the same expressions. The
/// caller runs them under <c>no_grad</c> inside a dispose scope and advances <c>step</c> first where
/// PyTorch does. Scalars PyTorch keeps as float32 0-dim tensors (Adam's step, NAdam's
/// <c>mu_product</c>, ASGD's <c>eta</c>/<c>mu</c>) are kept float32-rounded in TorchSharp's double fields.
/// Every .NET number handed to a tensor op is an explicit <c>using</c> Scalar: TorchSharp 0.107's Scalars are
/// finalizable and not tracked by DisposeScope, so an implicit one can be finalized (freed) mid-P/Invoke.
/// That includes the hidden <c>alpha = 1</c> TorchSharp creates in <c>add</c>/<c>add_</c>/<c>sub</c> without one: pass it.
/// </summary>
internal static class PerTensor
{
    private static Tensor Weight(double w, Tensor like) => torch.tensor(w, like.dtype, like.device);

    /// <summary>The Scalars most rules pass: weight decay, eps and the integer 1 (alpha/value of plain adds), disposed together.</summary>
    private readonly struct Common(double weightDecay, double eps) : IDisposable
    {
        public readonly Scalar Wd = weightDecay.ToScalar();
        public readonly Scalar Eps = eps.ToScalar();
        public readonly Scalar One = 1.ToScalar();

        public void Dispose()
        {
            Wd.Dispose();
            Eps.Dispose();
            One.Dispose();
        }
    }

    /// <summary>A running average's decay and its complement (β, 1 − β) as Scalars, disposed together.</summary>
    private readonly struct Decay(double beta) : IDisposable
    {
        public readonly Scalar Keep = beta.ToScalar();
        public readonly Scalar Rest = (1 - beta).ToScalar();

        public void Dispose()
        {
            Keep.Dispose();
            Rest.Dispose();
        }
    }

    /// <summary>SGD: weight decay, momentum (the buffer is the first gradient), Nesterov, maximize.</summary>
    internal static void Sgd(Tensor param, Tensor grad, ref Tensor? buffer, double lr, double momentum, double dampening,
        double weightDecay, bool nesterov, bool maximize)
    {
        using var wd = weightDecay.ToScalar();
        using var m = momentum.ToScalar();
        using var keep = (1 - dampening).ToScalar();
        using var negLr = (-lr).ToScalar();
        if (maximize) grad = grad.neg();
        if (weightDecay != 0) grad = grad.add(param, alpha: wd);
        if (momentum != 0)
        {
            if (buffer is null)
                buffer = grad.clone().detach().DetachFromDisposeScope();
            else
                buffer.mul_(m).add_(grad, alpha: keep);
            grad = nesterov ? grad.add(buffer, alpha: m) : buffer;
        }
        param.add_(grad, alpha: negLr);
    }

    /// <summary>Adam (<paramref name="decoupled"/>: AdamW) at <paramref name="step"/> (already advanced).</summary>
    internal static void Adam(bool decoupled, Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, Tensor? maxExpAvgSq, long step,
        double lr, double beta1, double beta2, double eps, double weightDecay, bool amsgrad, bool maximize)
    {
        using var c = new Common(weightDecay, eps);
        using var decay = (1 - lr * weightDecay).ToScalar();
        using var b2 = new Decay(beta2);
        if (maximize) grad = grad.neg();
        if (weightDecay != 0)
        {
            if (decoupled) param.mul_(decay);
            else grad = grad.add(param, alpha: c.Wd);
        }
        expAvg.lerp_(grad, Weight(1 - beta1, expAvg));
        expAvgSq.mul_(b2.Keep).addcmul_(grad, grad, value: b2.Rest);
        var biasCorrection1 = 1 - Math.Pow(beta1, step);
        var biasCorrection2 = 1 - Math.Pow(beta2, step);
        var stepSize = lr / biasCorrection1;
        using var biasCorrection2Sqrt = Math.Sqrt(biasCorrection2).ToScalar();
        using var negStepSize = (-stepSize).ToScalar();
        Tensor denom;
        if (amsgrad)
        {
            maxExpAvgSq!.copy_(torch.maximum(maxExpAvgSq, expAvgSq));
            denom = (maxExpAvgSq.sqrt() / biasCorrection2Sqrt).add_(c.Eps, c.One);
        }
        else
        {
            denom = (expAvgSq.sqrt() / biasCorrection2Sqrt).add_(c.Eps, c.One);
        }
        param.addcdiv_(expAvg, denom, value: negStepSize);
    }

    /// <summary>Adagrad at <paramref name="step"/> (already advanced).</summary>
    internal static void Adagrad(Tensor param, Tensor grad, Tensor sum, long step, double lr, double lrDecay, double weightDecay, double eps, bool maximize)
    {
        using var c = new Common(weightDecay, eps);
        if (maximize) grad = grad.neg();
        if (weightDecay != 0) grad = grad.add(param, alpha: c.Wd);
        var clr = lr / (1 + (step - 1) * lrDecay);
        using var negClr = (-clr).ToScalar();
        sum.addcmul_(grad, grad, value: c.One);
        var std = sum.sqrt().add_(c.Eps, c.One);
        param.addcdiv_(grad, std, value: negClr);
    }

    /// <summary>RMSprop (plain, centered, with momentum).</summary>
    internal static void RmsProp(Tensor param, Tensor grad, Tensor squareAvg, Tensor? gradAvg, Tensor? momentumBuffer,
        double lr, double alpha, double eps, double weightDecay, double momentum, bool centered, bool maximize)
    {
        using var c = new Common(weightDecay, eps);
        using var a = new Decay(alpha);
        using var minusOne = (-1).ToScalar();
        using var m = momentum.ToScalar();
        using var negLr = (-lr).ToScalar();
        if (maximize) grad = grad.neg();
        if (weightDecay != 0) grad = grad.add(param, alpha: c.Wd);
        squareAvg.mul_(a.Keep).addcmul_(grad, grad, value: a.Rest);
        Tensor avg;
        if (centered)
        {
            gradAvg!.lerp_(grad, Weight(1 - alpha, gradAvg));
            avg = squareAvg.addcmul(gradAvg, gradAvg, value: minusOne).sqrt_();
        }
        else
        {
            avg = squareAvg.sqrt();
        }
        avg = avg.add_(c.Eps, c.One);
        if (momentum > 0)
        {
            momentumBuffer!.mul_(m).addcdiv_(grad, avg, value: c.One);
            param.add_(momentumBuffer, alpha: negLr);
        }
        else
        {
            param.addcdiv_(grad, avg, value: negLr);
        }
    }

    /// <summary>Adamax at <paramref name="step"/> (already advanced).</summary>
    internal static void Adamax(Tensor param, Tensor grad, Tensor expAvg, Tensor expInf, long step,
        double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        using var c = new Common(weightDecay, eps);
        using var b2 = beta2.ToScalar();
        using var negClr = (-(lr / (1 - Math.Pow(beta1, step)))).ToScalar();
        if (weightDecay != 0) grad = grad.add(param, alpha: c.Wd);
        expAvg.lerp_(grad, Weight(1 - beta1, expAvg));
        expInf.mul_(b2);
        expInf.copy_(torch.maximum(expInf, grad.abs().add_(c.Eps, c.One)));
        param.addcdiv_(expAvg, expInf, value: negClr);
    }

    /// <summary>
    /// NAdam at <paramref name="step"/> (already advanced), PyTorch 2.x: <c>mu_product</c> is a float32 scalar
    /// multiplied by mu each step, and <c>mu_product_next = mu_product · mu_next</c>. (torch 1.13 multiplied
    /// by mu once more there; Optim follows 2.x.)
    /// </summary>
    internal static void NAdam(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, ref double muProduct, long step,
        double lr, double beta1, double beta2, double eps, double weightDecay, double momentumDecay)
    {
        using var c = new Common(weightDecay, eps);
        using var b2 = new Decay(beta2);
        var biasCorrection2 = 1 - Math.Pow(beta2, step);
        using var bc2 = biasCorrection2.ToScalar();
        if (weightDecay != 0) grad = grad.add(param, alpha: c.Wd);
        var mu = beta1 * (1.0 - 0.5 * Math.Pow(0.96, step * momentumDecay));
        var muNext = beta1 * (1.0 - 0.5 * Math.Pow(0.96, (step + 1) * momentumDecay));
        muProduct = (float)((float)muProduct * (float)mu);
        expAvg.lerp_(grad, Weight(1 - beta1, expAvg));
        expAvgSq.mul_(b2.Keep).addcmul_(grad, grad, value: b2.Rest);
        var denom = expAvgSq.div(bc2).sqrt();
        var muProductNext = muProduct * muNext;
        denom.add_(c.Eps, c.One);
        using var gradWeight = (-lr * (1.0 - mu) / (1.0 - muProduct)).ToScalar();
        using var expAvgWeight = (-lr * muNext / (1.0 - muProductNext)).ToScalar();
        param.addcdiv_(grad, denom, value: gradWeight);
        param.addcdiv_(expAvg, denom, value: expAvgWeight);
    }

    /// <summary>RAdam at <paramref name="step"/> (already advanced): the rectified update once rho_t &gt; 5.</summary>
    internal static void RAdam(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, long step,
        double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        using var c = new Common(weightDecay, eps);
        using var b2 = new Decay(beta2);
        using var l = lr.ToScalar();
        using var minusOne = (-1.0).ToScalar();
        if (weightDecay != 0) grad = grad.add(param, alpha: c.Wd);
        expAvg.lerp_(grad, Weight(1 - beta1, expAvg));
        expAvgSq.mul_(b2.Keep).addcmul_(grad, grad, value: b2.Rest);
        var biasCorrection1 = 1 - Math.Pow(beta1, step);
        var biasCorrection2 = 1 - Math.Pow(beta2, step);
        using var bc1 = biasCorrection1.ToScalar();
        var biasCorrectedExpAvg = expAvg / bc1;
        var rhoInf = 2 / (1 - beta2) - 1;
        var rhoT = rhoInf - 2 * step * Math.Pow(beta2, step) / biasCorrection2;
        if (rhoT > 5.0)
        {
            using var rect = Math.Sqrt((rhoT - 4) * (rhoT - 2) * rhoInf / ((rhoInf - 4) * (rhoInf - 2) * rhoT)).ToScalar();
            using var bc2Sqrt = Math.Sqrt(biasCorrection2).ToScalar();
            var adaptiveLr = bc2Sqrt / expAvgSq.sqrt().add_(c.Eps, c.One);
            param.add_(biasCorrectedExpAvg * l * adaptiveLr * rect, alpha: minusOne);
        }
        else
        {
            param.add_(biasCorrectedExpAvg * l, alpha: minusOne);
        }
    }

    /// <summary>Adadelta.</summary>
    internal static void Adadelta(Tensor param, Tensor grad, Tensor squareAvg, Tensor accDelta,
        double lr, double rho, double eps, double weightDecay, bool maximize)
    {
        using var c = new Common(weightDecay, eps);
        using var r = new Decay(rho);
        using var negLr = (-lr).ToScalar();
        if (maximize) grad = grad.neg();
        if (weightDecay != 0) grad = grad.add(param, alpha: c.Wd);
        squareAvg.mul_(r.Keep).addcmul_(grad, grad, value: r.Rest);
        var std = squareAvg.add(c.Eps, c.One).sqrt_();
        var delta = accDelta.add(c.Eps, c.One).sqrt_();
        delta.div_(std).mul_(grad);
        accDelta.mul_(r.Keep).addcmul_(delta, delta, value: r.Rest);
        param.add_(delta, alpha: negLr);
    }

    /// <summary>
    /// ASGD at <paramref name="step"/> (already advanced) with the float32 <paramref name="eta"/> and
    /// <paramref name="mu"/> of the previous step; then computes the next ones from the group's lr
    /// (so an lr change takes effect one step late, as in PyTorch).
    /// </summary>
    internal static void Asgd(Tensor param, Tensor grad, Tensor ax, ref double eta, ref double mu, long step,
        double lr, double lambd, double alpha, double t0, double weightDecay, bool maximize)
    {
        using var wd = weightDecay.ToScalar();
        using var decay = (1 - lambd * eta).ToScalar();
        using var negEta = (-eta).ToScalar();
        using var one = 1.ToScalar();
        using var m = mu.ToScalar();
        if (maximize) grad = grad.neg();
        if (weightDecay != 0) grad = grad.add(param, alpha: wd);
        param.mul_(decay);
        param.add_(grad, alpha: negEta);
        if (mu != 1) ax.add_(param.sub(ax).mul_(m), one);
        else ax.copy_(param);
        eta = (float)(lr / Math.Pow(1 + lambd * lr * step, alpha));
        mu = (float)(1 / Math.Max(1, step - t0));
    }

    /// <summary>Rprop: sign agreement grows the per-element step size, disagreement shrinks it and skips the update.</summary>
    internal static void Rprop(Tensor param, Tensor grad, Tensor prev, Tensor stepSize,
        double etaMinus, double etaPlus, double stepSizeMin, double stepSizeMax, bool maximize)
    {
        using var zeroInt = 0.ToScalar();
        using var oneInt = 1.ToScalar();
        using var minusOneInt = (-1).ToScalar();
        using var minus = etaMinus.ToScalar();
        using var plus = etaPlus.ToScalar();
        using var min = stepSizeMin.ToScalar();
        using var max = stepSizeMax.ToScalar();
        if (maximize) grad = grad.neg();
        var sign = grad.mul(prev).sign();
        var agree = sign.gt(zeroInt);
        var disagree = sign.lt(zeroInt);
        var zero = sign.eq(zeroInt);
        sign.masked_fill_(agree, plus);
        sign.masked_fill_(disagree, minus);
        sign.masked_fill_(zero, oneInt);
        stepSize.mul_(sign).clamp_(min, max);
        grad = grad.clone();
        grad.masked_fill_(sign.eq(minus), zeroInt);
        param.addcmul_(grad.sign(), stepSize, value: minusOneInt);
        prev.copy_(grad);
    }
}
