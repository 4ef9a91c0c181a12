"""``pgen benchmark``: every selected measure on every model of several zoos, compared.

Measures run through :func:`pgen.score.score_zoo` (one shared ``results.sqlite``, so a
rerun resumes and adding a measure computes only that measure); the statistics come from
:func:`pgen.stats.measure_statistics`, as in the zoo report. Every bootstrap resamples the
design's unit: whole hyperparameter cells (all seeds of a cell together) where a cell holds
several models, else models (``bootstrap_unit``, ``bootstrap_units``). Per zoo and measure,
with ``oriented = sign x value`` (larger = predicted worse, see :mod:`pgen.measures`):

* ``tau_gap`` [``tau_gap_ci_low``, ``tau_gap_ci_high``]: Kendall tau-b of oriented vs the
  generalization gap, percentile bootstrap CI (> 0 = works as meant); ``tau_gap_p``: the
  two-sided bootstrap p-value of 0 from the same resamples; ``tau_gap_p_holm``: Holm's
  adjustment over the measures of this zoo (one family per zoo and target);
  ``tau_gap_holm``: the decision at family-wise 5% (intended / opposite / not resolved);
* ``tau_test_acc`` [CI], ``tau_test_acc_p``, ``_p_holm``, ``_holm``: the same against test
  accuracy (< 0 = works as meant);
* ``spearman_test_acc``: the same with Spearman's rho;
* ``tau_null_sd``: the standard deviation of tau under random rankings of these models;
* ``psi_gap``: granulated Kendall Psi vs the gap (zoos with hparams; Jiang et al.'s tau-a
  within groups, a constant group counting 0);
* ``cmi_gap``: the PGDL conditional mutual information, as the competition's scorer
  computes it (zoos that are a hparam grid); no bootstrap CI (:mod:`pgen.stats.cmi` says
  why: resampling design points biases it upwards);
* ``cmi_null_median``, ``cmi_null_q95``, ``cmi_null_p``: the CMI of random rankings (the
  values permuted) and the permutation p-value; ``cmi_null_p_holm``, ``cmi_null_holm``
  (above the null after Holm's correction);
* ``tau_gap_minus_angle`` [CI], ``_p``, ``_p_holm``, ``_holm``: the measure's ``tau_gap``
  minus the P-vector angle's, with a paired bootstrap CI (better / worse / not resolved,
  Holm over the measures of this zoo);
* ``robust_mean``, ``robust_worst``, ``robust_worst_hparam``, ``robust_environments``,
  ``robust_left_out``: Dziugaite et al. 2020's coupled-network sign agreement with the gap
  (:func:`pgen.stats.robust_sign_agreement`; the references beside it per zoo:
  :func:`pgen.stats.robust_references`);
* ``k_mu_gap``: Jiang et al.'s K(mu), the minimum over conditioning sets of 0 to 2
  hyperparameters (at most ``cmi_gap``);
* ``r2_loglog``: R^2 of the log-log fit of value vs test accuracy (positive values only);
* ``median_seconds``: median seconds per model.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from pgen.errors import InputError, UnknownNameError
from pgen.executors import open_executor
from pgen.measures import get_measure, list_measures
from pgen.paths import output_path, safe_filename
from pgen.report import plots
from pgen.report.document import Document
from pgen.report.glossary import add_glossary
from pgen.score import ScoreSettings, score_zoo
from pgen.stats import holm, measure_statistics, paired_tau_difference, robust_references, robust_sign_agreement
from pgen.stats.robust import MIN_DIFFERENCE, MIN_PAIRS, REFERENCE_TAU
from pgen.zoo import Zoo, load_zoo

__all__ = ["run_benchmark", "summarize_run", "summarize_tables", "default_measures", "resolved_findings",
           "headline_table", "ALPHA", "N_BOOT"]

ALPHA = 0.05  # family-wise error of each family (the measures of one zoo, one target)
N_BOOT = 10_000  # bootstrap resamples: Holm over m measures needs p-values down to ALPHA / m (>= 2m / ALPHA resamples)


def default_measures() -> list[str]:
    """Every registered measure except those that need an optional package (asked for by name).

    Returns
    -------
    list of str
        The measure names.
    """
    table = list_measures()
    return list(table.loc[table["requires"] == "", "name"])


REFERENCE_MEASURE = "pvector_angle"  # pgen's own measure: every other is compared with it
FIXTURE_MARKER = ".pgen-fixture"  # a file in a zoo folder: a format fixture, scored but never ranked
LEARNED = "learned:statnn-gap"  # the out-of-fold StatNN predictions of the gap (pgen.learned)
LEARNED_PREFIX = "learned:"  # out-of-fold predictions: learned:<predictor>-<target> (pgen.learned.protocol)
LEGACY_LEARNED = {"learned_statnn": "gap"}  # the column's name before several predictors and targets
LEARNED_TARGETS = ("test_acc", "gap")


def learned_columns(table: pd.DataFrame) -> list[str]:
    """The table's columns of learned predictions (out of fold, or a fitted predictor scored)."""
    return [c for c in table.columns if (c.startswith(LEARNED_PREFIX) and "." not in c) or c in LEGACY_LEARNED]


def learned_target(name: str) -> str:
    """What a learned column predicts: ``learned:<predictor>-<target>``, else the gap."""
    if name in LEGACY_LEARNED:
        return LEGACY_LEARNED[name]
    tail = name.rsplit("-", 1)[-1]
    return tail if tail in LEARNED_TARGETS else "gap"


def _measure_meta(name: str):
    """The registered measure, or None for a learned column (scored elsewhere or read from a table)."""
    try:
        return get_measure(name)
    except UnknownNameError:
        if name in LEGACY_LEARNED or name.startswith(LEARNED_PREFIX):
            return None
        raise

# The tests corrected for many measures: (p-value column, statistic column, decision column, words for +, -).
TESTS = (("tau_gap_p", "tau_gap", "tau_gap_holm", "intended", "opposite"),
         ("tau_test_acc_p", "tau_test_acc", "tau_test_acc_holm", "opposite", "intended"),
         ("tau_gap_minus_angle_p", "tau_gap_minus_angle", "tau_gap_minus_angle_holm", "better", "worse"),
         ("cmi_null_p", "cmi_gap", "cmi_null_holm", "above null", "above null"))


def permutations_for(family: int, alpha: float = ALPHA) -> int:
    """Permutations for the CMI null that let Holm over ``family`` tests reject: the smallest
    permutation p-value, 1 / (1 + P), must be well under alpha / family (twice over)."""
    return max(200, math.ceil(2 * family / alpha))


def summarize_run(table: pd.DataFrame, measures: list[str], hparam_grid: dict | None, *,
                  n_boot: int = N_BOOT, reference: str = REFERENCE_MEASURE, full_grid: bool = True,
                  alpha: float = ALPHA) -> pd.DataFrame:
    """One row per measure (and the learned baseline, where ``table`` has its column):
    oriented rank statistics against the gap (the headline) and test accuracy, with
    bootstrap CIs over the design's unit, nulls, the paired difference to ``reference``,
    Dziugaite et al.'s robust view, cost, and Holm's correction over the rows of each test
    (:func:`adjust_for_many_measures`). Columns are described in the module docstring.
    ``full_grid=False`` lets the CMI run on a grid with cells left out (unconverged models).

    Parameters
    ----------
    table : pandas.DataFrame
        One row per model with the measures, targets and ``hp.<name>`` columns.
    measures : list of str
        The measure columns summarized.
    hparam_grid : dict or None
        The zoo's grid (None: no CMI, Psi or robust view).
    n_boot : int, default=10000
        Bootstrap resamples.
    reference : str, default="pvector_angle"
        The measure every other is compared with (paired difference).
    full_grid : bool, default=True
        Every cell of the grid is present.
    alpha : float, default=0.05
        Family-wise level of Holm's correction.

    Returns
    -------
    pandas.DataFrame
        One row per measure (the columns of ``summary_<zoo>.csv``).
    """
    learned = learned_columns(table)
    names = [m for m in measures if m not in learned] + learned
    n_perm = permutations_for(len(names), alpha)
    ref_oriented = None
    if reference in table and table[reference].notna().any():
        ref_oriented = get_measure(reference).sign * table[reference].to_numpy(float)
    rows = []
    for name in names:
        if name not in table or table[name].notna().sum() == 0:
            rows.append({"measure": name, "models": 0})
            continue
        meta = _measure_meta(name)
        sign = meta.sign if meta else (-1 if learned_target(name) == "test_acc" else 1)
        st = measure_statistics(table, name, targets={t: t for t in ("test_acc", "gap") if t in table},
                                hparam_grid=hparam_grid, n_boot=n_boot, cmi_permutations=n_perm, full_grid=full_grid,
                                sign=sign, fits=meta is not None)
        row = {"measure": name, "sign": sign, "family": meta.family if meta else "learned",
               "fidelity": meta.fidelity if meta else "faithful", "models": st.n,
               "bootstrap_unit": st.unit.kind, "bootstrap_units": st.unit.count, "bootstrap_resamples": n_boot,
               **_tau_columns(st, table)}
        c = st.correlations
        sp = c[(c["target"] == "test_acc") & (c["method"] == "spearman")] if not c.empty else c
        row["spearman_test_acc"] = float(sp["value"].iloc[0]) if len(sp) else math.nan
        row["tau_null_sd"] = st.kendall_null_sd
        if st.psi is not None:
            row["psi_gap"] = st.psi["psi"]
        if st.cmi is not None:
            row["cmi_gap"] = st.cmi
        if st.cmi_null is not None:
            row["cmi_null_median"], row["cmi_null_q95"] = st.cmi_null["median"], st.cmi_null["q95"]
            row["cmi_null_p"], row["cmi_permutations"] = st.cmi_null["p_value"], st.cmi_null["permutations"]
        if st.k_mu is not None:
            row["k_mu_gap"] = st.k_mu
        oriented = sign * table[name].to_numpy(float)
        if ref_oriented is not None and name != reference and "gap" in table:
            d = paired_tau_difference(oriented, ref_oriented, table["gap"], n_boot=n_boot, groups=_cells(table))
            row.update({"tau_gap_minus_angle": d["diff"], "tau_gap_minus_angle_ci_low": d["ci_low"],
                        "tau_gap_minus_angle_ci_high": d["ci_high"], "tau_gap_minus_angle_p": d["p_value"]})
        if hparam_grid and "gap" in table:
            robust = robust_sign_agreement(table, oriented, hparam_grid)
            row["robust_environments"] = robust["environments"] if robust else 0
            if robust is not None:
                row["robust_mean"], row["robust_worst"] = robust["mean"], robust["worst"]
                row["robust_left_out"] = robust["left_out"]
                worst_h = min(robust["per_hparam"].items(), key=lambda kv: kv[1]["mean"])
                row["robust_worst_hparam"] = f"{worst_h[0]} ({worst_h[1]['mean']:.2f})"
        fit = next((f for f in st.fits if f.y_name == "test_acc"), None)
        row["r2_loglog"] = fit.r2 if fit is not None else math.nan
        secs = table.get(f"seconds.{name}")
        row["median_seconds"] = float(secs.median()) if secs is not None and secs.notna().any() else math.nan
        rows.append(row)
    return adjust_for_many_measures(pd.DataFrame(rows), alpha)


def _cells(table: pd.DataFrame) -> list[str] | None:
    """Each model's hyperparameter cell (every hp column but the seed), for paired resamples."""
    cols = sorted(c for c in table.columns if c.startswith("hp.") and c != "hp.seed")
    return ["\x1f".join(map(str, r)) for r in table[cols].itertuples(index=False)] if cols else None


def _tau_columns(st, table: pd.DataFrame) -> dict:
    """Kendall tau of sign x value (``st`` is oriented) against the gap and test accuracy,
    with its CI and bootstrap p-value."""
    cols = {}
    for target in ("gap", "test_acc"):
        k = st.kendall_row(target)
        if k is not None:
            cols.update({f"tau_{target}": k["value"], f"tau_{target}_ci_low": k["ci_low"],
                         f"tau_{target}_ci_high": k["ci_high"], f"tau_{target}_p": k["p_boot"]})
        elif target in table:
            cols[f"tau_{target}"] = math.nan
    return cols


def adjust_for_many_measures(summary: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Holm's method over the measures of one summary (one zoo), per test: for each p-value
    column of :data:`TESTS` present, ``<p>_holm`` (adjusted p) and the decision column
    (the direction's word where adjusted p <= alpha, else 'not resolved')."""
    summary = summary.copy()
    for p_col, stat_col, decision, plus, minus in TESTS:
        if p_col not in summary:
            continue
        adjusted = holm(summary[p_col].to_numpy(float))
        summary[f"{p_col}_holm"] = adjusted
        stat = summary[stat_col].to_numpy(float) if stat_col in summary else np.full(len(summary), np.nan)
        summary[decision] = np.where(~(adjusted <= alpha), "not resolved", np.where(stat > 0, plus, minus))
        summary.loc[~np.isfinite(adjusted), decision] = ""
    return summary


def _names(frame: pd.DataFrame) -> str:
    return ", ".join(frame["measure"]) or "none"


def resolved_findings(summary: pd.DataFrame, reference: str = REFERENCE_MEASURE, alpha: float = ALPHA) -> list[str]:
    """Sentences that the statistics resolve, and only those: after Holm's correction over
    the measures of this zoo (one family per target and test), with the count by raw 95%
    CIs beside each list.

    Parameters
    ----------
    summary : pandas.DataFrame
        A zoo's summary (:func:`summarize_run`).
    reference : str, default="pvector_angle"
        The measure compared with.
    alpha : float, default=0.05
        Family-wise level.

    Returns
    -------
    list of str
        The sentences.
    """
    out = []
    s = summary[summary["models"] > 0] if "models" in summary else summary
    if "tau_gap_holm" in s:
        family = int(np.isfinite(s["tau_gap_p"].to_numpy(float)).sum())
        up, down = s[s["tau_gap_holm"] == "intended"], s[s["tau_gap_holm"] == "opposite"]
        raw_up, raw_down = s[s["tau_gap_ci_low"] > 0], s[s["tau_gap_ci_high"] < 0]
        out.append(f"Family: the {family} measures of this zoo with a tau against the gap; Holm's method at "
                   f"family-wise {alpha:.0%} (bootstrap p-values from the same resamples as the CIs).")
        out.append(f"Rank the gap as intended after the correction: {_names(up)} ({len(up)}; by raw 95% CIs "
                   f"{len(raw_up)}).")
        out.append(f"Rank it against their intended direction after the correction: {_names(down)} ({len(down)}; "
                   f"by raw 95% CIs {len(raw_down)}).")
        out.append(f"Direction not resolved after the correction: {family - len(up) - len(down)} measure(s) "
                   f"(by raw CIs {len(s) - len(raw_up) - len(raw_down)}).")
        n_boot = int(s["bootstrap_resamples"].max()) if "bootstrap_resamples" in s and len(s) else 0
        if n_boot and family and 2 / (n_boot + 1) > alpha / family:
            out.append(f"With {n_boot} resamples the smallest bootstrap p-value is {2 / (n_boot + 1):.2g}, above "
                       f"{alpha}/{family} = {alpha / family:.2g}: no test can pass Holm's first step here; more "
                       "--bootstrap resamples are needed to resolve anything.")
    if "cmi_null_holm" in s:
        above = s[s["cmi_null_holm"] == "above null"]
        raw = s[s["cmi_gap"] > s["cmi_null_q95"]]
        out.append(f"CMI above random rankings after the correction (permutation p-values): {_names(above)} "
                   f"({len(above)}; above the null's raw 95th percentile: {len(raw)}).")
    if "tau_gap_minus_angle_holm" in s:
        better = s[s["tau_gap_minus_angle_holm"] == "better"]
        worse = s[s["tau_gap_minus_angle_holm"] == "worse"]
        raw_b, raw_w = s[s["tau_gap_minus_angle_ci_low"] > 0], s[s["tau_gap_minus_angle_ci_high"] < 0]
        out.append(f"Rank the gap better than {reference} after the correction (paired bootstrap): {_names(better)} "
                   f"({len(better)}; by raw paired CIs {len(raw_b)}); worse: {_names(worse)} ({len(worse)}; raw "
                   f"{len(raw_w)}); every other difference is not resolved.")
    return out


def is_fixture(zoo: Zoo) -> bool:
    """A format fixture (a handful of models that check a reader, e.g. the PGDL kit toy):
    its folder holds a ``.pgen-fixture`` file. Fixtures are scored, never ranked."""
    root = getattr(zoo, "root", None)
    return root is not None and (Path(root) / FIXTURE_MARKER).is_file()


def run_benchmark(zoos: list[str | Path | Zoo], out: str | Path, *, measures: list[str] | None = None,
                  settings: ScoreSettings | None = None, device: str = "cpu", workers: int = 1,
                  final_only: bool = True, progress: bool = True, n_boot: int = N_BOOT,
                  converged_only: bool = True, learned: bool | str | list[str] = False,
                  executor: str | object = "local", learned_settings: dict | None = None) -> dict:
    """Score every measure on every zoo, summarize, and write the report into ``out``.

    Parameters
    ----------
    zoos : list of str, Path or Zoo
        Zoo folders, embedded names or Zoos. Format fixtures (:func:`is_fixture`) are
        scored but never summarized or ranked.
    out : str or Path
        The benchmark folder: ``results.sqlite`` (a rerun resumes), per zoo
        ``models_<zoo>.csv``, ``errors_<zoo>.csv`` and ``summary_<zoo>.csv``,
        ``benchmark_settings.json`` (all :func:`summarize_tables` needs to redo the
        statistics), ``benchmark.html``, ``benchmark.md`` and ``ranking.png``.
    measures : list of str, optional
        Registered measures (default: :func:`default_measures`, all but the optional ones).
    settings : ScoreSettings, optional
        Scoring settings (samples, seed, layer...); its ``measures`` are replaced.
    device : str, default="cpu"
        ``"cpu"`` or ``"cuda"``.
    workers : int, default=1
        Local worker processes.
    final_only : bool, default=True
        Leave out intermediate checkpoints, so that every hyperparameter cell is one
        model's final state and Psi and the CMI keep their meaning.
    progress : bool, default=True
        Show progress bars.
    n_boot : int, default=10000
        Bootstrap resamples (Holm over m measures needs at least 2m / 0.05).
    converged_only : bool, default=True
        Leave out models that a zoo records as not having met its training criterion, as
        Jiang et al. and the PGDL competition do; a zoo that records none is ranked whole.
    learned : bool, str or list of str, default=False
        Add learned predictors (``True``: StatNN; or names of
        :data:`pgen.learned.PREDICTORS`), each predicting test accuracy and the gap out of
        fold (:func:`add_learned_predictions`).
    executor : str or executor object, default="local"
        Runs the scoring (see :func:`pgen.score.score_zoo`); one Ray connection serves
        every zoo.
    learned_settings : dict, optional
        Keyword arguments of the learned predictors' protocol (``epochs``, ``workers``).

    Returns
    -------
    dict
        ``{"summaries": {zoo: DataFrame}, "tables": {zoo: DataFrame}, "errors": {...},
        "runs": {zoo: ScoreRun}, "excluded": {zoo: [model ids]}, "learned": {zoo: dict},
        "robust_references": {zoo: dict}, "fixtures": {zoo: ScoreRun}, "files": [...]}``.

    Raises
    ------
    UnknownNameError
        When a measure or predictor name is not registered.

    Examples
    --------
    The suite's tests run it on tiny zoos; on a protocol zoo pair (hours on 2 cores):

    >>> result = run_benchmark(["fantastic-mnist1d", "fantastic-mnist5k"], "reports/benchmark")  # doctest: +SKIP
    >>> result["summaries"]["fantastic-mnist1d"][["measure", "tau_gap", "tau_gap_holm"]]         # doctest: +SKIP
    """
    if measures is None:
        measures = default_measures()
    for name in measures:
        get_measure(name)
    base = settings or ScoreSettings()
    settings = ScoreSettings(**{**base.identity(), "measures": tuple(measures)})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open_executor(executor, workers=workers, device=device) as executor:  # one for every zoo
        tables, errors, runs, learned_results, fixtures = {}, {}, {}, {}, {}
        for z in zoos:
            zoo = z if isinstance(z, Zoo) else load_zoo(z, progress=progress)
            if final_only:
                zoo = zoo.final_models()
            run = score_zoo(zoo, out, settings=settings, device=device, workers=workers, progress=progress,
                            executor=executor)
            if is_fixture(zoo):
                fixtures[run.name] = run
                continue
            table = run.table
            if learned:
                table, learned_results[run.name] = add_learned_predictions(
                    zoo, table, learned, converged_only=converged_only, device=device, progress=progress,
                    **(learned_settings or {}))
            tables[run.name], errors[run.name], runs[run.name] = table, run.errors, run
            name = safe_filename(run.name)  # a zoo's name comes from its files: never a path
            table.to_csv(output_path(out, f"models_{name}.csv"), index=False)
            run.errors.to_csv(output_path(out, f"errors_{name}.csv"), index=False)
    record = {"settings": settings.identity(), "measures": list(measures), "zoos": list(tables),
              "converged_only": converged_only,
              "n_boot": n_boot, "learned": learned_results,
              "zoo_roots": {name: str(r.zoo.get("root", "")) for name, r in runs.items() if r.zoo.get("root")}}
    output_path(out, "benchmark_settings.json").write_text(json.dumps(record, indent=1, default=str))
    result = _summarize_and_report(tables, errors, out, record, {n: r.hparam_grid for n, r in runs.items()},
                                   fixtures)
    return {**result, "runs": runs, "fixtures": fixtures}


def summarize_tables(folder: str | Path, out: str | Path | None = None, *, n_boot: int | None = None,
                     learned: bool | str | list[str] = False, learned_settings: dict | None = None,
                     progress: bool = True) -> dict:
    """Redo the statistics and the report of a benchmark folder from its stored tables alone
    (``models_<zoo>.csv``, ``errors_<zoo>.csv`` where present, ``benchmark_settings.json``),
    without its zoos or results store: e.g. a committed benchmark, after the statistics
    changed. The hyperparameter grid is every value each ``hp.*`` column takes, except in a
    zoo whose runs drew their hyperparameters (a column other than the seed with a value per
    model, 20 models or more): it has no grid, as when it was benchmarked; the learned
    predictions are summarized where they are columns of the table. ``learned`` computes
    learned predictors' out-of-fold predictions now (:func:`add_learned_predictions`), which
    needs the zoos (their folders as recorded, or the embedded zoos by name); the tables and
    ``benchmark_settings.json`` are rewritten with them.

    Returns the dict of :func:`run_benchmark` without ``runs`` and ``fixtures``.

    Parameters
    ----------
    folder : str or Path
        A benchmark folder.
    out : str or Path, optional
        Where the new statistics and report go (default: ``folder``).
    n_boot : int, optional
        Bootstrap resamples (default: as recorded).
    learned : bool, str or list of str, default=False
        Learned predictors to compute now (needs the zoos).
    learned_settings : dict, optional
        Keyword arguments of their protocol.
    progress : bool, default=True
        Show progress bars.

    Returns
    -------
    dict
        As :func:`run_benchmark`, without ``runs`` and ``fixtures``.
    """
    folder = Path(folder)
    settings_file = folder / "benchmark_settings.json"
    if not settings_file.is_file():
        raise InputError(f"{folder}: no benchmark_settings.json; is this a `pgen benchmark` output folder?")
    record = json.loads(settings_file.read_text())
    record["n_boot"] = n_boot if n_boot is not None else record.get("n_boot", N_BOOT)
    tables, errors, grids = {}, {}, {}
    paths = {p.stem[len("models_"):]: p for p in sorted(folder.glob("models_*.csv"))}
    order = [z for z in record.get("zoos", []) if z in paths] + [z for z in paths if z not in record.get("zoos", [])]
    for name in order:  # the order the benchmark ran them in
        path = paths[name]
        table = pd.read_csv(path)
        tables[name] = table
        err = folder / f"errors_{name}.csv"
        errors[name] = pd.read_csv(err).fillna("") if err.is_file() and err.stat().st_size > 1 else \
            pd.DataFrame(columns=["model_id", "measure", "error"])
        hp = [c for c in table.columns if c.startswith("hp.")]
        grids[name] = {c[3:]: sorted(table[c].dropna().unique().tolist()) for c in hp} or None
        if grids[name] and len(table) >= 20 and any(table[c].nunique() == len(table) for c in hp if c != "hp.seed"):
            grids[name] = None  # hyperparameters drawn per run (smallcnn-mnist5k): no grid for the CMI or the robust view
    if not tables:
        raise InputError(f"{folder}: no models_<zoo>.csv tables")
    out = Path(out) if out is not None else folder
    out.mkdir(parents=True, exist_ok=True)
    if learned:
        record["learned"] = {z: r for z, r in record.get("learned", {}).items()
                             if isinstance(r, dict) and "kendall_tau" not in r and "error" not in r}  # legacy form
        for name, table in tables.items():
            zoo = load_zoo(record.get("zoo_roots", {}).get(name) or name, build=False, progress=progress)

            def save(table, results, name=name):  # each finished predictor and target, as it finishes
                record.setdefault("learned", {}).setdefault(name, {}).update(results)
                table.to_csv(output_path(out, f"models_{safe_filename(name)}.csv"), index=False)
                output_path(out, "benchmark_settings.json").write_text(json.dumps(record, indent=1, default=str))

            tables[name], _ = add_learned_predictions(zoo, table, learned,
                                                      converged_only=record.get("converged_only", True),
                                                      progress=progress, save=save, **(learned_settings or {}))
    return _summarize_and_report(tables, errors, out, record, grids, {})


def _ranked(table: pd.DataFrame, converged_only: bool) -> tuple[pd.DataFrame, list[str] | None]:
    """The models the statistics rank and the ids left out; ``None`` for the ids where the
    zoo records no training criterion (nothing could be left out, and the report says so)."""
    if "zoo.converged" not in table:
        return table, None
    missed = table["zoo.converged"].astype(str).str.lower().isin(["false", "0", "0.0"])
    if not converged_only:
        return table, []
    return table[~missed].reset_index(drop=True), table.loc[missed, "model_id"].tolist()


def _predictor_names(learned: bool | str | list[str]) -> list[str]:
    from pgen.learned import PREDICTORS

    names = ["statnn"] if learned is True else ([] if not learned else
                                                 [n.strip() for n in (learned.split(",") if isinstance(learned, str)
                                                                      else learned) if n.strip()])
    unknown = [n for n in names if n not in PREDICTORS]
    if unknown:
        raise InputError(f"unknown learned predictor(s) {', '.join(unknown)}; known: {', '.join(PREDICTORS)}")
    return list(dict.fromkeys(names))


def add_learned_predictions(zoo: Zoo, table: pd.DataFrame, learned: bool | str | list[str], *,
                            converged_only: bool = True, targets=LEARNED_TARGETS, folds: int = 5, seed: int = 0,
                            workers: int = 1, device: str = "cpu", progress: bool = True, save=None,
                            **settings) -> tuple[pd.DataFrame, dict]:
    """``table`` with a column ``learned:<predictor>-<target>`` of out-of-fold predictions per
    predictor and target (:func:`pgen.learned.cross_validate` on the models the statistics
    rank), and per column what the protocol recorded (tau, R^2 with its interval, folds,
    their seeds, fit and prediction time) or the error that stopped it. ``save(table,
    results)`` is called after each column, so that a long run keeps what it finished."""
    from pgen.learned import cross_validate

    ranked = _ranked(table, converged_only)[0]
    results = {}
    for predictor in _predictor_names(learned):
        for target in targets:
            column = f"{LEARNED_PREFIX}{predictor}-{target}"
            try:
                if target not in ranked:
                    raise InputError(f"the table has no {target} column")
                res = cross_validate(zoo, ranked, predictor=predictor, target=target, folds=folds, seed=seed,
                                     workers=workers, device=device, progress=progress, **settings)
            except (InputError, ValueError) as exc:  # e.g. one cell only, or layouts an NFN cannot read
                results[column] = {"error": str(exc)}
            else:
                table = table.assign(**{column: table["model_id"].map(res["predictions"])})
                if "learned_fold" not in table:
                    table = table.assign(learned_fold=table["model_id"].map(res["fold"]))
                results[column] = {k: v for k, v in res.items() if k not in ("predictions", "fold")}
            if save is not None:  # what failed is kept too: the report says why a column is missing
                save(table, results)
    return table, results


def _learned_text(column: str, r: dict) -> str:
    if "error" in r:
        return f"{column}: not computed: {Document.text(r['error'])}."
    lo, hi = r.get("r2_ci", (math.nan, math.nan))
    unit = {"cells": "hyperparameter cells", "models": "models"}.get(r.get("unit"), r.get("unit", "units"))
    epochs = r.get("settings", {}).get("epochs")
    return (f"{column}: out of fold over {r['folds']} folds of {r['groups']} {unit} (seed {r['seed']}; fold "
            f"seeds {', '.join(map(str, r.get('fold_seeds', [])))}), Kendall tau {r['kendall_tau']:.3f} and R^2 "
            f"{r['r2']:.3f} [{lo:.3f}, {hi:.3f}] against {learned_target(column)} "
            f"({'shuffled' if r.get('shuffled') else 'as measured'}); fitting took {r['fit_seconds']:.0f} s in all"
            + (f" ({epochs} epochs per fold)" if epochs else "")
            + f", predicting {1000 * r['predict_seconds_per_model']:.2g} ms per model.")


def learned_comparisons(table: pd.DataFrame, n_boot: int = N_BOOT) -> pd.DataFrame:
    """Paired bootstrap differences of Kendall tau (prediction vs the target it predicts)
    between each learned predictor and StatNN, the published baseline, for each target both
    predict: one row per pair (``diff``, CI, p-value, unit), with Holm's adjustment over the
    pairs (``p_holm``). Resampling as every statistic: whole cells where cells repeat."""
    rows = []
    columns = learned_columns(table)
    for target in LEARNED_TARGETS:
        base = f"{LEARNED_PREFIX}statnn-{target}"
        if target not in table or base not in columns:
            continue
        for other in (c for c in columns if learned_target(c) == target and c != base and c.startswith(LEARNED_PREFIX)):
            d = paired_tau_difference(table[other], table[base], table[target], n_boot=n_boot, groups=_cells(table))
            rows.append({"target": target, "predictor": other, "baseline": base, **d})
    pairs = pd.DataFrame(rows)
    if len(pairs):
        pairs["p_holm"] = holm(pairs["p_value"].to_numpy(float))
    return pairs


def _summarize_and_report(tables, errors, out: Path, record: dict, grids: dict, fixtures: dict) -> dict:
    n_boot = int(record["n_boot"])
    summaries, excluded, references = {}, {}, {}
    for zname, table in tables.items():
        ranked, dropped = _ranked(table, record.get("converged_only", True))
        excluded[zname] = dropped
        full_grid = not dropped
        summary = summarize_run(ranked, list(record["measures"]), grids.get(zname), n_boot=n_boot,
                                full_grid=full_grid)
        summaries[zname] = summary
        if grids.get(zname) and "gap" in ranked:
            references[zname] = robust_references(ranked, grids[zname])
        name = safe_filename(zname)
        summary.to_csv(output_path(out, f"summary_{name}.csv"), index=False)
        pairs = learned_comparisons(ranked, n_boot)
        if len(pairs):
            pairs.to_csv(output_path(out, f"learned_pairs_{name}.csv"), index=False)
            record.setdefault("learned_pairs", {})[zname] = pairs.to_dict("records")
        if references.get(zname):
            _references_frame(references[zname]).to_csv(output_path(out, f"robust_references_{name}.csv"),
                                                        index=False)
    files = _write_report(summaries, tables, errors, out, record, excluded, grids, references, fixtures)
    return {"summaries": summaries, "tables": tables, "errors": errors, "excluded": excluded,
            "learned": record.get("learned", {}), "robust_references": references, "files": files}


def _references_frame(ref: dict) -> pd.DataFrame:
    return pd.DataFrame([{"reference": name, **{k: v for k, v in ref[name].items()}} for name in ("noisy", "random")]
                        ).assign(draws=ref["draws"], environments=ref["environments"], left_out=ref["left_out"])


def _ci_text(row, col: str, digits: int = 2) -> str:
    v = row.get(col)
    if v is None or not np.isfinite(v):
        return ""
    lo, hi = row.get(f"{col}_ci_low"), row.get(f"{col}_ci_high")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _holm_text(row, p_col: str, decision: str) -> str:
    """The decision after Holm's correction and its adjusted p-value, e.g. 'intended (0.003)'."""
    adjusted = row.get(f"{p_col}_holm")
    if adjusted is None or not np.isfinite(adjusted):
        return ""
    return f"{row.get(decision)} ({adjusted:.2g})"


def headline_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The readable form of a summary: gap statistics with their CIs, Holm decisions and
    nulls first, measures ordered by tau against the gap (best first).

    Parameters
    ----------
    summary : pandas.DataFrame
        A zoo's summary.

    Returns
    -------
    pandas.DataFrame
        The readable table.
    """
    s = summary[summary["models"] > 0].sort_values("tau_gap", ascending=False, na_position="last")
    rows = []
    for _, r in s.iterrows():
        r = r.to_dict()
        row = {"measure": r["measure"], "sign": f"{int(r['sign']):+d}" if np.isfinite(r.get("sign", np.nan)) else "",
               "models": int(r["models"]), "tau gap [95% CI]": _ci_text(r, "tau_gap"),
               "gap, Holm (adj. p)": _holm_text(r, "tau_gap_p", "tau_gap_holm"),
               "minus angle [95% CI]": _ci_text(r, "tau_gap_minus_angle"),
               "vs angle, Holm (adj. p)": _holm_text(r, "tau_gap_minus_angle_p", "tau_gap_minus_angle_holm")}
        if "cmi_gap" in r and np.isfinite(r.get("cmi_gap", np.nan)):
            row["CMI"] = f"{r['cmi_gap']:.3f}"
            if np.isfinite(r.get("cmi_null_q95", np.nan)):
                row["CMI null median / q95"] = f"{r['cmi_null_median']:.3f} / {r['cmi_null_q95']:.3f}"
                row["CMI, Holm (adj. p)"] = _holm_text(r, "cmi_null_p", "cmi_null_holm")
        if np.isfinite(r.get("psi_gap", np.nan)):
            row["Psi gap"] = f"{r['psi_gap']:.2f}"
        if np.isfinite(r.get("robust_mean", np.nan)):
            row["robust mean / worst"] = f"{r['robust_mean']:.2f} / {r['robust_worst']:.2f}"
            row["weakest hparam"] = r.get("robust_worst_hparam", "")
        row["tau test acc [95% CI]"] = _ci_text(r, "tau_test_acc")
        secs = r.get("median_seconds", np.nan)
        row["s / model"] = f"{secs:.3g}" if np.isfinite(secs) else ""
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def _settings_text(record: dict) -> str:
    st = record.get("settings", {})
    own = st.get("own_training_data", True)
    return (f"Samples per model: {st.get('n_samples')} ({st.get('split')} split), layer {st.get('layer')}, centered "
            f"P-vectors: {st.get('center')}, seed {st.get('seed')}. Label-using measures "
            + ("see each model's own training samples and labels where the zoo records them; the P-vector and CKA "
               "measures one shared sample set." if own else "see the shared samples (--shared-samples)."))


def _references_text(ref: dict | None) -> str:
    if not ref:
        return (f"Robust view: no environment of this zoo has {MIN_PAIRS} model pairs whose gaps differ by "
                f"{MIN_DIFFERENCE} or more, so it is not computed.")
    noisy, rnd = ref["noisy"], ref["random"]
    return (f"Robust view over {ref['environments']} environments ({ref['left_out']} left out with fewer than "
            f"{MIN_PAIRS} pairs). References on the same environments ({ref['draws']} draws each): a noisy copy of "
            f"the gap at Kendall tau {noisy['tau']:.2f} (what a good measure could reach) has mean "
            f"{noisy['mean_median']:.2f} and worst {noisy['worst_median']:.2f} (median; 90% of draws "
            f"{noisy['worst_q05']:.2f} to {noisy['worst_q95']:.2f}); random rankings have mean "
            f"{rnd['mean_median']:.2f} and worst {rnd['worst_median']:.2f} (95th percentile {rnd['worst_q95']:.2f}). "
            f"A measure whose worst environment is not above {rnd['worst_q95']:.2f} is not told apart from a random "
            "ranking by this view.")


def _write_report(summaries, tables, errors, out: Path, record: dict, excluded, grids, references,
                  fixtures) -> list[Path]:
    learned_results = record.get("learned", {})
    n_boot = int(record["n_boot"])
    plot = plots.ranking_plot(summaries, out / "ranking.png") if summaries else None
    doc = Document("pgen benchmark")
    doc.paragraph(f"Generated {dt.datetime.now().isoformat(timespec='seconds')}. " + _settings_text(record))
    doc.paragraph(
        "The target is the generalization gap (train accuracy on the model's own training data minus test accuracy); "
        "test accuracy comes second. Every statistic uses `sign x value` (sign +1: larger predicts worse "
        "generalization), so tau against the gap > 0 means the measure ranks models the way its authors intended. "
        f"Kendall tau is tau-b with a percentile bootstrap CI ({n_boot} resamples) over the design's unit: whole "
        "hyperparameter cells (every seed of a cell together, since seeds of one cell are replicates, not "
        "independent models) where a cell holds several models, else models; each zoo says which. The shaded band "
        "of the plot is +-1.96 sd of tau under random rankings. 'minus angle' is the paired bootstrap CI of the "
        "measure's tau minus the P-vector angle's (the same resamples). Many measures are tested at once, so each "
        f"family (the measures of one zoo, for one target and one test) is corrected by Holm's method at "
        f"family-wise {ALPHA:.0%}: the 'Holm' columns give the decision and the adjusted p-value (bootstrap "
        "p-values for tau and the paired differences, permutation p-values for the CMI), and the lists above each "
        "table are the corrected ones, with the count by raw 95% CIs beside them. CMI is the PGDL score as the "
        "competition's scorer computes it (no bootstrap interval: resampling design points biases it upwards), and "
        "its null the CMI of the measure's values permuted over the models (median / 95th percentile). Psi is Jiang et al.'s granulated "
        "tau. 'robust mean / worst' is Dziugaite et al. 2020's coupled-network view: an environment is a change of "
        "one hyperparameter between two values, pooled over the settings of the others; over its model pairs whose "
        f"gaps differ by {MIN_DIFFERENCE} or more, the share the measure orders right, averaged over environments and "
        f"at the worst one; 0.5 is a coin flip. Environments with fewer than {MIN_PAIRS} pairs are left out, and "
        f"each zoo states two references computed the same way: a noisy copy of the gap at tau {REFERENCE_TAU} and "
        "random rankings.")
    if plot is not None:
        doc.images([("ranking", plot)])
    for zname, s in summaries.items():
        n_all = len(tables[zname])
        dropped = excluded.get(zname)
        ranked = n_all - len(dropped or [])
        if dropped is None:
            doc.heading(f"{zname} ({ranked} models ranked; the zoo records no training criterion)")
            doc.paragraph("This zoo records no training criterion (no `converged` column): every model is ranked, "
                          "whether or not it fit its training data.")
        else:
            doc.heading(f"{zname} ({ranked} models ranked)")
        if dropped:
            doc.paragraph(f"{len(dropped)} of {n_all} models did not reach the zoo's training criterion and are left "
                          f"out (--converged-only): {Document.text(', '.join(dropped[:12]))}"
                          f"{' ...' if len(dropped) > 12 else ''}. The CMI runs over the remaining models: a cell left "
                          "without models leaves bins without pairs, which change neither the scorer's mean MI nor its "
                          "mean entropy.")
        units = s.loc[s["models"] > 0, ["bootstrap_unit", "bootstrap_units"]].drop_duplicates() \
            if "bootstrap_unit" in s else pd.DataFrame()
        if len(units):
            doc.paragraph("Bootstrap unit: " + "; ".join(
                f"{int(u.bootstrap_units)} {'hyperparameter cells' if u.bootstrap_unit == 'cells' else 'models'}"
                for u in units.itertuples()) + " (per measure, over the models where it has a value).")
        for sentence in resolved_findings(s):
            doc.paragraph(sentence)
        lr = learned_results.get(zname)
        if lr and ("error" in lr or "kendall_tau" in lr):  # a benchmark from before several predictors
            lr = {"learned_statnn": {**lr, "fit_seconds": math.nan, "predict_seconds_per_model": math.nan,
                                     "seed": 0, "r2_ci": (math.nan, math.nan)}}
        if lr:
            doc.paragraph("Learned predictors (pgen.learned: StatNN, Unterthiner et al. 2020; NFN, Zhou et al. 2023), "
                          "each fit on the other folds and scored out of fold; their rows in the table are those "
                          "predictions, oriented like every measure (sign -1 for predicted test accuracy).")
            for column, r in lr.items():
                doc.paragraph(_learned_text(column, r))
            for p in record.get("learned_pairs", {}).get(zname, []):
                resolved = p.get("p_holm", math.nan) <= ALPHA
                verdict = ("higher" if p["diff"] > 0 else "lower") if resolved else "not resolved"
                doc.paragraph(f"{p['predictor']} minus {p['baseline']}, Kendall tau against {p['target']}: "
                              f"{p['diff']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] (paired bootstrap over "
                              f"{p['units']} {p['unit']}, p {p['p_value']:.2g}, Holm over the {len(record['learned_pairs'][zname])} "
                              f"pairs {p.get('p_holm', math.nan):.2g}): {verdict}.")
        if grids.get(zname):
            doc.paragraph(_references_text(references.get(zname)))
        doc.table(headline_table(s))
        failures = errors.get(zname)
        if failures is not None and len(failures):
            doc.paragraph(f"{len(failures)} failure(s) on this zoo (model or measure):")
            doc.table(failures.assign(measure=failures["measure"].replace("", "(model)")))
    if fixtures:
        doc.heading("Format fixtures (scored, not ranked)")
        doc.paragraph("These folders check a reader with a handful of models; their statistics would rank nothing, "
                      "so they stay out of the tables and the plot.")
        doc.table(pd.DataFrame([{"zoo": n, "models": len(r.table), "failures": len(r.errors)}
                                for n, r in fixtures.items()]))
    add_glossary(doc)
    return doc.write(out, "benchmark") + ([plot] if plot is not None else [])

