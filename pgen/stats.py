"""Statistics relating a measure to generalization: one implementation of each, shared.

Correlations with p-values and bootstrap confidence intervals, the log-log OLS fit with
HC3 robust errors, overall and granulated Kendall tau (Jiang et al. 2020), and the PGDL
competition's conditional mutual information score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product

import numpy as np
import pandas as pd
import scipy.stats

__all__ = [
    "StatsError",
    "bootstrap_ci",
    "conditional_mutual_information",
    "correlations",
    "granulated_kendall",
    "kendall_tau",
    "loglog_fit",
]


class StatsError(ValueError):
    """Too few models, a constant column, or an incomplete hparam grid."""


def _clean_pair(x, y, name_x="x", name_y="y", min_n=3):
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise StatsError(f"{name_x} and {name_y} must be 1-D of the same length; got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < min_n:
        raise StatsError(f"need at least {min_n} models with finite {name_x} and {name_y}; got {len(x)}")
    for arr, name in ((x, name_x), (y, name_y)):
        if np.ptp(arr) == 0:
            raise StatsError(f"{name} is constant over the {len(arr)} models: no correlation is defined")
    return x, y


_METHODS = {
    "pearson": lambda x, y: scipy.stats.pearsonr(x, y),
    "spearman": lambda x, y: scipy.stats.spearmanr(x, y),
    "kendall": lambda x, y: scipy.stats.kendalltau(x, y),  # tau-b, ties handled
}


def bootstrap_ci(x, y, statistic, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap interval of ``statistic(x, y)``, resampling models."""
    rng = np.random.default_rng(seed)
    n = len(x)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        xs, ys = x[idx], y[idx]
        if np.ptp(xs) == 0 or np.ptp(ys) == 0:
            continue  # a resample with a constant column has no correlation
        v = statistic(xs, ys)
        if np.isfinite(v):
            vals.append(v)
    if len(vals) < n_boot // 2:
        return (math.nan, math.nan)
    alpha = (1 - level) / 2
    return tuple(float(q) for q in np.quantile(vals, [alpha, 1 - alpha]))


def correlations(x, y, *, methods=("pearson", "spearman", "kendall"), n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0, name_x: str = "measure", name_y: str = "target") -> pd.DataFrame:
    """Pearson, Spearman and Kendall tau with p-values and bootstrap CIs.

    Returns
    -------
    DataFrame with columns method, value, p_value, ci_low, ci_high, n.
    """
    x, y = _clean_pair(x, y, name_x, name_y)
    rows = []
    for m in methods:
        fn = _METHODS[m]
        res = fn(x, y)
        stat = lambda a, b, fn=fn: float(fn(a, b)[0])
        lo, hi = bootstrap_ci(x, y, stat, n_boot=n_boot, level=level, seed=seed) if n_boot else (math.nan, math.nan)
        rows.append({"method": m, "value": float(res[0]), "p_value": float(res[1]), "ci_low": lo, "ci_high": hi, "n": len(x)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class LogLogFit:
    """OLS of log(y) on log(x) with HC3 standard errors."""

    slope: float
    intercept: float
    r2: float
    slope_ci: tuple[float, float]
    intercept_ci: tuple[float, float]
    slope_p: float
    n: int
    x_name: str
    y_name: str

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
                "slope_p": self.slope_p, "n": self.n}


def loglog_fit(x, y, *, level: float = 0.95, name_x: str = "x", name_y: str = "y") -> LogLogFit:
    """Fit ``log y = a + b log x`` by OLS with HC3 robust errors (statsmodels).

    Both columns must be positive; non-finite pairs are dropped.
    """
    import statsmodels.api as sm

    x, y = _clean_pair(x, y, name_x, name_y)
    if (x <= 0).any() or (y <= 0).any():
        bad = name_x if (x <= 0).any() else name_y
        raise StatsError(f"log-log fit needs positive values; {bad} has values <= 0")
    lx, ly = np.log(x), np.log(y)
    model = sm.OLS(ly, sm.add_constant(lx)).fit(cov_type="HC3")
    ci = model.conf_int(alpha=1 - level)
    fit = LogLogFit(float(model.params[1]), float(model.params[0]), float(model.rsquared),
                    (float(ci[1][0]), float(ci[1][1])), (float(ci[0][0]), float(ci[0][1])),
                    float(model.pvalues[1]), len(x), name_x, name_y)
    object.__setattr__(fit, "_model", model)
    return fit


def kendall_tau(x, y) -> float:
    """Kendall's tau-b (ties handled), the overall ranking agreement."""
    x, y = _clean_pair(x, y, min_n=2)
    return float(scipy.stats.kendalltau(x, y)[0])


def granulated_kendall(scores: Mapping[str, float], hparams: Mapping[str, Mapping[str, object]],
                       target: Mapping[str, float]) -> dict:
    """Granulated Kendall coefficient Psi (Jiang et al., ICLR 2020).

    For each hparam i: psi_i is the mean, over the groups of models whose OTHER hparams
    are all equal, of Kendall tau between score and target inside the group (groups with
    fewer than two models or a constant column contribute nothing). Psi = mean of psi_i.

    Returns ``{"psi": Psi, "per_hparam": {name: psi_i}}``.
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
            s = np.array([scores[m] for m in members], dtype=float)
            t = np.array([target[m] for m in members], dtype=float)
            if np.ptp(s) == 0 or np.ptp(t) == 0:
                continue
            taus.append(float(scipy.stats.kendalltau(s, t)[0]))
        per[h] = float(np.mean(taus)) if taus else math.nan
    finite = [v for v in per.values() if np.isfinite(v)]
    return {"psi": float(np.mean(finite)) if finite else math.nan, "per_hparam": per}


# --------------------------------------------------------------------------- PGDL CMI


def _entropy(p):
    return -np.sum(p * np.log2(p + 1e-12))


def _mutual_information(table):
    """Mutual information in bits of a 2-D joint count table; empty cells contribute 0."""
    total = table.sum()
    if total == 0:
        return 0.0
    p = table / total
    outer = p.sum(axis=1, keepdims=True) * p.sum(axis=0, keepdims=True)
    nz = p > 0  # a cell with p > 0 has both marginals > 0
    return float(np.sum(p[nz] * np.log2(p[nz] / outer[nz])))


def _model_keys(mapping: Mapping) -> dict:
    """Keys as the scorer spells them: ``"3"`` and ``"model_3"`` both become ``"model_3"``."""
    return {(k if str(k).startswith("model_") else f"model_{k}"): v for k, v in mapping.items()}


def conditional_mutual_information(scores: Mapping, model_configs: Mapping, *, details: bool = False):
    """The PGDL competition score: min over hparam pairs of the conditional MI ratio.

    Parameters
    ----------
    scores : mapping model id -> score
        Ids may be ``"3"`` or ``"model_3"``.
    model_configs : mapping model id -> {"hparams": {name: {"possible_values", "current_value"}},
                                         "metrics": {"train_acc", "test_acc"}}
    details : bool
        Also return the per-(h1, h2) table.

    Returns
    -------
    float in [0, 1] (and a DataFrame with ``details=True``).

    Notes
    -----
    As the competition's scorer: gap = train_acc - test_acc. For each ORDERED pair of
    distinct hparams (h1, h2), a 2 x 2 x B count table over ALL ordered model pairs
    (m1, m2), self-pairs included: axis 0 is ``gap[m1] > gap[m2]`` (ties in the second
    row), axis 1 is ``score[m1] > score[m2]``, axis 2 the bin keyed by
    ``str(v1(h1)) + str(v2(h1)) + str(v1(h2)) + str(v2(h2))`` over all combinations of
    possible values; pairs whose key is not among them are skipped, as the scorer does.
    Per bin the MI between the two sign axes and the entropy of the gap
    axis; the pair's score is mean MI / mean entropy over bins; the task score is the
    minimum over pairs.
    """
    configs = _model_keys(model_configs)
    sc = {k: float(v) for k, v in _model_keys(scores).items()}
    missing = sorted(set(configs) - set(sc))
    if missing:
        raise StatsError(f"scores lack {len(missing)} model(s) of the configs, e.g. {missing[:5]}")
    ids = sorted(configs)
    hp_names = sorted(configs[ids[0]]["hparams"])
    if len(hp_names) < 2:
        raise StatsError("the CMI score needs at least two hparams")
    possible = {h: configs[ids[0]]["hparams"][h]["possible_values"] for h in hp_names}
    # Full-grid check: every combination of possible values must be present (by str()).
    present = {tuple(str(configs[m]["hparams"][h]["current_value"]) for h in hp_names) for m in ids}
    expected = math.prod(len(v) for v in possible.values())
    if len(present) < expected:
        raise StatsError(f"incomplete hparam grid: {len(present)} of {expected} combinations of "
                         f"{', '.join(hp_names)} are present")
    gap = np.array([configs[m]["metrics"]["train_acc"] - configs[m]["metrics"]["test_acc"] for m in ids])
    s = np.array([sc[m] for m in ids])
    gap_gt = gap[:, None] > gap[None, :]  # all ordered pairs, self-pairs included
    score_gt = s[:, None] > s[None, :]
    values = {h: [str(configs[m]["hparams"][h]["current_value"]) for m in ids] for h in hp_names}
    rows = []
    for h1, h2 in ((a, b) for a in hp_names for b in hp_names if a != b):
        keys = [str(a) + str(b) + str(c) + str(d) for a, b, c, d in
                product(possible[h1], possible[h1], possible[h2], possible[h2])]
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        v1 = np.array(values[h1])
        v2 = np.array(values[h2])
        bin_key = np.char.add(np.char.add(np.char.add(v1[:, None], v1[None, :]), v2[:, None]), v2[None, :])
        table = np.zeros((2, 2, len(index)))
        flat_bins = np.vectorize(lambda k: index.get(k, -1))(bin_key)
        # As the scorer: a pair whose key is not among the possible values' str() forms
        # (say current_value 1 where possible_values hold 1.0) is skipped, not counted.
        known = flat_bins >= 0
        np.add.at(table, (np.where(gap_gt, 0, 1)[known], np.where(score_gt, 0, 1)[known], flat_bins[known]), 1)
        mis, ents = [], []
        for b in range(table.shape[2]):
            t = table[:, :, b]
            mis.append(_mutual_information(t))
            total = t.sum()
            ents.append(_entropy(t.sum(axis=1) / total) if total else 0.0)
        score = float(np.mean(mis) / np.mean(ents)) if np.mean(ents) > 0 else 0.0
        rows.append({"h1": h1, "h2": h2, "mi": float(np.mean(mis)), "entropy": float(np.mean(ents)), "score": score,
                     "skipped_pairs": int((~known).sum())})
    table = pd.DataFrame(rows)
    result = float(table["score"].min())
    return (result, table) if details else result
