"""pgen score / pgen report end to end on a tiny zoo: resume, failures, report contents."""

import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

import pgen
from pgen.cli import main
from pgen.errors import UnknownNameError
from pgen.score import ScoreSettings, score_zoo
from pgen.store import ResultsStore
from pgen.zoo import load_zoo


def complete_ids(db):
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT model_id FROM results WHERE measure='_complete'")]


def markdown_prose_missing_from_html(md: str, html: str) -> list[str]:
    """Every heading, paragraph and bullet of the Markdown, as plain text, that the HTML's
    visible text lacks (the HTML once dropped the direction sentence and the notes)."""
    import html as html_lib
    import re

    body = re.sub(r"<(style|script)[^>]*>.*?</\1>", "", html, flags=re.S)
    body = re.sub(r"</?(strong|code|em)>", "", body)
    text = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", body)).split())
    missing = []
    for line in md.splitlines():
        if not line.strip() or line.startswith(("|", "![")):
            continue
        plain = re.sub(r"\*\*|`", "", line.lstrip("#").strip().removeprefix("> ").removeprefix("- "))
        plain = " ".join(html_lib.unescape(plain.replace("\\", "")).split())
        if plain not in text:
            missing.append(plain)
    return missing


def test_cli_score_and_report(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["score", str(tiny_zoo), "--out", str(out), "--samples", "300", "--angle-matrix"]) == 0
    text = capsys.readouterr().out
    assert "computed 12 model(s) in this call; 12 of 12 models" in text and "Kendall tau with test accuracy" in text
    for name in ("report.html", "report.md", "models.csv", "correlations.csv", "loglog_fits.csv", "summary.json",
                 "errors.csv", "pvector_angle_vs_test_acc.png", "pvector_angle_vs_pseudo_test_acc.png",
                 "pvector_angle_vs_gap.png", "test_vs_pseudo_test.png", "pvector_angle_histogram.png",
                 "angle_matrix.csv"):
        assert (out / name).stat().st_size > 0, name
    assert f"report: {out / 'report.html'} and {out / 'report.md'}" in text  # exactly the files written
    md = (out / "report.md").read_text()
    for section in ("## Answer", "## Zoo", "## Settings", "## Measure pvector_angle", "Log-log fits", "## Models",
                    "pseudo-test policy", "Granulated Kendall Psi", "PGDL CMI against the gap"):
        assert section in md, section
    assert md.index("## Answer") < md.index("## Zoo")  # the answer comes first
    assert "random rankings give 0 +- " in md  # a null beside every tau
    glossary = md[md.index("## Glossary"):]  # one meaning per word, at the end
    assert "**gap**: the generalization gap" in glossary and "**relative spectral gap**" in glossary
    assert "Glossary" in (out / "report.html").read_text()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5  # self-contained
    assert "`" not in html.split("<body>")[1]  # no raw Markdown in the HTML
    assert markdown_prose_missing_from_html(md, html) == []  # the HTML says everything report.md says
    models = pd.read_csv(out / "models.csv")
    assert len(models) == 12 and models["pvector_angle"].between(0, 90).all()
    assert models["pseudo_test_acc"].between(0, 1).all()
    # pgen's own test accuracy of the final models equals the one the builder recorded
    finals = models[~models.model_id.str.contains("@")]
    assert (finals["test_acc"] - finals["zoo.test_acc"]).abs().max() < 1e-9
    matrix = pd.read_csv(out / "angle_matrix.csv", index_col=0)
    assert matrix.shape == (12, 12)
    # report alone rebuilds from the results folder
    assert main(["report", str(out), "--out", str(tmp_path / "rep"), "--bootstrap", "50"]) == 0
    assert (tmp_path / "rep" / "report.html").exists()



def test_results_record_the_software_and_threads_that_scored_them(tiny_zoo, tmp_path):
    """Versions, threads and device go with the run (every distinct one) and into the report."""
    import numpy as np
    import torch

    import pgen
    from pgen.results import run_from_store
    from pgen.score import scoring_environment

    s = ScoreSettings(n_samples=100)
    run = score_zoo(tiny_zoo, tmp_path, settings=s, progress=False, limit=2)
    env = run.info["environments"]
    assert env == [scoring_environment("cpu", 1)]
    assert env[0]["torch"] == torch.__version__ and env[0]["numpy"] == np.__version__
    assert env[0]["pgen"] == pgen.__version__ and env[0]["threads_per_model"] == torch.get_num_threads()
    score_zoo(tiny_zoo, tmp_path, settings=s, progress=False)  # the same environment: recorded once
    store = ResultsStore(tmp_path / "results.sqlite")
    other = dict(env[0], torch="0.0-other")
    store.add_environment(run.run_id, other)
    assert store.run_info(run.run_id)["environments"] == [env[0], other]
    store._conn.execute("UPDATE runs SET info=json_set(info, '$.environments', json('[]')) WHERE settings_hash=?",
                        (run.run_id,))
    store._conn.commit()
    score_zoo(tiny_zoo, tmp_path, settings=s, progress=False)  # computes nothing: records no environment
    assert store.run_info(run.run_id).get("environments", []) == []
    store.add_environment(run.run_id, env[0])
    store = ResultsStore(tmp_path / "results.sqlite")
    assert store.run_info(run.run_id)["environments"] == env
    assert run_from_store(store, tmp_path / "results.sqlite", run.run_id).info["environments"] == env
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"pgen {pgen.__version__}, torch {torch.__version__}, numpy {np.__version__}" in md

def test_rerun_recomputes_nothing(tiny_zoo, tmp_path):
    s = ScoreSettings(n_samples=200)
    score_zoo(tiny_zoo, tmp_path, settings=s, progress=False)
    before = pd.read_sql_query("SELECT model_id, created FROM results", sqlite3.connect(tmp_path / "results.sqlite"))
    run = score_zoo(tiny_zoo, tmp_path, settings=s, progress=False)
    after = pd.read_sql_query("SELECT model_id, created FROM results", sqlite3.connect(tmp_path / "results.sqlite"))
    assert len(run.table) == 12 and run.computed == 0
    pd.testing.assert_frame_equal(before, after)
    # other settings are new rows, not overwrites
    score_zoo(tiny_zoo, tmp_path, settings=ScoreSettings(n_samples=200, center=False), progress=False, limit=2)
    assert len(complete_ids(tmp_path / "results.sqlite")) == 14


def test_killed_run_resumes_with_every_model_once(tiny_zoo, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pgen.cli", "score", str(tiny_zoo), "--out", str(out), "--no-report",
           "--samples", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "results.sqlite"
    deadline = time.time() + 120
    done = []
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                done = complete_ids(db)
            except sqlite3.OperationalError:
                done = []
            if done:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait()
    assert 0 < len(done) < 12, "the run should have been killed part-way"
    assert main(["score", str(tiny_zoo), "--out", str(out), "--no-report", "--samples", "1000"]) == 0
    ids = complete_ids(db)
    assert sorted(ids) == sorted(e.id for e in load_zoo(tiny_zoo))
    assert len(ids) == len(set(ids))


def test_failing_model_is_recorded_and_skipped(tiny_zoo, tmp_path, capsys):
    z = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, z)
    (z / "checkpoints" / "tiny-0002.safetensors").write_bytes(b"garbage")
    out = tmp_path / "out"
    assert main(["score", str(z), "--out", str(out), "--samples", "200"]) == 0
    printed = capsys.readouterr().out
    assert "11 of 12 models have every target; 1 failure(s)" in printed
    assert "first error (tiny-0002): " in printed and "tiny-0002.safetensors cannot be read" in printed
    assert f"every failure: {out / 'errors.csv'}" in printed
    store = ResultsStore(out / "results.sqlite")
    errors = store.errors()
    assert list(errors.model_id) == ["tiny-0002"]
    assert "tiny-0002.safetensors cannot be read" in errors.error.iloc[0]
    assert len(complete_ids(out / "results.sqlite")) == 11
    assert "## Failures" in (out / "report.md").read_text()


def test_pseudo_test_set_is_deterministic_and_label_preserving():
    import torch

    from pgen.augment import POLICIES, pseudo_test_set

    x = torch.rand(10, 1, 8, 8)
    y = torch.arange(10)
    a, ya = pseudo_test_set(x, y, POLICIES["grayscale-digits"], seed=3, copies=2)
    b, _ = pseudo_test_set(x, y, POLICIES["grayscale-digits"], seed=3, copies=2)
    c, _ = pseudo_test_set(x, y, POLICIES["grayscale-digits"], seed=4, copies=2)
    assert a.shape == (20, 1, 8, 8) and torch.equal(ya, torch.cat([y, y]))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[:10], x)


def test_workers_give_the_same_results(tiny_zoo, tmp_path):
    s = ScoreSettings(n_samples=200, measures=("sum_squared_weights", "inverse_margin"))
    one = score_zoo(tiny_zoo, tmp_path / "one", settings=s, progress=False).table.set_index("model_id").sort_index()
    two = score_zoo(tiny_zoo, tmp_path / "two", settings=s, progress=False, workers=2).table
    two = two.set_index("model_id").sort_index()
    cols = ["train_acc", "test_acc", "pseudo_test_acc", "sum_squared_weights", "inverse_margin"]
    pd.testing.assert_frame_equal(one[cols], two[cols], atol=1e-6)


def test_torchvision_dataset_without_files_is_a_clear_error(tmp_path):
    from pgen.data import load_dataset

    with pytest.raises(FileNotFoundError, match="cifar10 .* not found under .*--download"):
        load_dataset("cifar10", "train", root=tmp_path)


def test_registered_measures_are_stored_and_resume_one_by_one(tiny_zoo, tmp_path):
    from pgen.data import dataset_arrays
    from pgen.measures import MeasureData, compute_measure

    s1 = ScoreSettings(n_samples=200, measures=("pvector_angle", "sum_squared_weights"))
    first = score_zoo(tiny_zoo, tmp_path, settings=s1, progress=False).table.set_index("model_id")
    zoo = load_zoo(tiny_zoo)
    entry = zoo.entries[0]
    x, y = dataset_arrays(zoo.dataset("train"))
    # the stored value is the measure's value on the same model
    assert first.loc[entry.id, "sum_squared_weights"] == pytest.approx(
        compute_measure("sum_squared_weights", entry.load_model(), None, MeasureData(x[:200], y[:200])), rel=1e-12)
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:
        stamp = dict(conn.execute("SELECT model_id, created FROM results WHERE measure='sum_squared_weights'"))
    # adding a measure computes only that measure; the first is reused, the core is not redone
    s2 = ScoreSettings(n_samples=200, measures=("sum_squared_weights", "jacobian_norm"))
    run = score_zoo(tiny_zoo, tmp_path, settings=s2, progress=False)
    assert run.measures == ["pvector_angle", "sum_squared_weights", "jacobian_norm"]  # the run grows
    second = run.table.set_index("model_id")
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:
        assert dict(conn.execute("SELECT model_id, created FROM results WHERE measure='sum_squared_weights'")) == stamp
        assert conn.execute("SELECT COUNT(*) FROM results WHERE measure='_complete'").fetchone()[0] == len(first)
    assert second["jacobian_norm"].notna().all() and (second["seconds.jacobian_norm"] > 0).all()
    pd.testing.assert_series_equal(first["pvector_angle"], second["pvector_angle"])
    with pytest.raises(UnknownNameError, match="unknown measure"):
        score_zoo(tiny_zoo, tmp_path, settings=ScoreSettings(measures=("no_such",)), progress=False)


def test_every_model_failing_ends_with_a_count_the_first_error_and_status_1(tiny_zoo, tmp_path, capsys):
    z = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, z)
    for f in (z / "checkpoints").glob("*.safetensors"):
        f.write_bytes(b"garbage")
    assert main(["score", str(z), "--out", str(tmp_path / "out"), "--samples", "100"]) == 1
    captured = capsys.readouterr()
    assert "0 of 12 models scored" in captured.err
    assert "first error (tiny-0000" in captured.out and "cannot be read" in captured.out
    md = (tmp_path / "out" / "report.md").read_text()  # the report is still written, with the failures
    assert "No measure has a value" in md and "cannot be read" in md
    assert (tmp_path / "out" / "report.md").exists()  # the report says what failed, it does not crash


def test_a_fresh_tiny_build_reproduces_the_committed_numbers(tiny_zoo, tmp_path):
    """Reproducibility end to end: the tiny recipe built afresh (session fixture) and scored
    gives the numbers committed in tests/fixtures/tiny_scored.csv. Accuracies must be equal
    (single-threaded builds are bit-identical); angles may move at float rounding only.
    After an intended change, regenerate the file with the same build_zoo + score_zoo(...,
    settings=ScoreSettings(n_samples=300)) and say why in the commit."""
    from pathlib import Path

    committed = pd.read_csv(Path(__file__).parent / "fixtures" / "tiny_scored.csv").set_index("model_id")
    run = score_zoo(tiny_zoo, tmp_path, settings=ScoreSettings(n_samples=300), progress=False)
    fresh = run.table.set_index("model_id").loc[committed.index]
    for col in ("train_acc", "test_acc", "pseudo_test_acc", "gap", "zoo.test_acc", "zoo.train_acc"):
        assert (fresh[col] - committed[col]).abs().max() < 1e-12, col
    assert (fresh["pvector_angle"] - committed["pvector_angle"]).abs().max() < 1e-4


class _CountingMLP(torch.nn.Module):
    """An MLP that counts the samples it is run on."""

    def __init__(self, seen: list):
        super().__init__()
        self.seen = seen
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                        torch.nn.Linear(16, 10))

    def forward(self, x):
        self.seen.append(len(x))
        return self.body(x)


def test_the_training_split_runs_once_for_targets_and_the_angles():
    """The train accuracy and both P-vector angles come from one pass over the training split
    (#37 item 2); the angles equal the measures run on their own."""
    from pgen.data import dataset_arrays, load_dataset
    from pgen.measures import MeasureData, MeasureSettings, evaluate_measure

    x, y = dataset_arrays(load_dataset("digits", "train"))
    x, y = x[:300], y[:300]
    xt, yt = x[:50] + 0.01, y[:50]
    seen: list[int] = []
    torch.manual_seed(0)
    model = _CountingMLP(seen)
    measures = ("pvector_angle", "pvector_angle_uncentered", "pvector_angle_test_inputs",
                "pvector_angle_pseudo_test", "pvector_feature_shift", "pvector_angle_own_data")
    run = pgen.score_models({"m": model}, (x, y), test_data=(xt, yt), n_samples=200, measures=measures,
                            data_kind="unknown")
    assert run.errors.empty
    pseudo = 200  # one pseudo-test copy of each shared sample
    small = 16  # one-sample fit checks and the 2-sample probes that find the penultimate layer
    assert sum(seen) <= 300 + 50 + pseudo + small, seen  # a pass of each measure's own would add 200 each
    row = run.table.iloc[0]
    from pgen.augment import policy_for, pseudo_test_set

    xp, _ = pseudo_test_set(x[:200], y[:200], policy_for("unknown"), seed=0)
    data = MeasureData(x[:200], y[:200], x_test=xt[:200], x_pseudo=xp[:200])
    for name in measures:
        alone = evaluate_measure(name, model, None, data, MeasureSettings()).value
        assert row[name] == pytest.approx(alone, abs=1e-4), name


def test_own_training_samples_share_their_pass_with_the_own_data_angle(tiny_zoo, tmp_path, monkeypatch):
    """Where the zoo records each model's training samples, the training accuracy runs over
    them, and the own-data angle takes its P-vector from that pass (#37 item 2)."""
    import pgen.measures.pvector_angle as pvector_angle
    from pgen.measures import MeasureData, MeasureSettings, evaluate_measure
    from pgen.score import _Context, _own_training_data

    def no_second_pass(*args, **kwargs):
        raise AssertionError("a P-vector pass of the measure's own")

    settings = ScoreSettings(measures=("pvector_angle_own_data",), n_samples=40)
    with monkeypatch.context() as m:
        m.setattr(pvector_angle, "model_p_vectors", no_second_pass)
        run = score_zoo(tiny_zoo, tmp_path / "out", settings=settings)
    assert run.errors.empty, run.errors
    zoo = load_zoo(tiny_zoo)
    ctx = _Context(zoo, settings)
    checked = 0
    for entry in zoo.final_models():
        own = _own_training_data(entry, ctx, settings)
        assert own is not None
        data = MeasureData(ctx.x_train[own[0][:40]], own[1][:40], own=True)
        alone = evaluate_measure("pvector_angle_own_data", entry.load_model(), None, data, MeasureSettings()).value
        value = run.table.set_index("model_id").loc[entry.id, "pvector_angle_own_data"]
        assert value == pytest.approx(alone, abs=1e-4)
        checked += 1
    assert checked >= 2


def test_the_passes_run_channels_last_and_score_as_the_stored_layout(tiny_zoo, tmp_path, monkeypatch):
    """On a CPU the passes over the splits run the CNNs with channels-last weights (the same
    function, faster); the targets and the angle equal those of the stored layout up to float
    rounding, and the measures, which may take gradients, see the stored layout."""
    import pgen.score as score_module
    from pgen.measures import REGISTRY, register

    def restrided(model):
        return any(p.dim() == 4 and p.stride() != torch.empty(p.shape).stride() for p in model.parameters())

    seen = []
    real = score_module.channels_last_on_cpu

    def spy(model, example):
        restore = real(model, example)
        seen.append(restrided(model))
        return restore

    register("layout_probe", description="test measure", sign=1, reference="test", sign_reason="test")(
        lambda model, init_model, data, settings: float(restrided(model)))
    try:
        s = ScoreSettings(n_samples=100, measures=("pvector_angle", "layout_probe"))
        monkeypatch.setattr(score_module, "channels_last_on_cpu", spy)
        fast = score_zoo(tiny_zoo, tmp_path / "fast", settings=s, progress=False).table.set_index("model_id")
        monkeypatch.setattr(score_module, "channels_last_on_cpu", lambda model, example: (lambda: None))
        stored = score_zoo(tiny_zoo, tmp_path / "stored", settings=s, progress=False).table.set_index("model_id")
    finally:
        REGISTRY.pop("layout_probe", None)
    assert any(seen) and not all(seen)  # the CNNs ran channels-last, the MLPs have nothing to restride
    assert (fast["layout_probe"] == 0).all() and (stored["layout_probe"] == 0).all()
    for col in ("train_acc", "test_acc", "pseudo_test_acc"):
        pd.testing.assert_series_equal(fast[col], stored.loc[fast.index, col])
    for col in ("train_loss", "test_loss", "pvector_angle"):
        assert fast[col].to_numpy() == pytest.approx(stored.loc[fast.index, col].to_numpy(), rel=1e-5, abs=1e-4)
