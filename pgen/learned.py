"""A learned baseline from the weights alone: Unterthiner et al. 2020, "Predicting Neural
Network Accuracy from Weights" (arXiv:2002.11448), "StatNN".

Their features: for each layer, the mean, variance and the 0, 25, 50, 75 and 100
percentiles of its weights and of its biases; a gradient-boosted tree regressor maps them
to the target. Their zoos have one architecture each, so every model has the same layers.
pgen's zoos vary depth, so the per-layer features are taken at fixed positions: the
first layer, the last layer, and the hidden layers between pooled into one set of
statistics (deviation, stated: with a fixed architecture it is their feature set with the
hidden layers pooled), plus the number of parameters. The regressor is scikit-learn's
``GradientBoostingRegressor`` (their code used LightGBM; same model family).

Evaluation as the paper: trained on part of the zoo, tested on held-out models; here
``GroupKFold`` cross-validation grouped by hyperparameter cell (all hparams but the seed),
so that seeds of one cell never sit on both sides; the out-of-fold predictions are scored
with Kendall tau and R^2 against the target.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

__all__ = ["statnn_features", "learned_baseline"]

_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _stats(t: torch.Tensor | None) -> list[float]:
    if t is None or t.numel() == 0:
        return [math.nan] * (2 + len(_QUANTILES))
    v = t.detach().double().flatten()
    return [float(v.mean()), float(v.var(unbiased=False))] + [float(q) for q in torch.quantile(
        v, torch.tensor(_QUANTILES, dtype=torch.float64))]


def statnn_features(model: torch.nn.Module) -> np.ndarray:
    """The fixed-length StatNN feature vector of one model (module docstring)."""
    layers = [m for m in model.modules() if isinstance(getattr(m, "weight", None), torch.Tensor)
              and m.weight.dim() >= 2]
    if not layers:
        raise ValueError("StatNN features need at least one layer with a weight matrix or kernel")

    def bias(m):
        return m.bias if isinstance(getattr(m, "bias", None), torch.Tensor) else None

    hidden = layers[1:-1]
    hidden_w = torch.cat([m.weight.detach().flatten() for m in hidden]) if hidden else None
    hidden_b = [bias(m).detach().flatten() for m in hidden if bias(m) is not None]
    feats = (_stats(layers[0].weight) + _stats(bias(layers[0])) + _stats(layers[-1].weight) + _stats(bias(layers[-1]))
             + _stats(hidden_w) + _stats(torch.cat(hidden_b) if hidden_b else None))
    feats.append(float(sum(p.numel() for p in model.parameters())))
    return np.asarray(feats, dtype=float)


def learned_baseline(zoo, table: pd.DataFrame, *, target: str = "gap", folds: int = 5, seed: int = 0) -> dict:
    """Out-of-fold StatNN predictions of ``target`` for the models of ``table`` (rows with
    ``model_id`` and ``hp.*`` columns), cross-validated by hyperparameter cell.

    Returns ``{"predictions": Series by model_id, "kendall_tau", "r2", "folds", "groups"}``.
    """
    import scipy.stats
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GroupKFold

    sub = table[np.isfinite(table[target].to_numpy(float))].reset_index(drop=True)
    x = np.stack([statnn_features(zoo[mid].load_model()) for mid in sub["model_id"]])
    x = np.nan_to_num(x, nan=0.0)  # a model without hidden layers: its hidden statistics are 0
    y = sub[target].to_numpy(float)
    hp_cols = [c for c in sub.columns if c.startswith("hp.") and c != "hp.seed"]
    groups = (pd.factorize(sub[hp_cols].astype(str).agg("|".join, axis=1))[0] if hp_cols
              else np.arange(len(sub)))
    n_groups = len(set(groups))
    k = min(folds, n_groups)
    if k < 2:
        raise ValueError(f"the learned baseline needs at least 2 hyperparameter cells; got {n_groups}")
    pred = np.empty(len(y))
    for train_idx, test_idx in GroupKFold(n_splits=k).split(x, y, groups):
        reg = GradientBoostingRegressor(random_state=seed).fit(x[train_idx], y[train_idx])
        pred[test_idx] = reg.predict(x[test_idx])
    return {"predictions": pd.Series(pred, index=sub["model_id"]),
            "kendall_tau": float(scipy.stats.kendalltau(pred, y).statistic), "r2": float(r2_score(y, pred)),
            "folds": k, "groups": n_groups}
