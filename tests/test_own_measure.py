"""Benchmark your own measure: a plugin file loaded behind --trust-code, the contract check,
the PGDL-style adapter and its worked example, an installed package's entry point, and a
named suite with its leaderboard, from an empty folder as docs/guide/benchmark.md says."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from pgen.cli import main
from pgen.measures import PLUGINS, REGISTRY

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "own_measure" / "my_measures.py"
MINE = ("weight_energy", "kit_style_logit_spread")


@pytest.fixture
def clean_registry():
    """Plugins register into the process-wide registry: each test leaves it as it found it."""
    from pgen.measures import list_measures

    list_measures()  # every built-in registered first, so that only the plugins' names are removed after
    before, plugins = set(REGISTRY), dict(PLUGINS)
    yield
    for name in set(REGISTRY) - before:
        REGISTRY.pop(name)
    PLUGINS.clear()
    PLUGINS.update(plugins)


def test_a_plugin_needs_trust_and_then_scores_like_any_measure(tiny_zoo, tmp_path, clean_registry, capsys,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLE, "my_measures.py")
    argv = ["score", str(tiny_zoo), "--out", "o", "--samples", "100", "--measures", "weight_energy,pvector_angle",
            "--plugin", "my_measures.py"]
    assert main(argv) == 2
    assert "is your own code: importing it runs it. If you trust it, pass --trust-code" in capsys.readouterr().err
    assert main(argv + ["--trust-code", "--workers", "2", "--no-report"]) == 0  # worker processes see it too
    from pgen.results import load_run

    run = load_run("o")
    assert run.table["weight_energy"].notna().all() and len(run.table) == 12
    assert main(["measures", "--plugin", "my_measures.py", "--trust-code", "weight_energy", "--long"]) == 0
    assert "examples/own_measure" in capsys.readouterr().out


def test_measures_check_passes_the_example_and_names_what_a_broken_measure_gets_wrong(tmp_path, clean_registry,
                                                                                      capsys):
    assert main(["measures", "check", str(EXAMPLE), "--trust-code"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.count("PASS") >= 2 * 10 and "every check passed" in out
    (tmp_path / "broken.py").write_text(textwrap.dedent("""
        import torch
        from pgen.measures import register

        @register("broken_measure", description="wrong in four ways", sign=1, reference="test", sign_reason="test")
        def broken(model, init_model, data, settings):
            model.train()
            with torch.no_grad():
                next(model.parameters()).add_(1.0)
            d = sum(p.detach().sum() for p in init_model.parameters())  # reads init without needs_init
            return float(settings.batch_size + torch.rand(1) + 0 * d)
    """))
    assert main(["measures", "check", str(tmp_path / "broken.py"), "--trust-code"]) == 1
    out = capsys.readouterr().out
    for complaint in ("FAIL  same seed, same value", "FAIL  independent of the batch size",
                      "changes 1 weight tensor(s) in place", "leaves the model in training mode",
                      "FAIL  runs without initial weights, as it declares (needs_init=False)"):
        assert complaint in out, complaint


def test_the_pgdl_style_example_runs(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "pgdl_style_measure.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "contract: every check passed" in done.stdout and "32 models; Kendall tau with test accuracy" in done.stdout


def test_an_installed_packages_measure_loads_only_when_named(tmp_path, clean_registry, monkeypatch):
    from importlib.metadata import EntryPoint

    import pgen.measures as pm

    (tmp_path / "their_pkg.py").write_text(textwrap.dedent("""
        from pgen.measures import register

        @register("their_measure", description="from an installed package", sign=-1, reference="test",
                  sign_reason="test", samples="none")
        def their_measure(model, init_model, data, settings):
            return 1.0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint("their_measure", "their_pkg", pm.ENTRY_POINT_GROUP)]
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group=None: [e for e in eps if e.group == group])
    assert "their_measure" not in set(pm.list_measures()["name"])  # listed once it is named
    assert pm.get_measure("their_measure").sign == -1
    with pytest.raises(ValueError, match="unknown measure 'nobody'"):
        pm.get_measure("nobody")


def test_from_an_empty_folder_to_a_leaderboard_row(tiny_zoo, tmp_path, clean_registry, monkeypatch, capsys):
    """The docs' "benchmark your own measure" (docs/guide/benchmark.md), with a tiny suite in place of the standard one."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLE, "my_measures.py")
    shutil.copytree(tiny_zoo, "zoos/tiny")
    Path("tiny-suite.toml").write_text(textwrap.dedent("""
        name = "tiny"
        version = 1
        zoos = ["zoos/tiny"]
        [settings]
        samples = 100
        bootstrap = 500
    """))
    base = ["benchmark", "--suite", "tiny-suite.toml", "--plugin", "my_measures.py", "--trust-code"]
    assert main(base + ["--measures", "pvector_angle,sum_squared_weights"]) == 0  # the baselines
    assert main(base + ["--measures", "pvector_angle,sum_squared_weights,weight_energy"]) == 0  # one more
    board = pd.read_csv("reports/suite-tiny/leaderboard.csv")
    assert set(board["measure"]) == {"pvector_angle", "sum_squared_weights", "weight_energy"}
    row = board[board["measure"] == "weight_energy"].iloc[0]
    assert -1 <= row["tau_gap"] <= 1 and row["tau_gap_holm"] in ("intended", "opposite", "not resolved")
    meta = json.loads(Path("reports/suite-tiny/leaderboard.json").read_text())
    assert meta["suite"] == "tiny" and meta["suite_version"] == 1 and meta["zoos"]["tiny"].startswith("tiny@")
    assert len(meta["settings_hash"]) == 16 and meta["settings"]["samples"] == 100
    out = capsys.readouterr().out
    assert "computed 12 model(s) in this call" not in out.split("weight_energy")[-1]
    import sqlite3

    with sqlite3.connect("reports/suite-tiny/results.sqlite") as conn:
        counts = dict(conn.execute("SELECT measure, COUNT(*) FROM results GROUP BY measure").fetchall())
    assert counts["weight_energy"] == counts["pvector_angle"]  # added, each model once, nothing else again
    assert main(["benchmark", "--suite", "tiny-suite.toml", "--samples", "50"]) == 2
    assert "a suite fixes its settings" in capsys.readouterr().err


def test_the_standard_suite_is_named_and_versioned():
    from pgen.suites import embedded_suites, load_suite

    assert "standard" in embedded_suites()
    suite = load_suite("standard")
    assert suite.version >= 1 and suite.zoos == ("fantastic-mnist1d", "fantastic-mnist5k")
    assert suite.settings == {"samples": 1000, "seed": 0, "bootstrap": 10000, "converged_only": True}
