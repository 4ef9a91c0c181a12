"""The PGDL third place's label variation on a latent graph (Schiff et al. 2020 style).

Penultimate features of within-class mixups (0.5/0.5) define a symmetric 1-nearest-
neighbour graph with RBF weights exp(-d^2 / s^2), s^2 the median squared neighbour
distance. With L = D - W and one-hot labels Y, the measure is tr(Y^T L Y) / n: the weight
of the edges that join different labels per sample. Labels that vary over the latent
graph predict a larger gap: sign +1.
"""

from __future__ import annotations

import torch

from pgen.features import extract_features
from pgen.measures import register
from pgen.measures._util import within_class_mixup


@register("label_variation", sign=1, family="pgdl-third", stochastic=True,
          description="tr(Y^T L Y)/n on a 1-NN RBF graph of penultimate features of within-class mixups",
          reference="PGDL third place (label variation on a latent kNN graph)")
def label_variation(model, init_model, data, settings) -> float:
    g = torch.Generator().manual_seed(settings.seed)
    mixed = within_class_mixup(data.x, data.y, g)
    f = torch.from_numpy(extract_features(model, (mixed, data.y), layers=settings.layer, batch_size=settings.batch_size,
                                          device=settings.device, allow_tf32=settings.allow_tf32)[settings.layer]).double()
    d2 = torch.cdist(f, f, compute_mode="donot_use_mm_for_euclid_dist").square()  # exact, not |a|^2+|b|^2-2ab
    d2.fill_diagonal_(float("inf"))
    nn_dist, nn_idx = d2.min(1)
    s2 = torch.quantile(nn_dist, 0.5).clamp_min(1e-12)  # the usual median (torch.median takes the lower middle)
    n = len(f)
    w = torch.zeros(n, n, dtype=torch.float64)
    w[torch.arange(n), nn_idx] = torch.exp(-nn_dist / s2)
    w = torch.maximum(w, w.T)
    y = torch.nn.functional.one_hot(data.y, data.num_classes).double()
    lap = torch.diag(w.sum(1)) - w
    return float(torch.trace(y.T @ lap @ y) / n)
