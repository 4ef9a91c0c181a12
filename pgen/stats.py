"""Statistics relating a measure to generalization: one implementation of each, shared.

Correlations with p-values and bootstrap confidence intervals, the log-log OLS fit with
HC3 robust errors, overall and granulated Kendall tau (Jiang et al. 2020), and the PGDL
competition's conditional mutual information score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations, product

import numpy as np
import pandas as pd
import scipy.stats

from pgen.errors import StatsError

__all__ = [
    "StatsError",
    "MeasureStatistics",
    "bootstrap_ci",
    "cmi_bootstrap_ci",
    "cmi_from_table",
    "cmi_null",
    "jiang_cmi",
    "jiang_tau",
    "conditional_mutual_information",
    "correlations",
    "granulated_kendall",
    "hyperparameters",
    "kendall_tau",
    "loglog_fit",
    "measure_statistics",
    "paired_tau_difference",
    "random_angle_null",
    "robust_sign_agreement",
]


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


def _resample_statistics(xs: np.ndarray, ys: np.ndarray, method: str) -> np.ndarray:
    """One correlation per row of (B, n) resamples, vectorized (equal to scipy's to ~1e-15)."""
    if method == "spearman":
        xs, ys = scipy.stats.rankdata(xs, axis=1), scipy.stats.rankdata(ys, axis=1)
    if method in ("pearson", "spearman"):
        xc, yc = xs - xs.mean(1, keepdims=True), ys - ys.mean(1, keepdims=True)
        return (xc * yc).sum(1) / np.sqrt((xc * xc).sum(1) * (yc * yc).sum(1))
    # Kendall tau-b = sum sgn(dx) sgn(dy) / sqrt(sum sgn(dx)^2 sum sgn(dy)^2) over pairs
    out = np.empty(len(xs))
    step = max(1, 4_000_000 // (xs.shape[1] ** 2))
    for a in range(0, len(xs), step):
        sx = np.sign(xs[a:a + step, :, None] - xs[a:a + step, None, :])
        sy = np.sign(ys[a:a + step, :, None] - ys[a:a + step, None, :])
        out[a:a + step] = (sx * sy).sum((1, 2)) / np.sqrt((sx * sx).sum((1, 2)) * (sy * sy).sum((1, 2)))
    return out


def _bootstrap_correlation_ci(x, y, method: str, *, n_boot: int, level: float, seed: int):
    """:func:`bootstrap_ci` of a correlation, the same resamples, computed in one pass."""
    if method not in _METHODS or len(x) > 300:  # O(B n^2) for Kendall: past ~300 models scipy's loop wins
        fn = _METHODS[method]
        return bootstrap_ci(x, y, lambda a, b: float(fn(a, b)[0]), n_boot=n_boot, level=level, seed=seed)
    rng = np.random.default_rng(seed)
    n = len(x)
    idx = np.stack([rng.integers(0, n, n) for _ in range(n_boot)])  # the same draws as bootstrap_ci
    xs, ys = x[idx], y[idx]
    keep = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)  # a constant resample has no correlation
    with np.errstate(invalid="ignore", divide="ignore"):
        vals = _resample_statistics(xs[keep], ys[keep], method)
    vals = vals[np.isfinite(vals)]
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
        lo, hi = _bootstrap_correlation_ci(x, y, m, n_boot=n_boot, level=level, seed=seed) if n_boot else (math.nan, math.nan)
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
    """Kendall's tau-b (scipy; ties handled), the overall ranking agreement in pgen's tables."""
    x, y = _clean_pair(x, y, min_n=2)
    return float(scipy.stats.kendalltau(x, y)[0])


def jiang_tau(x, y) -> float:
    """Jiang et al.'s (ICLR 2020, eq. 3) Kendall coefficient: the mean over ordered pairs
    i != j of sign(x_i - x_j) sign(y_i - y_j), i.e. Kendall's tau-a. A tie contributes 0,
    so a constant column gives 0 (scipy's tau-b, :func:`kendall_tau`, divides by the
    untied pairs instead, and is undefined on a constant column)."""
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


# --------------------------------------------------------------------------- PGDL CMI


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
    possible = {h: configs[ids[0]]["hparams"][h]["possible_values"] for h in hp_names}
    values = {h: [configs[m]["hparams"][h]["current_value"] for m in ids] for h in hp_names}
    gap = np.array([configs[m]["metrics"]["train_acc"] - configs[m]["metrics"]["test_acc"] for m in ids])
    return _cmi(np.array([sc[m] for m in ids]), gap, values, possible, details)


def cmi_from_table(table: pd.DataFrame, measure: str, hparam_grid: Mapping[str, list], *, target: str = "gap",
                   details: bool = False, full_grid: bool = True):
    """The PGDL CMI of one measure column of a per-model table (``hp.<name>`` columns and a
    ``gap`` column), without building the competition's JSON; equal to
    :func:`conditional_mutual_information` on the same models."""
    cols = [f"hp.{h}" for h in sorted(hparam_grid)]
    absent = [c for c in cols + [measure, target] if c not in table.columns]
    if absent:
        raise StatsError(f"the table lacks {', '.join(absent)}")
    values = {h: list(table[f"hp.{h}"]) for h in sorted(hparam_grid)}
    return _cmi(table[measure].to_numpy(float), table[target].to_numpy(float), values,
                {h: list(hparam_grid[h]) for h in sorted(hparam_grid)}, details, full_grid)


def _cmi(s: np.ndarray, gap: np.ndarray, values: Mapping[str, list], possible: Mapping[str, list], details: bool,
         full_grid: bool = True):
    hp_names = sorted(values)
    if len(hp_names) < 2:
        raise StatsError("the CMI score needs at least two hparams")
    # Full-grid check: every combination of possible values must be present (by str()).
    # Without it (full_grid=False: a protocol zoo whose unconverged models were left out),
    # a missing cell leaves bins without pairs, which add 0 to both the mean MI and the
    # mean entropy and so leave the scorer's ratio as it is over the bins that have pairs.
    present = {tuple(str(values[h][i]) for h in hp_names) for i in range(len(s))}
    expected = math.prod(len(v) for v in possible.values())
    if full_grid and len(present) < expected:
        raise StatsError(f"incomplete hparam grid: {len(present)} of {expected} combinations of "
                         f"{', '.join(hp_names)} are present")
    return _cmi_score(s, gap, _cmi_bins(values, possible), details)


def _cmi_bins(values: Mapping[str, list], possible: Mapping[str, list]) -> list[tuple]:
    """The scorer's bin of every ordered model pair, per ordered pair of hyperparameters:
    ``(h1, h2, bins (n, n), number of bins)``. Depends on the models' hyperparameters only,
    so permutation nulls and bootstraps compute it once."""
    hp_names = sorted(values)
    strs = {h: [str(v) for v in values[h]] for h in hp_names}
    return [(h1, h2, *_bin_index(strs[h1], strs[h2], possible[h1], possible[h2]))
            for h1, h2 in ((a, b) for a in hp_names for b in hp_names if a != b)]


def _cmi_score(s: np.ndarray, gap: np.ndarray, bins: list[tuple], details: bool = False, rows_index=None):
    """The PGDL score from precomputed bins; ``rows_index`` picks (and may repeat) models
    of the table the bins were computed for (a bootstrap resample)."""
    if rows_index is not None:
        s, gap = s[rows_index], gap[rows_index]
    gap_row = np.where(gap[:, None] > gap[None, :], 0, 1)  # all ordered pairs, self-pairs included
    score_col = np.where(s[:, None] > s[None, :], 0, 1)
    cell = (gap_row * 2 + score_col).ravel()
    rows = []
    for h1, h2, flat_bins, n_bins in bins:
        if rows_index is not None:
            flat_bins = flat_bins[rows_index[:, None], rows_index[None, :]]
        flat = flat_bins.ravel()
        # As the scorer: a pair whose key is not among the possible values' str() forms
        # (say current_value 1 where possible_values hold 1.0) is skipped, not counted.
        known = flat >= 0
        counts = np.bincount(cell[known] * n_bins + flat[known], minlength=4 * n_bins)
        mi, ent = _bin_mi_and_entropy(counts.reshape(2, 2, n_bins).astype(float))
        score = float(mi.mean() / ent.mean()) if ent.mean() > 0 else 0.0
        rows.append({"h1": h1, "h2": h2, "mi": float(mi.mean()), "entropy": float(ent.mean()), "score": score,
                     "skipped_pairs": int((~known).sum())})
    if not details:
        return min(r["score"] for r in rows)
    table = pd.DataFrame(rows)
    return float(table["score"].min()), table


def jiang_cmi(scores, gap, values: Mapping[str, list], *, details: bool = False):
    """Jiang et al.'s (ICLR 2020, sec. 4.2) conditional mutual information K(mu): the
    minimum over conditioning sets S of at most two hyperparameters (the empty set
    included) of I(V_mu; V_g | U_S) / H(V_g | U_S).

    Over ordered pairs of distinct models (i, j): V_g = [gap_i > gap_j], V_mu =
    [score_i > score_j], and U_S the pair's values of the hyperparameters in S (both
    models'). The conditional MI and entropy are the p(u)-weighted sums over the observed
    values u of U_S (logs base 2). Always at most the PGDL scorer's value in a full grid,
    which conditions on pairs of hyperparameters only (|S| = 2); named apart from it
    (:func:`cmi_from_table` is the PGDL CMI).
    """
    s, g = np.asarray(scores, float), np.asarray(gap, float)
    n = len(s)
    names = sorted(values)
    off = ~np.eye(n, dtype=bool)
    vg = (g[:, None] > g[None, :])[off].astype(int)
    vm = (s[:, None] > s[None, :])[off].astype(int)
    codes = {h: np.unique([str(v) for v in values[h]], return_inverse=True)[1] for h in names}
    rows = []
    for S in [()] + [(h,) for h in names] + list(combinations(names, 2)):
        key = np.zeros((n, n), dtype=np.int64)
        for h in S:
            c = codes[h]
            k = c.max() + 1
            key = (key * k + c[:, None]) * k + c[None, :]
        _, u = np.unique(key[off], return_inverse=True)
        table = np.zeros((2, 2, u.max() + 1))
        np.add.at(table, (vg, vm, u), 1)
        pu = table.sum(axis=(0, 1)) / table.sum()
        mi, ent = _exact_mi_and_entropy(table)
        cond_mi, cond_h = float((pu * mi).sum()), float((pu * ent).sum())
        rows.append({"conditioning": ",".join(S) or "(none)", "mi": cond_mi, "entropy": cond_h,
                     "score": cond_mi / cond_h if cond_h > 0 else 0.0})
    table = pd.DataFrame(rows)
    result = float(table["score"].min())
    return (result, table) if details else result


def _exact_mi_and_entropy(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bin of a (2, 2, B) count table: MI (bits) of the two axes and entropy of axis 0."""
    total = np.where(table.sum(axis=(0, 1)) > 0, table.sum(axis=(0, 1)), 1)
    p = table / total
    pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        mi = np.where(p > 0, p * np.log2(p / (pa * pb)), 0).sum(axis=(0, 1))
        ent = -np.where(pa > 0, pa * np.log2(pa), 0).sum(axis=(0, 1))
    return mi, ent


def _bin_index(v1: list[str], v2: list[str], possible1: list, possible2: list) -> tuple[np.ndarray, int]:
    """The scorer's bin of every ordered model pair, -1 where its key is not a known one.

    The scorer keys a bin by the string ``str(a) + str(b) + str(c) + str(d)`` over all
    combinations of possible values, so two combinations whose strings concatenate alike
    share a bin; that is kept. Values are mapped to indices once and the (n, n) bins are
    looked up in one (P1, P1, P2, P2) table, instead of building n^2 strings.
    """
    keys = [str(a) + str(b) + str(c) + str(d) for a, b, c, d in product(possible1, possible1, possible2, possible2)]
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    p1 = list(dict.fromkeys(str(v) for v in possible1))
    p2 = list(dict.fromkeys(str(v) for v in possible2))
    c1 = np.array([p1.index(v) if v in p1 else -1 for v in v1])
    c2 = np.array([p2.index(v) if v in p2 else -1 for v in v2])
    if (c1 < 0).any() or (c2 < 0).any():  # values outside the grid: the scorer's string keys, pair by pair
        a, b = np.array(v1, dtype=object), np.array(v2, dtype=object)
        key = a[:, None] + a[None, :] + b[:, None] + b[None, :]
        return np.vectorize(lambda k: index.get(k, -1), otypes=[int])(key), len(index)
    lookup = np.array([index[x + y + z + w] for x in p1 for y in p1 for z in p2 for w in p2]).reshape(
        len(p1), len(p1), len(p2), len(p2))
    return lookup[c1[:, None], c1[None, :], c2[:, None], c2[None, :]], len(index)


def _bin_mi_and_entropy(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bin of a (2, 2, B) count table: MI (bits) between the two axes, and the entropy
    of axis 0 (log2 with +1e-12 inside, as the scorer); empty bins give 0 and 0."""
    total = table.sum(axis=(0, 1))
    safe = np.where(total > 0, total, 1)
    p = table / safe
    row = p.sum(axis=1, keepdims=True)
    col = p.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(p / (row * col)), 0.0)
    mi = terms.sum(axis=(0, 1))
    r = row[:, 0, :]
    ent = np.where(total > 0, -np.sum(r * np.log2(r + 1e-12), axis=0), 0.0)
    return mi, ent


# --------------------------------------------------------------------------- one entry point

TARGETS = {"test_acc": "test accuracy", "test_error": "test error", "pseudo_test_acc": "pseudo-test accuracy",
           "gap": "generalization gap"}


def random_angle_null(n: int, *, draws: int = 2000, seed: int = 0) -> dict:
    """Angles (degrees) between a fixed unit vector in R^n and uniformly random unit vectors:
    the scale beside any P-vector angle over n samples. Returns ``{"median", "q05", "q95"}``
    and the mean |cos| of the draws beside its closed form sqrt(2 / (pi n)) (large n).

    >>> round(random_angle_null(1000)["median"])
    89
    """
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((draws, n))
    cos = np.abs(v[:, 0]) / np.linalg.norm(v, axis=1)  # the fixed vector: e_1, by symmetry any
    angles = np.degrees(np.arccos(np.clip(cos, 0, 1)))
    return {"median": float(np.median(angles)), "q05": float(np.quantile(angles, 0.05)),
            "q95": float(np.quantile(angles, 0.95)), "mean_abs_cos": float(cos.mean()),
            "mean_abs_cos_closed_form": math.sqrt(2 / (math.pi * n))}


def kendall_null_sd(n: int) -> float:
    """Standard deviation of Kendall's tau between two random rankings of n items (no ties):
    sqrt(2 (2n + 5) / (9 n (n - 1))), the scale a tau needs beside it."""
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))) if n > 1 else math.nan


@dataclass
class MeasureStatistics:
    """How one measure relates to generalization over the models of one table.

    Attributes
    ----------
    measure : str
    n : int
        Models with a finite value of the measure.
    correlations : DataFrame
        target, method (pearson, spearman, kendall = tau-b), value, p_value, ci_low,
        ci_high (percentile bootstrap over models), n; of the ORIENTED value, sign x measure
        (``sign`` = +1: the raw value), so every report shows one convention.
    fits : list of LogLogFit
        log(target) on log(measure), of the raw value (HC3 errors; positive values only).
    kendall : dict
        target -> Kendall tau-b of sign x value (``nan`` where undefined).
    kendall_null_sd : float
        Standard deviation of tau under random rankings of n models.
    psi : dict or None
        Granulated Kendall ``{"psi", "per_hparam"}`` of sign x value against the gap (zoos
        with hparams; Jiang et al.'s tau-a within groups, constant groups counting 0).
    cmi : float or None
        The PGDL conditional mutual information, as the competition's scorer computes it
        (conditioning on pairs of hyperparameters; zoos that are a full hparam grid).
    k_mu : float or None
        Jiang et al.'s K(mu): the minimum over conditioning sets of 0 to 2 hyperparameters
        (:func:`jiang_cmi`); at most the PGDL CMI.
    cmi_null : dict or None
        ``{"median", "q95", "p_value", "permutations"}``: the CMI of random rankings
        (the measure's values permuted over the models), with ``cmi_permutations``.
    notes : list of str
        Why a statistic is missing.
    """

    measure: str
    n: int
    correlations: pd.DataFrame
    fits: list
    kendall: dict
    kendall_null_sd: float
    psi: dict | None = None
    cmi: float | None = None
    cmi_null: dict | None = None
    notes: list = None
    k_mu: float | None = None
    sign: int = 1

    def kendall_row(self, target: str) -> dict | None:
        """The Kendall row (value, p_value, ci_low, ci_high) against ``target``, if computed."""
        c = self.correlations
        if c.empty:
            return None
        rows = c[(c["target"] == target) & (c["method"] == "kendall")]
        return None if rows.empty else rows.iloc[0].to_dict()


def measure_statistics(table: pd.DataFrame, measure: str, *, targets: Mapping[str, str] | None = None,
                       hparam_grid: Mapping[str, list] | None = None, n_boot: int = 1000, seed: int = 0,
                       cmi_permutations: int = 0, fits: bool = True, full_grid: bool = True,
                       sign: int = 1) -> MeasureStatistics:
    """Every statistic of one measure column against the target columns of a per-model table.

    The one entry point the report and the benchmark share. ``table`` holds ``measure``,
    the target columns present among ``targets`` (default :data:`TARGETS`), ``gap``,
    ``hp.<name>`` columns for Psi and, with ``hparam_grid``, the CMI.

    ``sign`` is the measure's direction (+1: larger predicts worse generalization). The
    correlations, Kendall tau and Psi are of ``sign x value``, so a positive tau against the
    gap means the authors' direction in every report; the log-log fits are of the values
    themselves and the CMI is sign-free.

    >>> import pandas as pd
    >>> t = pd.DataFrame({"m": [1.0, 2, 3, 4, 5], "test_acc": [0.9, 0.8, 0.85, 0.7, 0.6]})
    >>> round(measure_statistics(t, "m", n_boot=0).kendall["test_acc"], 2)
    -0.8
    """
    targets = dict(TARGETS if targets is None else targets)
    hparam_grid = hyperparameters(hparam_grid)
    notes: list[str] = []
    if measure not in table.columns:
        raise StatsError(f"the table has no column {measure!r}")
    if sign not in (1, -1):
        raise StatsError(f"sign must be +1 or -1, not {sign!r}")
    sub = table[np.isfinite(table[measure].to_numpy(float))]
    oriented = sign * sub[measure]
    corr, fit_list, kendall = [], [], {}
    for col, label in targets.items():
        if col not in sub.columns:
            continue
        try:
            c = correlations(oriented, sub[col], n_boot=n_boot, seed=seed, name_x=measure, name_y=col)
            c.insert(0, "target", col)
            corr.append(c)
            kendall[col] = float(c.loc[c["method"] == "kendall", "value"].iloc[0])
        except StatsError as exc:
            notes.append(f"{measure} vs {label}: {exc}")
            kendall[col] = math.nan
        if fits:
            try:
                fit_list.append(loglog_fit(sub[measure], sub[col], name_x=measure, name_y=col))
            except StatsError as exc:
                notes.append(f"log-log fit of {label} on {measure}: {exc}")
    corr_df = pd.concat(corr, ignore_index=True) if corr else pd.DataFrame(
        columns=["target", "method", "value", "p_value", "ci_low", "ci_high", "n"])
    stats = MeasureStatistics(measure, len(sub), corr_df, fit_list, kendall, kendall_null_sd(len(sub)), notes=notes,
                              sign=sign)
    hp_cols = [c for c in sub.columns if c.startswith("hp.") and c != "hp.seed"]
    if hp_cols and "gap" in sub.columns:
        ids = list(sub["model_id"]) if "model_id" in sub.columns else list(range(len(sub)))
        hps = {m: {c[3:]: v for c, v in row.items()} for m, row in zip(ids, sub[hp_cols].to_dict("records"))}
        try:
            stats.psi = granulated_kendall(dict(zip(ids, oriented)), hps, dict(zip(ids, sub["gap"])))
        except StatsError as exc:
            notes.append(f"granulated Kendall: {exc}")
    if hparam_grid and "gap" in table.columns:
        if len(sub) < len(table):
            notes.append(f"PGDL CMI: {measure} is missing for {len(table) - len(sub)} model(s) of the grid")
        else:
            try:
                stats.cmi = cmi_from_table(sub, measure, hparam_grid, full_grid=full_grid)
                stats.k_mu = jiang_cmi(sub[measure], sub["gap"], {h: list(sub[f"hp.{h}"]) for h in hparam_grid})
                if cmi_permutations:
                    stats.cmi_null = cmi_null(sub, measure, hparam_grid, stats.cmi, cmi_permutations, seed,
                                              full_grid=full_grid)
            except StatsError as exc:
                notes.append(f"PGDL CMI: {exc}")
    return stats


def cmi_null(table: pd.DataFrame, measure: str, hparam_grid: Mapping[str, list], observed: float,
             permutations: int = 200, seed: int = 0, *, full_grid: bool = True) -> dict:
    """The CMI of random rankings: the measure's values permuted over the models.

    Returns ``{"median", "q95", "p_value", "permutations"}``, with the p-value
    (1 + #{null >= observed}) / (1 + permutations).
    """
    rng = np.random.default_rng(seed)
    cmi_from_table(table, measure, hparam_grid, full_grid=full_grid)  # the checks, once
    names = sorted(hparam_grid)
    bins = _cmi_bins({h: list(table[f"hp.{h}"]) for h in names}, {h: list(hparam_grid[h]) for h in names})
    values, gap = table[measure].to_numpy(float), table["gap"].to_numpy(float)
    null = [_cmi_score(rng.permutation(values), gap, bins) for _ in range(permutations)]
    null = np.array(null)
    return {"median": float(np.median(null)), "q95": float(np.quantile(null, 0.95)),
            "p_value": float((1 + np.sum(null >= observed)) / (1 + permutations)), "permutations": permutations}


def hyperparameters(hparam_grid: Mapping[str, list] | None) -> dict[str, list] | None:
    """The grid without ``seed``: a seed is a replicate, not a hyperparameter, so the
    statistics never condition on it (Psi's groups, the CMI's pairs, the robust view's
    environments); models that differ only in seed are samples of one cell."""
    if hparam_grid is None:
        return None
    return {h: v for h, v in hparam_grid.items() if h != "seed"}


def cmi_bootstrap_ci(table: pd.DataFrame, measure: str, hparam_grid: Mapping[str, list], *, n_boot: int = 200,
                     level: float = 0.95, seed: int = 0, full_grid: bool = True) -> tuple[float, float]:
    """Percentile bootstrap interval of the PGDL CMI, resampling models WITHIN each cell of
    the hyperparameter grid (the grid minus ``seed``), so that every resample is still a
    full grid. Needs at least one cell with two or more models (seeds): with one model per
    cell every resample is the original zoo, and ``(nan, nan)`` says the CI is undefined.
    """
    grid = hyperparameters(hparam_grid)
    cells = table.groupby([f"hp.{h}" for h in sorted(grid)], sort=False, dropna=False).indices
    groups = [np.asarray(v) for v in cells.values()]
    if all(len(g) < 2 for g in groups):
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    cmi_from_table(table, measure, grid, full_grid=full_grid)  # the checks, once
    names = sorted(grid)
    bins = _cmi_bins({h: list(table[f"hp.{h}"]) for h in names}, {h: list(grid[h]) for h in names})
    values, gap = table[measure].to_numpy(float), table["gap"].to_numpy(float)
    # within-cell resampling keeps every cell present, so the grid check holds for every resample
    vals = [_cmi_score(values, gap, bins, rows_index=np.concatenate([g[rng.integers(0, len(g), len(g))]
                                                                      for g in groups]))
            for _ in range(n_boot)]
    if len(vals) < n_boot // 2:
        return (math.nan, math.nan)
    alpha = (1 - level) / 2
    return tuple(float(q) for q in np.quantile(vals, [alpha, 1 - alpha]))


def paired_tau_difference(a, b, target, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Kendall tau-b of ``a`` vs ``target`` minus that of ``b`` vs ``target``, with a paired
    percentile bootstrap interval (the same resampled models for both), over the models
    where all three are finite. ``a`` and ``b`` are oriented values (sign x value), so a
    positive difference against the gap means ``a`` ranks the gap better.

    Returns ``{"diff", "ci_low", "ci_high", "n"}``; the difference is resolved when the
    interval excludes 0.
    """
    a, b, t = (np.asarray(v, dtype=float) for v in (a, b, target))
    keep = np.isfinite(a) & np.isfinite(b) & np.isfinite(t)
    a, b, t = a[keep], b[keep], t[keep]
    n = len(t)
    out = {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": n}
    if n < 3 or np.ptp(t) == 0:
        return out

    def tau(x, y):
        return float(scipy.stats.kendalltau(x, y).statistic) if np.ptp(x) > 0 and np.ptp(y) > 0 else math.nan

    out["diff"] = _nan_to_zero(tau(a, t)) - _nan_to_zero(tau(b, t))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if np.ptp(t[idx]) == 0:
            continue
        diffs.append(_nan_to_zero(tau(a[idx], t[idx])) - _nan_to_zero(tau(b[idx], t[idx])))
    if len(diffs) >= max(1, n_boot // 2):
        alpha = (1 - level) / 2
        out["ci_low"], out["ci_high"] = (float(q) for q in np.quantile(diffs, [alpha, 1 - alpha]))
    return out


def _nan_to_zero(v: float) -> float:
    # a constant measure ranks nothing: tau 0, not undefined, when comparing two measures
    return 0.0 if math.isnan(v) else v


def robust_sign_agreement(table: pd.DataFrame, oriented: str, hparam_grid: Mapping[str, list], *,
                          target: str = "gap", min_difference: float = 0.01) -> dict | None:
    """Dziugaite et al. 2020 ("In search of robust measures of generalization", NeurIPS):
    coupled networks. An environment is a pair of hyperparameter cells that differ in
    exactly one hyperparameter (``seed`` is not one: seeds are the samples within an
    environment); over every pair of models, one from each cell, the measure is right when
    the sign of its difference (``oriented``: sign x value) equals the sign of the target's
    difference. Pairs whose target differs by less than ``min_difference`` are left out,
    as the paper leaves out pairs within Monte Carlo noise (0.01 is about one standard
    error of a test accuracy on 1000 samples); a tie of the measure counts as half right.

    Returns ``{"mean", "worst", "environments", "per_hparam": {h: {"mean", "worst",
    "environments"}}}`` where an environment's value is its share of right pairs, ``mean``
    averages environments and ``worst`` is the lowest (the paper's robust view: the
    worst case over environments); None where no environment has a pair left.
    """
    hps = [h for h in sorted(hyperparameters(hparam_grid)) if f"hp.{h}" in table.columns]
    if not hps:
        return None
    sub = table[np.isfinite(table[oriented].to_numpy(float)) & np.isfinite(table[target].to_numpy(float))]
    keys = [tuple(str(v) for v in row) for row in sub[[f"hp.{h}" for h in hps]].itertuples(index=False)]
    cells: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        cells.setdefault(k, []).append(i)
    m, t = sub[oriented].to_numpy(float), sub[target].to_numpy(float)
    per: dict[str, list[float]] = {h: [] for h in hps}
    cell_keys = list(cells)
    for c1, c2 in combinations(cell_keys, 2):
        differs = [j for j in range(len(hps)) if c1[j] != c2[j]]
        if len(differs) != 1:
            continue
        right = []
        for i in cells[c1]:
            for j in cells[c2]:
                dt = t[i] - t[j]
                if abs(dt) < min_difference:
                    continue
                dm = m[i] - m[j]
                right.append(0.5 if dm == 0 else float(np.sign(dm) == np.sign(dt)))
        if right:
            per[hps[differs[0]]].append(float(np.mean(right)))
    everything = [v for vals in per.values() for v in vals]
    if not everything:
        return None
    return {"mean": float(np.mean(everything)), "worst": float(np.min(everything)), "environments": len(everything),
            "per_hparam": {h: {"mean": float(np.mean(v)), "worst": float(np.min(v)), "environments": len(v)}
                           for h, v in per.items() if v}}
