"""Dziugaite et al. 2020's robust view ("In search of robust measures of generalization",
NeurIPS): coupled networks, judged environment by environment, and what the same view
gives on the same design for a good measure and for none.

An environment is a change of ONE hyperparameter from one value to another. The paper
couples networks that differ in that hyperparameter alone and looks at the worst
environment. A zoo with 2 seeds per cell holds at most 4 such model pairs per pair of
cells; at 4 pairs a random ranking orders them all wrong with probability 1/16, so over
hundreds of cell pairs the worst environment is 0 whatever the measure. Here each
environment therefore pools every pair of cells that differ in that hyperparameter alone,
between the same two values (all settings of the others), and an environment with fewer
than ``min_pairs`` model pairs left (after leaving out pairs whose gap differs by less than
``min_difference``) is left out and counted. :func:`robust_references` runs the same view
on a noisy copy of the target (what a good measure could reach) and on random rankings
(what no measure needs to beat).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import numpy as np
import pandas as pd
import scipy.stats

from pgen.errors import StatsError
from pgen.stats.resampling import check_resamples, hyperparameters

__all__ = ["robust_sign_agreement", "robust_references", "MIN_PAIRS", "MIN_DIFFERENCE", "REFERENCE_TAU"]

MIN_PAIRS = 10  # model pairs an environment needs: a random ranking then scores 0 with probability < 0.001
MIN_DIFFERENCE = 0.01  # about one standard error of a test accuracy on 1000 samples
REFERENCE_TAU = 0.6  # the noisy reference's Kendall tau with the target: about the best hand-made measures'


class _Environments:
    """The model pairs of every environment of one table, computed once for many measures."""

    def __init__(self, table: pd.DataFrame, hparam_grid: Mapping[str, list], target: str, min_difference: float,
                 min_pairs: int):
        self.hparams = [h for h in sorted(hyperparameters(hparam_grid) or {}) if f"hp.{h}" in table.columns]
        t = table[target].to_numpy(float)
        keys = [tuple(str(v) for v in row) for row in table[[f"hp.{h}" for h in self.hparams]].itertuples(index=False)]
        cells: dict[tuple, list[int]] = {}
        for i, k in enumerate(keys):
            if np.isfinite(t[i]):
                cells.setdefault(k, []).append(i)
        pooled: dict[tuple, list[tuple[int, int]]] = {}
        for c1, c2 in combinations(cells, 2):
            differs = [j for j in range(len(self.hparams)) if c1[j] != c2[j]]
            if len(differs) != 1:
                continue
            j = differs[0]
            h = self.hparams[j]
            order = [str(v) for v in hparam_grid[h]]  # the grid's order, else the text's
            (_, a, ca), (_, b, cb) = sorted([(_position(c1[j], order), c1[j], c1), (_position(c2[j], order), c2[j], c2)])
            pairs = pooled.setdefault((h, a, b), [])
            pairs += [(p, q) for p in cells[ca] for q in cells[cb] if abs(t[p] - t[q]) >= min_difference]
        self.kept = {env: np.array(pairs) for env, pairs in pooled.items() if len(pairs) >= min_pairs}
        self.left_out = len(pooled) - len(self.kept)
        self.target = t
        self.min_pairs = min_pairs

    def shares(self, oriented: np.ndarray) -> dict[tuple, tuple[float, int]]:
        """Per environment: (the share of its pairs the oriented measure orders like the
        target, a tie of the measure counting half; the pairs). Pairs with a non-finite
        measure are dropped, and an environment left with fewer than ``min_pairs`` with them."""
        out = {}
        for env, pairs in self.kept.items():
            p, q = pairs[:, 0], pairs[:, 1]
            dm, dt = oriented[p] - oriented[q], self.target[p] - self.target[q]
            ok = np.isfinite(dm)
            if ok.sum() < self.min_pairs:
                continue
            right = np.where(dm[ok] == 0, 0.5, (np.sign(dm[ok]) == np.sign(dt[ok])).astype(float))
            out[env] = (float(right.mean()), int(ok.sum()))
        return out

    def summary(self, oriented: np.ndarray) -> dict | None:
        shares = self.shares(oriented)
        if not shares:
            return None
        per: dict[str, list[float]] = {}
        for (h, _, _), (v, _) in shares.items():
            per.setdefault(h, []).append(v)
        values = [v for v, _ in shares.values()]
        return {"mean": float(np.mean(values)), "worst": float(np.min(values)), "environments": len(values),
                "left_out": len(self.kept) + self.left_out - len(values),
                "per_hparam": {h: {"mean": float(np.mean(v)), "worst": float(np.min(v)), "environments": len(v)}
                               for h, v in per.items()},
                "per_environment": [{"hparam": h, "from": a, "to": b, "pairs": k, "share": v}
                                    for (h, a, b), (v, k) in shares.items()]}


def _position(value: str, order: list[str]) -> tuple:
    return (order.index(value), "") if value in order else (len(order), value)


def robust_sign_agreement(table: pd.DataFrame, oriented, hparam_grid: Mapping[str, list], *,
                          target: str = "gap", min_difference: float = MIN_DIFFERENCE,
                          min_pairs: int = MIN_PAIRS) -> dict | None:
    """Dziugaite et al.'s coupled-network sign agreement of ``oriented`` (sign x value: a
    column of ``table``, or one value per row) with ``target``, environment by environment
    (see the module docstring for what an environment is here and why).

    Over every pair of models of an environment, one from each side of the change, the
    measure is right when the sign of its difference equals the sign of the target's
    difference; pairs whose target differs by less than ``min_difference`` are left out,
    as the paper leaves out pairs within Monte Carlo noise; a tie of the measure counts as
    half right. ``seed`` is never a hyperparameter (seeds are the samples within a cell).

    Returns ``{"mean", "worst", "environments", "left_out", "per_hparam": {h: {"mean",
    "worst", "environments"}}, "per_environment": [{"hparam", "from", "to", "pairs",
    "share"}]}``: an environment's value is its share of right pairs, ``mean`` averages the
    environments and ``worst`` is the lowest (the paper's robust view); None where no
    environment has ``min_pairs`` pairs.

    Parameters
    ----------
    table : pandas.DataFrame
        Per-model table with the target and ``hp.<name>`` columns.
    oriented : str or array-like
        The measure's oriented values: a column of ``table`` or one value per row.
    hparam_grid : Mapping[str, list]
        The zoo's hyperparameters.
    target : str, default="gap"
        The target column.
    min_difference : float, default=0.01
        Pairs whose target differs by less are left out.
    min_pairs : int, default=10
        Environments with fewer pairs are left out.

    Returns
    -------
    dict or None
        As described above, or None.
    """
    if target not in table.columns:
        raise StatsError(f"the table lacks {target!r}")
    if isinstance(oriented, str):
        if oriented not in table.columns:
            raise StatsError(f"the table lacks {oriented!r}")
        oriented = table[oriented]
    values = np.asarray(oriented, dtype=float)
    if values.shape != (len(table),):
        raise StatsError(f"oriented has {values.shape} values for {len(table)} models")
    env = _Environments(table, hparam_grid, target, min_difference, min_pairs)
    return env.summary(values)


def robust_references(table: pd.DataFrame, hparam_grid: Mapping[str, list], *, target: str = "gap",
                      tau: float = REFERENCE_TAU, draws: int = 200, seed: int = 0,
                      min_difference: float = MIN_DIFFERENCE, min_pairs: int = MIN_PAIRS) -> dict | None:
    """The robust view of two references on the same models and environments:

    * ``noisy``: the target plus Gaussian noise scaled so that its Kendall tau-b with the
      target is ``tau`` (the median over the draws): what a good measure could reach on
      this design;
    * ``random``: independent random values per model (random rankings): what no measure
      needs to beat.

    Each over ``draws`` draws: ``{"mean_median", "worst_median", "worst_q05", "worst_q95",
    "share_of_draws_with_worst_0"}``, plus ``noise_sd`` (in units of the target's standard
    deviation) and the realised ``tau``. A measure whose worst environment is below the
    random reference's 95th percentile is not told apart from a random ranking by this view.
    None where no environment has ``min_pairs`` pairs.

    Parameters
    ----------
    table : pandas.DataFrame
        Per-model table with the target and ``hp.<name>`` columns.
    hparam_grid : Mapping[str, list]
        The zoo's hyperparameters.
    target : str, default="gap"
        The target column.
    tau : float, default=0.6
        Kendall tau of the noisy reference with the target.
    draws : int, default=200
        Draws of each reference.
    seed : int, default=0
        Seed of the draws.
    min_difference : float, default=0.01
        Pairs whose target differs by less are left out.
    min_pairs : int, default=10
        Environments with fewer pairs are left out.

    Returns
    -------
    dict or None
        ``{"noisy": {...}, "random": {...}, "noise_sd", "tau"}``, or None.
    """
    draws = check_resamples(draws, "draws", n_units=len(table))
    if not 0 < tau < 1:
        raise StatsError(f"the reference tau must be between 0 and 1, not {tau}")
    env = _Environments(table, hparam_grid, target, min_difference, min_pairs)
    if not env.kept or draws == 0:
        return None
    t = env.target
    finite = np.isfinite(t)
    scale = float(np.std(t[finite]))
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((draws, len(t)))
    sd = _noise_for_tau(t[finite], noise[:, finite], tau)
    out = {"draws": draws, "environments": len(env.kept), "left_out": env.left_out}
    noisy = [t + sd * scale * z for z in noise]
    random = list(rng.standard_normal((draws, len(t))))
    for name, values in (("noisy", noisy), ("random", random)):
        summaries = [env.summary(v) for v in values]
        worst = np.array([s["worst"] for s in summaries])
        out[name] = {"mean_median": float(np.median([s["mean"] for s in summaries])),
                     "worst_median": float(np.median(worst)), "worst_q05": float(np.quantile(worst, 0.05)),
                     "worst_q95": float(np.quantile(worst, 0.95)),
                     "share_of_draws_with_worst_0": float(np.mean(worst == 0))}
    out["noisy"]["noise_sd"] = sd
    out["noisy"]["tau"] = float(np.median([scipy.stats.kendalltau(v[finite], t[finite])[0] for v in noisy]))
    return out


def _noise_for_tau(t: np.ndarray, noise: np.ndarray, tau: float) -> float:
    """The noise scale s (in standard deviations of t) at which the median Kendall tau-b of
    t + s sd(t) z with t over the fixed draws z is ``tau`` (bisection on log s)."""
    scale = float(np.std(t)) or 1.0

    def median_tau(s):
        return float(np.median([scipy.stats.kendalltau(t + s * scale * z, t)[0] for z in noise[:64]]))

    lo, hi = -6.0, 4.0  # log10 of s: tau falls from ~1 to ~0 across this range
    for _ in range(30):
        mid = (lo + hi) / 2
        if median_tau(10 ** mid) > tau:
            lo = mid
        else:
            hi = mid
    return float(10 ** ((lo + hi) / 2))
