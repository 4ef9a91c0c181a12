"""One evaluation protocol for every learned predictor: out-of-fold predictions.

* **Folds by the design's unit.** The models are split into ``folds`` parts by
  :func:`pgen.stats.resampling_unit`: whole hyperparameter cells (every seed and checkpoint
  of a cell in one part) where cells repeat, single models otherwise (a zoo whose runs drew
  their hyperparameters). No model, and no seed of a model's cell, is on both sides.
* **Seeds fixed and recorded.** The units are dealt to the folds in an order drawn from
  ``seed``; fold k trains with the seed ``SeedSequence([seed, k])`` gives; both are returned
  (and stored by the benchmark).
* **Predictions out of fold only.** Each model's prediction comes from the predictor fit
  on the other folds; those predictions are a column of the zoo's table and go through the
  same statistics as every measure (:func:`pgen.stats.measure_statistics`).
* **A control that can fail.** ``shuffle_target=True`` permutes the target across the
  models (by ``seed``) before anything is fit: the out-of-fold tau must then lie within
  its null; a pipeline that leaked test models into training would not.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pandas as pd
import torch

from pgen.errors import InputError
from pgen.learned.predictor import (PREDICTORS, _inputs, _load_models, _predict, _subset, _train, check_one_layout,
                                    models_to_learn, nfn_settings)

__all__ = ["fold_assignment", "fold_seed", "cross_validate", "r2_interval"]


def fold_seed(seed: int, fold: int) -> int:
    """The training seed of fold ``fold`` under the protocol's ``seed``.

    Parameters
    ----------
    seed : int
        The protocol's seed.
    fold : int
        The fold.

    Returns
    -------
    int
        A seed from ``numpy.random.SeedSequence([seed, fold])``.
    """
    return int(np.random.SeedSequence([int(seed), int(fold)]).generate_state(1)[0])


def fold_assignment(groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0 .. k-1) of each model: whole units dealt round-robin in a seeded order.

    Parameters
    ----------
    groups : numpy.ndarray of int
        The resampling unit of each model.
    folds : int
        Number of folds.
    seed : int
        Seed of the dealing order.

    Returns
    -------
    numpy.ndarray of int
        The fold of each model.
    """
    groups = np.asarray(groups)
    units = np.unique(groups)
    k = min(folds, len(units))
    if k < 2:
        raise InputError(f"out-of-fold predictions need at least 2 units (cells or models); got {len(units)}")
    order = np.random.default_rng(seed).permutation(units)
    fold_of_unit = dict(zip(order.tolist(), (np.arange(len(order)) % k).tolist()))
    return np.array([fold_of_unit[g] for g in groups.tolist()], dtype=np.int64)


def r2_interval(y: np.ndarray, pred: np.ndarray, unit, *, n_boot: int = 2000, seed: int = 0,
                level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of R^2 = 1 - SS_res / SS_tot over ``unit`` (a
    :class:`~pgen.stats.ResamplingUnit`): every resample's sums weighted by multiplicities.

    Parameters
    ----------
    y : numpy.ndarray
        The observed targets.
    pred : numpy.ndarray
        The out-of-fold predictions.
    unit : ResamplingUnit
        What the bootstrap resamples.
    n_boot : int, default=2000
        Bootstrap resamples.
    seed : int, default=0
        Seed of the resampling.
    level : float, default=0.95
        Coverage of the interval.

    Returns
    -------
    tuple of float
        ``(low, high)``.
    """
    rng = np.random.default_rng(seed)
    w = unit.weights(unit.draws(rng, n_boot))  # (B, n)
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    total = w.sum(1)
    mean = (w @ y) / total
    ss_tot = w @ (y ** 2) - total * mean ** 2
    ss_res = w @ ((y - pred) ** 2)
    r2 = 1 - ss_res / np.where(ss_tot > 0, ss_tot, np.nan)
    r2 = r2[np.isfinite(r2)]
    if len(r2) == 0:  # a constant target in every resample
        return math.nan, math.nan
    a = (1 - level) / 2
    return float(np.quantile(r2, a)), float(np.quantile(r2, 1 - a))


_JOB: dict = {}


def _fold_init(kind, mode, inputs, y, groups, folds_of, settings, device, seed):
    torch.set_num_threads(1)
    _JOB.update(kind=kind, mode=mode, inputs=inputs, y=y, groups=groups, folds_of=folds_of, settings=settings,
                device=device, seed=seed)


def _fold_work(k):
    j = _JOB
    return _run_fold(j["kind"], j["mode"], j["inputs"], j["y"], j["groups"], j["folds_of"], k, j["settings"],
                     j["device"], j["seed"])


def _run_fold(kind, mode, inputs, y, groups, folds_of, k, settings, device, seed):
    train_idx, test_idx = np.flatnonzero(folds_of != k), np.flatnonzero(folds_of == k)
    s = fold_seed(seed, k)
    t0 = time.perf_counter()
    state, record = _train(kind, mode, _subset(kind, inputs, train_idx), y[train_idx], groups[train_idx], seed=s,
                           settings=settings, device=device)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = _predict(kind, state, _subset(kind, inputs, test_idx), device)
    return k, test_idx, pred, {"fold": k, "seed": s, "train_models": len(train_idx), "test_models": len(test_idx),
                               "fit_seconds": fit_seconds, "predict_seconds": time.perf_counter() - t0, **record}


def cross_validate(zoo, table: pd.DataFrame | None = None, *, predictor: str = "statnn", target: str = "gap",
                   folds: int = 5, seed: int = 0, device: str = "cpu", workers: int = 1,
                   shuffle_target: bool = False, progress: bool = True, n_boot: int = 2000, **settings) -> dict:
    """Out-of-fold predictions of ``target`` under the protocol of the module docstring.

    Folds are dealt by the design's resampling unit (hyperparameter cells where cells hold
    several seeds, else models), in a seeded order; fold k's seed derives from ``seed``.

    Parameters
    ----------
    zoo : str, Path or Zoo
        The zoo whose models' weights are read.
    table : pandas.DataFrame, optional
        Targets per ``model_id`` (e.g. a scored run's table); default: the zoo's records.
    predictor : {"statnn", "nfn", "nfn_np"}, default="statnn"
        The learned predictor.
    target : str, default="gap"
        The column predicted (``gap``, ``test_acc``, ...).
    folds : int, default=5
        Number of folds.
    seed : int, default=0
        Seed of the fold assignment and of each fold's fit.
    device : str, default="cpu"
        Where the NFN trains.
    workers : int, default=1
        Folds fitted in parallel processes (one thread each).
    shuffle_target : bool, default=False
        The control: targets permuted before fitting (tau should then be near 0).
    progress : bool, default=True
        Show a progress bar.
    n_boot : int, default=2000
        Bootstrap resamples of the R^2 interval.
    **settings
        Override the NFN's training settings (``epochs``, ``batch_size``, ``lr``).

    Returns
    -------
    dict
        ``{"predictions": Series by model_id, "fold": Series by model_id, "kendall_tau",
        "r2", "r2_ci", "folds", "groups", "unit", "seed", "fold_records": [...],
        "fit_seconds", "predict_seconds_per_model", "predictor", "target", "shuffled"}``.

    Raises
    ------
    InputError
        When the models have more than one weight-space layout (the NFN), or the target
        is missing for too many models to fold.

    Examples
    --------
    The Python API page of the user guide runs this on a tiny zoo:

    >>> cv = cross_validate("smallcnn-mnist5k", predictor="statnn", target="gap")   # doctest: +SKIP
    >>> cv["kendall_tau"], cv["r2_ci"]                                            # doctest: +SKIP
    """
    import scipy.stats
    from sklearn.metrics import r2_score

    from pgen.executors import ProcessPool
    from pgen.stats import kendall_null_sd, resampling_unit

    zoo, t = models_to_learn(zoo, table, predictor, target, progress=progress)
    kind, mode = PREDICTORS[predictor]
    unit = resampling_unit(t)
    groups = unit.groups
    folds_of = fold_assignment(groups, folds, seed)
    y_true = t[target].to_numpy(float)
    y = np.random.default_rng([seed, 1]).permutation(y_true) if shuffle_target else y_true
    models = _load_models(zoo, t["model_id"], progress)
    layout = None
    if kind == "nfn":
        settings = nfn_settings(settings)
        layout = check_one_layout(models, [f"zoo {zoo.name}, model {mid}" for mid in t["model_id"]])
    inputs = _inputs(kind, models, layout)
    del models
    k = int(folds_of.max()) + 1
    pred = np.full(len(y), np.nan)
    records = []

    def record(out):
        fold, idx, p, rec = out
        pred[idx] = p
        records.append(rec)
        if bar is not None:
            bar.update(1)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=k, desc=f"{predictor} -> {target} on {zoo.name}", unit="fold")
    t0 = time.perf_counter()
    try:
        workers = max(1, min(workers, k, os.cpu_count() or 1))
        if workers > 1 and str(device) == "cpu":
            failures = []
            ProcessPool(workers).run([(f,) for f in range(k)], initializer=_fold_init,
                                     initargs=(kind, mode, inputs, y, groups, folds_of, settings, device, seed),
                                     work=_fold_work, record=record,
                                     failed=lambda job, message: failures.append(f"fold {job[0]}: {message}"))
            if failures:
                raise RuntimeError("; ".join(failures))
        else:
            for f in range(k):
                record(_run_fold(kind, mode, inputs, y, groups, folds_of, f, settings, device, seed))
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    records.sort(key=lambda r: r["fold"])
    ids = t["model_id"]
    tau = float(scipy.stats.kendalltau(pred, y).statistic)
    return {"predictor": predictor, "target": target, "shuffled": bool(shuffle_target),
            "predictions": pd.Series(pred, index=ids), "fold": pd.Series(folds_of, index=ids),
            "kendall_tau": tau, "r2": float(r2_score(y, pred)),
            "r2_ci": r2_interval(y, pred, unit, n_boot=n_boot, seed=seed), "folds": k, "groups": unit.count,
            "unit": unit.kind, "seed": int(seed), "fold_seeds": [r["seed"] for r in records],
            "fold_records": records, "settings": settings if kind == "nfn" else {},
            "fit_seconds": float(sum(r["fit_seconds"] for r in records)), "wall_seconds": wall,
            "predict_seconds_per_model": float(sum(r["predict_seconds"] for r in records) / len(y)),
            "models": int(len(y)), "tau_null_sd": kendall_null_sd(len(y))}
