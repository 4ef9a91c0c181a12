"""``pgen benchmark``: every selected measure on every model of several zoos, compared.

Measures run through :func:`pgen.score.score_zoo` (one shared ``results.sqlite``, so a
rerun resumes and adding a measure computes only that measure). Per zoo and measure, with
``oriented = sign x value`` (larger = predicted worse, see :mod:`pgen.measures`):

* ``tau_gap``: Kendall's tau of oriented vs the generalization gap (> 0 = works as meant);
* ``tau_test_acc``: Kendall's tau of oriented vs test accuracy (< 0 = works as meant);
* ``spearman_test_acc``: the same with Spearman's rho;
* ``psi_gap``: granulated Kendall Psi vs the gap (zoos with hparams);
* ``cmi_gap``: the PGDL conditional mutual information (zoos that are a full hparam grid);
* ``r2_loglog``: R^2 of the log-log fit of value vs test accuracy (positive values only);
* ``median_seconds``: median seconds per model.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from pgen.measures import get_measure, list_measures
from pgen.report import grid_configs, md_table
from pgen.score import ScoreSettings, results_table, score_zoo
from pgen.stats import StatsError, conditional_mutual_information, granulated_kendall, kendall_tau, loglog_fit
from pgen.store import ResultsStore
from pgen.zoo import Zoo, load_zoo

__all__ = ["run_benchmark", "summarize_zoo", "DEFAULT_EXCLUDED"]

# Optional-dependency measures run only when asked for by name.
DEFAULT_EXCLUDED = ("ww_alpha", "ww_log_norm", "ww_log_spectral_norm", "ww_stable_rank")
CORE = "pvector_angle"  # computed by score_zoo itself


def _safe(fn):
    try:
        value = fn()
        return float(value) if value is not None else math.nan
    except (StatsError, ValueError, KeyError, ZeroDivisionError):
        return math.nan


def summarize_zoo(table: pd.DataFrame, measures: list[str], hparam_grid: dict | None,
                  seconds: dict[str, pd.Series]) -> pd.DataFrame:
    """One row per measure: rank statistics against the gap and test accuracy, and cost."""
    hp_cols = [c for c in table.columns if c.startswith("hp.")]
    configs = grid_configs(table, hparam_grid)
    rows = []
    for name in measures:
        if name not in table:
            rows.append({"measure": name, "models": 0})
            continue
        m = get_measure(name)
        sub = table[table[name].notna()]
        value = sub[name].astype(float)
        oriented = m.sign * value
        row = {"measure": name, "sign": m.sign, "family": m.family, "models": len(sub)}
        if "gap" in sub:
            row["tau_gap"] = _safe(lambda: kendall_tau(oriented, sub["gap"]))
        if "test_acc" in sub:
            row["tau_test_acc"] = _safe(lambda: kendall_tau(oriented, sub["test_acc"]))
            row["spearman_test_acc"] = _safe(lambda: scipy.stats.spearmanr(oriented, sub["test_acc"])[0])
            row["r2_loglog"] = _safe(lambda: loglog_fit(value, sub["test_acc"]).r2) if (value > 0).all() else math.nan
        if hp_cols and "gap" in sub:
            ids = list(sub["model_id"])
            hps = {i: {c[3:]: v for c, v in r.items()} for i, r in zip(ids, sub[hp_cols].to_dict("records"))}
            row["psi_gap"] = _safe(lambda: granulated_kendall(dict(zip(ids, oriented)), hps,
                                                              dict(zip(ids, sub["gap"])))["psi"])
        if configs is not None and len(sub) == len(table):
            row["cmi_gap"] = _safe(lambda: conditional_mutual_information(dict(zip(sub["model_id"], value)), configs))
        s = seconds.get(name)
        row["median_seconds"] = float(s.median()) if s is not None and len(s) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def run_benchmark(zoos: list[str | Path | Zoo], out: str | Path, *, measures: list[str] | None = None,
                  settings: ScoreSettings | None = None, device: str = "cpu", workers: int = 1,
                  final_only: bool = True, progress: bool = True) -> dict:
    """Score every measure on every zoo, summarize, and write the report into ``out``.

    With ``final_only`` (the default) intermediate checkpoints are left out, so that every
    hparam combination is one model and Psi / CMI keep their meaning.

    Returns ``{"summaries": {zoo name: DataFrame}, "files": [...]}``.
    """
    if measures is None:
        measures = [n for n in list_measures()["name"] if n not in DEFAULT_EXCLUDED]
    for name in measures:
        get_measure(name)
    extra = tuple(n for n in measures if n != CORE)
    base = settings or ScoreSettings()
    settings = ScoreSettings(**{**base.core(), "measures": extra})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries, tables = {}, {}
    for z in zoos:
        zoo = z if isinstance(z, Zoo) else load_zoo(z, progress=progress)
        if final_only:
            zoo = zoo.final_models()
        score_zoo(zoo, out, settings=settings, device=device, workers=workers, progress=progress)
        store = ResultsStore(out / "results.sqlite")
        sdict = {"zoo_root": str(Path(zoo.root).resolve()), **settings.core()}
        table = results_table(store, zoo, sdict)
        seconds = {n: table[f"seconds.{n}"].dropna() for n in extra if f"seconds.{n}" in table}
        core = store.measure_frame(zoo.name, {CORE: sdict})  # the core run stores its seconds per measure
        seconds[CORE] = core[f"seconds.{CORE}"].dropna() if f"seconds.{CORE}" in core else pd.Series(dtype=float)
        store.close()
        summary = summarize_zoo(table, [CORE, *extra], zoo.hparam_grid(), seconds)
        summaries[zoo.name], tables[zoo.name] = summary, table
        summary.to_csv(out / f"summary_{zoo.name}.csv", index=False)
        table.to_csv(out / f"models_{zoo.name}.csv", index=False)
    files = _write_report(summaries, tables, out, settings)
    return {"summaries": summaries, "files": files}


def _ranking_plot(summaries: dict[str, pd.DataFrame], path: Path) -> Path:
    """Two panels, measures ordered by their mean over zoos: Kendall tau vs the gap, and
    minus tau vs test accuracy (both: higher = ranks models as its authors intended)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def column(s, name, flip=1):
        col = s.set_index("measure").get(name)
        return (flip * col) if col is not None else pd.Series(dtype=float)

    names = sorted({m for s in summaries.values() for m in s["measure"]})
    panels = [("tau_gap", 1, "Kendall tau(sign x measure, gap)"),
              ("tau_test_acc", -1, "-Kendall tau(sign x measure, test accuracy)")]
    def mean_score(m):
        vals = np.array([column(s, "tau_test_acc", -1).get(m, np.nan) for s in summaries.values()], dtype=float)
        return float(np.mean(vals[np.isfinite(vals)])) if np.isfinite(vals).any() else np.nan

    score = {m: mean_score(m) for m in names}
    order = sorted(names, key=lambda m: -np.nan_to_num(score[m], nan=-9))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.26 * len(order) + 1.6), sharey=True)
    height = 0.8 / max(1, len(summaries))
    for ax, (col, flip, label) in zip(axes, panels):
        for k, (zname, s) in enumerate(summaries.items()):
            vals = column(s, col, flip).reindex(order).to_numpy(float)
            ax.barh(np.arange(len(order)) + k * height, vals, height=height, label=zname)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(label + "\n(higher is better)", fontsize=9)
        ax.set_xlim(-1, 1)
    axes[0].set_yticks(np.arange(len(order)) + 0.4 - height / 2)
    axes[0].set_yticklabels(order, fontsize=8)
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write_report(summaries, tables, out: Path, settings: ScoreSettings) -> list[Path]:
    import base64

    plot = _ranking_plot(summaries, out / "ranking.png")
    cols = ["measure", "sign", "models", "tau_gap", "tau_test_acc", "spearman_test_acc", "psi_gap", "cmi_gap",
            "r2_loglog", "median_seconds"]
    md = [f"# pgen benchmark\n\nGenerated {dt.datetime.now().isoformat(timespec='seconds')}. "
          f"Samples per model: {settings.n_samples} ({settings.split} split), layer {settings.layer}, "
          f"centered P-vectors: {settings.center}, seed {settings.seed}.\n",
          "Every statistic uses `sign x value` (sign +1: larger predicts worse generalization), so "
          "`tau_gap` > 0 and `tau_test_acc` < 0 mean the measure ranks models the way its authors "
          "intended. `cmi_gap` is the PGDL score (sign-free); `r2_loglog` fits log value vs log test "
          "accuracy (positive measures only).\n", "![ranking](ranking.png)\n"]
    html = [f"<h1>pgen benchmark</h1><p>{md[0].splitlines()[2] if len(md[0].splitlines()) > 2 else ''}</p>",
            f"<p>{md[1]}</p>",
            f'<img src="data:image/png;base64,{base64.b64encode(plot.read_bytes()).decode()}">']
    for zname, s in summaries.items():
        shown = s.reindex(columns=[c for c in cols if c in s.columns])
        if "tau_test_acc" in shown:
            shown = shown.sort_values("tau_test_acc")  # most negative first: best ranking of test accuracy
        n = len(tables[zname])
        md += [f"\n## {zname} ({n} models)\n", md_table(shown.round(4)), ""]
        html += [f"<h2>{zname} ({n} models)</h2>", shown.round(4).to_html(index=False, na_rep="")]
    (out / "benchmark.md").write_text("\n".join(md) + "\n")
    (out / "benchmark.html").write_text("<!doctype html><meta charset='utf-8'><title>pgen benchmark</title>"
                                        "<style>body{font-family:sans-serif;max-width:70em;margin:auto}"
                                        "table{border-collapse:collapse;font-size:90%}td,th{padding:2px 6px;"
                                        "border-bottom:1px solid #ddd}</style>" + "\n".join(html))
    return [out / "benchmark.html", out / "benchmark.md", plot]
