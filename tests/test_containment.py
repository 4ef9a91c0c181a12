"""Containment: pgen reads only inside the zoo, writes only inside its output folder, renders
no untrusted text as markup and refuses values that would make a number silently wrong.

Each test builds the hostile folder a user might download, in a temporary directory, and
checks that nothing outside the output folder was written and nothing outside the zoo read.
"""

import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from pgen.cli import main
from pgen.errors import ResultsError, ZooError
from pgen.paths import output_path, safe_filename
from pgen.zoo import load_zoo

FIXTURES = Path(__file__).parent / "fixtures"
PGDL = FIXTURES / "pgdl"
ESCAPE = "../../ESCAPED"


def renamed_zoo(tiny_zoo, folder: Path, name: str) -> Path:
    shutil.copytree(tiny_zoo, folder)
    meta = json.loads((folder / "zoo.json").read_text())
    meta["name"] = name
    (folder / "zoo.json").write_text(json.dumps(meta))
    return folder


def escaped(tmp_path: Path, inside: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*ESCAPED*") if not p.is_relative_to(inside)]


# ------------------------------------------------------------------ names never become paths

def test_safe_filename_keeps_plain_names_and_makes_others_distinct():
    assert safe_filename("fantastic-mnist1d") == "fantastic-mnist1d"
    for hostile in (ESCAPE, "/etc/passwd", "..", ".hidden", "a/b", "a\\b", "x\x00y", "<script>", ""):
        name = safe_filename(hostile)
        assert "/" not in name and "\\" not in name and "\x00" not in name and not name.startswith(".")
    assert safe_filename("a/b") != safe_filename("a_b")  # two names never share a file


def test_pgdl_predict_writes_only_inside_out_whatever_the_zoo_is_called(tiny_zoo, tmp_path):
    from pgen.pgdl import predict_task

    zoo = renamed_zoo(tiny_zoo, tmp_path / "zoo", ESCAPE)
    out = tmp_path / "a" / "b" / "out"
    predict_task(zoo, "num_params", out, progress=False)
    assert escaped(tmp_path, out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{safe_filename(ESCAPE)}{s}" for s in (".csv", ".predict"))


def test_report_of_a_received_store_stays_in_its_folder(tiny_zoo, tmp_path):
    zoo = renamed_zoo(tiny_zoo, tmp_path / "zoo", ESCAPE)
    res = tmp_path / "a" / "b" / "res"
    for samples in ("50", "60"):  # two runs: the report makes one folder per run
        assert main(["score", str(zoo), "--out", str(res), "--samples", samples]) == 0
    with sqlite3.connect(res / "results.sqlite") as conn:  # a run id planted by whoever sent the store
        first = conn.execute("SELECT settings_hash FROM runs ORDER BY rowid LIMIT 1").fetchone()[0]
        conn.execute("UPDATE runs SET settings_hash=? WHERE settings_hash=?", ("x/../../../../ESCAPED", first))
    report = tmp_path / "a" / "b" / "report"
    victim = tmp_path / "victim.csv"
    victim.write_text("keep me")
    planted = output_path(report, f"{ESCAPE}-x/../../../../ESCAPED", directory=True) / "models.csv"
    planted.symlink_to(victim)
    assert main(["report", str(res), "--out", str(report), "--bootstrap", "0"]) == 0
    assert victim.read_text() == "keep me"  # replaced, not written through
    assert planted.is_file() and not planted.is_symlink()
    assert escaped(tmp_path, report.parent) == []
    assert len([p for p in report.iterdir() if p.is_dir()]) == 2


def test_a_store_naming_a_measure_that_is_a_path_is_refused(tiny_zoo, tmp_path):
    res = tmp_path / "res"
    assert main(["score", str(tiny_zoo), "--out", str(res), "--samples", "50"]) == 0
    with sqlite3.connect(res / "results.sqlite") as conn:
        info = json.loads(conn.execute("SELECT info FROM runs").fetchone()[0])
        info["measures"] = ["../../ESCAPED"]
        conn.execute("UPDATE runs SET info=?", (json.dumps(info),))
    from pgen.results import load_runs

    with pytest.raises(ResultsError, match="not a measure name"):
        load_runs(res)


def test_a_recipe_name_that_is_not_a_file_name_is_refused(tmp_path):
    from pgen.zoo.builder import Recipe

    recipe = tmp_path / "evil.toml"
    recipe.write_text((FIXTURES / "tiny.toml").read_text().replace('name = "tiny"', f'name = "{ESCAPE}"'))
    with pytest.raises(ZooError, match="must be a plain file name"):
        Recipe.load(recipe)


def test_results_store_linked_elsewhere_is_refused(tiny_zoo, tmp_path, capsys):
    victim = tmp_path / "victim.sqlite"
    victim.write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.sqlite").symlink_to(victim)
    assert main(["score", str(tiny_zoo), "--out", str(out), "--samples", "50"]) == 2
    assert "is a symlink" in capsys.readouterr().err and victim.stat().st_size == 0


def test_a_corrupt_results_store_is_one_line_that_says_what_to_do(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.sqlite").write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    assert main(["score", str(tiny_zoo), "--out", str(out), "--samples", "50"]) == 2
    err = capsys.readouterr().err
    assert "move it aside" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (out / "results.sqlite").stat().st_size == 216  # never deleted or rewritten


# ------------------------------------------------------------------ reads stay inside the zoo

@pytest.fixture
def task(tmp_path):
    folder = tmp_path / "task"
    shutil.copytree(PGDL / "task_nin", folder, ignore=shutil.ignore_patterns("*.npy"))
    return folder


def test_weights_linked_out_of_the_task_are_refused(task, tmp_path):
    outside = tmp_path / "outside.hdf5"
    shutil.move(task / "model_0" / "weights.hdf5", outside)
    (task / "model_0" / "weights.hdf5").symlink_to(outside)
    with pytest.raises(ZooError, match="outside the zoo folder"):
        load_zoo(task)["model_0"].load_model()
    load_zoo(task)["model_1"].load_model()  # the others are untouched


def refused_within_bounds(code: str, match: str, seconds: int = 60, memory: int = 3 << 30) -> None:
    """Run ``code`` in a child with a time and a data-memory limit, so that a regression
    (a FIFO that blocks, /dev/zero read to the end) fails the test instead of the machine."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))  # AS would not fit torch's libraries

    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=seconds,
                              preexec_fn=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still reading after {seconds} s")
    assert done.returncode == 0, done.stderr[-2000:]
    assert match in done.stdout, done.stdout


@pytest.mark.parametrize("kind, match", [("fifo", "is a FIFO"), ("dev-zero", "outside the zoo folder")])
def test_a_special_file_as_a_shard_is_refused_without_blocking(task, kind, match):
    shard = sorted((task / "dataset_1" / "train").glob("*.tfrecord"))[0]
    shard.unlink()
    if kind == "fifo":
        os.mkfifo(shard)
    else:
        shard.symlink_to("/dev/zero")
    refused_within_bounds(f"""
from pgen.zoo import load_zoo
try:
    load_zoo({str(task)!r}).dataset("train")
except Exception as exc:
    print(type(exc).__name__, exc)
""", match)


def test_a_fifo_as_a_weights_file_is_refused_without_blocking(task):
    (task / "model_2" / "weights.hdf5").unlink()
    os.mkfifo(task / "model_2" / "weights.hdf5")
    refused_within_bounds(f"""
from pgen.zoo import load_zoo
try:
    load_zoo({str(task)!r})["model_2"].load_model()
except Exception as exc:
    print(type(exc).__name__, exc)
""", "ZooError")


def _first_weight(fh):
    group = fh["model_weights"] if "model_weights" in fh and "layer_names" not in fh.attrs else fh
    for lname in group.attrs["layer_names"]:
        g = group[lname.decode() if isinstance(lname, bytes) else lname]
        names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs.get("weight_names", [])]
        if names:
            return g, names[0]
    raise AssertionError("no weights")


def test_hdf5_external_storage_and_external_links_are_refused(task, tmp_path):
    import h5py

    secret = tmp_path / "secret.bin"
    with h5py.File(task / "model_0" / "weights.hdf5", "r+") as fh:
        g, name = _first_weight(fh)
        shape, dtype = g[name].shape, g[name].dtype
        secret.write_bytes(np.full(shape, 7, dtype=dtype).tobytes())
        del g[name]
        g.create_dataset(name, shape=shape, dtype=dtype, external=[(str(secret), 0, secret.stat().st_size)])
    with pytest.raises(ZooError, match="external storage"):
        load_zoo(task)["model_0"].load_model()

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as fh:
        fh["w"] = np.zeros(3, dtype="float32")
    with h5py.File(task / "model_1" / "weights.hdf5", "r+") as fh:
        g, name = _first_weight(fh)
        del g[name]
        g[name] = h5py.ExternalLink(str(other), "/w")
    with pytest.raises(ZooError, match="external link"):
        load_zoo(task)["model_1"].load_model()


def test_model_zoos_checkpoint_and_data_linked_out_are_refused(tmp_path):
    from test_public_zoos import write_published_model_zoo

    write_published_model_zoo(tmp_path / "zoo")
    zoo = tmp_path / "zoo"
    trial = sorted(p for p in zoo.iterdir() if p.is_dir())[0]
    ck = trial / "checkpoint_000003" / "checkpoints"
    shutil.move(ck, tmp_path / "outside.pt")
    ck.symlink_to(tmp_path / "outside.pt")
    loaded = load_zoo(zoo)
    with pytest.raises(ZooError, match="outside the zoo folder"):
        loaded[f"{trial.name}@3"].load_model()
    shutil.move(zoo / "dataset.pt", tmp_path / "dataset.pt")
    (zoo / "dataset.pt").symlink_to(tmp_path / "dataset.pt")
    with pytest.raises(ZooError, match="outside the zoo folder.*--data-root"):
        load_zoo(zoo).dataset("train")


# ------------------------------------------------------------------ untrusted text and numbers

def test_a_zoo_named_script_renders_as_text(tiny_zoo, tmp_path):
    evil = "<script>alert(1)</script>"
    zoo = renamed_zoo(tiny_zoo, tmp_path / "zoo", evil)
    out = tmp_path / "out"
    assert main(["score", str(zoo), "--out", str(out), "--samples", "50"]) == 0
    html, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in md


def test_a_benchmark_of_a_zoo_named_script_writes_text_inside_out(tiny_zoo, tmp_path):
    evil = "<script>alert(1)</script>/../../ESCAPED"
    zoo = renamed_zoo(tiny_zoo, tmp_path / "zoo", evil)
    out = tmp_path / "a" / "b" / "bench"
    assert main(["benchmark", str(zoo), "--out", str(out), "--samples", "100", "--bootstrap", "50",
                 "--measures", "pvector_angle,sum_squared_weights"]) == 0
    html, md = (out / "benchmark.html").read_text(), (out / "benchmark.md").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html and "<script>" not in md
    assert (out / f"summary_{safe_filename(evil)}.csv").is_file() and escaped(tmp_path, out) == []


def test_a_float_label_is_refused_with_its_record(task):
    # int() once read the label 3.7 as class 3.
    from pgen.zoo.tfrecord import frame_record, serialize_example, serialize_tensor

    folder = task / "dataset_1" / "train"
    for shard in folder.glob("*.tfrecord"):
        shard.unlink()
    x = np.zeros((4, 4, 1), dtype=np.float32)
    with (folder / "shard_0.tfrecord").open("wb") as fh:
        for label in (np.int32(1), np.float32(3.7)):
            fh.write(frame_record(serialize_example({"output": serialize_tensor(np.asarray(label)),
                                                     "inputs": serialize_tensor(x)})))
    with pytest.raises(ZooError, match=r"shard_0.tfrecord: record 1: label 3.7\d* is not a class index"):
        load_zoo(task).dataset("train")


@pytest.mark.parametrize("labels, complaint", [
    ([0, 1, 3.7], "label 2 is 3.7, not an integer class index"),
    ([0, float("nan"), 1], "label 1 is nan"),
    ([0, -1, 1], "label 1 is -1; class indices are non-negative"),
])
def test_labels_that_are_not_class_indices_are_refused(labels, complaint, tmp_path):
    from pgen.data import dataset_from_spec
    from pgen.errors import DatasetError
    from pgen.zoo.memory import as_dataset

    x = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(DatasetError, match=complaint):
        as_dataset((x, np.array(labels)), "my data")
    np.savez(tmp_path / "d.npz", x=x, y=np.array(labels))
    with pytest.raises(DatasetError, match=rf"d.npz \(y\): {complaint}"):
        dataset_from_spec(f"npz:{tmp_path / 'd.npz'}", "train")
    assert as_dataset((x, np.array([0, 1, 3.0])), "ok").tensors[1].tolist() == [0, 1, 3]  # 3.0 is class 3


def test_nonfinite_predictions_are_refused_naming_the_models(tmp_path, capsys):
    configs = json.loads((PGDL / "kit_toy" / "model_configs.json").read_text())
    preds = {f"model_{k}": float(i) for i, k in enumerate(configs)}
    first = next(iter(preds))
    for bad in (float("nan"), float("inf")):
        preds[first] = bad
        (tmp_path / "p.json").write_text(json.dumps(preds))
        assert main(["pgdl", "score", str(tmp_path / "p.json"), str(PGDL / "kit_toy" / "model_configs.json")]) == 2
        err = capsys.readouterr().err
        assert "not finite" in err and first in err


# ------------------------------------------------------------------ failures stay local

_VICTIMS: list[str] = []  # set before the pool forks; the workers inherit it


def _die_or_score(entry_id, need_targets, measures):
    """The workers' scoring function, except that it kills its process on a victim model
    (as an out-of-memory kill or a crash in native code would). Module-level: pickled by name."""
    from pgen.score import _score_one, _WORKER

    if entry_id in _VICTIMS:
        os._exit(3)
    return _score_one(_WORKER["zoo"], entry_id, _WORKER["ctx"], _WORKER["settings"], "cpu", need_targets, measures)


@pytest.mark.skipif(__import__("multiprocessing").get_start_method() != "fork",
                    reason="workers see the patched function only when forked")
def test_a_worker_that_dies_costs_only_its_model(tiny_zoo, tmp_path, monkeypatch):
    import pgen.score
    from pgen.score import ScoreSettings, score_zoo

    s = ScoreSettings(n_samples=100, measures=("sum_squared_weights",))
    ids = [e.id for e in load_zoo(tiny_zoo)]
    victim = ids[5]
    monkeypatch.setattr(pgen.score, "_worker_score", _die_or_score)
    _VICTIMS[:] = [victim]
    run = score_zoo(tiny_zoo, tmp_path / "out", settings=s, workers=2, progress=False)
    assert sorted(run.table["model_id"]) == sorted(i for i in ids if i != victim)  # every other model kept
    assert list(run.errors["model_id"]) == [victim] and "worker process scoring this model died" in run.errors["error"].iloc[0]
    monkeypatch.undo()  # the rerun computes the victim alone and nothing twice
    _VICTIMS.clear()
    again = score_zoo(tiny_zoo, tmp_path / "out", settings=s, workers=2, progress=False)
    assert again.computed == 1 and sorted(again.table["model_id"]) == sorted(ids)


def test_a_worker_killed_from_outside_loses_nothing(tiny_zoo, tmp_path):
    """The issue's case: one worker killed mid-run once ended the run with 22 of 300 models."""
    import multiprocessing
    import threading
    import time

    from pgen.score import ScoreSettings, score_zoo

    killed = []

    def kill_one_worker():
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            children = multiprocessing.active_children()
            if children:
                time.sleep(0.5)  # let it start scoring
                children[0].kill()
                killed.append(children[0].pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    s = ScoreSettings(n_samples=1000, measures=("pvector_angle", "inverse_margin"))
    run = score_zoo(tiny_zoo, tmp_path / "out", settings=s, workers=2, progress=False)
    killer.join()
    assert killed, "no worker was running to be killed"
    assert len(run.table) == 12 and run.table["pvector_angle"].notna().all()  # retried alone, scored


# ------------------------------------------------------------------ #31: the third attack's escapes

def _edit_meta(folder: Path, **fields) -> None:
    meta = json.loads((folder / "zoo.json").read_text())
    meta.update(fields)
    (folder / "zoo.json").write_text(json.dumps(meta))


def _npz(path: Path, x=None) -> Path:
    x = np.zeros((12, 1, 8, 8), "f4") if x is None else x
    np.savez(path, x=x, y=np.arange(len(x)) % 10, x_test=x, y_test=np.arange(len(x)) % 10)
    return path


def test_an_imported_style_zoo_reads_only_inside_its_folder_unless_the_user_names_one(tiny_zoo, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _edit_meta(zoo, dataset={"spec": f"npz:{_npz(outside / 'data.npz')}"})
    with pytest.raises(ZooError, match="dataset .*elsewhere/data.npz is outside the zoo folder.*--data-root"):
        load_zoo(zoo).dataset("train")
    assert len(load_zoo(zoo, data_root=outside).dataset("train")) == 12  # the user's explicit word
    _edit_meta(zoo, dataset={"name": "digits"}, checkpoint_root="/dev")
    with pytest.raises(ZooError, match="checkpoint_root /dev is outside the zoo folder"):
        load_zoo(zoo)
    _edit_meta(zoo, checkpoint_root=str(outside))
    with pytest.raises(ZooError, match="outside the zoo folder"):
        load_zoo(zoo)
    _edit_meta(zoo, dataset={"name": "digits", "root": "/etc"}, checkpoint_root=".")
    with pytest.raises(ZooError, match="dataset root /etc is outside the zoo folder"):
        load_zoo(zoo).dataset("train")


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_special_file_as_a_zoos_dataset_is_refused_without_blocking(tiny_zoo, tmp_path, kind):
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    if kind == "fifo":
        os.mkfifo(zoo / "data.npz")
        spec, root = "npz:data.npz", None
    else:
        spec, root = "npz:/dev/zero", "/dev"
    _edit_meta(zoo, dataset={"spec": spec})
    with pytest.raises((ZooError, Exception), match="is a (FIFO|device), not a regular file") as info:
        load_zoo(zoo, data_root=root).dataset("train")
    assert "allow_pickle" not in str(info.value)


def test_pvector_of_a_fifo_or_an_object_array_is_one_line(tmp_path, capsys):
    os.mkfifo(tmp_path / "f.npy")
    assert main(["pvector", str(tmp_path / "f.npy")]) == 2
    assert "is a FIFO, not a regular file" in capsys.readouterr().err
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["pvector", str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err
    assert "cannot be read as a numeric .npy array without pickle" in err and err.count("\n") == 1


def test_zoo_import_places_checkpoints_and_data_inside_the_zoo(tmp_path, monkeypatch):
    """An imported zoo is self-contained: it scores after the originals are gone."""
    import pandas as pd
    import torch

    from pgen.models import build_model
    from pgen.zoo.importer import import_zoo

    runs = tmp_path / "runs" / "a"
    runs.mkdir(parents=True)
    for i in range(3):
        torch.manual_seed(i)
        torch.save(build_model("mlp", input_shape=(1, 8, 8), num_classes=10, width=4).state_dict(), runs / f"m{i}.pt")
    pd.DataFrame({"checkpoint": [f"m{i}.pt" for i in range(3)], "test_acc": [0.5, 0.6, 0.7]}).to_csv(
        tmp_path / "metrics.csv", index=False)
    rng = np.random.default_rng(0)
    _npz(tmp_path / "mine.npz", rng.random((12, 1, 8, 8)).astype("f4"))
    monkeypatch.chdir(tmp_path)
    import_zoo(sorted(Path("runs/a").glob("*.pt")), arch="mlp", model_kwargs={"width": 4}, dataset="npz:mine.npz",
               metrics="metrics.csv", out="own")
    meta = json.loads(Path("own/zoo.json").read_text())
    assert "checkpoint_root" not in meta and meta["dataset"]["spec"] == "npz:data/mine.npz"
    assert sorted(p.name for p in Path("own/checkpoints").rglob("*.pt")) == ["m0.pt", "m1.pt", "m2.pt"]
    shutil.rmtree("runs")
    Path("mine.npz").unlink()
    zoo = load_zoo("own")
    assert len(zoo) == 3 and zoo["m1"].load_model() is not None and len(zoo.dataset("train")) == 12


def test_nan_inputs_are_refused_naming_the_sample(tmp_path):
    from pgen.data import dataset_from_spec
    from pgen.errors import DatasetError

    x = np.zeros((5, 1, 8, 8), "f4")
    x[3, 0, 2, 2] = np.nan
    with pytest.raises(DatasetError, match=r"sample 3 \(and 0 more\) holds a NaN or an infinity"):
        dataset_from_spec(f"npz:{_npz(tmp_path / 'd.npz', x)}", "train")


def test_workers_end_with_their_parent(tiny_zoo, tmp_path):
    """kill -9 of the main `pgen score --workers 2` process: its workers end within seconds."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "pgen.cli", "score", str(tiny_zoo), "--out", str(tmp_path / "o"),
                             "--workers", "2", "--measures", "pvector_angle,sharpness,pacbayes_flatness"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    deadline = time.time() + 60
    while time.time() < deadline and len(children) < 2 and proc.poll() is None:
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
        children = [int(p) for p in out.split()]
        time.sleep(0.2)
    assert len(children) >= 2, "the workers did not start"
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    alive = children
    while time.time() < deadline and alive:
        alive = [c for c in children if _running(c)]
        time.sleep(0.2)
    assert not alive, f"workers {alive} outlived their parent"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended (only its exit status waits for its reaper)


def test_an_interrupted_report_leaves_the_folder_as_it_was(tiny_zoo, tmp_path, monkeypatch):
    import pgen.report.plots as plots
    from pgen.report import report_from_results
    from pgen.score import ScoreSettings, score_zoo

    out = tmp_path / "out"
    score_zoo(tiny_zoo, out, settings=ScoreSettings(n_samples=100), progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith("results")}

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "histogram", interrupt)  # after the scatter plots were written
    with pytest.raises(KeyboardInterrupt):
        report_from_results(out)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith("results")}
    assert after == before and not list(out.glob(".pgen-partial-*"))
    assert before == {} or "report.html" in before


def test_a_full_disk_while_plotting_names_the_file_and_leaves_no_empty_png(tiny_zoo, tmp_path, monkeypatch, capsys):
    import errno

    import matplotlib.figure

    out = tmp_path / "out"
    assert main(["score", str(tiny_zoo), "--out", str(out), "--samples", "100", "--no-report"]) == 0

    def full(self, path, **kwargs):
        Path(path).write_bytes(b"")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot write the plot pvector_angle_vs_test_acc.png: No space left on device" in err
    assert not [p for p in out.rglob("*.png") if p.stat().st_size == 0]


def test_a_read_only_store_is_reported_and_not_written(tiny_zoo, tmp_path, monkeypatch, capsys):
    from pgen.score import ScoreSettings, score_zoo
    from pgen.store import ResultsStore

    out = tmp_path / "out"
    score_zoo(tiny_zoo, out, settings=ScoreSettings(n_samples=100), progress=False)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK else real_access(p, mode))
    with pytest.raises(ResultsError, match="is read-only: pgen writes its results there.*reading it, `pgen report`"):
        ResultsStore(out / "results.sqlite")
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.md").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders regardless of their mode")
def test_a_read_only_results_folder_is_reported(tiny_zoo, tmp_path):
    from pgen.score import ScoreSettings, score_zoo

    out = tmp_path / "out"
    score_zoo(tiny_zoo, out, settings=ScoreSettings(n_samples=100), progress=False)
    out.chmod(0o555)
    try:
        assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    finally:
        out.chmod(0o755)


def test_a_foreign_sqlite_database_gets_no_pgen_tables(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with sqlite3.connect(out / "results.sqlite") as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    assert main(["score", str(tiny_zoo), "--out", str(out), "--samples", "100"]) == 2
    assert "is an SQLite database of something else (it holds invoices)" in capsys.readouterr().err
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["invoices"]


def test_control_characters_in_names_are_escaped_everywhere(tiny_zoo, tmp_path, capsys):
    """A zoo named with a carriage return and an ANSI colour, a model id with a newline: the
    terminal gets escapes, the Markdown table keeps its rows, the HTML shows text."""
    zoo = renamed_zoo(tiny_zoo, tmp_path / "zoo", "evil\r\x1b[31mZOO\x00")
    rows = [json.loads(line) for line in (zoo / "manifest.jsonl").read_text().splitlines()]
    rows[0]["id"] = "bad\nid|x"
    (zoo / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", str(zoo), "--out", str(tmp_path / "out"), "--samples", "100"]) == 0
    captured = capsys.readouterr()
    for stream in (captured.out, captured.err):
        assert "\r\x1b" not in stream and "\x00" not in stream
    assert "evil\\r\\x1b[31mZOO\\x00" in captured.out
    md = (tmp_path / "out" / "report.md").read_text()
    assert "\x1b" not in md and "bad\\nid\\|x" in md
    header = next(line for line in md.splitlines() if line.startswith("| model_id |"))
    table_rows = [line for line in md.splitlines() if line.startswith("| bad")]
    assert len(table_rows) == 1 and table_rows[0].count(" | ") == header.count(" | ")  # one row, every cell
    html = (tmp_path / "out" / "report.html").read_text()
    assert "\x1b" not in html and "\x00" not in html and "evil\\r\\x1b[31mZOO" in html
