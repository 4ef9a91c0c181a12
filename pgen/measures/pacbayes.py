"""PAC-Bayes measures (Jiang et al. 2020, eqs. 48, 49, 53, 56, 57, 61).

sigma is the noise level at which Gaussian weight noise lowers the model's accuracy on
the data by 0.1 +- 0.01 (the mean over 10 Monte-Carlo draws, as Dziugaite et al.'s
reference code, robust-generalization-measures ``_pacbayes_sigma``, computes it). The
reference code searches for it by bisection; since version 3 (#37) pgen searches with
:func:`~pgen.measures._util.find_scale`, which stops on the same band in fewer steps (a
deviation in where in the band the search lands, not in what it accepts), and a step far
from the band stops after 3 or more of its 10 draws once a predictive Student-t interval
puts the 10-draw mean outside the band (a wrong side with probability 1%, which costs the
search steps, not accuracy: the sigma returned always has its 10 draws in full,
:func:`~pgen.measures._util.settled_drop`). The 10 draws are common random numbers:
draw j is the same standard normal z_j (seeded by the measure's seed and j) at every
sigma, scaled by it, so the 10-draw mean varies smoothly with sigma and the search does
not chase fresh noise near the band (the reference code draws afresh at every step; its
estimator at any one sigma is the same):

* ``pacbayes_flatness``      1 / sigma^2, noise N(0, sigma^2) on every parameter (eq. 53);
* ``pacbayes_mag_flatness``  1 / sigma'^2, magnitude-aware noise N(0, sigma'^2 w^2 + eps^2),
  eps = 1e-3 (eq. 61);
* ``pacbayes_init`` / ``pacbayes_orig`` (eqs. 48, 49)
  ||w - w0||^2 / (4 sigma^2) + log(m / sigma) + 10, resp. with ||w||^2;
* ``pacbayes_mag_init`` / ``pacbayes_mag_orig`` (eqs. 56, 57)
  1/4 sum_i log((eps^2 + (sigma'^2 + 1) ||v||^2 / omega) / (eps^2 + sigma'^2 (w_i - w0_i)^2))
  + log(m / sigma') + 10, with v = w - w0 (init) or w (orig).

w are the Conv/Linear kernels after folding BatchNorm (biases excluded, as the reference
code's ``get_weights_only``), omega their number, m the model's training-set size
(``MeasureData.train_size``). The noise follows the paper's definition (standard
deviation sigma); the reference code draws with standard deviation sigma^2. A flatter
model tolerates more noise (larger sigma), so larger values mean sharper: sign +1; the
bounds grow with complexity: sign +1.
"""

from __future__ import annotations

import copy
import math

import torch

from pgen.measures import MeasureError, register
from pgen.measures._util import (BOUND_SIGN, FLATNESS_SIGN, accuracy, channels_last_on_cpu, correct_counts, find_scale,
                                 settled_drop, weight_matrices)

TARGET_DROP = 0.1
TOLERANCE = 0.01
DEPTH = 15
DRAWS = 10  # Monte-Carlo draws per noise level, as the reference code
SETTLE_RISK = 0.01  # a step far from the band may stop after 3 draws (settled_drop), wrong with this probability
MAG_EPS = 1e-3


def noise_sigma(model, data, settings, *, magnitude_aware: bool, upper: float = 1.0) -> float:
    """Bisection for the noise scale whose accuracy drop is TARGET_DROP (+- TOLERANCE).

    Kept for the model last asked about (the flatness and bound measures share it)."""
    key = ("pacbayes_sigma", magnitude_aware, settings.seed, upper)
    fingerprint = [p.detach().clone() for p in model.parameters()]
    cached = data.cache.get(key)
    if cached is not None and cached[0] is model and all(torch.equal(a, b) for a, b in zip(cached[1], fingerprint)):
        return cached[2]
    sigma = _noise_sigma(model, data, settings, magnitude_aware=magnitude_aware, upper=upper)
    data.cache[key] = (model, fingerprint, sigma)
    return sigma


def _noise_sigma(model, data, settings, *, magnitude_aware: bool, upper: float) -> float:
    base = accuracy(model, data.x, data.y, settings)
    noisy = copy.deepcopy(model)
    channels_last_on_cpu(noisy, data.x[:2])  # the draws run forward passes only: see its docstring
    originals = [p.detach().clone() for p in model.parameters()]

    def drop(sigma: float) -> float:
        def draw(j: int):
            g = torch.Generator().manual_seed(settings.seed * DRAWS + j)  # draw j: the same z at every sigma
            with torch.no_grad():
                for p, w in zip(noisy.parameters(), originals):
                    z = torch.randn(w.shape, generator=g, dtype=w.dtype, device="cpu").to(w.device)
                    scale = torch.sqrt(sigma ** 2 * w ** 2 + MAG_EPS ** 2) if magnitude_aware else sigma
                    p.copy_(w + z * scale)
            return correct_counts(noisy, data.x, data.y, settings.batch_size)

        runs = [lambda j=j: draw(j) for j in range(DRAWS)]
        return settled_drop(base, runs, len(data.x), target=TARGET_DROP, tolerance=TOLERANCE, risk=SETTLE_RISK)[0]

    return find_scale(drop, target=TARGET_DROP, tolerance=TOLERANCE, depth=DEPTH, upper=upper,
                      ceiling=base - 1 / data.num_classes)


@register("pacbayes_flatness", version=3, sign_reason=FLATNESS_SIGN,
          size_term='sqrt', sign=1, family="flatness", stochastic=True,
          description="1/sigma^2, sigma = Gaussian weight noise that costs 0.1 accuracy (searched)",
          reference="Jiang et al., ICLR 2020 (eq. 53)")
def pacbayes_flatness(model, init_model, data, settings) -> float:
    return 1.0 / noise_sigma(model, data, settings, magnitude_aware=False) ** 2


@register("pacbayes_mag_flatness", version=3, sign_reason=FLATNESS_SIGN,
          size_term='sqrt', sign=1, family="flatness", stochastic=True,
          description="1/sigma'^2, magnitude-aware noise N(0, sigma'^2 w^2 + 1e-6) that costs 0.1 accuracy",
          reference="Jiang et al., ICLR 2020 (eq. 61)")
def pacbayes_mag_flatness(model, init_model, data, settings) -> float:
    return 1.0 / noise_sigma(model, data, settings, magnitude_aware=True) ** 2


def _kernels(model) -> torch.Tensor:
    return torch.cat([w.reshape(-1) for w in weight_matrices(model)])


def _train_size(data, name: str) -> int:
    if not data.train_size:
        raise MeasureError(f"{name} needs the model's training-set size m (MeasureData.train_size), "
                           "which this zoo does not record")
    return data.train_size


def pacbayes_bound(sq_norm: float, sigma: float, m: int) -> float:
    """Jiang et al. eqs. 48/49: ||v||^2 / (4 sigma^2) + log(m / sigma) + 10."""
    return sq_norm / (4 * sigma ** 2) + math.log(m / sigma) + 10


def pacbayes_mag_bound(v: torch.Tensor, dist: torch.Tensor, sigma: float, m: int) -> float:
    """Jiang et al. eqs. 56/57 (v: w - w0 or w; dist: w - w0, elementwise)."""
    omega = len(dist)
    num = MAG_EPS ** 2 + (sigma ** 2 + 1) * float(v.square().sum()) / omega
    den = MAG_EPS ** 2 + sigma ** 2 * dist.square()
    return float(0.25 * torch.log(num / den).sum()) + math.log(m / sigma) + 10


@register("pacbayes_init", version=2, sign_reason=BOUND_SIGN, size_term="sqrt", sign=1, family="pac-bayes", stochastic=True,
          needs_init=True, description="||w - w0||^2 / (4 sigma^2) + log(m / sigma) + 10 (sigma as pacbayes_flatness)",
          reference="Jiang et al., ICLR 2020 (eq. 48); Dziugaite et al. 2020 code (PACBAYES_INIT)")
def pacbayes_init(model, init_model, data, settings) -> float:
    sigma = noise_sigma(model, data, settings, magnitude_aware=False)
    sq = float((_kernels(model) - _kernels(init_model)).square().sum())
    return pacbayes_bound(sq, sigma, _train_size(data, "pacbayes_init"))


@register("pacbayes_orig", version=2, sign_reason=BOUND_SIGN, size_term="sqrt", sign=1, family="pac-bayes", stochastic=True,
          description="||w||^2 / (4 sigma^2) + log(m / sigma) + 10 (sigma as pacbayes_flatness)",
          reference="Jiang et al., ICLR 2020 (eq. 49); Dziugaite et al. 2020 code (PACBAYES_ORIG)")
def pacbayes_orig(model, init_model, data, settings) -> float:
    sigma = noise_sigma(model, data, settings, magnitude_aware=False)
    return pacbayes_bound(float(_kernels(model).square().sum()), sigma, _train_size(data, "pacbayes_orig"))


@register("pacbayes_mag_init", version=2, sign_reason=BOUND_SIGN, size_term="sqrt", sign=1, family="pac-bayes",
          stochastic=True, needs_init=True,
          description="magnitude-aware PAC-Bayes bound around the initial weights (sigma' as pacbayes_mag_flatness)",
          reference="Jiang et al., ICLR 2020 (eq. 56); Dziugaite et al. 2020 code (PACBAYES_MAG_INIT)")
def pacbayes_mag_init(model, init_model, data, settings) -> float:
    sigma = noise_sigma(model, data, settings, magnitude_aware=True)
    dist = _kernels(model) - _kernels(init_model)
    return pacbayes_mag_bound(dist, dist, sigma, _train_size(data, "pacbayes_mag_init"))


@register("pacbayes_mag_orig", version=2, sign_reason=BOUND_SIGN, size_term="sqrt", sign=1, family="pac-bayes",
          stochastic=True, needs_init=True,
          description="magnitude-aware PAC-Bayes bound around the origin (sigma' as pacbayes_mag_flatness)",
          reference="Jiang et al., ICLR 2020 (eq. 57); Dziugaite et al. 2020 code (PACBAYES_MAG_ORIG)")
def pacbayes_mag_orig(model, init_model, data, settings) -> float:
    sigma = noise_sigma(model, data, settings, magnitude_aware=True)
    w = _kernels(model)
    return pacbayes_mag_bound(w, w - _kernels(init_model), sigma, _train_size(data, "pacbayes_mag_orig"))
