"""``pgen benchmark``: every selected measure on every model of several zoos, compared.

Measures run through :func:`pgen.score.score_zoo` (one shared ``results.sqlite``, so a
rerun resumes and adding a measure computes only that measure); the statistics come from
:func:`pgen.stats.measure_statistics`, as in the zoo report. Per zoo and measure, with
``oriented = sign x value`` (larger = predicted worse, see :mod:`pgen.measures`):

* ``tau_gap`` [``tau_gap_ci_low``, ``tau_gap_ci_high``]: Kendall tau-b of oriented vs the
  generalization gap, percentile bootstrap CI over models (> 0 = works as meant);
* ``tau_test_acc`` [CI]: Kendall tau-b of oriented vs test accuracy (< 0 = works as meant);
* ``spearman_test_acc``: the same with Spearman's rho;
* ``tau_null_sd``: the standard deviation of tau under random rankings of these models;
* ``psi_gap``: granulated Kendall Psi vs the gap (zoos with hparams; Jiang et al.'s tau-a
  within groups, a constant group counting 0);
* ``cmi_gap`` [``cmi_gap_ci_low``, ``cmi_gap_ci_high``]: the PGDL conditional mutual
  information, as the competition's scorer computes it (zoos that are a full hparam
  grid), with a bootstrap CI within hyperparameter cells (2+ seeds per cell);
* ``cmi_null_median``, ``cmi_null_q95``: the CMI of random rankings (the values permuted);
* ``tau_gap_minus_angle`` [CI]: the measure's ``tau_gap`` minus the P-vector angle's, with
  a paired bootstrap CI (resolved when it excludes 0);
* ``robust_mean``, ``robust_worst``, ``robust_worst_hparam``: Dziugaite et al. 2020's
  coupled-network sign agreement with the gap (:func:`pgen.stats.robust_sign_agreement`);
* ``k_mu_gap``: Jiang et al.'s K(mu), the minimum over conditioning sets of 0 to 2
  hyperparameters (at most ``cmi_gap``);
* ``r2_loglog``: R^2 of the log-log fit of value vs test accuracy (positive values only);
* ``median_seconds``: median seconds per model.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd

from pgen.learned import learned_baseline
from pgen.measures import get_measure, list_measures
from pgen.report import plots
from pgen.report.document import Document
from pgen.report.glossary import add_glossary
from pgen.executors import open_executor
from pgen.score import ScoreSettings, score_zoo
from pgen.stats import cmi_bootstrap_ci, measure_statistics, paired_tau_difference, robust_sign_agreement
from pgen.zoo import Zoo, load_zoo
from pgen.paths import output_path, safe_filename

__all__ = ["run_benchmark", "summarize_run", "default_measures"]


def default_measures() -> list[str]:
    """Every registered measure except those that need an optional package (asked for by name)."""
    table = list_measures()
    return list(table.loc[table["requires"] == "", "name"])


REFERENCE_MEASURE = "pvector_angle"  # pgen's own measure: every other is compared with it


def summarize_run(table: pd.DataFrame, measures: list[str], hparam_grid: dict | None, *,
                  n_boot: int = 1000, reference: str = REFERENCE_MEASURE, full_grid: bool = True) -> pd.DataFrame:
    """One row per measure: oriented rank statistics against the gap (the headline) and
    test accuracy, with bootstrap CIs, nulls, the paired difference to ``reference`` and
    Dziugaite et al.'s robust view; and cost. Columns are described in the module docstring.
    ``full_grid=False`` lets the CMI run on a grid with cells left out (unconverged models)."""
    rows = []
    n_perm = min(n_boot, 200)  # CMI resamples are slower than tau's; 200 fix its 2.5% quantiles to ~0.01
    ref_oriented = None
    if reference in table and table[reference].notna().any():
        ref_oriented = get_measure(reference).sign * table[reference].to_numpy(float)
    for name in measures:
        if name not in table or table[name].notna().sum() == 0:
            rows.append({"measure": name, "models": 0})
            continue
        m = get_measure(name)
        st = measure_statistics(table, name, targets={t: t for t in ("test_acc", "gap") if t in table},
                                hparam_grid=hparam_grid, n_boot=n_boot, cmi_permutations=n_perm, full_grid=full_grid,
                                sign=m.sign)
        row = {"measure": name, "sign": m.sign, "family": m.family, "fidelity": m.fidelity, "models": st.n,
               **_tau_columns(st, table)}
        c = st.correlations
        sp = c[(c["target"] == "test_acc") & (c["method"] == "spearman")] if not c.empty else c
        row["spearman_test_acc"] = float(sp["value"].iloc[0]) if len(sp) else math.nan
        row["tau_null_sd"] = st.kendall_null_sd
        if st.psi is not None:
            row["psi_gap"] = st.psi["psi"]
        if st.cmi is not None:
            row["cmi_gap"] = st.cmi
            row["cmi_gap_ci_low"], row["cmi_gap_ci_high"] = cmi_bootstrap_ci(
                table[table[name].notna()], name, hparam_grid, n_boot=n_perm, full_grid=full_grid)
        if st.cmi_null is not None:
            row["cmi_null_median"], row["cmi_null_q95"] = st.cmi_null["median"], st.cmi_null["q95"]
        if st.k_mu is not None:
            row["k_mu_gap"] = st.k_mu
        oriented = m.sign * table[name].to_numpy(float)
        if ref_oriented is not None and name != reference and "gap" in table:
            row.update(_minus_reference_columns(oriented, ref_oriented, table["gap"], n_boot))
        if hparam_grid and "gap" in table:
            robust = robust_sign_agreement(table.assign(_oriented=oriented), "_oriented", hparam_grid)
            if robust is not None:
                row["robust_mean"], row["robust_worst"] = robust["mean"], robust["worst"]
                worst_h = min(robust["per_hparam"].items(), key=lambda kv: kv[1]["mean"])
                row["robust_worst_hparam"] = f"{worst_h[0]} ({worst_h[1]['mean']:.2f})"
        fit = next((f for f in st.fits if f.y_name == "test_acc"), None)
        row["r2_loglog"] = fit.r2 if fit is not None else math.nan
        secs = table.get(f"seconds.{name}")
        row["median_seconds"] = float(secs.median()) if secs is not None and secs.notna().any() else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _tau_columns(st, table: pd.DataFrame) -> dict:
    """Kendall tau of sign x value (``st`` is oriented) against the gap and test accuracy, with its CI."""
    cols = {}
    for target in ("gap", "test_acc"):
        k = st.kendall_row(target)
        if k is not None:
            cols.update({f"tau_{target}": k["value"], f"tau_{target}_ci_low": k["ci_low"],
                         f"tau_{target}_ci_high": k["ci_high"]})
        elif target in table:
            cols[f"tau_{target}"] = math.nan
    return cols


def _minus_reference_columns(oriented, ref_oriented, gap, n_boot: int) -> dict:
    d = paired_tau_difference(oriented, ref_oriented, gap, n_boot=n_boot)
    return {"tau_gap_minus_angle": d["diff"], "tau_gap_minus_angle_ci_low": d["ci_low"],
            "tau_gap_minus_angle_ci_high": d["ci_high"]}


def resolved_findings(summary: pd.DataFrame, reference: str = REFERENCE_MEASURE) -> list[str]:
    """Sentences that the statistics resolve, and only those: which measures rank the gap
    in the intended direction (tau CI above 0) or against it (below 0), which beat the CMI
    null's 95th percentile, and which differ from ``reference`` (paired CI excluding 0)."""
    out = []
    s = summary[summary["models"] > 0] if "models" in summary else summary
    if "tau_gap_ci_low" in s:
        up = s.loc[s["tau_gap_ci_low"] > 0, "measure"].tolist()
        down = s.loc[s["tau_gap_ci_high"] < 0, "measure"].tolist()
        open_ = len(s) - len(up) - len(down)
        out.append(f"Rank the gap as intended (tau CI above 0): {', '.join(up) if up else 'none'}.")
        out.append(f"Rank it against their intended direction (tau CI below 0): {', '.join(down) if down else 'none'}.")
        out.append(f"Direction not resolved (CI includes 0): {open_} measure(s).")
    if "cmi_null_q95" in s:
        above = s.loc[s["cmi_gap"] > s["cmi_null_q95"], "measure"].tolist()
        out.append(f"CMI above the 95th percentile of random rankings: {', '.join(above) if above else 'none'}.")
    if "tau_gap_minus_angle_ci_low" in s:
        better = s.loc[s["tau_gap_minus_angle_ci_low"] > 0, "measure"].tolist()
        worse = s.loc[s["tau_gap_minus_angle_ci_high"] < 0, "measure"].tolist()
        out.append(f"Rank the gap better than {reference} (paired CI above 0): {', '.join(better) or 'none'}; "
                   f"worse (below 0): {', '.join(worse) or 'none'}; every other difference is not resolved.")
    return out


FIXTURE_MARKER = ".pgen-fixture"  # a file in a zoo folder: a format fixture, scored but never ranked

LEARNED = "learned_statnn"  # the out-of-fold StatNN predictions' column (pgen.learned)


def is_fixture(zoo: Zoo) -> bool:
    """A format fixture (a handful of models that check a reader, e.g. the PGDL kit toy):
    its folder holds a ``.pgen-fixture`` file. Fixtures are scored, never ranked."""
    root = getattr(zoo, "root", None)
    return root is not None and (Path(root) / FIXTURE_MARKER).is_file()


def run_benchmark(zoos: list[str | Path | Zoo], out: str | Path, *, measures: list[str] | None = None,
                  settings: ScoreSettings | None = None, device: str = "cpu", workers: int = 1,
                  final_only: bool = True, progress: bool = True, n_boot: int = 1000,
                  converged_only: bool = True, learned: bool = False, executor: str | object = "local") -> dict:
    """Score every measure on every zoo, summarize, and write the report into ``out``.

    With ``final_only`` (the default) intermediate checkpoints are left out, so that every
    hparam combination is one model and Psi / CMI keep their meaning. With
    ``converged_only`` (the default), models that a zoo records as not having met its
    training criterion (``converged`` false, pgen's protocol recipes) are left out of the
    statistics, as Jiang et al. and the PGDL competition do. Format fixtures
    (:func:`is_fixture`) are scored but never summarized or ranked. ``learned`` adds the
    StatNN baseline (:mod:`pgen.learned`), cross-validated by hyperparameter cell.
    ``executor`` runs the scoring (see :func:`pgen.score.score_zoo`); one Ray connection
    serves every zoo.

    Returns ``{"summaries": {zoo name: DataFrame}, "runs": {zoo name: ScoreRun},
    "excluded": {zoo name: [model ids]}, "learned": {zoo name: dict}, "fixtures": {zoo
    name: ScoreRun}, "files": [...]}``.
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
        return _benchmark(zoos, out, measures, settings, device, workers, final_only, progress, n_boot,
                          converged_only, learned, executor)


def _benchmark(zoos, out, measures, settings, device, workers, final_only, progress, n_boot, converged_only,
               learned, executor) -> dict:
    summaries, runs, excluded, learned_results, fixtures = {}, {}, {}, {}, {}
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
        if converged_only and "zoo.converged" in table:
            missed = table["zoo.converged"].astype(str).str.lower().isin(["false", "0", "0.0"])
            excluded[run.name] = table.loc[missed, "model_id"].tolist()
            table = table[~missed].reset_index(drop=True)
        names = list(settings.measures)
        if learned:
            try:
                res = learned_baseline(zoo, table)
            except ValueError as exc:  # e.g. a zoo without hyperparameter cells: said in the report
                learned_results[run.name] = {"error": str(exc)}
            else:
                learned_results[run.name] = res
                table = table.assign(**{LEARNED: table["model_id"].map(res["predictions"])})
        full_grid = not excluded.get(run.name)
        summary = summarize_run(table, names, run.hparam_grid, n_boot=n_boot, full_grid=full_grid)
        if LEARNED in table:
            summary = pd.concat([summary, summarize_learned(table, run.hparam_grid, n_boot=n_boot,
                                                            full_grid=full_grid)], ignore_index=True)
        summaries[run.name], runs[run.name] = summary, run
        name = safe_filename(run.name)  # a zoo's name comes from its files: never a path
        summary.to_csv(output_path(out, f"summary_{name}.csv"), index=False)
        run.table.to_csv(output_path(out, f"models_{name}.csv"), index=False)
    files = _write_report(summaries, runs, out, settings, n_boot, excluded, learned_results, fixtures)
    return {"summaries": summaries, "runs": runs, "excluded": excluded, "learned": learned_results,
            "fixtures": fixtures, "files": files}


def summarize_learned(table: pd.DataFrame, hparam_grid: dict | None, *, n_boot: int = 1000,
                      full_grid: bool = True) -> pd.DataFrame:
    """The learned baseline's out-of-fold predictions (a predicted gap: sign +1) through the
    same statistics as every measure."""
    st = measure_statistics(table, LEARNED, targets={t: t for t in ("test_acc", "gap") if t in table},
                            hparam_grid=hparam_grid, n_boot=n_boot, cmi_permutations=min(n_boot, 200), fits=False,
                            full_grid=full_grid)
    row = {"measure": LEARNED, "sign": 1, "family": "learned", "fidelity": "faithful", "models": st.n,
           **_tau_columns(st, table)}
    row["tau_null_sd"] = st.kendall_null_sd
    if st.psi is not None:
        row["psi_gap"] = st.psi["psi"]
    if st.cmi is not None:
        row["cmi_gap"] = st.cmi
    if st.cmi_null is not None:
        row["cmi_null_median"], row["cmi_null_q95"] = st.cmi_null["median"], st.cmi_null["q95"]
    if REFERENCE_MEASURE in table and "gap" in table:
        ref = get_measure(REFERENCE_MEASURE).sign * table[REFERENCE_MEASURE].to_numpy(float)
        row.update(_minus_reference_columns(table[LEARNED].to_numpy(float), ref, table["gap"], n_boot))
    return pd.DataFrame([row])


def _ci_text(row, col: str, digits: int = 2) -> str:
    v = row.get(col)
    if v is None or not np.isfinite(v):
        return ""
    lo, hi = row.get(f"{col}_ci_low"), row.get(f"{col}_ci_high")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def headline_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The readable form of a summary: gap statistics with their CIs and nulls first,
    measures ordered by tau against the gap (best first)."""
    s = summary[summary["models"] > 0].sort_values("tau_gap", ascending=False, na_position="last")
    rows = []
    for _, r in s.iterrows():
        r = r.to_dict()
        row = {"measure": r["measure"], "sign": f"{int(r['sign']):+d}" if np.isfinite(r.get("sign", np.nan)) else "",
               "models": int(r["models"]), "tau gap [95% CI]": _ci_text(r, "tau_gap"),
               "minus angle [95% CI]": _ci_text(r, "tau_gap_minus_angle")}
        if "cmi_gap" in r and np.isfinite(r.get("cmi_gap", np.nan)):
            row["CMI [95% CI]"] = _ci_text(r, "cmi_gap", 3)
            if np.isfinite(r.get("cmi_null_q95", np.nan)):
                row["CMI null median / q95"] = f"{r['cmi_null_median']:.3f} / {r['cmi_null_q95']:.3f}"
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


def _write_report(summaries, runs, out: Path, settings: ScoreSettings, n_boot: int, excluded=None,
                  learned_results=None, fixtures=None) -> list[Path]:
    excluded, learned_results, fixtures = excluded or {}, learned_results or {}, fixtures or {}
    plot = plots.ranking_plot(summaries, out / "ranking.png") if summaries else None
    doc = Document("pgen benchmark")
    doc.paragraph(f"Generated {dt.datetime.now().isoformat(timespec='seconds')}. Samples per model: "
                  f"{settings.n_samples} ({settings.split} split), layer {settings.layer}, centered P-vectors: "
                  f"{settings.center}, seed {settings.seed}. Label-using measures "
                  + ("see each model's own training samples and labels where the zoo records them; the P-vector "
                     "and CKA measures one shared sample set." if settings.own_training_data else
                     "see the shared samples (--shared-samples)."))
    doc.paragraph("The target is the generalization gap (train accuracy on the model's own training data minus "
                  "test accuracy); test accuracy comes second. Every statistic uses `sign x value` (sign +1: larger "
                  "predicts worse generalization), so tau against the gap > 0 means the measure ranks models the "
                  f"way its authors intended. Kendall tau is tau-b with a percentile bootstrap CI over models "
                  f"({n_boot} resamples); the shaded band of the plot is +-1.96 sd of tau under random rankings. "
                  "'minus angle' is the paired bootstrap CI of the measure's tau minus the P-vector angle's (same "
                  "resampled models): a CI that excludes 0 resolves which of the two ranks the gap better; one that "
                  "includes it does not. CMI is the PGDL score as the competition's scorer computes it, its CI a "
                  "bootstrap within hyperparameter cells (needs 2+ seeds per cell), and its null the CMI of the "
                  "measure's values permuted over the models (200 permutations: median / 95th percentile). Psi is "
                  "Jiang et al.'s granulated tau. 'robust mean / worst' is Dziugaite et al. 2020's coupled-network "
                  "view: over pairs of cells that differ in one hyperparameter, the share of model pairs whose gap "
                  "difference (>= 0.01) the measure orders right, averaged and at its worst environment; 0.5 is a "
                  "coin flip.")
    if plot is not None:
        doc.images([("ranking", plot)])
    for zname, s in summaries.items():
        n_all = len(runs[zname].table)
        dropped = excluded.get(zname, [])
        doc.heading(f"{zname} ({n_all - len(dropped)} models ranked)")
        if dropped:
            doc.paragraph(f"{len(dropped)} of {n_all} models did not reach the zoo's training criterion and are left "
                          f"out (--converged-only): {Document.text(', '.join(dropped[:12]))}{' ...' if len(dropped) > 12 else ''}. "
                          "The CMI runs over the remaining models: a cell left without models leaves bins without "
                          "pairs, which change neither the scorer's mean MI nor its mean entropy.")
        for sentence in resolved_findings(s):
            doc.paragraph(sentence)
        if "error" in learned_results.get(zname, {}):
            doc.paragraph(f"Learned baseline ({LEARNED}): not computed: {Document.text(learned_results[zname]['error'])}.")
        elif zname in learned_results:
            lr = learned_results[zname]
            doc.paragraph(f"Learned baseline ({LEARNED}, Unterthiner et al. 2020's StatNN features, gradient-boosted "
                          f"trees): out-of-fold over {lr['folds']} folds grouped by {lr['groups']} hyperparameter "
                          f"cells, Kendall tau {lr['kendall_tau']:.2f} and R^2 {lr['r2']:.2f} against the gap.")
        doc.table(headline_table(s))
        failures = runs[zname].errors
        if len(failures):
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
