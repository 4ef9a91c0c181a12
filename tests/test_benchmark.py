"""pgen benchmark end to end on the tiny zoo and a PGDL fixture task."""

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import scipy.stats

from pgen.cli import main

PGDL = Path(__file__).parent / "fixtures" / "pgdl"


def test_benchmark_end_to_end_and_resume(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["benchmark", str(tiny_zoo), str(PGDL / "task_nin"), "--out", str(out), "--samples", "200",
            "--measures", "pvector_angle,sum_squared_weights,inverse_margin,mixup_margin"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "tau_gap" in text and "task_nin" in text
    for name in ("benchmark.html", "benchmark.md", "ranking.png", "summary_tiny.csv", "summary_task_nin.csv",
                 "models_tiny.csv", "results.sqlite"):
        assert (out / name).stat().st_size > 0, name
    summary = pd.read_csv(out / "summary_tiny.csv").set_index("measure")
    models = pd.read_csv(out / "models_tiny.csv")
    assert list(summary.index) == ["pvector_angle", "sum_squared_weights", "inverse_margin", "mixup_margin"]
    # the statistics are those of sign x value, recomputed here with scipy
    for name, sign in (("sum_squared_weights", 1), ("mixup_margin", -1)):
        ref = scipy.stats.kendalltau(sign * models[name], models["gap"])[0]
        assert summary.loc[name, "tau_gap"] == pytest.approx(ref, abs=1e-12)
        ref = scipy.stats.kendalltau(sign * models[name], models["test_acc"])[0]
        assert summary.loc[name, "tau_test_acc"] == pytest.approx(ref, abs=1e-12)
    assert (summary["median_seconds"] > 0).all()
    # each tau has its bootstrap CI and the random-ranking spread beside it
    for col in ("tau_gap", "tau_test_acc"):
        assert (summary[f"{col}_ci_low"] <= summary[col]).all() and (summary[col] <= summary[f"{col}_ci_high"]).all()
    assert (summary["tau_null_sd"] > 0).all()
    # the same numbers as the one statistics entry point the report uses
    from pgen.stats import measure_statistics

    st = measure_statistics(models, "mixup_margin", n_boot=1000)
    row = st.kendall_row("test_acc")
    assert summary.loc["mixup_margin", "tau_test_acc"] == pytest.approx(-row["value"], abs=1e-12)
    assert summary.loc["mixup_margin", "tau_test_acc_ci_low"] == pytest.approx(-row["ci_high"], abs=1e-12)
    html = (out / "benchmark.html").read_text()
    assert "data:image/png;base64," in html and "tiny" in html
    with sqlite3.connect(out / "results.sqlite") as conn:
        before = conn.execute("SELECT COUNT(*), MAX(created) FROM results").fetchone()
    assert main(args) == 0  # resumes: nothing is recomputed
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*), MAX(created) FROM results").fetchone() == before


def test_benchmark_rejects_unknown_measure(tmp_path, capsys):
    assert main(["benchmark", str(PGDL / "task_nin"), "--out", str(tmp_path), "--measures", "nope"]) == 2
    assert "unknown measure 'nope'" in capsys.readouterr().err


def test_final_models_view_drops_checkpoints(tiny_zoo):
    from pgen.zoo import load_zoo

    zoo = load_zoo(tiny_zoo)
    finals = zoo.final_models()
    assert 0 < len(finals) < len(zoo)
    assert all("@" not in e.id for e in finals) and len(zoo) == 12  # the full zoo is untouched


def test_benchmark_with_checkpoints_scores_every_entry(tiny_zoo, tmp_path):
    out = tmp_path / "bench"
    base = ["benchmark", str(tiny_zoo), "--samples", "100", "--measures", "sum_squared_weights"]
    assert main(base + ["--out", str(out / "finals")]) == 0
    assert main(base + ["--out", str(out / "all"), "--with-checkpoints"]) == 0
    finals = pd.read_csv(out / "finals" / "models_tiny.csv")
    every = pd.read_csv(out / "all" / "models_tiny.csv")
    assert len(every) == 12 and 0 < len(finals) < 12
    assert not finals["model_id"].str.contains("@").any() and every["model_id"].str.contains("@").any()
