"""The PGDL competition's conditional mutual information (CMI) score, Jiang et al.'s K(mu),
and the CMI of random rankings (its test).

The CMI has no bootstrap interval here. It conditions on the hyperparameters, and a
resample of design points (cells, or models where each cell holds one) leaves its bins
sparser, which biases the plug-in mutual information upwards: on the committed benchmark
example, the observed CMI lies below the 2.5th percentile of its cell-resampled values for
many measures (``python benchmarks/cmi_bootstrap.py``), so a percentile interval would not
cover it. Resampling seeds within cells instead keeps the grid but, with 2 seeds a cell,
halves the variance. Its inference is the permutation null (:func:`cmi_null`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import combinations, product

import numpy as np
import pandas as pd

from pgen.errors import StatsError
from pgen.stats.resampling import check_resamples

__all__ = ["conditional_mutual_information", "cmi_from_table", "jiang_cmi", "cmi_null"]

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
    float or tuple
        The CMI, in [0, 1]; with ``details``, ``(cmi, DataFrame per (h1, h2) pair)``.

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
    if not configs:
        raise StatsError("model_configs holds no model")
    try:
        sc = {k: float(v) for k, v in _model_keys(scores).items()}
    except (TypeError, ValueError) as exc:
        raise StatsError(f"every score must be a number: {exc}") from None
    missing = sorted(set(configs) - set(sc))
    if missing:
        raise StatsError(f"scores lack {len(missing)} model(s) of the configs, e.g. {missing[:5]}")
    ids = sorted(configs)
    for m in ids:  # what the scorer reads, present and of the right type, or an error naming the model
        cfg = configs[m]
        metrics = cfg.get("metrics") if isinstance(cfg, Mapping) else None
        if not isinstance(metrics, Mapping) or not all(_number(metrics.get(k)) for k in ("train_acc", "test_acc")):
            raise StatsError(f"model {m}: its config needs metrics with numeric train_acc and test_acc")
        if not isinstance(cfg.get("hparams"), Mapping) or not all(
                isinstance(v, Mapping) and "current_value" in v and "possible_values" in v
                for v in cfg["hparams"].values()):
            raise StatsError(f"model {m}: its config needs hparams with current_value and possible_values")
    hp_names = sorted(configs[ids[0]]["hparams"])
    for m in ids:
        if sorted(configs[m]["hparams"]) != hp_names:
            raise StatsError(f"model {m}: its hparams ({', '.join(sorted(configs[m]['hparams']))}) differ from "
                             f"{ids[0]}'s ({', '.join(hp_names)})")
    possible = {h: configs[ids[0]]["hparams"][h]["possible_values"] for h in hp_names}
    values = {h: [configs[m]["hparams"][h]["current_value"] for m in ids] for h in hp_names}
    gap = np.array([configs[m]["metrics"]["train_acc"] - configs[m]["metrics"]["test_acc"] for m in ids])
    return _cmi(np.array([sc[m] for m in ids]), gap, values, possible, details)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite_scores(s: np.ndarray, gap: np.ndarray) -> None:
    # A NaN compares False with everything, so it would silently sit in the 'not greater' row
    # and column of every pair (one NaN moved a CMI from 0.214 to 0.342; all-NaN gave 0.0).
    for values, what in ((s, "score"), (gap, "gap")):
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise StatsError(f"{len(bad)} model(s) have a non-finite {what} (the first at position {bad[0]}); "
                             "the CMI needs a finite value for every model of the grid")


def cmi_from_table(table: pd.DataFrame, measure: str, hparam_grid: Mapping[str, list], *, target: str = "gap",
                   details: bool = False, full_grid: bool = True):
    """The PGDL CMI of one measure column of a per-model table (``hp.<name>`` columns and a
    ``gap`` column), without building the competition's JSON; equal to
    :func:`conditional_mutual_information` on the same models.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per model: the measure column, ``target`` and ``hp.<name>`` columns.
    measure : str
        The measure's column (oriented: larger predicts a larger gap).
    hparam_grid : Mapping[str, list]
        The zoo's hyperparameters and their values.
    target : str, default="gap"
        The target column.
    details : bool, default=False
        Also return the table of every conditioning set's value.
    full_grid : bool, default=True
        Every cell of the grid is present (False: some models were left out; the CMI then
        uses the cells present).

    Returns
    -------
    float or tuple
        The CMI; with ``details``, ``(cmi, DataFrame of conditioning sets)``.
    """
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
    _finite_scores(s, gap)
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


def _cmi_score(s: np.ndarray, gap: np.ndarray, bins: list[tuple], details: bool = False):
    """The PGDL score from precomputed bins (:func:`_cmi_bins`)."""
    gap_row = np.where(gap[:, None] > gap[None, :], 0, 1)  # all ordered pairs, self-pairs included
    score_col = np.where(s[:, None] > s[None, :], 0, 1)
    cell = (gap_row * 2 + score_col).ravel()
    rows = []
    for h1, h2, flat_bins, n_bins in bins:
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

    Parameters
    ----------
    scores : array-like
        The measure (oriented), one value per model.
    gap : array-like
        The generalization gap, one value per model.
    values : Mapping[str, list]
        Hyperparameter name to each model's value.
    details : bool, default=False
        Also return the value of every conditioning set.

    Returns
    -------
    float or tuple
        K(mu); with ``details``, ``(k_mu, DataFrame of conditioning sets)``.
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


def cmi_null(table: pd.DataFrame, measure: str, hparam_grid: Mapping[str, list], observed: float,
             permutations: int = 200, seed: int = 0, *, full_grid: bool = True) -> dict:
    """The CMI of random rankings: the measure's values permuted over the models.

    Returns ``{"median", "q95", "p_value", "permutations"}``, with the p-value
    (1 + #{null >= observed}) / (1 + permutations): at least 1 / (1 + permutations), so a
    family of m measures corrected by Holm needs permutations >= m / alpha.

    Parameters
    ----------
    table : pandas.DataFrame
        As for :func:`cmi_from_table`.
    measure : str
        The measure's column.
    hparam_grid : Mapping[str, list]
        The zoo's hyperparameters and their values.
    observed : float
        The measure's CMI, compared with the null.
    permutations : int, default=200
        Random rankings drawn.
    seed : int, default=0
        Seed of the permutations.
    full_grid : bool, default=True
        As for :func:`cmi_from_table`.

    Returns
    -------
    dict
        ``{"median", "q95", "p_value", "permutations"}``.
    """
    permutations = check_resamples(permutations, "permutations", n_units=len(table))
    rng = np.random.default_rng(seed)
    cmi_from_table(table, measure, hparam_grid, full_grid=full_grid)  # the checks, once
    names = sorted(hparam_grid)
    bins = _cmi_bins({h: list(table[f"hp.{h}"]) for h in names}, {h: list(hparam_grid[h]) for h in names})
    values, gap = table[measure].to_numpy(float), table["gap"].to_numpy(float)
    null = [_cmi_score(rng.permutation(values), gap, bins) for _ in range(permutations)]
    null = np.array(null)
    return {"median": float(np.median(null)), "q95": float(np.quantile(null, 0.95)),
            "p_value": float((1 + np.sum(null >= observed)) / (1 + permutations)), "permutations": permutations}
