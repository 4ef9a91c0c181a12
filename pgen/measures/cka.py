"""Linear CKA (Kornblith et al. 2019) of the model's penultimate features to a reference.

``linear_cka`` is the similarity index itself (plain and debiased), for any pair of
feature matrices over the same samples (e.g. a model and a reference model of your
choice). Two registered measures use references every zoo has:

* ``cka_to_data``: the raw inputs, a representation-level counterpart of the P-vector
  angle; higher similarity to the data predicts better generalization (sign -1);
* ``cka_to_init``: the same architecture at its initial weights (same layer); a
  representation that stayed close to its initialization predicts a smaller gap, as a
  small distance from init does (sign -1).
"""

from __future__ import annotations

import numpy as np

from pgen.features import extract_features
from pgen.measures import MeasureError, register


def linear_cka(x: np.ndarray, y: np.ndarray, *, debiased: bool = False) -> float:
    """Linear CKA of two (n, d1), (n, d2) feature matrices, float64."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise MeasureError(f"linear CKA needs the same samples: {x.shape[0]} vs {y.shape[0]} rows")
    x = x - x.mean(0)
    y = y - y.mean(0)
    if not debiased:
        xy = np.linalg.norm(x.T @ y) ** 2
        return float(xy / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))
    # the unbiased HSIC estimator (Song et al. 2012) on Gram matrices with zeroed diagonals
    n = x.shape[0]

    def hsic(k, l):
        k, l = k.copy(), l.copy()
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l, 0)
        return (np.sum(k * l) + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2 * (k.sum(0) @ l.sum(0)) / (n - 2)) / (n * (n - 3))

    kx, ky = x @ x.T, y @ y.T
    return float(hsic(kx, ky) / np.sqrt(hsic(kx, kx) * hsic(ky, ky)))


@register("cka_to_data", sign_reason="pgen's hypothesis, by analogy with the P-vector angle: features more similar to the inputs' geometry generalize better; no published source",
          fidelity="pgen's own", sign=-1, family="representation", samples="shared",
          description="linear CKA between penultimate features and the raw inputs",
          reference="Kornblith et al., ICML 2019")
def cka_to_data(model, init_model, data, settings) -> float:
    f = extract_features(model, (data.x, data.y), layers=settings.layer, batch_size=settings.batch_size,
                         device=settings.device, allow_tf32=settings.allow_tf32)[settings.layer]
    return linear_cka(f, data.x.reshape(len(data.x), -1).numpy())


@register("cka_to_init", sign_reason="pgen's hypothesis: features that moved less from initialisation generalize better (cf. distance from init); no published source",
          fidelity="pgen's own", sign=-1, needs_init=True, family="representation", samples="shared",
          description="linear CKA between penultimate features of the model and of its initialization",
          reference="Kornblith et al., ICML 2019")
def cka_to_init(model, init_model, data, settings) -> float:
    def feats(m):
        return extract_features(m, (data.x, data.y), layers=settings.layer, batch_size=settings.batch_size,
                                device=settings.device, allow_tf32=settings.allow_tf32)[settings.layer]

    return linear_cka(feats(model), feats(init_model))
