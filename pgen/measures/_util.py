"""Helpers shared by several measures."""

from __future__ import annotations

import math

import torch
from torch import nn

from pgen.measures import MeasureError, model_device
from pgen.train import batch_logits, evaluate

BOUND_SIGN = ("a complexity term of a generalization bound: larger means a looser bound "
              "(Jiang et al. 2020, sec. 2 and app. C)")
FLATNESS_SIGN = ("1/sigma^2 or 1/alpha^2: a sharper minimum tolerates less perturbation and is predicted to "
                 "generalize worse (Jiang et al. 2020, sec. 7)")


def all_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every floating-point tensor of the state, parameters AND buffers (BatchNorm running
    statistics), as Keras's ``model.get_weights()`` returns them."""
    return {k: v.detach() for k, v in model.state_dict().items() if v.is_floating_point()}


def paired_weights(model: nn.Module, init_model: nn.Module) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    a, b = all_weights(model), all_weights(init_model)
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise MeasureError("the initial model's weights do not match the trained model's")
    return [(k, a[k], b[k]) for k in a]


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Conv and Linear modules, in forward-definition order (Fantastic's "layers")."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def weight_matrices(model: nn.Module) -> list[torch.Tensor]:
    """Each layer's kernel as a float64 matrix (out, in * kh * kw), biases excluded.

    Conv kernels are reshaped, as Jiang et al. (2020) do (an approximation of the
    convolution's operator norm, Yoshida & Miyato 2017), after folding BatchNorm layers
    into the weights before them (:func:`fold_batchnorm`).
    """
    if has_batchnorm(model):
        model = fold_batchnorm(model, torch.float64)
    mats = [m.weight.detach().double().reshape(m.weight.shape[0], -1) for _, m in weight_layers(model)]
    if not mats:
        raise MeasureError("the model has no Conv or Linear layer")
    return mats


def spectral_norm(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w, ord=2))


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, settings) -> torch.Tensor:
    """The model's outputs on ``x``, batched on the model's device, back on CPU."""
    device = model_device(model)
    return torch.cat([model(x[a:a + settings.batch_size].to(device).float()).float().cpu()
                      for a in range(0, len(x), settings.batch_size)])


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Correct-class logit minus the largest other logit, per sample."""
    correct = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    other = logits.clone()
    other.scatter_(1, labels.view(-1, 1), float("-inf"))
    return correct - other.max(1).values


def margin_10th_percentile(model: nn.Module, data, settings) -> tuple[float, float]:
    """(|gamma|, gamma), gamma the 10th-percentile margin over the data (Jiang et al. 2020).

    The measures use |gamma|, as Dziugaite et al.'s reference code does (``margin.abs()``).
    A model that misclassifies more than 10% of the samples has gamma < 0, which the
    absolute value hides (-9 and +9 give the same measure); the measures therefore store
    the signed gamma beside their value as ``<measure>.margin_10th``, so such models can
    be seen and filtered.
    """
    m = margins(logits_of(model, data.x, settings), data.y)
    signed = float(m.kthvalue(max(1, len(m) // 10)).values)
    if signed == 0:
        raise MeasureError("the 10th-percentile margin is 0; margin-normalized measures are undefined")
    return abs(signed), signed


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings) -> float:
    """Top-1 accuracy through the one accuracy function pgen also trains and scores with."""
    return evaluate(model, x, y, batch_size=settings.batch_size)[0]


ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
               nn.Tanh, nn.Softplus, nn.Hardtanh)


def is_conv(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or isinstance(getattr(m, "conv", None), nn.Conv2d)


def is_dense(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or isinstance(getattr(m, "linear", None), nn.Linear)


def is_pool(m: nn.Module) -> bool:
    name = type(m).__name__  # pgen's Keras port: MaxPooling2D, AveragePooling2D (global pools have no strides)
    return isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)) or (
        "Pool" in name and "Global" not in name and "Adaptive" not in name)


def keras_layers(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """The model's layers as Keras lists them, each as (layer, module whose output is the
    Keras layer's output): a Sequential's children, where an activation module right after
    a Conv/Linear merges into it (Keras's Conv2D/Dense apply their activation); for other
    models the leaf modules in registration order, merged the same way."""
    modules = list(model.children()) if isinstance(model, nn.Sequential) else \
        [m for m in model.modules() if not list(m.children())]
    out: list[tuple[nn.Module, nn.Module]] = []
    for m in modules:
        if isinstance(m, ACTIVATIONS) and out and out[-1][0] is out[-1][1] and (is_conv(out[-1][0]) or is_dense(out[-1][0])):
            out[-1] = (out[-1][0], m)
        else:
            out.append((m, m))
    return out


def capture_output(module: nn.Module):
    """A forward hook that appends ``module``'s outputs to the returned list; remove it with ``.remove()``.

    The rest of the model continues on a copy of the output, so the captured tensor keeps
    the layer's values when later code changes its input in place (``out += identity``,
    ``ReLU(inplace=True)``) and stays in the autograd graph: gradients with respect to it
    flow through every path that used the output."""
    captured: list[torch.Tensor] = []

    def hook(m, i, o):
        if not isinstance(o, torch.Tensor):
            raise MeasureError(f"module {type(m).__name__} returned {type(o).__name__}, not a tensor")
        captured.append(o)
        return o.clone()

    handle = module.register_forward_hook(hook)
    return captured, handle


def channels_last_on_cpu(model: nn.Module, example: torch.Tensor):
    """Store ``model``'s 4-D weights channels-last, in place, when it runs on a CPU and still
    runs so on ``example`` (a few input samples); returns a function that puts the stored
    layout back (the same tensors).

    For forward passes without gradients: ``pgen score``'s passes over the splits (the
    targets and the P-vectors) and the PAC-Bayes draws. oneDNN's convolutions then give
    channels-last activations, and
    PyTorch's CPU max pooling is several times faster on those than on channels-first ones
    (``python benchmarks/channels_last.py mnist5k``: 2x2 pooling of 256x16x28x28, 20 ms
    channels-first and 4 ms channels-last; the forward pass of mnist5k's CNNs 1.2-4.2x
    faster). The function is the same: only the layout of the weights changes, so the
    logits differ by float rounding (at most 3.8e-6 there). Forward+backward passes do not
    gain (0.66-1.35x there), so the measures that take gradients get the stored layout.

    The trial forward on ``example`` decides, against the stored layout's output on the
    same samples: a forward that ``.view()``s its activations (``x.view(x.size(0), -1)``
    after a convolution, common in user models) cannot take channels-last ones and raises,
    and one that reads a weight's memory order (``as_strided``, a C extension that assumes
    contiguity) computes something else; either keeps the stored layout.
    """
    convs = [p for p in model.parameters() if p.dim() == 4]
    stored = [p.data for p in convs]

    def restore():
        for p, data in zip(convs, stored):
            p.data = data

    if model_device(model).type != "cpu" or not convs:
        return restore
    example = example if example.is_floating_point() else example.float()
    was_training = model.training
    model.eval()  # a training-mode trial would move BatchNorm's running statistics
    try:
        with torch.inference_mode():
            expected = model(example)
            for p in convs:
                # not .contiguous(): with one input channel the weight already counts as
                # channels-last and stays as it is, and the convolution's output keeps NCHW
                p.data = torch.empty_like(p.data, memory_format=torch.channels_last).copy_(p.data)
            got = model(example)
        if not (isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor) and got.shape == expected.shape
                and torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * max(1.0, float(expected.abs().max())))):
            restore()
    except Exception:  # the layout, not the model, failed: the caller's own passes report real errors
        restore()
    finally:
        model.train(was_training)
    return restore


def shuffled_stream(n: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` indices of a shuffled, repeated dataset of ``n`` samples (tf.data's
    ``repeat().shuffle()``, approximated by back-to-back permutations)."""
    reps = -(-count // n)
    return torch.cat([torch.randperm(n, generator=generator) for _ in range(reps)])[:count]


def correct_counts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int):
    """``(correct, samples)`` of each batch, in order: the counts behind :func:`accuracy`
    (the same batches of :func:`pgen.train.batch_logits`)."""
    for logits, labels in batch_logits(model, x, y, batch_size):
        yield int((logits.argmax(1) == labels).sum()), len(logits)


def settled_drop(base: float, runs, n: int, *, target: float, tolerance: float,
                 risk: float | None = None) -> tuple[float, int]:
    """``base`` minus the mean accuracy of ``len(runs)`` evaluations on ``n`` samples, stopped
    as soon as what is left to read can no longer decide what :func:`find_scale` does
    with it.

    ``runs`` are callables, each returning the batch counts of one evaluation
    (:func:`correct_counts`), started only when needed. After every batch the drop is
    bounded by counting every unseen sample as right (the least drop) or wrong (the most);
    once the least is ``>= target + tolerance`` (the step is above the target band) or the
    most ``<= target - tolerance`` (below it), the step is settled. With ``risk`` (several
    runs: Monte-Carlo draws), a step is also settled after each finished run from the
    third on when the runs not yet made would put the mean on the other side of the band
    edge with probability below ``risk``: a predictive Student-t interval for the mean of
    the remaining runs, from the finished runs' mean and standard deviation (at least the
    binomial standard deviation of one accuracy on ``n`` samples), which assumes the runs'
    accuracies roughly normal.

    A settled step returns the drop estimated from what was read (the finished runs'
    accuracies and the current run's accuracy on its samples read so far). That estimate
    lies outside the band on the settled side (between the deciding bound and the runs
    read; for a statistical settle, beyond the interval's edge), so :func:`find_scale`
    never stops on it: every scale it returns has its drop computed in full. Only the
    path to it depends on the early exits, exactly for the bounds and with probability
    ``risk`` per step for the statistical one.

    Returns the drop (exact, or the estimate of a settled step) and the number of runs started.
    """
    count = len(runs)
    done: list[float] = []  # accuracies of the finished runs, correct / n as accuracy() computes them
    for j, run in enumerate(runs):
        correct = seen = 0
        for c, m in run():
            correct, seen = correct + c, seen + m
            if seen >= n:
                break
            least = base - sum(done + [(correct + n - seen) / n] + [1.0] * (count - j - 1)) / count
            most = base - sum(done + [correct / n] + [0.0] * (count - j - 1)) / count
            if least >= target + tolerance or most <= target - tolerance:
                return base - sum(done + [correct / seen]) / (j + 1), j + 1
        done.append(correct / n)
        if risk is not None and 3 <= len(done) < count and _predicted_outside(base, done, count, n, target,
                                                                              tolerance, risk):
            return base - sum(done) / len(done), len(done)
    return base - sum(done) / count, count


def _predicted_outside(base: float, done: list[float], count: int, n: int, target: float, tolerance: float,
                       risk: float) -> bool:
    """Whether the mean drop of ``count`` runs, ``done`` of them finished, lies outside the
    band on the side of the finished runs' mean with probability >= 1 - ``risk``."""
    from scipy.stats import t as student_t

    j, k = len(done), count - len(done)
    mean = sum(done) / j
    sd = max(math.sqrt(sum((a - mean) ** 2 for a in done) / (j - 1)), math.sqrt(mean * (1 - mean) / n), 1 / n)
    half = student_t.ppf(1 - risk, j - 1) * sd * math.sqrt(1 / j + 1 / k) * k / count
    drop = base - mean
    return drop - half >= target + tolerance or drop + half <= target - tolerance


class LowerBound(float):
    """A drop that is only known to be at least this large (a witness of a step above the
    target band, e.g. an early iterate of sharpness's ascent); :func:`find_scale` takes its
    side as certain but does not read its size as the curve's height."""


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def find_scale(drop, *, target: float, tolerance: float, depth: int, ceiling: float, upper: float = 1.0,
               max_doublings: int = 10, slope: float = 2.5, max_jump: float = 8.0) -> float:
    """The perturbation scale whose accuracy ``drop(scale)`` is ``target`` (+- ``tolerance``).

    The search the flatness and sharpness measures share. Like the bisection it replaces
    (pgen before #37), it starts at ``upper``, doubles it (at most ``max_doublings`` times)
    until the drop reaches the target, stops at the first scale whose drop lies in the band
    ``|drop - target| < tolerance`` and otherwise returns the last scale tried after
    ``depth`` more; what it changes is where it looks. An accuracy drop grows with the
    scale as a logistic curve in log-scale, from 0 to about ``ceiling`` (the model's
    accuracy minus chance), over a factor of a few (on mnist5k's models the logit of
    ``drop / ceiling`` rises 2-4 per unit of ln(scale); ``slope`` = 2.5 is its typical value):

    * until a scale below the target is known, each step moves down from the smallest
      scale above it by the factor that curve predicts, between 2 and ``max_jump``
      (``max_jump`` when that drop is a :class:`LowerBound`; a model whose drop is
      saturated at scale 1 is reached in a few steps of 8, where halving took up to 10);
    * once the target is bracketed, the next scale interpolates the bracket linearly in
      (ln scale, logit(drop / ceiling)) (regula falsi on the curve), kept to the inner 80%
      of the bracket, and halves the bracket (in ln scale) when the same end moved twice
      in a row (the Illinois safeguard against one-sided convergence).

    It does not go below ``upper * 2**-depth``, the finest scale the bisection could reach:
    a model whose drop is still above the band there (for ``mag_sharpness``, a model whose
    box's absolute term alone costs more than the target) gets that scale, as it did from
    the bisection, instead of one that only says how far the search had got.

    ``drop`` may be noisy and return an estimate for steps far from the target
    (:func:`settled_drop`); only its side of the band and its rough size matter there.
    """
    top = max(ceiling, 1.5 * target)
    clip = lambda d: min(max(d / top, 1e-3), 1 - 1e-3)  # noqa: E731
    z_target = _logit(clip(target))
    below: tuple[float, float] | None = None  # (ln scale, drop) with drop < target
    above: tuple[float, float] | None = None  # (ln scale, drop) with drop >= target
    scale = upper
    for _ in range(max_doublings + 1):
        d = drop(scale)
        if abs(d - target) < tolerance:
            return scale
        if d >= target:
            above = (math.log(scale), d)
            break
        below = (math.log(scale), d)
        scale *= 2
    else:
        return scale / 2  # the target was never reached: the largest scale tried
    moved: list[str] = []
    floor = upper * 2.0 ** -depth
    ln_floor = math.log(floor)
    for _ in range(depth):
        if not isinstance(above[1], LowerBound):
            top = max(top, above[1])
        z_above = _logit(clip(above[1]))
        if below is None:
            if above[0] <= ln_floor:
                return floor  # above the band at the finest scale: the search's floor
            jump = min(max((z_above - z_target) / slope, math.log(2)), math.log(max_jump))
            if isinstance(above[1], LowerBound):
                jump = math.log(max_jump)
            ln_scale = max(above[0] - jump, ln_floor)
        else:
            z_below = _logit(clip(below[1]))
            t = (z_target - z_below) / (z_above - z_below) if z_above > z_below else 0.5
            t = 0.5 if moved[-2:] in (["above", "above"], ["below", "below"]) else min(max(t, 0.1), 0.9)
            ln_scale = below[0] + t * (above[0] - below[0])
        scale = floor if ln_scale == ln_floor else math.exp(ln_scale)
        d = drop(scale)
        if abs(d - target) < tolerance:
            return scale
        if d >= target:
            above, side = (ln_scale, d), "above"
        else:
            below, side = (ln_scale, d), "below"
        moved.append(side)
    return scale


def _bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Inference-mode BatchNorm as ``y = a * x + b`` per channel (float64), or None."""
    if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.track_running_stats:
        gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(bn.running_mean, dtype=torch.float64)
        beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(bn.running_mean, dtype=torch.float64)
        a = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
        return a, beta - a * bn.running_mean.double()
    if type(bn).__name__ == "BatchNormalization" and hasattr(bn, "moving_mean"):  # pgen's Keras port
        a = torch.rsqrt(bn.moving_variance.double() + bn.epsilon)
        if bn.gamma is not None:
            a = a * bn.gamma.detach().double()
        b = -a * bn.moving_mean.double()
        if bn.beta is not None:
            b = b + bn.beta.detach().double()
        return a, b
    return None


def _linear_core(layer: nn.Module) -> nn.Module | None:
    """The Conv/Linear a BatchNorm right after ``layer`` can fold into (none if an activation sits between)."""
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        return layer
    inner = getattr(layer, "conv", None) or getattr(layer, "linear", None)  # pgen's Keras Conv2D / Dense
    if isinstance(inner, (nn.Conv2d, nn.Linear)) and getattr(layer, "act", "missing") is None:
        return inner
    return None


def fold_batchnorm(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of ``model`` with every BatchNorm that directly follows a Conv/Linear inside a
    Sequential folded into that layer's weight and bias (as Jiang et al. 2020 do before
    norm measures). Inference outputs are unchanged; BatchNorms that cannot be folded
    (after an activation, or in a non-sequential block) stay. With ``dtype`` the copy is
    converted first (float64 keeps the folding exact for the measures)."""
    import copy

    model = copy.deepcopy(model)
    if dtype is not None:
        model = model.to(dtype)
    for container in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(container._modules)
        for prev, name in zip(names, names[1:]):
            core = _linear_core(container._modules[prev])
            affine = _bn_affine(container._modules[name])
            if core is None or affine is None:
                continue
            a, b = affine
            if a.numel() != core.weight.shape[0]:
                continue
            with torch.no_grad():
                w = core.weight.double() * a.view(-1, *([1] * (core.weight.dim() - 1)))
                bias = core.bias.double() if core.bias is not None else torch.zeros_like(a)
                core.weight.copy_(w.to(core.weight.dtype))
                core.bias = nn.Parameter((a * bias + b).to(core.weight.dtype))
            container._modules[name] = nn.Identity()
    return model


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) or type(m).__name__ == "BatchNormalization"
               for m in model.modules())
