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
/// </summary>
internal static class PerTensor
{
    private static Tensor Weight(double w, Tensor like) => torch.tensor(w, like.dtype, like.device);

    /// <summary>SGD: weight decay, momentum (the buffer is the first gradient), Nesterov, maximize.</summary>
    internal static void Sgd(Tensor param, Tensor grad, ref Tensor? buffer, double lr, double momentum, double dampening,
        double weightDecay, bool nesterov, bool maximize)
    {
        if (maximize) grad = grad.neg();
        if (weightDecay != 0) grad = grad.add(param, alpha: weightDecay);
        if (momentum != 0)
        {
            if (buffer is null)
                buffer = grad.clone().detach().DetachFromDisposeScope();
            else
                buffer.mul_(momentum).add_(grad, alpha: 1 - dampening);
            grad = nesterov ? grad.add(buffer, alpha: momentum) : buffer;
        }
        param.add_(grad, alpha: -lr);
    }

    /// <summary>Adam (<paramref name="decoupled"/>: AdamW) at <paramref name="step"/> (already advanced).</summary>
    internal static void Adam(bool decoupled, Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, Tensor? maxExpAvgSq, long step,
        double lr, double beta1, double beta2, double eps, double weightDecay, bool amsgrad, bool maximize)
    {
        if (maximize) grad = grad.neg();
        if (weightDecay != 0)
        {
            if (decoupled) param.mul_(1 - lr * weightDecay);
            else grad = grad.add(param, alpha: weightDecay);
        }
        expAvg.lerp_(grad, Weight(1 - beta1, expAvg));
        expAvgSq.mul_(beta2).addcmul_(grad, grad, value: 1 - beta2);
        var biasCorrection1 = 1 - Math.Pow(beta1, step);
        var biasCorrection2 = 1 - Math.Pow(beta2, step);
        var stepSize = lr / biasCorrection1;
        var biasCorrection2Sqrt = Math.Sqrt(biasCorrection2);
        Tensor denom;
        if (amsgrad)
        {
            maxExpAvgSq!.copy_(torch.maximum(maxExpAvgSq, expAvgSq));
            denom = (maxExpAvgSq.sqrt() / biasCorrection2Sqrt).add_(eps);
        }
        else
        {
            denom = (expAvgSq.sqrt() / biasCorrection2Sqrt).add_(eps);
        }
        param.addcdiv_(expAvg, denom, value: -stepSize);
    }

    /// <summary>Adagrad at <paramref name="step"/> (already advanced).</summary>
    internal static void Adagrad(Tensor param, Tensor grad, Tensor sum, long step, double lr, double lrDecay, double weightDecay, double eps, bool maximize)
    {
        if (maximize) grad = grad.neg();
        if (weightDecay != 0) grad = grad.add(param, alpha: weightDecay);
        var clr = lr / (1 + (step - 1) * lrDecay);
        sum.addcmul_(grad, grad, value: 1);
        var std = sum.sqrt().add_(eps);
        param.addcdiv_(grad, std, value: -clr);
    }

    /// <summary>RMSprop (plain, centered, with momentum).</summary>
    internal static void RmsProp(Tensor param, Tensor grad, Tensor squareAvg, Tensor? gradAvg, Tensor? momentumBuffer,
        double lr, double alpha, double eps, double weightDecay, double momentum, bool centered, bool maximize)
    {
        if (maximize) grad = grad.neg();
        if (weightDecay != 0) grad = grad.add(param, alpha: weightDecay);
        squareAvg.mul_(alpha).addcmul_(grad, grad, value: 1 - alpha);
        Tensor avg;
        if (centered)
        {
            gradAvg!.lerp_(grad, Weight(1 - alpha, gradAvg));
            avg = squareAvg.addcmul(gradAvg, gradAvg, value: -1).sqrt_();
        }
        else
        {
            avg = squareAvg.sqrt();
        }
        avg = avg.add_(eps);
        if (momentum > 0)
        {
            momentumBuffer!.mul_(momentum).addcdiv_(grad, avg);
            param.add_(momentumBuffer, alpha: -lr);
        }
        else
        {
            param.addcdiv_(grad, avg, value: -lr);
        }
    }

    /// <summary>Adamax at <paramref name="step"/> (already advanced).</summary>
    internal static void Adamax(Tensor param, Tensor grad, Tensor expAvg, Tensor expInf, long step,
        double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        if (weightDecay != 0) grad = grad.add(param, alpha: weightDecay);
        expAvg.lerp_(grad, Weight(1 - beta1, expAvg));
        expInf.mul_(beta2);
        expInf.copy_(torch.maximum(expInf, grad.abs().add_(eps)));
        var clr = lr / (1 - Math.Pow(beta1, step));
        param.addcdiv_(expAvg, expInf, value: -clr);
    }

    /// <summary>
    /// NAdam at <paramref name="step"/> (already advanced), PyTorch 2.x: <c>mu_product</c> is a float32 scalar
    /// multiplied by mu each step, and <c>mu_product_next = mu_product · mu_next</c>. (torch 1.13 multiplied
    /// by mu once more there; Optim follows 2.x.)
    /// </summary>
    internal static void NAdam(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, ref double muProduct, long step,
        double lr, double beta1, double beta2, double eps, double weightDecay, double momentumDecay)
    {
        var biasCorrection2 = 1 - Math.Pow(beta2, step);
        if (weightDecay != 0) grad = grad.add(param, alpha: weightDecay);
        var mu = beta1 * (1.0 - 0.5 * Math.Pow(0.96, step * momentumDecay));
        var muNext = beta1 * (1.0 - 0.5 * Math.Pow(0.96, (step + 1) * momentumDecay));
        muProduct = (float)((float)muProduct * (float)mu);
        expAvg.lerp_(grad, Weight(1 - beta1, expAvg));
        expAvgSq.mul_(beta2).addcmul_(grad, grad, value: 1 - beta2);
        var denom = expAvgSq.div(biasCorrection2).sqrt();
        var muProductNext = muProduct * muNext;
        denom.add_(eps);
        param.addcdiv_(grad, denom, value: -lr * (1.0 - mu) / (1.0 - muProduct));
        param.addcdiv_(expAvg, denom, value: -lr * muNext / (1.0 - muProductNext));
    }

    /// <summary>RAdam at <paramref name="step"/> (already advanced): the rectified update once rho_t &gt; 5.</summary>
    internal static void RAdam(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, long step,
        double lr, double beta1, double beta2, double eps, double weightDecay)
    {
        if (weightDecay != 0) grad = grad.add(param, alpha: weightDecay);
        expAvg.lerp_(grad, Weight(1 - beta1, expAvg));
        expAvgSq.mul_(beta2).addcmul_(grad, grad, value: 1 - beta2);
        var biasCorrection1 = 1 - Math.Pow(beta1, step);
        var biasCorrection2 = 1 - Math.Pow(beta2, step);
        var biasCorrectedExpAvg = expAvg / biasCorrection1;
        var rhoInf = 2 / (1 - beta2) - 1;
        var rhoT = rhoInf - 2 * step * Math.Pow(beta2, step) / biasCorrection2;
        if (rhoT > 5.0)
        {
            var rect = Math.Sqrt((rhoT - 4) * (rhoT - 2) * rhoInf / ((rhoInf - 4) * (rhoInf - 2) * rhoT));
            var adaptiveLr = Math.Sqrt(biasCorrection2) / expAvgSq.sqrt().add_(eps);
            param.add_(biasCorrectedExpAvg * lr * adaptiveLr * rect, alpha: -1.0);
        }
        else
        {
            param.add_(biasCorrectedExpAvg * lr, alpha: -1.0);
        }
    }

    /// <summary>Adadelta.</summary>
    internal static void Adadelta(Tensor param, Tensor grad, Tensor squareAvg, Tensor accDelta,
        double lr, double rho, double eps, double weightDecay, bool maximize)
    {
        if (maximize) grad = grad.neg();
        if (weightDecay != 0) grad = grad.add(param, alpha: weightDecay);
        squareAvg.mul_(rho).addcmul_(grad, grad, value: 1 - rho);
        var std = squareAvg.add(eps).sqrt_();
        var delta = accDelta.add(eps).sqrt_();
        delta.div_(std).mul_(grad);
        accDelta.mul_(rho).addcmul_(delta, delta, value: 1 - rho);
        param.add_(delta, alpha: -lr);
    }

    /// <summary>
    /// ASGD at <paramref name="step"/> (already advanced) with the float32 <paramref name="eta"/> and
    /// <paramref name="mu"/> of the previous step; then computes the next ones from the group's lr
    /// (so an lr change takes effect one step late, as in PyTorch).
    /// </summary>
    internal static void Asgd(Tensor param, Tensor grad, Tensor ax, ref double eta, ref double mu, long step,
        double lr, double lambd, double alpha, double t0, double weightDecay, bool maximize)
    {
        if (maximize) grad = grad.neg();
        if (weightDecay != 0) grad = grad.add(param, alpha: weightDecay);
        param.mul_(1 - lambd * eta);
        param.add_(grad, alpha: -eta);
        if (mu != 1) ax.add_(param.sub(ax).mul_(mu));
        else ax.copy_(param);
        eta = (float)(lr / Math.Pow(1 + lambd * lr * step, alpha));
        mu = (float)(1 / Math.Max(1, step - t0));
    }

    /// <summary>Rprop: sign agreement grows the per-element step size, disagreement shrinks it and skips the update.</summary>
    internal static void Rprop(Tensor param, Tensor grad, Tensor prev, Tensor stepSize,
        double etaMinus, double etaPlus, double stepSizeMin, double stepSizeMax, bool maximize)
    {
        if (maximize) grad = grad.neg();
        var sign = grad.mul(prev).sign();
        var plus = sign.gt(0);
        var minus = sign.lt(0);
        var zero = sign.eq(0);
        sign.masked_fill_(plus, etaPlus);
        sign.masked_fill_(minus, etaMinus);
        sign.masked_fill_(zero, 1);
        stepSize.mul_(sign).clamp_(stepSizeMin, stepSizeMax);
        grad = grad.clone();
        grad.masked_fill_(sign.eq(etaMinus), 0);
        param.addcmul_(grad.sign(), stepSize, value: -1);
        prev.copy_(grad);
    }
}
