"""PAC-Bayes flatness measures (Jiang et al. 2020, eqs. 53 and 61).

sigma is found by bisection so that Gaussian weight noise lowers the model's accuracy on
the data by 0.1 (mean over Monte-Carlo draws):

* ``pacbayes_flatness``      1 / sigma^2, noise N(0, sigma^2) on every parameter;
* ``pacbayes_mag_flatness``  1 / sigma'^2, magnitude-aware noise N(0, sigma'^2 w^2 + eps^2),
  eps = 1e-3.

A flatter model tolerates more noise (larger sigma), so larger values mean sharper: sign +1.
"""

from __future__ import annotations

import copy

import torch

from pgen.measures import register
from pgen.measures._util import accuracy, bisect_scale

TARGET_DROP = 0.1
TOLERANCE = 0.01
DEPTH = 15
DRAWS = 3
MAG_EPS = 1e-3


def noise_sigma(model, data, settings, *, magnitude_aware: bool, upper: float = 1.0) -> float:
    """Bisection for the noise scale whose accuracy drop is TARGET_DROP (+- TOLERANCE)."""
    base = accuracy(model, data.x, data.y, settings)
    g = torch.Generator().manual_seed(settings.seed)
    noisy = copy.deepcopy(model)
    originals = [p.detach().clone() for p in model.parameters()]

    def drop(sigma: float) -> float:
        accs = []
        for _ in range(DRAWS):
            with torch.no_grad():
                for p, w in zip(noisy.parameters(), originals):
                    z = torch.randn(w.shape, generator=g, dtype=w.dtype, device="cpu").to(w.device)
                    scale = torch.sqrt(sigma ** 2 * w ** 2 + MAG_EPS ** 2) if magnitude_aware else sigma
                    p.copy_(w + z * scale)
            accs.append(accuracy(noisy, data.x, data.y, settings))
        return base - sum(accs) / len(accs)

    return bisect_scale(drop, target=TARGET_DROP, tolerance=TOLERANCE, depth=DEPTH, upper=upper)


@register("pacbayes_flatness", sign=1, family="flatness", stochastic=True,
          description="1/sigma^2, sigma = Gaussian weight noise that costs 0.1 accuracy (bisection)",
          reference="Jiang et al., ICLR 2020 (eq. 53)")
def pacbayes_flatness(model, init_model, data, settings) -> float:
    return 1.0 / noise_sigma(model, data, settings, magnitude_aware=False) ** 2


@register("pacbayes_mag_flatness", sign=1, family="flatness", stochastic=True,
          description="1/sigma'^2, magnitude-aware noise N(0, sigma'^2 w^2 + 1e-6) that costs 0.1 accuracy",
          reference="Jiang et al., ICLR 2020 (eq. 61)")
def pacbayes_mag_flatness(model, init_model, data, settings) -> float:
    return 1.0 / noise_sigma(model, data, settings, magnitude_aware=True) ** 2
