"""Rank and linear association between a measure and a target: correlations with bootstrap
intervals over the design's unit, the paired difference of two measures' tau, the log-log
fit, Kendall's tau-b and tau-a, and Jiang et al.'s granulated Psi."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats

from pgen.errors import StatsError
from pgen.stats.resampling import (ResamplingUnit, bootstrap_p, check_level, check_resamples, percentile_interval,
                                   resampling_unit, weighted_correlations)

__all__ = ["bootstrap_ci", "correlations", "paired_tau_difference", "LogLogFit", "loglog_fit", "kendall_tau",
           "jiang_tau", "granulated_kendall"]


def _finite_rows(*columns, names) -> np.ndarray:
    arrays = [np.asarray(c, dtype=float) for c in columns]
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays) or len(shape) != 1:
        raise StatsError(f"{' and '.join(names)} must be 1-D of the same length; got "
                         f"{' and '.join(str(a.shape) for a in arrays)}")
    keep = np.ones(shape, dtype=bool)
    for a in arrays:
        keep &= np.isfinite(a)
    return keep


def _clean_pair(x, y, name_x="x", name_y="y", min_n=3, groups=None):
    """The finite pairs of x and y (and their unit), refusing too few or a constant column."""
    keep = _finite_rows(x, y, names=(name_x, name_y))
    x, y = np.asarray(x, float)[keep], np.asarray(y, float)[keep]
    if len(x) < min_n:
        raise StatsError(f"need at least {min_n} models with finite {name_x} and {name_y}; got {len(x)}")
    for arr, name in ((x, name_x), (y, name_y)):
        if np.ptp(arr) == 0:
            raise StatsError(f"{name} is constant over the {len(arr)} models: no correlation is defined")
    return x, y, _unit_of(groups, keep)


def _unit_of(groups, keep: np.ndarray) -> ResamplingUnit:
    if isinstance(groups, ResamplingUnit):
        if groups.n != len(keep):
            raise StatsError(f"the resampling unit covers {groups.n} models, the data {len(keep)}")
        return groups.subset(keep)
    if groups is None:
        return resampling_unit(n=int(keep.sum()))
    labels = list(groups)
    if len(labels) != len(keep):
        raise StatsError(f"groups has {len(labels)} labels for {len(keep)} models")
    return resampling_unit(groups=[g for g, k in zip(labels, keep) if k])


_METHODS = {
    "pearson": lambda x, y: scipy.stats.pearsonr(x, y),
    "spearman": lambda x, y: scipy.stats.spearmanr(x, y),
    "kendall": lambda x, y: scipy.stats.kendalltau(x, y),  # tau-b, ties handled
}
_WEIGHTED_UP_TO = 300  # models: the (B, n) x (n, n) products cost O(B n^2); past this a loop over scipy wins
_CHUNK = 2000  # resamples per block of the weighted statistics (bounds memory at B x n per block)


def bootstrap_ci(x, y, statistic, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0, groups=None):
    """Percentile bootstrap interval of ``statistic(x, y)``, resampling the design's unit
    (``groups``: cell labels or a :class:`ResamplingUnit`; default: models).

    Parameters
    ----------
    x, y : array-like
        Paired values, one per model.
    statistic : callable
        ``statistic(x, y) -> float``, e.g. :func:`kendall_tau`.
    n_boot : int, default=1000
        Bootstrap resamples.
    level : float, default=0.95
        Coverage of the interval.
    seed : int, default=0
        Seed of the resampling.
    groups : array-like or ResamplingUnit, optional
        The hyperparameter cell of each model (labels, or a :class:`ResamplingUnit`): the
        bootstrap resamples whole cells where one holds several models; default: models.

    Returns
    -------
    tuple of float
        ``(low, high)``.
    """
    n_boot, level = check_resamples(n_boot), check_level(level)
    x, y = np.asarray(x, float), np.asarray(y, float)
    unit = _unit_of(groups, np.ones(len(x), dtype=bool))
    return percentile_interval(_loop_statistics(x, y, statistic, unit, unit.draws(np.random.default_rng(seed), n_boot)),
                               level, n_boot)


def _loop_statistics(x, y, statistic, unit: ResamplingUnit, draws) -> np.ndarray:
    vals = np.full(len(draws), np.nan)
    for b, draw in enumerate(draws):
        idx = unit.indices(draw)
        xs, ys = x[idx], y[idx]
        if np.ptp(xs) > 0 and np.ptp(ys) > 0:  # a resample with a constant column has no correlation
            vals[b] = statistic(xs, ys)
    return vals


def _resampled(x, y, method: str, unit: ResamplingUnit, draws) -> np.ndarray:
    """The correlation of every resample (one per row of ``draws``)."""
    if len(x) > _WEIGHTED_UP_TO:
        fn = _METHODS[method]
        return _loop_statistics(x, y, lambda a, b: float(fn(a, b)[0]), unit, draws)
    return np.concatenate([weighted_correlations(x, y, unit.weights(draws[a:a + _CHUNK]), method)
                           for a in range(0, len(draws), _CHUNK)] or [np.empty(0)])


def correlations(x, y, *, methods=("pearson", "spearman", "kendall"), n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0, name_x: str = "measure", name_y: str = "target", groups=None) -> pd.DataFrame:
    """Pearson, Spearman and Kendall tau-b with p-values and bootstrap CIs.

    ``groups`` names the hyperparameter cell of each model (labels, or a
    :class:`~pgen.stats.resampling.ResamplingUnit`): the bootstrap then resamples whole
    cells wherever one holds several models (seeds are replicates, not independent
    models); without it, models.

    Parameters
    ----------
    x, y : array-like
        The measure and the target, one value per model (non-finite pairs are dropped).
    methods : sequence of str, default=("pearson", "spearman", "kendall")
        Which correlations.
    n_boot : int, default=1000
        Bootstrap resamples (0: no interval).
    level : float, default=0.95
        Coverage of the intervals.
    seed : int, default=0
        Seed of the resampling.
    name_x, name_y : str
        Labels of x and y.
    groups : array-like or ResamplingUnit, optional
        The hyperparameter cell of each model (labels, or a :class:`ResamplingUnit`): the
        bootstrap resamples whole cells where one holds several models; default: models.

    Returns
    -------
    pandas.DataFrame
        Columns method, value, p_value (scipy's, which takes the models as independent),
        p_boot (two-sided bootstrap p-value of 0, from the same resamples as the CI:
        :func:`~pgen.stats.resampling.bootstrap_p`), ci_low, ci_high, n, unit ("cells" or
        "models") and units (how many).

    Examples
    --------
    >>> x = np.arange(8.0); y = np.array([1.0, 0, 3, 2, 5, 4, 7, 6])
    >>> correlations(x, y, methods=("kendall",), n_boot=0)[["method", "value"]].round(3).values.tolist()
    [['kendall', 0.714]]
    """
    n_boot, level = check_resamples(n_boot), check_level(level)
    unknown = [m for m in methods if m not in _METHODS]
    if unknown:
        raise StatsError(f"unknown correlation(s) {unknown}; known: {', '.join(_METHODS)}")
    x, y, unit = _clean_pair(x, y, name_x, name_y, groups=groups)
    draws = unit.draws(np.random.default_rng(seed), n_boot)
    rows = []
    for m in methods:
        res = _METHODS[m](x, y)
        vals = _resampled(x, y, m, unit, draws)
        lo, hi = percentile_interval(vals, level, n_boot)
        rows.append({"method": m, "value": float(res[0]), "p_value": float(res[1]),
                     "p_boot": bootstrap_p(vals) if n_boot else math.nan, "ci_low": lo, "ci_high": hi, "n": len(x),
                     "unit": unit.kind, "units": unit.count})
    return pd.DataFrame(rows)


def paired_tau_difference(a, b, target, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                          groups=None) -> dict:
    """Kendall tau-b of ``a`` vs ``target`` minus that of ``b`` vs ``target``, with a paired
    percentile bootstrap interval (the same resamples for both, of the design's unit:
    ``groups`` as in :func:`correlations`), over the models where all three are finite.
    ``a`` and ``b`` are oriented values (sign x value), so a positive difference against the
    gap means ``a`` ranks the gap better. A measure constant over a resample ranks nothing
    there (tau 0).

    Returns ``{"diff", "ci_low", "ci_high", "p_value", "n", "unit", "units"}``: the
    difference is resolved when the interval excludes 0; ``p_value`` is the two-sided
    bootstrap p-value of 0.

    Parameters
    ----------
    a, b : array-like
        Two measures' oriented values, one per model.
    target : array-like
        The target, one value per model.
    n_boot : int, default=1000
        Bootstrap resamples.
    level : float, default=0.95
        Coverage of the interval.
    seed : int, default=0
        Seed of the resampling.
    groups : array-like or ResamplingUnit, optional
        The hyperparameter cell of each model (labels, or a :class:`ResamplingUnit`): the
        bootstrap resamples whole cells where one holds several models; default: models.

    Returns
    -------
    dict
        ``{"diff", "ci_low", "ci_high", "p_value", "n", "unit", "units"}``.
    """
    n_boot, level = check_resamples(n_boot), check_level(level)
    keep = _finite_rows(a, b, target, names=("a", "b", "target"))
    a, b, t = (np.asarray(v, dtype=float)[keep] for v in (a, b, target))
    unit = _unit_of(groups, keep)
    n = len(t)
    out = {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "n": n,
           "unit": unit.kind, "units": unit.count}
    if n < 3 or np.ptp(t) == 0:
        return out

    def tau(x):
        return float(scipy.stats.kendalltau(x, t).statistic) if np.ptp(x) > 0 else 0.0

    out["diff"] = tau(a) - tau(b)
    draws = unit.draws(np.random.default_rng(seed), n_boot)
    ta, tb = (np.nan_to_num(_resampled(v, t, "kendall", unit, draws), nan=0.0) for v in (a, b))
    diffs = np.where(_target_varies(t, unit, draws), ta - tb, np.nan)
    out["ci_low"], out["ci_high"] = percentile_interval(diffs, level, n_boot)
    if n_boot:
        out["p_value"] = bootstrap_p(diffs)
    return out


def _target_varies(t, unit: ResamplingUnit, draws) -> np.ndarray:
    """Per resample: does the target take two or more values (else no tau is defined)."""
    w = unit.weights(draws) > 0
    return np.where(w, t, np.inf).min(1) < np.where(w, t, -np.inf).max(1)


@dataclass(frozen=True)
class LogLogFit:
    """OLS of log(y) on log(x) with HC3 standard errors, or cluster-robust ones by cell.

    Parameters
    ----------
    slope, intercept : float
        b and a of ``log y = a + b log x``.
    r2 : float
        R^2 of the fit.
    slope_ci, intercept_ci : tuple of float
        Confidence intervals at the fit's level.
    slope_p : float
        p-value of slope = 0 under the robust errors.
    n : int
        Pairs fitted.
    x_name, y_name : str
        What x and y are.
    errors : str, default="HC3"
        The standard errors used (``HC3`` or ``cluster``).
    """

    slope: float
    intercept: float
    r2: float
    slope_ci: tuple[float, float]
    intercept_ci: tuple[float, float]
    slope_p: float
    n: int
    x_name: str
    y_name: str
    errors: str = "HC3"

    def predict(self, x, *, interval: bool = False, level: float = 0.95):
        """Fitted y (original scale) and, with ``interval``, a CI band for the mean."""
        lx = np.log(np.asarray(x, dtype=float))
        fit = np.exp(self.intercept + self.slope * lx)
        if not interval:
            return fit
        pred = self._model.get_prediction(np.column_stack([np.ones_like(lx), lx]))
        lo, hi = pred.conf_int(alpha=1 - level).T
        return fit, np.exp(lo), np.exp(hi)

    def as_dict(self) -> dict:
        return {"x": self.x_name, "y": self.y_name, "slope": self.slope, "intercept": self.intercept, "r2": self.r2,
                "slope_ci_low": self.slope_ci[0], "slope_ci_high": self.slope_ci[1],
                "intercept_ci_low": self.intercept_ci[0], "intercept_ci_high": self.intercept_ci[1],
                "slope_p": self.slope_p, "n": self.n, "errors": self.errors}


def loglog_fit(x, y, *, level: float = 0.95, name_x: str = "x", name_y: str = "y", groups=None) -> LogLogFit:
    """Fit ``log y = a + b log x`` by OLS (statsmodels) with robust standard errors: HC3,
    or, where ``groups`` puts several models (seeds) in one hyperparameter cell,
    cluster-robust errors by cell (statsmodels' ``cluster``, with its small-sample
    correction), since seeds of one cell are not independent observations.

    Both columns must be positive; non-finite pairs are dropped.

    Parameters
    ----------
    x, y : array-like
        Positive values, one per model.
    level : float, default=0.95
        Coverage of the intervals.
    name_x, name_y : str
        Labels of x and y.
    groups : array-like or ResamplingUnit, optional
        The hyperparameter cell of each model (labels, or a :class:`ResamplingUnit`): the
        bootstrap resamples whole cells where one holds several models; default: models.

    Returns
    -------
    LogLogFit
        Slope, intercept, R^2, their intervals and the errors used.

    Raises
    ------
    StatsError
        With fewer than three finite pairs, a constant column or a value <= 0.
    """
    import statsmodels.api as sm

    level = check_level(level)
    x, y, unit = _clean_pair(x, y, name_x, name_y, groups=groups)
    if (x <= 0).any() or (y <= 0).any():
        bad = name_x if (x <= 0).any() else name_y
        raise StatsError(f"log-log fit needs positive values; {bad} has values <= 0")
    lx, ly = np.log(x), np.log(y)
    design = sm.add_constant(lx)
    if unit.kind == "cells":
        model = sm.OLS(ly, design).fit(cov_type="cluster", cov_kwds={"groups": unit.groups})
        errors = f"cluster-robust by cell ({unit.count} cells)"
    else:
        model = sm.OLS(ly, design).fit(cov_type="HC3")
        errors = "HC3"
    ci = model.conf_int(alpha=1 - level)
    fit = LogLogFit(float(model.params[1]), float(model.params[0]), float(model.rsquared),
                    (float(ci[1][0]), float(ci[1][1])), (float(ci[0][0]), float(ci[0][1])),
                    float(model.pvalues[1]), len(x), name_x, name_y, errors)
    object.__setattr__(fit, "_model", model)
    return fit


def kendall_tau(x, y) -> float:
    """Kendall's tau-b (scipy; ties handled), the overall ranking agreement in pgen's tables.

    Parameters
    ----------
    x, y : array-like
        Paired values.

    Returns
    -------
    float
        tau-b in [-1, 1].

    Raises
    ------
    StatsError
        With fewer than two finite pairs, or a constant column.
    """
    x, y, _ = _clean_pair(x, y, min_n=2)
    return float(scipy.stats.kendalltau(x, y)[0])


def jiang_tau(x, y) -> float:
    """Jiang et al.'s (ICLR 2020, eq. 3) Kendall coefficient: the mean over ordered pairs
    i != j of sign(x_i - x_j) sign(y_i - y_j), i.e. Kendall's tau-a. A tie contributes 0,
    so a constant column gives 0 (scipy's tau-b, :func:`kendall_tau`, divides by the
    untied pairs instead, and is undefined on a constant column).

    Parameters
    ----------
    x, y : array-like
        Paired values.

    Returns
    -------
    float
        tau-a in [-1, 1].

    Raises
    ------
    StatsError
        With fewer than two values.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 2:
        raise StatsError("Kendall's tau needs at least 2 values")
    sx, sy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    return float((sx * sy).sum() / (n * (n - 1)))


def granulated_kendall(scores: Mapping[str, float], hparams: Mapping[str, Mapping[str, object]],
                       target: Mapping[str, float]) -> dict:
    """Granulated Kendall coefficient Psi (Jiang et al., ICLR 2020, eq. 4).

    For each hparam i: psi_i is the mean, over the groups of models whose OTHER hparams
    are all equal, of Jiang et al.'s tau (tau-a, :func:`jiang_tau`) between score and
    target inside the group; a group where the score or the target is constant counts as
    tau = 0, as in their definition (groups of one model have no pairs and are skipped).
    Psi = mean of psi_i.

    Returns ``{"psi": Psi, "per_hparam": {name: psi_i}}``.

    Parameters
    ----------
    scores : Mapping[str, float]
        Model id to the (oriented) measure value.
    hparams : Mapping[str, Mapping[str, object]]
        Model id to its hyperparameters.
    target : Mapping[str, float]
        Model id to the target (the gap).

    Returns
    -------
    dict
        ``{"psi": Psi, "per_hparam": {name: psi_i}}``.
    """
    ids = [m for m in scores if m in hparams and m in target]
    if len(ids) < 2:
        raise StatsError(f"granulated Kendall needs at least 2 models with scores, hparams and targets; got {len(ids)}")
    names = sorted({h for m in ids for h in hparams[m]})
    per = {}
    for h in names:
        groups: dict[tuple, list[str]] = {}
        for m in ids:
            key = tuple(str(hparams[m].get(o)) for o in names if o != h)
            groups.setdefault(key, []).append(m)
        taus = []
        for members in groups.values():
            if len(members) < 2:
                continue
            taus.append(jiang_tau([scores[m] for m in members], [target[m] for m in members]))
        per[h] = float(np.mean(taus)) if taus else math.nan
    finite = [v for v in per.values() if np.isfinite(v)]
    return {"psi": float(np.mean(finite)) if finite else math.nan, "per_hparam": per}
