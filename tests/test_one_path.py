"""The defects of issue "one path for every measure", each reproduced as a user meets it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pgen.cli import main
from pgen.measures import REGISTRY, list_measures, register
from pgen.report import write_report
from pgen.results import load_run, load_runs
from pgen.score import ScoreSettings, score_zoo

ROOT = Path(__file__).parents[1]
PGDL = Path(__file__).parent / "fixtures" / "pgdl"


def test_the_angle_with_another_measure_scores_and_reports_both(tiny_zoo, tmp_path, capsys):
    # Before: every model scored, then "pgen score: error: pvector_angle" and no report.
    out = tmp_path / "out"
    assert main(["score", str(tiny_zoo), "--out", str(out), "--samples", "200", "--color-by", "arch",
                 "--measures", "pvector_angle,distance_from_init,pvector_angle"]) == 0
    text = capsys.readouterr().out
    assert "pvector_angle: Kendall tau" in text and "distance_from_init: Kendall tau" in text
    models = pd.read_csv(out / "models.csv")
    assert models["pvector_angle"].between(0, 90).all() and (models["distance_from_init"] > 0).all()
    for extra in ("sigma_ratio", "relative_spectral_gap", "explained_variance", "stable"):
        assert models[f"pvector_angle.{extra}"].notna().all(), extra  # the angle's extra values, stored beside it
    assert (models["pvector_angle.sigma_ratio"] >= 1).all()
    md = (out / "report.md").read_text()
    assert "**pvector_angle**" in md and "**distance_from_init**" in md
    for name in ("distance_from_init_vs_test_acc.png", "pvector_angle_vs_test_acc.png"):
        assert (out / name).is_file()
    corr = pd.read_csv(out / "correlations.csv")
    assert set(corr["measure"]) == {"pvector_angle", "distance_from_init"}


def test_two_runs_in_one_folder_report_the_run_just_scored(tiny_zoo, tmp_path, capsys):
    # Before: the CLI printed OUT/report.html, the older run's report or none at all.
    out = tmp_path / "out"
    assert main(["score", str(tiny_zoo), "--out", str(out), "--samples", "200"]) == 0
    capsys.readouterr()
    assert main(["score", str(tiny_zoo), "--out", str(out), "--samples", "120", "--no-center"]) == 0
    text = capsys.readouterr().out
    assert f"report: {out / 'report.html'} and {out / 'report.md'}" in text
    settings = dict(pd.read_json(out / "summary.json", typ="series")["settings"])
    assert settings["n_samples"] == 120 and settings["center"] is False
    # pgen report writes one folder per run and prints each
    assert main(["report", str(out), "--bootstrap", "20"]) == 0
    text = capsys.readouterr().out
    runs = load_runs(out)
    assert len(runs) == 2
    for run in runs:
        folder = out / f"tiny-{run.run_id}"
        assert f"report: {folder / 'report.html'}" in text
        assert (folder / "report.md").is_file()


def test_a_moved_or_deleted_zoo_keeps_its_results(tiny_zoo, tmp_path):
    # Before: the zoo's absolute path was part of the settings; moving it re-scored everything,
    # and pgen report reloaded the zoo from that path.
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    out = tmp_path / "out"
    first = score_zoo(zoo, out, settings=ScoreSettings(n_samples=100), progress=False)
    moved = tmp_path / "elsewhere" / "zoo"
    moved.parent.mkdir()
    zoo.rename(moved)
    again = score_zoo(moved, out, settings=ScoreSettings(n_samples=100), progress=False)
    assert again.computed == 0 and again.run_id == first.run_id
    shutil.rmtree(moved)
    run = load_run(out)
    files = write_report(run, tmp_path / "report", n_boot=20, cmi_permutations=10)
    assert files[0].name == "report.html" and all(f.exists() for f in files)
    pd.testing.assert_frame_equal(run.table, first.table)


def test_a_changed_zoo_is_not_confused_with_the_old_one(tiny_zoo, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    manifest = zoo / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:-1]) + "\n")  # one model fewer: another zoo
    from pgen.zoo import load_zoo

    assert load_zoo(zoo).identity() != load_zoo(tiny_zoo).identity()
    assert load_zoo(tiny_zoo).identity() == load_zoo(tiny_zoo).identity()


def test_measure_failures_reach_the_report(tiny_zoo, tmp_path):
    # Before: failures were stored but never shown (ResultsStore.measure_errors was unused).
    list_measures()

    def fails_on_cnns(model, init_model, data, settings):
        if any(isinstance(m, __import__("torch").nn.Conv2d) for m in model.modules()):
            raise ValueError("no CNNs, please")
        return 1.0 + sum(p.numel() for p in model.parameters()) / 1e4

    register("fails_on_cnns", description="test measure", sign=1, reference="test", sign_reason="test")(fails_on_cnns)
    try:
        run = score_zoo(tiny_zoo, tmp_path, settings=ScoreSettings(n_samples=100, measures=("fails_on_cnns",)),
                        progress=False)
        cnns = set(run.table.loc[run.table["hp.arch"] == "cnn", "model_id"])
        assert set(run.errors["model_id"]) == cnns and set(run.errors["measure"]) == {"fails_on_cnns"}
        assert run.table.loc[run.table["hp.arch"] == "cnn", "fails_on_cnns"].isna().all()
        write_report(run, tmp_path, n_boot=10, cmi_permutations=0)
        md = (tmp_path / "report.md").read_text()
        assert "## Failures" in md and "ValueError: no CNNs, please" in md
        assert len(pd.read_csv(tmp_path / "errors.csv")) == len(cnns)
    finally:
        REGISTRY.pop("fails_on_cnns", None)


def test_pgdl_predict_resumes_only_on_the_same_settings(tmp_path):
    # Before: a rerun with other --samples or --seed reused values computed under the old ones.
    args = ["pgdl", "predict", str(PGDL / "task_nin"), "--measure", "inverse_margin", "--out", str(tmp_path)]
    assert main(args + ["--samples", "64"]) == 0
    first = pd.read_csv(tmp_path / "task_nin.csv")
    assert main(args + ["--samples", "64"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "task_nin.csv"), first)  # resumed, nothing recomputed
    assert main(args + ["--samples", "32"]) == 0
    second = pd.read_csv(tmp_path / "task_nin.csv")
    assert (second["settings_hash"] != first["settings_hash"]).all()
    assert not (second["value"].to_numpy() == first["value"].to_numpy()).all()


def test_cli_errors_one_line_and_bugs_a_traceback(tiny_zoo, tmp_path, capsys, monkeypatch):
    assert main(["score", str(tiny_zoo), "--out", str(tmp_path), "--measures", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown measure 'nope'" in err and "Traceback" not in err
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "run `pgen score` first" in capsys.readouterr().err
    import pgen.measures

    def bug(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(pgen.measures, "list_measures", bug)
    assert main(["measures"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "TypeError: a bug" in err and "internal error" in err


def test_cache_dir_argument_then_environment_then_home(monkeypatch, tmp_path):
    from pgen.cache import cache_dir

    monkeypatch.setenv("PGEN_CACHE", str(tmp_path / "env"))
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert cache_dir() == tmp_path / "env"
    monkeypatch.delenv("PGEN_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "pgen"


def test_score_settings_identity_and_measures():
    s = ScoreSettings(measures=("pvector_angle", "num_params", "pvector_angle"))
    assert s.measures == ("pvector_angle", "num_params")
    assert "measures" not in s.identity() and ScoreSettings().measures == ("pvector_angle",)
    with pytest.raises(ValueError, match="at least 2"):
        ScoreSettings(n_samples=1)


@pytest.mark.slow
def test_a_non_editable_install_finds_the_embedded_recipes(tmp_path):
    # Before: pyproject declared pgen/recipes/*.toml, which did not exist; recipes were found
    # only from the checkout's model_zoos/ folder.
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(ROOT)], capture_output=True, text=True,
                           cwd=tmp_path, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert build.returncode == 0, build.stderr
    # the distribution is ours ("pgen" on PyPI is another project's), the command stays `pgen`
    (dist_info,) = target.glob("pgen_pvector-*.dist-info")
    assert "Name: pgen-pvector" in (dist_info / "METADATA").read_text().splitlines()
    assert "pgen = pgen.cli:main" in (dist_info / "entry_points.txt").read_text()
    assert (target / "pgen" / "recipes" / "digits.toml").is_file()
    assert not (target / "pgen" / "recipes" / "digits.toml").is_relative_to(ROOT)
    assert (target / "pgen" / "suites" / "standard.toml").is_file()  # the suites travel too (model_zoos/suites)
    assert not (target / "pgen" / "recipes").is_symlink()  # the wheel holds files, not the checkout's links
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", "import pgen, sys; from pgen.cli import main; "
                          "print(pgen.__file__); sys.exit(main(['zoo', 'list']))"],
                         capture_output=True, text=True, cwd=elsewhere, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(str(target))  # the installed copy, not the checkout
    assert "digits" in out.stdout and "mnist5k" in out.stdout


def test_untrusted_text_is_never_markup(tmp_path):
    """Zoo names, model ids and error messages come from files: the HTML escapes them and
    the Markdown carries no raw HTML."""
    from pgen.report.document import Document

    evil = "<script>alert(1)</script>|`x`"
    doc = Document(f"pgen report: {evil}")
    doc.paragraph(f"zoo {Document.text(evil)}")
    doc.table(pd.DataFrame({"model_id": [evil], "error": ["<img src=x onerror=alert(1)>"]}))
    html, md = doc.to_html(), doc.to_markdown()
    assert "<script>" not in html and "<img src=x" not in html and "&lt;script&gt;" in html
    assert "<script>" not in md and "<img" not in md and "\\|" in md


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_fails_before_any_model(tiny_zoo, tmp_path, capsys):
    assert main(["score", str(tiny_zoo), "--out", str(tmp_path), "--device", "cuda"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "results.sqlite").exists()


def test_untrusted_text_inside_prose_keeps_its_characters():
    from pgen.report.document import Document

    doc = Document("t").paragraph("note: " + Document.text("gap has values <= 0 in `a|b`")).bullets(
        [Document.text("<b>x</b> & **y**")])
    md, html = doc.to_markdown(), doc.to_html()
    assert "gap has values &lt;= 0 in \\`a\\|b\\`" in md and "- &lt;b&gt;x&lt;/b&gt; &amp; \\*\\*y\\*\\*" in md
    assert "gap has values &lt;= 0 in `a|b`" in html and "<code>" not in html and "<strong>" not in html


def test_unknown_color_by_fails_before_scoring(tiny_zoo, tmp_path, capsys):
    assert main(["score", str(tiny_zoo), "--out", str(tmp_path), "--color-by", "colour"]) == 2
    assert "not a hyperparameter of tiny; known: ['arch', 'width']" in capsys.readouterr().err
    assert not (tmp_path / "results.sqlite").exists()


def test_debug_prints_tracebacks_and_tf32_is_part_of_the_settings(tiny_zoo, tmp_path, capsys):
    assert main(["--debug", "score", str(tiny_zoo), "--out", str(tmp_path), "--measures", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "unknown measure 'nope'" in err
    assert "PGEN_DEBUG" not in os.environ  # main() restores the environment
    out = tmp_path / "tf32"
    assert main(["score", str(tiny_zoo), "--out", str(out), "--samples", "50", "--tf32", "--no-report"]) == 0
    run = load_run(out)
    assert run.settings["allow_tf32"] is True  # a TF32 run never reuses values computed without it
    assert main(["report", str(out), "--color-by", "width", "--bootstrap", "20"]) == 0
    assert (out / "pvector_angle_vs_test_acc.png").is_file()


def test_a_changed_measure_definition_is_recomputed_not_reused(tiny_zoo, tmp_path):
    # A measure whose definition changed (version raised) must not return values stored by the old one.
    list_measures()
    calls = []

    def counted(model, init_model, data, settings):
        calls.append(1)
        return 1.0 + len(calls)

    register("versioned", description="test", sign=1, reference="test", sign_reason="test")(counted)
    try:
        s = ScoreSettings(n_samples=100, measures=("versioned",))
        first = score_zoo(tiny_zoo, tmp_path, settings=s, progress=False)
        n = len(calls)
        score_zoo(tiny_zoo, tmp_path, settings=s, progress=False)
        assert len(calls) == n  # same definition: resumed from the store
        import dataclasses

        REGISTRY["versioned"] = dataclasses.replace(REGISTRY["versioned"], version=2)
        second = score_zoo(tiny_zoo, tmp_path, settings=s, progress=False)
        assert len(calls) == 2 * n  # a new definition: every model computed again
        assert (second.table["versioned"].to_numpy() != first.table["versioned"].to_numpy()).all()
    finally:
        REGISTRY.pop("versioned", None)
    from pgen.results import measure_settings

    assert "measure_version" not in measure_settings({}, "pvector_angle")  # unchanged measures keep their identity
    assert measure_settings({}, "dbi_mixup")["measure_version"] == 2


def test_preflight_catches_a_bad_layer_and_an_unwritable_folder_before_any_model(tiny_zoo, tmp_path, capsys):
    # A layer name that no model has, or an output folder that takes no files, would fail
    # every model one by one (or lose an hour of scoring): both are refused up front.
    assert main(["score", str(tiny_zoo), "--out", str(tmp_path / "o"), "--layer", "no.such.layer"]) == 2
    err = capsys.readouterr().err
    assert "layer 'no.such.layer'" in err and "on model" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "results.sqlite").exists() or load_runs(tmp_path / "o")[0].computed == 0
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    assert main(["score", str(tiny_zoo), "--out", str(blocked / "sub")]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err
