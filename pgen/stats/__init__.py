"""Statistics relating a measure to generalization: one implementation of each, shared.

One entry point, :func:`measure_statistics`, serves the zoo report and the benchmark. The
pieces, each in one module:

* :mod:`pgen.stats.resampling`: the design's resampling unit (hyperparameter cells where a
  cell holds several seeds, else models), bootstrap p-values, Holm's correction;
* :mod:`pgen.stats.correlation`: correlations with bootstrap CIs over that unit, the paired
  difference of two measures' tau, the log-log OLS fit (HC3, or cluster-robust by cell),
  Kendall's tau-b and tau-a, Jiang et al.'s granulated Psi;
* :mod:`pgen.stats.cmi`: the PGDL competition's CMI, Jiang et al.'s K(mu) and the CMI's
  permutation null (no bootstrap interval: the module says why);
* :mod:`pgen.stats.robust`: Dziugaite et al.'s robust view with its references.

Every public function checks its arguments (counts, levels, non-finite scores) and raises
:class:`StatsError` with what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pgen.errors import StatsError
from pgen.stats.cmi import cmi_from_table, cmi_null, conditional_mutual_information, jiang_cmi
from pgen.stats.correlation import (LogLogFit, bootstrap_ci, correlations, granulated_kendall, jiang_tau, kendall_tau,
                                    loglog_fit, paired_tau_difference)
from pgen.stats.resampling import (ResamplingUnit, bootstrap_p, check_resamples, holm, hyperparameters,
                                   resampling_unit)
from pgen.stats.robust import robust_references, robust_sign_agreement

__all__ = [
    "StatsError",
    "TARGETS",
    "LogLogFit",
    "MeasureStatistics",
    "ResamplingUnit",
    "bootstrap_ci",
    "bootstrap_p",
    "cmi_from_table",
    "cmi_null",
    "conditional_mutual_information",
    "correlations",
    "granulated_kendall",
    "holm",
    "hyperparameters",
    "jiang_cmi",
    "jiang_tau",
    "kendall_null_sd",
    "kendall_tau",
    "loglog_fit",
    "measure_statistics",
    "paired_tau_difference",
    "random_angle_null",
    "resampling_unit",
    "robust_references",
    "robust_sign_agreement",
]

TARGETS = {"test_acc": "test accuracy", "test_error": "test error", "pseudo_test_acc": "pseudo-test accuracy",
           "gap": "generalization gap"}


def random_angle_null(n: int, *, draws: int = 2000, seed: int = 0) -> dict:
    """Angles (degrees) between a fixed unit vector in R^n and uniformly random unit vectors:
    the scale beside any P-vector angle over n samples. Returns ``{"median", "q05", "q95"}``
    and the mean |cos| of the draws beside its closed form sqrt(2 / (pi n)) (large n).

    Parameters
    ----------
    n : int
        Samples the P-vectors are over.
    draws : int, default=2000
        Random unit vectors drawn.
    seed : int, default=0
        Seed of the draws.

    Returns
    -------
    dict
        ``{"median", "q05", "q95", "mean_abs_cos", "mean_abs_cos_closed_form"}``.

    Examples
    --------
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
    sqrt(2 (2n + 5) / (9 n (n - 1))), the scale a tau needs beside it.

    Parameters
    ----------
    n : int
        Number of ranked items.

    Returns
    -------
    float
        The standard deviation; NaN for n < 2.
    """
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))) if n > 1 else math.nan


@dataclass
class MeasureStatistics:
    """How one measure relates to generalization over the models of one table.

    Parameters
    ----------
    measure : str
    n : int
        Models with a finite value of the measure.
    correlations : DataFrame
        target, method (pearson, spearman, kendall = tau-b), value, p_value (scipy's, models
        taken as independent), p_boot (bootstrap, over ``unit``), ci_low, ci_high (percentile
        bootstrap over ``unit``), n, unit, units; of the ORIENTED value, sign x measure
        (``sign`` = +1: the raw value), so every report shows one convention.
    fits : list of LogLogFit
        log(target) on log(measure), of the raw value (HC3 errors, or cluster-robust by cell
        where cells hold several seeds; positive values only).
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
    cmi_null : dict or None
        ``{"median", "q95", "p_value", "permutations"}``: the CMI of random rankings
        (the measure's values permuted over the models), with ``cmi_permutations``.
    notes : list of str
        Why a statistic is missing.
    k_mu : float or None
        Jiang et al.'s K(mu): the minimum over conditioning sets of 0 to 2 hyperparameters
        (:func:`jiang_cmi`); at most the PGDL CMI.
    sign : int
        The measure's direction (+1: larger predicts worse generalization).
    unit : ResamplingUnit
        What every bootstrap here resampled (:func:`~pgen.stats.resampling.resampling_unit`).
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
    unit: ResamplingUnit | None = None

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

    The one entry point the report and the benchmark share. The correlations, Kendall tau
    and Psi are of ``sign x value``, so a positive tau against the gap means the authors'
    direction in every report; the log-log fits are of the values themselves and the CMI is
    sign-free. Bootstraps resample the design's unit (:func:`resampling_unit`).

    Parameters
    ----------
    table : pandas.DataFrame
        One row per model: the ``measure`` column, the target columns present among
        ``targets``, ``gap``, and ``hp.<name>`` columns for Psi and the CMI.
    measure : str
        The measure's column.
    targets : Mapping[str, str], optional
        Target columns and their labels (default :data:`TARGETS`).
    hparam_grid : Mapping[str, list], optional
        The zoo's hyperparameter grid; with it, the CMI and K(mu) are computed.
    n_boot : int, default=1000
        Bootstrap resamples for the CIs (0: none).
    seed : int, default=0
        Seed of the bootstrap and the permutations.
    cmi_permutations : int, default=0
        Random rankings for the CMI's permutation null (0: none).
    fits : bool, default=True
        Also fit the log-log regressions.
    full_grid : bool, default=True
        The table holds every cell of ``hparam_grid`` (False: some were left out, e.g.
        unconverged models; the CMI then uses the cells present).
    sign : int, default=1
        The measure's direction (+1: larger predicts worse generalization).

    Returns
    -------
    MeasureStatistics
        Correlations with CIs, ``kendall``, ``kendall_null_sd``, ``psi``, ``cmi`` and its
        null, the log-log fits.

    Raises
    ------
    StatsError
        When the measure's column is missing from the table, or the arguments are invalid
        (rows with a missing value are left out of each statistic).

    Examples
    --------
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
    n_boot = check_resamples(n_boot, n_units=len(table))
    sub = table[np.isfinite(table[measure].to_numpy(float))]
    oriented = sign * sub[measure]
    unit = resampling_unit(sub)  # hyperparameter cells where a cell holds several seeds, else models
    corr, fit_list, kendall = [], [], {}
    for col, label in targets.items():
        if col not in sub.columns:
            continue
        try:
            c = correlations(oriented, sub[col], n_boot=n_boot, seed=seed, name_x=measure, name_y=col, groups=unit)
            c.insert(0, "target", col)
            corr.append(c)
            kendall[col] = float(c.loc[c["method"] == "kendall", "value"].iloc[0])
        except StatsError as exc:
            notes.append(f"{measure} vs {label}: {exc}")
            kendall[col] = math.nan
        if fits:
            try:
                fit_list.append(loglog_fit(sub[measure], sub[col], name_x=measure, name_y=col, groups=unit))
            except StatsError as exc:
                notes.append(f"log-log fit of {label} on {measure}: {exc}")
    corr_df = pd.concat(corr, ignore_index=True) if corr else pd.DataFrame(
        columns=["target", "method", "value", "p_value", "p_boot", "ci_low", "ci_high", "n", "unit", "units"])
    stats = MeasureStatistics(measure, len(sub), corr_df, fit_list, kendall, kendall_null_sd(len(sub)), notes=notes,
                              sign=sign, unit=unit)
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

