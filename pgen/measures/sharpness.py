"""Worst-case sharpness (Jiang et al. 2020): ``sharpness`` (eq. 52) and ``mag_sharpness`` (eq. 60).

alpha' is the largest box in which a worst-case weight perturbation lowers the accuracy
on the data by at most 0.1 (+- 0.01), found by a search; the measure is 1/alpha'^2 (sharper models
score higher). The box is |nu_i| <= alpha' for ``sharpness`` and the magnitude-aware
|nu_i| <= alpha' |w_i| + eps (eps = 1e-3) for ``mag_sharpness``. The worst case is found
by projected gradient ascent on the cross-entropy of the first 256 samples: 10 sign steps
of a quarter of the box, from a random start in it.

Jiang et al. publish no code for these; the ascent's schedule (steps, step size, samples)
is pgen's reading of their description, hence "inspired by". Version 2 (#37) searches
alpha' with :func:`~pgen.measures._util.find_scale` instead of bisection (same stopping
band, fewer steps) and ends a step's ascent as soon as one of its iterates is a witness:
its accuracy on the 256 attack samples (read off the ascent's own forward pass) already
puts the drop on all samples at or above 0.1 + 0.01 whatever the other samples give. The
worst case in the box is then above the band, which is what the step asks; before, the
ascent ran its 10 steps regardless and the step looked at the last iterate only. And every
step starts the ascent from the same random point in units of the box (common random
numbers: the seed draws one start, scaled by each alpha), so the drop varies smoothly with
alpha and the search does not chase a fresh start's noise near the band; before, each step
drew its own start.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from pgen.measures import model_device, register
from pgen.measures._util import FLATNESS_SIGN, LowerBound, accuracy, correct_counts, find_scale, settled_drop

TARGET_DROP = 0.1
TOLERANCE = 0.01
DEPTH = 12
STEPS = 10
ATTACK_SAMPLES = 256  # the ascent runs on the first 256 samples; the accuracy drop is measured on all
EPS = 1e-3


def _witness(base: float, correct: int, seen: int, n: int) -> LowerBound | None:
    """The drop of an iterate that is right on ``correct`` of the first ``seen`` of ``n``
    samples, if that already settles it above the band: the unseen samples, all counted
    right, still leave a drop >= target + tolerance. None otherwise."""
    if base - (correct + n - seen) / n >= TARGET_DROP + TOLERANCE:
        return LowerBound(base - correct / seen)  # the ascent's last iterate would likely drop more
    return None


def _worst_case_drop(model, data, settings, alpha: float, base: float, magnitude_aware: bool = True) -> float:
    g = torch.Generator().manual_seed(settings.seed)  # the same random start (in units of the box) at every alpha
    pert = copy.deepcopy(model)  # on the model's device
    params = list(pert.parameters())
    originals = [p.detach().clone() for p in params]
    bounds = [alpha * w.abs() + EPS if magnitude_aware else torch.full_like(w, alpha) for w in originals]
    device = model_device(model)
    x, y = data.x[:ATTACK_SAMPLES].to(device).float(), data.y[:ATTACK_SAMPLES].to(device)
    with torch.no_grad():
        for p, w, b in zip(params, originals, bounds):
            p.copy_(w + (2 * torch.rand(w.shape, generator=g, device="cpu").to(w.device) - 1) * b)
    n = len(data.x)
    for _ in range(STEPS):
        pert.zero_grad(set_to_none=True)
        with torch.enable_grad():
            logits = pert(x)
            witness = _witness(base, int((logits.detach().argmax(1) == y).sum()), len(y), n)
            if witness is not None:
                return witness
            F.cross_entropy(logits, y).backward()
        with torch.no_grad():
            for p, w, b in zip(params, originals, bounds):
                if p.grad is not None:
                    p.add_(p.grad.sign() * b / 4)
                    p.copy_(torch.minimum(torch.maximum(p, w - b), w + b))
    run = lambda: correct_counts(pert, data.x, data.y, settings.batch_size)  # noqa: E731
    return settled_drop(base, [run], len(data.x), target=TARGET_DROP, tolerance=TOLERANCE)[0]


def _sharpness(model, data, settings, magnitude_aware: bool) -> float:
    base = accuracy(model, data.x, data.y, settings)
    alpha = find_scale(lambda a: _worst_case_drop(model, data, settings, a, base, magnitude_aware),
                       target=TARGET_DROP, tolerance=TOLERANCE, depth=DEPTH, ceiling=base - 1 / data.num_classes)
    return 1.0 / alpha ** 2


@register("sharpness", version=2, sign_reason=FLATNESS_SIGN,
          fidelity='inspired by', sign=1, family="flatness", stochastic=True,
          description="1/alpha^2, alpha = weight box |nu| <= alpha whose worst case costs 0.1 accuracy (searched)",
          reference="Jiang et al., ICLR 2020 (eq. 52, sharpness-flatness)")
def sharpness(model, init_model, data, settings) -> float:
    return _sharpness(model, data, settings, magnitude_aware=False)


@register("mag_sharpness", version=2, sign_reason=FLATNESS_SIGN,
          fidelity='inspired by', sign=1, family="flatness", stochastic=True,
          description="1/alpha^2, alpha = relative weight box whose worst case costs 0.1 accuracy (searched)",
          reference="Jiang et al., ICLR 2020 (eq. 60)")
def mag_sharpness(model, init_model, data, settings) -> float:
    return _sharpness(model, data, settings, magnitude_aware=True)
