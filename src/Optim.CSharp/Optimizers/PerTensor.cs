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
        using var wd = weightDecay.ToScalar();
        using var decay = (1 - lr * weightDecay).ToScalar();
        using var b2 = beta2.ToScalar();
        using var oneMinusB2 = (1 - beta2).ToScalar();
        using var e = eps.ToScalar();
        using var one = 1.ToScalar();
        if (maximize) grad = grad.neg();
        if (weightDecay != 0)
        {
            if (decoupled) param.mul_(decay);
            else grad = grad.add(param, alpha: wd);
        }
        expAvg.lerp_(grad, Weight(1 - beta1, expAvg));
        expAvgSq.mul_(b2).addcmul_(grad, grad, value: oneMinusB2);
        var biasCorrection1 = 1 - Math.Pow(beta1, step);
        var biasCorrection2 = 1 - Math.Pow(beta2, step);
        var stepSize = lr / biasCorrection1;
        using var biasCorrection2Sqrt = Math.Sqrt(biasCorrection2).ToScalar();
        using var negStepSize = (-stepSize).ToScalar();
        Tensor denom;
        if (amsgrad)
        {
            maxExpAvgSq!.copy_(torch.maximum(maxExpAvgSq, expAvgSq));
            denom = (maxExpAvgSq.sqrt() / biasCorrection2Sqrt).add_(e, one);
        }
        else
        {
            denom = (expAvgSq.sqrt() / biasCorrection2Sqrt).add_(e, one);
        }
        param.addcdiv_(expAvg, denom, value: negStepSize);
    }

    /// <summary>Adagrad at <paramref name="step"/> (already advanced).</summary>
    internal static void Adagrad(Tensor param, Tensor grad, Tensor sum, long step, double lr, double lrDecay, double weightDecay, double eps, bool maximize)
    {
        using var wd = weightDecay.ToScalar();
        using var one = 1.ToScalar();
        using var e = eps.ToScalar();
        if (maximize) grad = grad.neg();
        if (weightDecay != 0) grad = grad.add(param, alpha: wd);
        var clr = lr / (1 + (step - 1) * lrDecay);
        using var negClr = (-clr).ToScalar();
        sum.addcmul_(grad, grad, value: one);
        var std = sum.sqrt().add_(e, one);
        param.addcdiv_(grad, std, value: negClr);
    }

    /// <summary>RMSprop (plain, centered, with momentum).</summary>
    internal static void RmsProp(Tensor param, Tensor grad, Tensor squareAvg, Tensor? gradAvg, Tensor? momentumBuffer,
        double lr, double alpha, double eps, double weightDecay, double momentum, bool centered, bool maximize)
    {
        using var wd = weightDecay.ToScalar();
        using var a = alpha.ToScalar();
        using var oneMinusA = (1 - alpha).ToScalar();
        using var minusOne = (-1).ToScalar();
        using var one = 1.ToScalar();
        using var e = eps.ToScalar();
        using var m = momentum.ToScalar();
        using var negLr = (-lr).ToScalar();
        if (maximize) grad = grad.neg();
        if (weightDecay != 0) grad = grad.add(param, alpha: wd);
        squareAvg.mul_(a).addcmul_(grad, grad, value: oneMinusA);
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
        avg = avg.add_(e, one);
        if (momentum > 0)
        {
            momentumBuffer!.mul_(m).addcdiv_(grad, avg, value: one);
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
        using var wd = weightDecay.ToScalar();
        using var b2 = beta2.ToScalar();
        using var e = eps.ToScalar();
        using var one = 1.ToScalar();
        using var negClr = (-(lr / (1 - Math.Pow(beta1, step)))).ToScalar();
        if (weightDecay != 0) grad = grad.add(param, alpha: wd);
        expAvg.lerp_(grad, Weight(1 - beta1, expAvg));
        expInf.mul_(b2);
        expInf.copy_(torch.maximum(expInf, grad.abs().add_(e, one)));
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
        using var wd = weightDecay.ToScalar();
        using var b2 = beta2.ToScalar();
        using var oneMinusB2 = (1 - beta2).ToScalar();
        using var e = eps.ToScalar();
        using var one = 1.ToScalar();
        var biasCorrection2 = 1 - Math.Pow(beta2, step);
        using var bc2 = biasCorrection2.ToScalar();
        if (weightDecay != 0) grad = grad.add(param, alpha: wd);
        var mu = beta1 * (1.0 - 0.5 * Math.Pow(0.96, step * momentumDecay));
        var muNext = beta1 * (1.0 - 0.5 * Math.Pow(0.96, (step + 1) * momentumDecay));
        muProduct = (float)((float)muProduct * (float)mu);
        expAvg.lerp_(grad, Weight(1 - beta1, expAvg));
        expAvgSq.mul_(b2).addcmul_(grad, grad, value: oneMinusB2);
        var denom = expAvgSq.div(bc2).sqrt();
        var muProductNext = muProduct * muNext;
        denom.add_(e, one);
        using var gradWeight = (-lr * (1.0 - mu) / (1.0 - muProduct)).ToScalar();
        using var expAvgWeight = (-lr * muNext / (1.0 - muProductNext)).ToScalar();
        param.addcdiv_(grad, denom, value: gradWeight);
        param.addcdiv_(expAvg, denom, value: expAvgWeight);
    }

    /// <summary>RAdam at <paramref name="step"/> (already advanced): the rectified update once rho_t &gt; 5.</summary>
    internal static void RAdam(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, long step,
        double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        using var wd = weightDecay.ToScalar();
        using var b2 = beta2.ToScalar();
        using var oneMinusB2 = (1 - beta2).ToScalar();
        using var e = eps.ToScalar();
        using var one = 1.ToScalar();
        using var l = lr.ToScalar();
        using var minusOne = (-1.0).ToScalar();
        if (weightDecay != 0) grad = grad.add(param, alpha: wd);
        expAvg.lerp_(grad, Weight(1 - beta1, expAvg));
        expAvgSq.mul_(b2).addcmul_(grad, grad, value: oneMinusB2);
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
            var adaptiveLr = bc2Sqrt / expAvgSq.sqrt().add_(e, one);
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
        using var wd = weightDecay.ToScalar();
        using var r = rho.ToScalar();
        using var oneMinusR = (1 - rho).ToScalar();
        using var e = eps.ToScalar();
        using var one = 1.ToScalar();
        using var negLr = (-lr).ToScalar();
        if (maximize) grad = grad.neg();
        if (weightDecay != 0) grad = grad.add(param, alpha: wd);
        squareAvg.mul_(r).addcmul_(grad, grad, value: oneMinusR);
        var std = squareAvg.add(e, one).sqrt_();
        var delta = accDelta.add(e, one).sqrt_();
        delta.div_(std).mul_(grad);
        accDelta.mul_(r).addcmul_(delta, delta, value: oneMinusR);
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
