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
* ``cmi_gap``: the PGDL conditional mutual information, as the competition's scorer
  computes it (zoos that are a full hparam grid);
* ``k_mu_gap``: Jiang et al.'s K(mu), the minimum over conditioning sets of 0 to 2
  hyperparameters (at most ``cmi_gap``);
* ``r2_loglog``: R^2 of the log-log fit of value vs test accuracy (positive values only);
* ``median_seconds``: median seconds per model.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pandas as pd

from pgen.measures import get_measure, list_measures
from pgen.report import plots
from pgen.report.document import Document
from pgen.score import ScoreSettings, score_zoo
from pgen.stats import measure_statistics
from pgen.zoo import Zoo, load_zoo

__all__ = ["run_benchmark", "summarize_run", "default_measures"]


def default_measures() -> list[str]:
    """Every registered measure except those that need an optional package (asked for by name)."""
    table = list_measures()
    return list(table.loc[table["requires"] == "", "name"])


def summarize_run(table: pd.DataFrame, measures: list[str], hparam_grid: dict | None, *,
                  n_boot: int = 1000) -> pd.DataFrame:
    """One row per measure: oriented rank statistics against the gap and test accuracy, and cost."""
    rows = []
    for name in measures:
        if name not in table or table[name].notna().sum() == 0:
            rows.append({"measure": name, "models": 0})
            continue
        m = get_measure(name)
        st = measure_statistics(table, name, targets={t: t for t in ("test_acc", "gap") if t in table},
                                hparam_grid=hparam_grid, n_boot=n_boot)
        row = {"measure": name, "sign": m.sign, "family": m.family, "models": st.n}
        for target in ("gap", "test_acc"):
            k = st.kendall_row(target)
            if k is not None:  # tau(sign x value) = sign x tau(value), for tau-b exactly
                lo, hi = sorted((m.sign * k["ci_low"], m.sign * k["ci_high"]))
                row.update({f"tau_{target}": m.sign * k["value"], f"tau_{target}_ci_low": lo,
                            f"tau_{target}_ci_high": hi})
            elif target in table:
                row[f"tau_{target}"] = math.nan
        c = st.correlations
        sp = c[(c["target"] == "test_acc") & (c["method"] == "spearman")] if not c.empty else c
        row["spearman_test_acc"] = m.sign * float(sp["value"].iloc[0]) if len(sp) else math.nan
        row["tau_null_sd"] = st.kendall_null_sd
        if st.psi is not None:
            row["psi_gap"] = m.sign * st.psi["psi"]
        if st.cmi is not None:
            row["cmi_gap"] = st.cmi
        if st.k_mu is not None:
            row["k_mu_gap"] = st.k_mu
        fit = next((f for f in st.fits if f.y_name == "test_acc"), None)
        row["r2_loglog"] = fit.r2 if fit is not None else math.nan
        secs = table.get(f"seconds.{name}")
        row["median_seconds"] = float(secs.median()) if secs is not None and secs.notna().any() else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def run_benchmark(zoos: list[str | Path | Zoo], out: str | Path, *, measures: list[str] | None = None,
                  settings: ScoreSettings | None = None, device: str = "cpu", workers: int = 1,
                  final_only: bool = True, progress: bool = True, n_boot: int = 1000) -> dict:
    """Score every measure on every zoo, summarize, and write the report into ``out``.

    With ``final_only`` (the default) intermediate checkpoints are left out, so that every
    hparam combination is one model and Psi / CMI keep their meaning.

    Returns ``{"summaries": {zoo name: DataFrame}, "runs": {zoo name: ScoreRun}, "files": [...]}``.
    """
    if measures is None:
        measures = default_measures()
    for name in measures:
        get_measure(name)
    base = settings or ScoreSettings()
    settings = ScoreSettings(**{**base.identity(), "measures": tuple(measures)})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries, runs = {}, {}
    for z in zoos:
        zoo = z if isinstance(z, Zoo) else load_zoo(z, progress=progress)
        if final_only:
            zoo = zoo.final_models()
        run = score_zoo(zoo, out, settings=settings, device=device, workers=workers, progress=progress)
        summary = summarize_run(run.table, list(settings.measures), run.hparam_grid, n_boot=n_boot)
        summaries[run.name], runs[run.name] = summary, run
        summary.to_csv(out / f"summary_{run.name}.csv", index=False)
        run.table.to_csv(out / f"models_{run.name}.csv", index=False)
    files = _write_report(summaries, runs, out, settings, n_boot)
    return {"summaries": summaries, "runs": runs, "files": files}


def _write_report(summaries, runs, out: Path, settings: ScoreSettings, n_boot: int) -> list[Path]:
    plot = plots.ranking_plot(summaries, out / "ranking.png")
    cols = ["measure", "sign", "models", "tau_gap", "tau_gap_ci_low", "tau_gap_ci_high", "tau_test_acc",
            "tau_test_acc_ci_low", "tau_test_acc_ci_high", "tau_null_sd", "spearman_test_acc", "psi_gap", "cmi_gap",
            "k_mu_gap", "r2_loglog", "median_seconds"]
    doc = Document("pgen benchmark")
    doc.paragraph(f"Generated {dt.datetime.now().isoformat(timespec='seconds')}. Samples per model: "
                  f"{settings.n_samples} ({settings.split} split), layer {settings.layer}, centered P-vectors: "
                  f"{settings.center}, seed {settings.seed}.")
    doc.paragraph("Every statistic uses `sign x value` (sign +1: larger predicts worse generalization), so "
                  "`tau_gap` > 0 and `tau_test_acc` < 0 mean the measure ranks models the way its authors "
                  f"intended. Kendall tau is tau-b; its CI is a percentile bootstrap over models ({n_boot} "
                  "resamples), and `tau_null_sd` is its spread under random rankings: a CI that includes 0 does "
                  "not resolve the direction, and overlapping CIs do not rank two measures. `psi_gap` is Jiang et "
                  "al.'s granulated coefficient (tau-a within groups). `cmi_gap` is the PGDL score as the "
                  "competition's scorer computes it (pairs of hyperparameters; sign-free), `k_mu_gap` Jiang et al.'s "
                  "K(mu) (conditioning sets of 0 to 2 hyperparameters); `r2_loglog` fits log value vs log test "
                  "accuracy (positive measures only).")
    doc.images([("ranking", plot)])
    for zname, s in summaries.items():
        shown = s.reindex(columns=[c for c in cols if c in s.columns])
        if "tau_test_acc" in shown:
            shown = shown.sort_values("tau_test_acc")  # most negative first: best ranking of test accuracy
        doc.heading(f"{zname} ({len(runs[zname].table)} models)")
        doc.table(shown, digits=3)
        failures = runs[zname].errors
        if len(failures):
            doc.paragraph(f"{len(failures)} failure(s) on this zoo (model or measure):")
            doc.table(failures.assign(measure=failures["measure"].replace("", "(model)")))
    return doc.write(out, "benchmark") + [plot]
