"""Label variation on a latent geometry graph (Lassance et al. 2020; PGDL third place).

Faithful to the authors' code (cadurosar/pgdl, ``VPM_1/complexity.py``; paper:
"Ranking deep learning generalization using label variation in latent geometry graphs",
arXiv 2011.12737):

1. class-balanced samples: ``500 // C`` of each of the C classes (C = the model's output
   width), drawn at random within each class (a class with fewer samples is cycled);
2. input mixup with a partner of ANY class (a random permutation), lambda ~ Beta(2, 2)
   per sample, soft labels ``lambda * y + (1 - lambda) * y_partner``;
3. penultimate features (the last layer's input) of the mixed inputs, each row
   L2-normalised;
4. RBF similarities ``exp(-D / (3 std(D)))`` of the squared distances D (std over all
   entries of D), a binary DIRECTED 1-nearest-neighbour graph (each row keeps the entries
   at least its second-largest similarity, the diagonal cleared);
5. the normalised Laplacian ``L = I - D^-1/2 A D^-1/2`` (D: out-degrees) and the measure
   ``tr(Y^T L Y) / (4 * 500)``, clipped to [0, 1000] (the code's constant 500, whatever
   the number of samples).

Labels that vary across neighbouring latent points predict a larger gap: sign +1. The
draws use torch's generator (the code uses TF's and numpy's): same distributions.
"""

from __future__ import annotations

import torch

from pgen.features import extract_features
from pgen.measures import MeasureError, register
from pgen.measures._util import logits_of

TOTAL = 500  # the code's sample budget and its normalising constant


def class_balanced_indices(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """``TOTAL // num_classes`` random indices of each class, class by class."""
    per_class = TOTAL // num_classes
    if per_class == 0:
        raise MeasureError(f"label variation draws 500 // C samples per class; C = {num_classes} is too many")
    chosen = []
    for c in range(num_classes):
        idx = torch.nonzero(y == c).flatten()
        if len(idx) == 0:
            raise MeasureError(f"label variation needs samples of every class; class {c} has none in the data")
        order = torch.cat([idx[torch.randperm(len(idx), generator=generator)]
                           for _ in range(-(-per_class // len(idx)))])
        chosen.append(order[:per_class])
    return torch.cat(chosen)


def mixup_draws(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The partner permutation and lambda ~ Beta(2, 2) of each sample."""
    perm = torch.randperm(n, generator=generator)
    return perm, _beta22(n, generator)


def _beta22(n: int, generator: torch.Generator) -> torch.Tensor:
    # Beta(2, 2) as the median of three uniforms (an exact identity), so that the draw
    # follows the seeded generator (torch.distributions.Beta takes no generator).
    return torch.rand(n, 3, generator=generator, dtype=torch.float64).median(1).values


def latent_label_variation(features: torch.Tensor, soft_labels: torch.Tensor) -> float:
    """Steps 4-5 on given features (n, d) and soft labels (n, C), in float64."""
    f = features.double().reshape(len(features), -1)
    f = f / f.square().sum(1, keepdim=True).clamp_min(1e-12).sqrt()  # tf.math.l2_normalize
    r = f.square().sum(1, keepdim=True)
    d = r - 2 * f @ f.T + r.T  # the code's expansion of the squared distances
    sim = torch.exp(-d / (3 * d.std(correction=0).abs()))
    threshold = sim.topk(2, dim=1).values[:, -1:]
    adj = (sim >= threshold).double()
    adj.fill_diagonal_(0)
    deg = adj.sum(1).pow(-0.5)
    lap = torch.eye(len(f), dtype=torch.float64) - deg[:, None] * adj * deg[None, :]
    y = soft_labels.double()
    return float(torch.clamp(torch.trace(y.T @ lap @ y) / (4 * TOTAL), 0, 1000))


@register("label_variation", version=2, sign_reason='the code returns it as a complexity: labels that vary between latent neighbours predict a larger gap (Lassance et al. 2020)',
          sign=1, family="pgdl-third", stochastic=True,
          description="tr(Y^T L Y)/2000 on a directed 1-NN RBF graph of L2-normalised penultimate features of "
                      "Beta(2,2) mixups (any class, soft labels), 500 class-balanced samples",
          reference="Lassance et al. 2020, arXiv 2011.12737 (PGDL third place); code: cadurosar/pgdl "
                    "VPM_1/complexity.py")
def label_variation(model, init_model, data, settings) -> float:
    g = torch.Generator().manual_seed(settings.seed)
    num_classes = logits_of(model, data.x[:1], settings).shape[1]
    idx = class_balanced_indices(data.y, num_classes, g)
    x, y = data.x[idx], data.y[idx]
    perm, lam = mixup_draws(len(idx), g)
    lam_x = lam.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    mixed = lam_x * x + (1 - lam_x) * x[perm]
    one_hot = torch.nn.functional.one_hot(y, int(y.max()) + 1).double()  # the code's depth: max label + 1
    soft = lam[:, None] * one_hot + (1 - lam[:, None]) * one_hot[perm]
    feats = extract_features(model, (mixed, y), layers="penultimate", batch_size=settings.batch_size,
                             device=settings.device, allow_tf32=settings.allow_tf32)["penultimate"]
    return latent_label_variation(torch.from_numpy(feats), soft)
