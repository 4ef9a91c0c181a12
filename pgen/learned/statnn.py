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
pgen's one protocol for every learned predictor (:mod:`pgen.learned.protocol`).
A fitted regressor is stored as arrays (:func:`trees_to_arrays`), never pickled.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

__all__ = ["statnn_features", "fit_trees", "trees_to_arrays", "predict_trees", "learned_baseline"]

_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _stats(t: torch.Tensor | None) -> list[float]:
    if t is None or t.numel() == 0:
        return [math.nan] * (2 + len(_QUANTILES))
    v = t.detach().double().flatten()
    return [float(v.mean()), float(v.var(unbiased=False))] + [float(q) for q in torch.quantile(
        v, torch.tensor(_QUANTILES, dtype=torch.float64))]


def statnn_features(model: torch.nn.Module) -> np.ndarray:
    """The fixed-length StatNN feature vector of one model (module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        Any model with parameters.

    Returns
    -------
    numpy.ndarray
        The feature vector (the same length for every model of one layer count).
    """
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


def fit_trees(x: np.ndarray, y: np.ndarray, *, seed: int = 0):
    """The StatNN regressor on feature rows ``x`` (scikit-learn's defaults, ``random_state=seed``)."""
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(random_state=seed).fit(np.nan_to_num(x, nan=0.0), y)


def trees_to_arrays(reg) -> tuple[dict[str, np.ndarray], dict]:
    """A fitted squared-error ``GradientBoostingRegressor`` as plain arrays (for safetensors)
    and numbers (for JSON): every tree's nodes laid end to end, so that a saved predictor
    needs no pickle. :func:`predict_trees` computes ``reg.predict`` from them."""
    if getattr(reg, "loss", "squared_error") != "squared_error" or reg.estimators_.shape[1] != 1:
        raise ValueError("only squared-error regressors with one output are stored")
    trees = [est.tree_ for est in reg.estimators_[:, 0]]
    offsets = np.cumsum([0] + [t.node_count for t in trees])
    def cat(get, dtype):
        return np.concatenate([get(t) for t in trees]).astype(dtype)
    arrays = {"tree_offsets": offsets.astype(np.int64),
              "children_left": cat(lambda t: t.children_left, np.int64),
              "children_right": cat(lambda t: t.children_right, np.int64),
              "feature": cat(lambda t: t.feature, np.int64),
              "threshold": cat(lambda t: t.threshold, np.float64),
              "value": cat(lambda t: t.value[:, 0, 0], np.float64)}
    init = float(np.ravel(reg.init_.constant_)[0])
    return arrays, {"init": init, "learning_rate": float(reg.learning_rate), "n_features": int(reg.n_features_in_)}


def predict_trees(arrays: dict[str, np.ndarray], meta: dict, x: np.ndarray) -> np.ndarray:
    """``reg.predict(x)`` of the regressor :func:`trees_to_arrays` stored (all trees walked
    at once: a sample goes left where its feature is <= the threshold, as scikit-learn)."""
    # scikit-learn compares float32 features with float64 thresholds
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0).astype(np.float32).astype(np.float64)
    if x.shape[1] != meta["n_features"]:
        raise ValueError(f"StatNN features: expected {meta['n_features']} per model; got {x.shape[1]}")
    roots = arrays["tree_offsets"][:-1]
    left, right, feat, thr = (arrays[k] for k in ("children_left", "children_right", "feature", "threshold"))
    node = np.broadcast_to(roots, (len(x), len(roots))).copy()  # (models, trees), global node ids
    rows = np.arange(len(x))[:, None]
    while True:
        child = left[node]
        leaf = child == -1
        if leaf.all():
            break
        local = np.where(x[rows, np.maximum(feat[node], 0)] <= thr[node], child, right[node])
        node = np.where(leaf, node, roots[None, :] + local)  # children are numbered within their tree
    return meta["init"] + meta["learning_rate"] * arrays["value"][node].sum(axis=1)


def learned_baseline(zoo, table: pd.DataFrame, *, target: str = "gap", folds: int = 5, seed: int = 0) -> dict:
    """Out-of-fold StatNN predictions of ``target`` (:func:`pgen.learned.cross_validate`).

    Returns ``{"predictions": Series by model_id, "kendall_tau", "r2", "folds", "groups", ...}``.

    Parameters
    ----------
    zoo : Zoo
        The zoo whose models' weights are read.
    table : pandas.DataFrame
        The targets per ``model_id``.
    target : str, default="gap"
        What is predicted.
    folds : int, default=5
        Number of folds.
    seed : int, default=0
        Seed of the protocol.

    Returns
    -------
    dict
        As :func:`pgen.learned.cross_validate`.
    """
    from pgen.learned.protocol import cross_validate

    return cross_validate(zoo, table, predictor="statnn", target=target, folds=folds, seed=seed, progress=False)
