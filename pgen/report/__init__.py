"""Reports: statistics of a scored zoo as HTML (self-contained), Markdown, CSV and PNG."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from pgen.stats import StatsError, conditional_mutual_information, correlations, granulated_kendall, loglog_fit

__all__ = ["analyze", "make_report"]

MEASURE = "pvector_angle"
TARGETS = {"test_acc": "test accuracy", "test_error": "test error", "pseudo_test_acc": "pseudo-test accuracy",
           "gap": "generalization gap"}


def grid_configs(table: pd.DataFrame, hparam_grid: dict | None) -> dict | None:
    """The table as a PGDL ``model_configs`` dict (hparams and the accuracies that define
    ``gap``), or None when the zoo is not an hparam grid or has no gap."""
    hp_cols = [c for c in table.columns if c.startswith("hp.")]
    if not hparam_grid or not hp_cols or "gap" not in table.columns:
        return None
    train = table["zoo.train_acc"] if "zoo.train_acc" in table.columns else table["train_acc"]
    test = train - table["gap"]
    return {m: {"hparams": {h: {"possible_values": hparam_grid[h], "current_value": row.get(f"hp.{h}")}
                            for h in hparam_grid},
                "metrics": {"train_acc": float(tr), "test_acc": float(te)}}
            for m, row, tr, te in zip(table["model_id"], table.to_dict("records"), train, test)}


def analyze(table: pd.DataFrame, *, measure: str = MEASURE, hparam_grid: dict | None = None,
            n_boot: int = 1000) -> dict:
    """Correlation table, log-log fits, and Psi / CMI (when a full hparam grid is known)."""
    out = {"correlations": [], "fits": [], "notes": [], "psi": None, "cmi": None}
    for col, label in TARGETS.items():
        if col not in table.columns:
            continue
        try:
            c = correlations(table[measure], table[col], n_boot=n_boot, name_x=measure, name_y=col)
            c.insert(0, "target", col)
            out["correlations"].append(c)
        except StatsError as exc:
            out["notes"].append(f"correlation with {label}: {exc}")
        try:
            out["fits"].append(loglog_fit(table[measure], table[col], name_x=measure, name_y=col))
        except StatsError as exc:
            out["notes"].append(f"log-log fit against {label}: {exc}")
    out["correlations"] = pd.concat(out["correlations"], ignore_index=True) if out["correlations"] else pd.DataFrame()
    hp_cols = [c for c in table.columns if c.startswith("hp.")]
    configs = grid_configs(table, hparam_grid)
    if configs is not None:
        ids = list(table["model_id"])
        scores = dict(zip(ids, table[measure]))
        hps = {m: {c[3:]: v for c, v in row.items()} for m, row in zip(ids, table[hp_cols].to_dict("records"))}
        try:
            out["psi"] = granulated_kendall(scores, hps, dict(zip(ids, table["gap"])))
        except StatsError as exc:
            out["notes"].append(f"granulated Kendall: {exc}")
        try:
            out["cmi"] = conditional_mutual_information(scores, configs)
        except (StatsError, KeyError) as exc:
            out["notes"].append(f"PGDL CMI: {exc}")
    return out


def _plots(table: pd.DataFrame, analysis: dict, out: Path, measure: str) -> list[tuple[str, Path]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fits = {f.y_name: f for f in analysis["fits"]}

    def scatter(ycol, fname, title):
        if ycol not in table.columns:
            return
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        x, y = table[measure].to_numpy(float), table[ycol].to_numpy(float)
        ax.scatter(x, y, s=22, alpha=0.8, label="models")
        fit = fits.get(ycol)
        if fit is not None:
            grid = np.geomspace(np.nanmin(x[x > 0]), np.nanmax(x), 100)
            yhat, lo, hi = fit.predict(grid, interval=True)
            ax.plot(grid, yhat, "C1", label=f"log-log fit: slope {fit.slope:.2f}, R$^2$ {fit.r2:.2f}")
            ax.fill_between(grid, lo, hi, color="C1", alpha=0.2, label="95% CI of the mean")
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("P-vector angle to data (deg)")
        ax.set_ylabel(TARGETS.get(ycol, ycol))
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append((title, path))

    scatter("test_acc", "loglog_angle_test_acc.png", "angle vs test accuracy (log-log)")
    scatter("pseudo_test_acc", "angle_pseudo_test_acc.png", "angle vs pseudo-test accuracy (log-log)")
    if {"test_acc", "pseudo_test_acc"} <= set(table.columns):
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        ax.scatter(table["pseudo_test_acc"], table["test_acc"], s=22, c=table[measure], cmap="viridis")
        lims = [min(table["pseudo_test_acc"].min(), table["test_acc"].min()), 1.0]
        ax.plot(lims, lims, "k--", lw=0.8, label="y = x")
        ax.set_xlabel("pseudo-test accuracy")
        ax.set_ylabel("test accuracy")
        ax.set_title("test vs pseudo-test accuracy (colour: angle)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / "test_vs_pseudo_test.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(("test vs pseudo-test accuracy", path))
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.hist(table[measure].dropna(), bins=min(30, max(5, len(table) // 2)))
    ax.set_xlabel("P-vector angle to data (deg)")
    ax.set_ylabel("models")
    ax.set_title("distribution of angles")
    fig.tight_layout()
    path = out / "angle_histogram.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(("distribution of angles", path))
    return files


def _fmt(v, digits=4):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def make_report(table: pd.DataFrame, out: str | Path, *, zoo_info: dict | None = None, settings: dict | None = None,
                hparam_grid: dict | None = None, measure: str = MEASURE, n_boot: int = 1000,
                errors: pd.DataFrame | None = None) -> dict:
    """Write ``report.html``, ``report.md``, CSV tables and PNG plots into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyze(table, measure=measure, hparam_grid=hparam_grid, n_boot=n_boot)
    table.to_csv(out / "models.csv", index=False)
    corr = analysis["correlations"]
    corr.to_csv(out / "correlations.csv", index=False)
    fits = pd.DataFrame([f.as_dict() for f in analysis["fits"]])
    fits.to_csv(out / "loglog_fits.csv", index=False)
    plots = _plots(table, analysis, out, measure)
    summary = {
        "zoo": zoo_info or {},
        "settings": settings or {},
        "models_scored": int(len(table)),
        "models_failed": 0 if errors is None else int(len(errors)),
        "psi": analysis["psi"],
        "cmi": analysis["cmi"],
        "notes": analysis["notes"],
        "generated": dt.datetime.now().isoformat(timespec="seconds"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))

    per_model_cols = [c for c in ["model_id", measure, "pvector_gap", "train_acc", "zoo.train_acc", "test_acc",
                                  "pseudo_test_acc", "gap"]
                      if c in table.columns] + [c for c in table.columns if c.startswith("hp.")]
    shown = table[per_model_cols].sort_values(measure)
    corr_show = corr[["target", "method", "value", "p_value", "ci_low", "ci_high", "n"]] if not corr.empty else corr
    fit_show = fits[["y", "slope", "slope_ci_low", "slope_ci_high", "intercept", "r2", "slope_p", "n"]] if not fits.empty else fits

    md = [f"# pgen report: {html.escape(str((zoo_info or {}).get('name', 'zoo')))}", "",
          f"Generated {summary['generated']}. Measure: `{measure}` (angle between each model's P-vector and the "
          "data P-vector, degrees; larger is expected to mean worse generalization).", "",
          "## Zoo", "", "```", json.dumps(zoo_info or {}, indent=1, default=str), "```", "",
          "## Settings", "", "```", json.dumps(settings or {}, indent=1, default=str), "```", "",
          f"Models scored: {summary['models_scored']}; failed: {summary['models_failed']}.", "",
          "## Correlations", "", "Bootstrap 95% CIs resample models (1000 resamples).", "",
          md_table(corr_show) if not corr.empty else "(none)", "",
          "## Log-log fits", "", "OLS of log(target) on log(angle), HC3 robust errors.", "",
          md_table(fit_show) if not fits.empty else "(none)", ""]
    if analysis["psi"] is not None:
        per = ", ".join(f"{k}: {_fmt(v, 3)}" for k, v in analysis["psi"]["per_hparam"].items())
        md += ["## Hparam-grid statistics", "",
               f"- Granulated Kendall Psi (against the gap): {_fmt(analysis['psi']['psi'], 4)} ({per})",
               f"- PGDL conditional mutual information: {_fmt(analysis['cmi'], 4)}", ""]
    if analysis["notes"]:
        md += ["## Notes", ""] + [f"- {n}" for n in analysis["notes"]] + [""]
    md += ["## Plots", ""] + [f"![{t}]({p.name})" for t, p in plots] + [""]
    gap_note = ("`train_acc` is pgen's, on the whole scored split; `zoo.train_acc` is the zoo's record, on the "
                "labels the model was trained on; `gap` = recorded train accuracy - test accuracy."
                if "zoo.train_acc" in shown.columns else "")
    md += ["## Models", "", gap_note, "", md_table(shown), ""]
    if errors is not None and len(errors):
        md += ["## Failed models", "", md_table(errors[["model_id", "error"]]), ""]
    (out / "report.md").write_text("\n".join(md))

    def img(p):
        return f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'

    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
             "img{max-width:48%;margin:4px}pre{background:#f5f5f5;padding:8px}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>pgen report</title><style>{style}</style></head><body>",
             f"<h1>pgen report: {html.escape(str((zoo_info or {}).get('name', 'zoo')))}</h1>",
             f"<p>Generated {summary['generated']}. Measure: <code>{measure}</code>.</p>",
             "<h2>Zoo</h2><pre>" + html.escape(json.dumps(zoo_info or {}, indent=1, default=str)) + "</pre>",
             "<h2>Settings</h2><pre>" + html.escape(json.dumps(settings or {}, indent=1, default=str)) + "</pre>",
             f"<p>Models scored: {summary['models_scored']}; failed: {summary['models_failed']}.</p>",
             "<h2>Correlations</h2>" + (corr_show.to_html(index=False, float_format=lambda v: f"{v:.4g}") if not corr.empty else "<p>(none)</p>"),
             "<h2>Log-log fits</h2>" + (fit_show.to_html(index=False, float_format=lambda v: f"{v:.4g}") if not fits.empty else "<p>(none)</p>")]
    if analysis["psi"] is not None:
        parts.append(f"<h2>Hparam-grid statistics</h2><p>Granulated Kendall Psi: {_fmt(analysis['psi']['psi'])}; "
                     f"PGDL CMI: {_fmt(analysis['cmi'])}</p>")
    if analysis["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in analysis["notes"]) + "</ul>")
    parts.append("<h2>Plots</h2>" + "".join(img(p) for _, p in plots))
    parts.append("<h2>Models</h2>" + (f"<p>{gap_note}</p>" if gap_note else "") + shown.to_html(index=False, float_format=lambda v: f"{v:.4g}"))
    if errors is not None and len(errors):
        parts.append("<h2>Failed models</h2>" + errors[["model_id", "error"]].to_html(index=False))
    parts.append("</body></html>")
    (out / "report.html").write_text("\n".join(parts))
    return {"analysis": analysis, "files": [out / "report.html", out / "report.md"] + [p for _, p in plots]}


def report_from_results(results_dir: str | Path, out: str | Path | None = None, *, n_boot: int = 1000) -> dict:
    """Rebuild the report of every zoo scored in a results folder."""
    from pgen.score import results_table
    from pgen.store import ResultsStore
    from pgen.zoo import load_zoo

    results_dir = Path(results_dir)
    db = results_dir / "results.sqlite" if results_dir.is_dir() else results_dir
    if not db.exists():
        raise FileNotFoundError(f"{db} does not exist: run `pgen score` first")
    store = ResultsStore(db)
    runs = store.runs()
    if runs.empty:
        raise ValueError(f"{db} holds no scoring runs")
    out = Path(out) if out else db.parent
    last = None
    for run in runs.itertuples():
        settings = json.loads(run.settings)
        info = json.loads(run.info or "{}")
        zoo = load_zoo(settings["zoo_root"], build=False)
        table = results_table(store, zoo, settings)
        errors = store.errors(zoo.name)
        errors = errors[errors.settings_hash == run.settings_hash]
        last = make_report(table, out if len(runs) == 1 else out / f"{zoo.name}-{run.settings_hash}",
                           zoo_info={**zoo.describe(), "pseudo_test_policy": info.get("pseudo_test_policy")},
                           settings=settings, hparam_grid=zoo.hparam_grid(), n_boot=n_boot, errors=errors)
    store.close()
    return last
