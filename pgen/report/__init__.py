"""The zoo report: a :class:`~pgen.results.ScoreRun` as HTML (self-contained), Markdown, CSV and PNG.

``write_report(run, out)`` opens with its answer (does each measure rank test accuracy and
the gap on this zoo, with a confidence interval and the chance level), then shows the zoo
and the settings as tables, each measure's statistics and plots, the models, and every
failure. All statistics come from :func:`pgen.stats.measure_statistics`, the entry point
the benchmark uses too; the rendering from :class:`~pgen.report.document.Document`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pgen.errors import UnknownNameError
from pgen.report import plots
from pgen.report.document import Document, fmt
from pgen.report.glossary import add_glossary
from pgen.results import ScoreRun, load_runs
from pgen.stats import TARGETS, MeasureStatistics, holm, measure_statistics, random_angle_null
from pgen.paths import output_path, safe_filename, staged

__all__ = ["write_report", "report_from_results", "answer_sentences", "color_column"]

ALPHA = 0.05  # family-wise error of Holm's correction over a report's measures


def _measure_meta(name: str):
    from pgen.measures import get_measure

    try:
        return get_measure(name)
    except ValueError:
        return None


def _verdict(tau: float, lo: float, hi: float, expected: int, holm_p: float | None = None, family: int = 1) -> str:
    """Whether a CI of tau resolves the direction; ``expected`` is the sign tau should have.
    With several measures in the report (``family`` > 1), the direction is resolved only
    when Holm's adjusted p-value ``holm_p`` is at most 0.05 as well."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no confidence interval could be computed"
    if lo <= 0 <= hi:
        return "not resolved: the CI includes 0"
    if family > 1 and not (holm_p is not None and holm_p <= ALPHA):
        return (f"not resolved after Holm's correction over the {family} measures of this report (adjusted p = "
                f"{holm_p:.2g}), although the raw CI excludes 0")
    direction = "in the intended direction" if (tau > 0) == (expected > 0) else "in the OPPOSITE direction to its sign"
    return direction + (f" (Holm-adjusted p = {holm_p:.2g} over the {family} measures)" if family > 1 else "")


def answer_sentences(stats: MeasureStatistics, holm_p: Mapping[str, float] | None = None, family: int = 1) -> list[str]:
    """Plain sentences: how the measure (oriented: sign x value) ranks test accuracy and the
    gap, against chance. ``holm_p``: target -> Holm-adjusted p over the ``family`` measures
    of the report.

    Parameters
    ----------
    stats : MeasureStatistics
        The measure's statistics.
    holm_p : Mapping[str, float], optional
        Target to Holm-adjusted p-value over the report's measures.
    family : int, default=1
        Number of measures in the report (Holm's family).

    Returns
    -------
    list of str
        The sentences.
    """
    out = []
    null = f"random rankings give 0 +- {stats.kendall_null_sd:.2f} (1 sd)"
    unit = f"bootstrap over {stats.unit.describe()}" if stats.unit is not None else "bootstrap"
    # Oriented, the authors' direction is a negative tau with test accuracy, positive with the gap.
    for target, expected, label in (("test_acc", -1, "test accuracy"), ("gap", 1, "the generalization gap")):
        row = stats.kendall_row(target)
        if row is None:
            continue
        verdict = _verdict(row["value"], row["ci_low"], row["ci_high"], expected, (holm_p or {}).get(target), family)
        out.append(f"Kendall tau with {label} {row['value']:+.2f} [95% CI {row['ci_low']:+.2f}, {row['ci_high']:+.2f}; "
                   f"{unit}], bootstrap p = {row['p_boot']:.2g} ({null}): {verdict}.")
    if not out:  # e.g. a measure constant over the zoo: say why there is nothing, not an empty line
        why = stats.notes[0].split(": ", 1)[-1] if stats.notes else "no target column to compare with"
        out.append(f"No rank correlation: {Document.text(why)}.")
    if stats.cmi is not None:
        text = f"PGDL CMI against the gap {stats.cmi:.3f}"
        if stats.cmi_null:
            c = stats.cmi_null
            text += (f" (random rankings over the same grid: median {c['median']:.3f}, 95th percentile "
                     f"{c['q95']:.3f}; p = {c['p_value']:.2g} over {c['permutations']} permutations)")
        out.append(text + ".")
    return out


def _holm_over_measures(stats: Mapping[str, MeasureStatistics]) -> dict[str, dict[str, float]]:
    """measure -> target -> Holm-adjusted bootstrap p over the report's measures (one family per target)."""
    out: dict[str, dict[str, float]] = {m: {} for m in stats}
    for target in ("test_acc", "gap"):
        rows = {m: st.kendall_row(target) for m, st in stats.items()}
        names = [m for m, r in rows.items() if r is not None]
        adjusted = holm([rows[m]["p_boot"] for m in names])
        for m, p in zip(names, adjusted):
            out[m][target] = float(p)
    return out


def _targets_sentence(run: ScoreRun) -> str:
    """Where the targets come from: which test accuracy (pgen's, recomputed, with the zoo's
    recorded one beside it, or the zoo's) and which pseudo-test policy."""
    import scipy.stats

    table = run.table
    parts = []
    if "test_acc" in table and "zoo.test_acc" in table:
        both = table[["test_acc", "zoo.test_acc"]].apply(pd.to_numeric, errors="coerce").dropna()
        if len(both) and not (both["test_acc"] == both["zoo.test_acc"]).all():
            agree = (f"; Kendall tau {scipy.stats.kendalltau(both['test_acc'], both['zoo.test_acc'])[0]:+.2f} between "
                     "the two" if len(both) > 2 and both.nunique().min() > 1 else "")
            parts.append("Test accuracy is pgen's, recomputed on the zoo's test split; the zoo's recorded one is "
                         f"`zoo.test_acc` in models.csv (largest difference {(both['test_acc'] - both['zoo.test_acc']).abs().max():.3f}{agree}).")
        else:
            parts.append("Test accuracy: pgen's recomputed value equals the zoo's recorded one.")
    elif "zoo.test_acc" in table:
        parts.append("Test accuracy is the zoo's recorded one (no test data to recompute it).")
    policy = run.info.get("pseudo_test_policy")
    if policy and "pseudo_test_acc" in table:
        parts.append(f"Pseudo-test accuracy: policy {Document.text(policy)}.")
    return " ".join(parts)


def color_column(columns, color_by: str | None, zoo_name: str) -> str | None:
    """The ``hp.<name>`` column for ``--color-by NAME`` (or ``hp.NAME``); an unknown name is an error.

    Parameters
    ----------
    columns : sequence of str
        The run table's columns.
    color_by : str or None
        ``NAME`` or ``hp.NAME``.
    zoo_name : str
        The zoo, for the error.

    Returns
    -------
    str or None
        The column, or None without ``color_by``.

    Raises
    ------
    InputError
        For a name that is not a hyperparameter of the zoo.
    """
    if not color_by:
        return None
    known = sorted(c[3:] for c in columns if c.startswith("hp."))
    name = color_by.removeprefix("hp.")
    if name not in known:
        raise UnknownNameError(f"--color-by {color_by!r} is not a hyperparameter of {zoo_name}; known: {known}")
    return f"hp.{name}"


def _relative(path: str | None, out: Path) -> str:
    if not path:
        return "n/a"
    try:
        return os.path.relpath(path, out.resolve())
    except ValueError:  # another drive
        return str(path)


def write_report(run: ScoreRun, out: str | Path, *, color_by: str | None = None, n_boot: int = 1000,
                 cmi_permutations: int = 200) -> list[Path]:
    """Write the report of ``run`` into ``out``; return the files written (report.html first).

    The report is written into a hidden staging folder and moved into place when complete,
    so an interrupted call leaves the previous report whole.

    Parameters
    ----------
    run : ScoreRun
        From :func:`pgen.score.score_zoo`, :func:`pgen.score.score_models` or
        :func:`pgen.results.load_run`.
    out : str or Path
        The report folder.
    color_by : str, optional
        Hyperparameter whose values colour the scatter plots (``width`` or ``hp.width``).
    n_boot : int, default=1000
        Bootstrap resamples for the confidence intervals.
    cmi_permutations : int, default=200
        Random rankings for the CMI's null distribution (0: none).

    Returns
    -------
    list of Path
        ``report.html``, ``report.md``, the CSVs, ``summary.json`` and the PNG plots.

    Examples
    --------
    >>> import torch
    >>> from pgen.score import score_models
    >>> nets = {f"m{i}": torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)) for i in range(3)}
    >>> run = score_models(nets, "digits", n_samples=100)
    >>> import tempfile; folder = tempfile.mkdtemp()
    >>> files = write_report(run, folder, n_boot=50, cmi_permutations=0)
    >>> files[0].name
    'report.html'
    """
    out = Path(out)
    color_by = color_column(run.table.columns, color_by, run.name)
    with staged(out) as into:  # an interrupted report leaves the folder as it was, never half a report
        written = _write_report(run, out, into, color_by, n_boot, cmi_permutations)
    return [out / p.relative_to(into) for p in written]


def _write_report(run: ScoreRun, out: Path, into: Path, color_by, n_boot: int, cmi_permutations: int) -> list[Path]:
    """The report of ``run``, written into the staging folder ``into``; paths it names are
    relative to ``out``, where it will be."""
    table = run.table
    measures = [m for m in run.measures if m in table.columns]
    files: list[Path] = []
    signs = {m: (meta.sign if (meta := _measure_meta(m)) else 1) for m in measures}
    stats = {m: measure_statistics(table, m, hparam_grid=run.hparam_grid, n_boot=n_boot,
                                   cmi_permutations=cmi_permutations, sign=signs[m]) for m in measures}
    holm_p = _holm_over_measures(stats)
    generated = dt.datetime.now().isoformat(timespec="seconds")
    doc = Document(f"pgen report: {run.name}")

    # The answer first.
    answers = {}
    doc.heading("Answer")
    if not measures:
        doc.paragraph(f"No measure has a value on this zoo ({len(run.errors)} failure(s), listed below).", answer=True)
    for m in measures:
        meta = _measure_meta(m)
        sign = signs[m]
        direction = "larger predicts worse generalization" if sign > 0 else "larger predicts better generalization"
        sentences = answer_sentences(stats[m], holm_p.get(m), len(measures))
        if meta is not None and meta.family == "p-vector" and run.info.get("n_samples_used"):
            null = random_angle_null(int(run.info["n_samples_used"]))
            values = table[m].dropna()
            sentences.append(f"Its values span {values.min():.1f} to {values.max():.1f} degrees (median "
                             f"{values.median():.1f}); a random unit vector over the same "
                             f"{run.info['n_samples_used']} samples sits at {null['median']:.1f} degrees "
                             f"(90% between {null['q05']:.1f} and {null['q95']:.1f}).")
        answers[m] = sentences
        doc.paragraph(f"**{m}** (sign {sign:+d}: {direction}; {stats[m].n} models). " + " ".join(sentences),
                      answer=True)
    doc.paragraph(_targets_sentence(run), answer=True)
    doc.paragraph("Kendall tau is tau-b of sign x value (so a positive tau against the gap, a negative one against "
                  f"test accuracy, is the measure's intended direction); the CIs are percentile bootstraps ({n_boot} "
                  "resamples) over the design's unit: whole hyperparameter cells (every seed of a cell together) where "
                  "a cell holds several models, else models; the p-values come from the same resamples. A CI that "
                  "includes 0 does not tell the measure from a random ranking; with several measures, a direction is "
                  "resolved only when Holm's correction over them (per target) agrees.")

    # The zoo and the settings, as tables.
    doc.heading("Zoo")
    zoo = dict(run.zoo)
    zoo["root"] = _relative(zoo.get("root"), out)
    if zoo.get("model_configs"):
        zoo["model_configs"] = _relative(zoo["model_configs"], out)
    doc.key_values(zoo)
    doc.heading("Settings")
    settings = {k: v for k, v in run.settings.items() if k != "zoo"}
    settings["samples used"] = run.info.get("n_samples_used")
    settings["measures"] = ", ".join(run.measures)
    settings["device"] = run.info.get("device")
    settings["pseudo-test policy"] = run.info.get("pseudo_test_policy")
    environments = run.info.get("environments") or []
    if environments:
        settings["scored with"] = "; ".join(
            f"pgen {e.get('pgen')}, torch {e.get('torch')}, numpy {e.get('numpy')}, python {e.get('python')}, "
            f"{e.get('threads_per_model')} thread(s) per model, {e.get('workers')} worker(s) on {e.get('cpus')} CPUs, "
            f"{e.get('device')}" for e in environments)
    doc.key_values(settings)
    scored = f"Models with every target: {run.models_scored}; models that failed: {run.models_failed}"
    measure_failures = int((run.errors["measure"] != "").sum()) if len(run.errors) else 0
    doc.paragraph(scored + f"; measure failures: {measure_failures}."
                  + (f" This call computed {run.computed} model(s); the rest were already stored." if run.computed else ""))

    corr_frames, fit_rows, summary_measures = [], [], {}
    for m in measures:
        meta = _measure_meta(m)
        st = stats[m]
        label = f"{m}" + (f": {meta.description}" if meta else "")
        doc.heading(f"Measure {m}")
        if meta:
            doc.paragraph(f"{meta.description}. Reference: {meta.reference}.")
        corr = st.correlations
        corr_frames.append(corr.assign(measure=m))
        if not corr.empty:
            doc.paragraph(f"Correlations of sign x {m} (sign {signs[m]:+d}) with each target, 95% bootstrap CIs over "
                          f"{st.unit.describe()}: as intended, negative with accuracies and positive with the error and "
                          "the gap. p_value is scipy's (it takes the models as independent); p_boot comes from the "
                          "bootstrap.")
            doc.table(corr[["target", "method", "value", "p_value", "p_boot", "ci_low", "ci_high", "n", "unit",
                            "units"]])
        fits = pd.DataFrame([f.as_dict() for f in st.fits])
        if not fits.empty:
            fit_rows.append(fits)
            doc.paragraph(f"Log-log fits: OLS of log(target) on log({m}) (the values themselves, not sign x value), "
                          "95% CIs from robust errors: HC3, or cluster-robust by hyperparameter cell where cells hold "
                          "several seeds (the errors column).")
            doc.table(fits[["y", "slope", "slope_ci_low", "slope_ci_high", "intercept", "r2", "slope_p", "n",
                            "errors"]])
        if st.psi is not None:
            per = ", ".join(f"{k}: {fmt(v, 3)}" for k, v in st.psi["per_hparam"].items())
            doc.paragraph(f"Granulated Kendall Psi of sign x {m} against the gap (Jiang et al. 2020; tau-a within groups, a "
                          f"constant group counting 0): {fmt(st.psi['psi'], 3)} "
                          f"(per hyperparameter: {Document.text(per)}).")
        if st.k_mu is not None:
            doc.paragraph(f"Jiang et al.'s K(mu) against the gap (conditioning sets of 0 to 2 hyperparameters; "
                          f"not the PGDL scorer's CMI): {fmt(st.k_mu, 4)}.")
        images = []
        wrapped = "\n".join(textwrap.wrap(label, 70)[:2])
        fit_by_target = {f.y_name: f for f in st.fits}
        for target in ("test_acc", "pseudo_test_acc", "gap"):
            if target in table.columns and table[m].notna().sum() > 1:
                p = plots.measure_scatter(table, m, target, label=wrapped, target_label=TARGETS[target],
                                          fit=fit_by_target.get(target) if target != "gap" else None,
                                          color_by=color_by, path=output_path(into, f"{safe_filename(m)}_vs_{target}.png"))
                images.append((f"{m} vs {TARGETS[target]}", p))
        histogram = plots.histogram(table[m], label=wrapped, path=output_path(into, f"{safe_filename(m)}_histogram.png"))
        images.append((f"distribution of {m}", histogram))
        doc.images(images)
        files += [p for _, p in images]
        summary_measures[m] = {"models": st.n, "sign": signs[m], "bootstrap_unit": st.unit.describe(),
                               "kendall_of_sign_x_value": st.kendall, "kendall_null_sd": st.kendall_null_sd,
                               "kendall_holm_p": holm_p.get(m),
                               "psi": st.psi, "cmi": st.cmi, "cmi_null": st.cmi_null, "k_mu": st.k_mu}
    if measures and {"test_acc", "pseudo_test_acc"} <= set(table.columns):
        p = plots.test_vs_pseudo(table, colour_column=measures[0], colour_label=measures[0],
                                 path=output_path(into, "test_vs_pseudo_test.png"))
        doc.heading("Test vs pseudo-test accuracy")
        doc.paragraph("Pseudo-test accuracy: accuracy on augmented copies of the scored samples "
                      "(the policy is in the settings table).")
        doc.images([("test vs pseudo-test accuracy", p)])
        files.append(p)
    notes = [n for m in measures for n in stats[m].notes]
    if notes:
        doc.heading("Notes")
        doc.bullets([Document.text(n) for n in notes])

    doc.heading("Models")
    if "zoo.train_acc" in table.columns:
        doc.paragraph("`train_acc` is pgen's, on the whole scored split; `zoo.train_acc` is the zoo's record, on the "
                      "labels the model was trained on; `gap` = recorded train accuracy - test accuracy.")
    cols = ["model_id", *measures, "train_acc", "zoo.train_acc", "test_acc", "pseudo_test_acc", "gap"]
    shown = table[[c for c in cols if c in table.columns] + [c for c in table.columns if c.startswith("hp.")]]
    doc.table(shown.sort_values(measures[0]) if measures else shown)
    if len(run.errors):
        doc.heading("Failures")
        doc.paragraph("A failed model has no targets; a failed measure leaves only that measure missing.")
        doc.table(run.errors.assign(measure=run.errors["measure"].replace("", "(model)")))

    table.to_csv(output_path(into, "models.csv"), index=False)
    correlations = pd.concat(corr_frames, ignore_index=True) if corr_frames else pd.DataFrame()
    correlations.to_csv(output_path(into, "correlations.csv"), index=False)
    (pd.concat(fit_rows, ignore_index=True) if fit_rows else pd.DataFrame()).to_csv(output_path(into, "loglog_fits.csv"), index=False)
    run.errors.to_csv(output_path(into, "errors.csv"), index=False)
    summary = {"zoo": zoo, "settings": run.settings, "run_id": run.run_id, "info": run.info,
               "models_scored": run.models_scored, "models_failed": run.models_failed,
               "measure_failures": measure_failures, "answer": answers, "measures": summary_measures, "notes": notes,
               "generated": generated}
    output_path(into, "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    add_glossary(doc)
    doc.paragraph(f"Generated {generated} by pgen from `{_relative(str(run.store_path), out)}` (run {Document.text(run.run_id)}).")
    written = doc.write(into, "report")
    return written + [into / "models.csv", into / "correlations.csv", into / "loglog_fits.csv", into / "errors.csv",
                      into / "summary.json"] + files


def report_from_results(results: str | Path, out: str | Path | None = None, *, color_by: str | None = None,
                        n_boot: int = 1000, cmi_permutations: int = 200) -> list[tuple[ScoreRun, list[Path]]]:
    """Rebuild the report of every run in a results folder, from ``results.sqlite`` alone.

    One run: the report goes into ``out`` (default: the results folder). Several runs:
    each into ``out/<zoo>-<run id>/``. Returns ``[(run, files written), ...]``.

    Parameters
    ----------
    results : str or Path
        A results folder (with ``results.sqlite``).
    out : str or Path, optional
        Where the report goes (default: the results folder).
    color_by : str, optional
        Hyperparameter colouring the scatter plots.
    n_boot : int, default=1000
        Bootstrap resamples.
    cmi_permutations : int, default=200
        Random rankings for the CMI's null.

    Returns
    -------
    list of tuple
        ``[(ScoreRun, [files written]), ...]``, one per run.
    """
    runs = load_runs(results)
    base = Path(out) if out else (Path(results) if Path(results).is_dir() else Path(results).parent)
    written = []
    for run in runs:
        # The zoo name and run id come from the store (perhaps someone else's): never a path.
        folder = base if len(runs) == 1 else output_path(base, f"{run.name}-{run.run_id}", directory=True)
        written.append((run, write_report(run, folder, color_by=color_by, n_boot=n_boot,
                                          cmi_permutations=cmi_permutations)))
    return written
