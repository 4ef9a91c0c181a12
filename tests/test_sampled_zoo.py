"""Sampled recipes (the Small CNN Zoo protocol): the embedded recipe's draws, a tiny build
through the CLI as users type it (relative --out, another working directory), its
reproducibility and resumption, divergence, and the export to the Small CNN Zoo format
read back by pgen's own loader."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pgen.cli import main
from pgen.data import dataset_arrays
from pgen.zoo import load_zoo
from pgen.zoo.builder import build_zoo, load_recipe
from pgen.zoo.sampled import SampledRecipe

TINY = """
name = "tiny"
dataset = "mnist5k"
runs = 6
seed = 3
[train]
epochs = 2
stack = 2
[transform]
mean = [0.5]
std = [0.5]
[sample]
optimizer = ["adam", "rmsprop"]
train_fraction = [0.1]
learning_rate = { log_uniform = [1e-3, 1e-2] }
dropout = { uniform = [0.0, 0.5], step = 0.00390625 }
w_init = ["he_normal", "orthogonal", "TruncatedNormal"]
init_std = { log_uniform = [1e-2, 0.1] }
[checkpoints]
epochs = [0, 1]
"""


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "checkpoints").iterdir())}


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def test_embedded_recipe_draws_the_authors_distributions():
    r = load_recipe("smallcnn-mnist5k")
    assert isinstance(r, SampledRecipe) and r.n_runs == 2000 and r.epochs == 18
    assert r.checkpoint_epochs == [0, 1, 2, 3, 6, 12, 18]
    runs = r.runs()
    hp = pd.DataFrame([run["hparams"] for run in runs])
    assert set(hp.optimizer) == {"sgd", "adam", "rmsprop"} and set(hp.activation) == {"relu", "tanh"}
    assert set(hp.train_fraction) == {0.1, 0.25, 0.5, 1.0}
    assert set(hp.w_init) == {"he_normal", "glorot_normal", "orthogonal", "RandomNormal", "TruncatedNormal"}
    for key, lo, hi in [("learning_rate", 5e-4, 5e-2), ("l2reg", 1e-8, 1e-2), ("init_std", 1e-3, 0.5)]:
        assert hp[key].between(lo, hi).all()
        logs = np.log(hp[key])  # log-uniform: the log's mean is the middle of the log range
        assert logs.mean() == pytest.approx((math.log(lo) + math.log(hi)) / 2, abs=0.1 * math.log(hi / lo))
    assert hp.dropout.between(0, 0.7).all() and ((hp.dropout * 256) % 1 == 0).all()
    assert hp.seed.nunique() == 2000
    # a run's draws depend on its index only: the first runs of a smaller recipe are the same
    small = SampledRecipe({**r.raw, "runs": 50}, "small")
    assert small.runs() == runs[:50]
    # stacks share optimizer, activation and train fraction, and cover every run once
    stacks = r.stacks()
    assert sorted(run["id"] for st in stacks for run in st) == sorted(run["id"] for run in runs)
    for st in stacks:
        assert 1 <= len(st) <= r.stack
        assert len({(x["hparams"]["optimizer"], x["hparams"]["activation"], x["hparams"]["train_fraction"])
                    for x in st}) == 1


def test_bad_sampled_recipes_are_refused(tmp_path):
    from pgen.zoo.base import ZooError

    for change, match in [({"runs": 0}, "runs"), ({"sample": {"optimizer": ["lbfgs"]}}, "lbfgs"),
                          ({"sample": {"dropout": {"uniform": [0, 0.5]}}}, "k/256"),
                          ({"sample": {"momentum": [0.9]}}, "not known"),
                          ({"sample": {"learning_rate": {"log_uniform": [0, 1]}}}, "range"),
                          ({"checkpoints": {"epochs": [1]}}, "must include 0")]:
        with pytest.raises(ZooError, match=match):
            SampledRecipe({"name": "x", "dataset": "mnist5k", "runs": 2, "sample": {}, **change}, "x.toml")


def test_tiny_build_from_another_directory_is_reproducible_resumable_and_exports(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # --limit builds whole stacks (of at most 2), in the recipe's order, until at least 3 runs are new
    assert main(["zoo", "build", str(recipe), "--out", "a", "--limit", "3", "--workers", "2"]) in (0, None)
    expected, stacks = set(), SampledRecipe(tomllib.loads(TINY)).stacks()
    while len(expected) < 3:
        expected |= {run["id"] for run in stacks.pop(0)}
    assert {r["run"] for r in _rows(work / "a") if r["final"]} == expected
    # resume: the rest, and the result equals a build in one go, byte for byte
    assert main(["zoo", "build", str(recipe), "--out", "a"]) in (0, None)
    assert main(["zoo", "build", str(recipe), "--out", "b", "--workers", "2"]) in (0, None)
    assert _digests(work / "a") == _digests(work / "b")
    assert len(_digests(work / "a")) == 6 * 4  # init, epoch 1, final, training data per run
    # a torn last line (a crash while writing) redoes that stack only
    rows_b = (work / "b" / "manifest.jsonl").read_text().splitlines()
    (work / "b" / "manifest.jsonl").write_text("\n".join(rows_b[:-1]) + "\n" + rows_b[-1][:20])
    assert main(["zoo", "build", str(recipe), "--out", "b"]) in (0, None)
    assert _digests(work / "a") == _digests(work / "b")
    assert len([r for r in _rows(work / "b") if r["final"]]) == 6

    zoo = load_zoo(work / "a")
    assert len(zoo.entries) == 18 and len(zoo.final_models().entries) == 6
    x, y = dataset_arrays(zoo.dataset("test"))
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    for e in zoo.entries:  # the recorded test accuracy is the loaded model's
        with torch.no_grad():
            acc = (e.load_model()(x).argmax(1) == y).double().mean().item()
        assert acc == pytest.approx(e.metrics["test_acc"], abs=1e-9)
        assert e.metrics["diverged"] is False and e.extra["arch"] == "smallcnn"

    # export to the Small CNN Zoo format; pgen's loader of the real archives reads it back
    assert main(["zoo", "export", "a", "--format", "smallcnn", "--out", "exported"]) in (0, None)
    back = load_zoo(work / "exported")
    assert back.format == "small-cnn-zoo" and len(back.entries) == 18 and back.skipped == 0
    frame = pd.read_csv(work / "exported" / "metrics.csv.gz", index_col=0)
    for col in ["config.activation", "config.b_init", "config.dataset", "config.dnn_architecture", "config.dropout",
                "config.epochs", "config.init_std", "config.l2reg", "config.learning_rate", "config.num_layers",
                "config.num_units", "config.optimizer", "config.random_seed", "config.train_fraction",
                "config.w_init", "modeldir", "step", "test_accuracy", "test_loss", "train_accuracy", "train_loss"]:
        assert col in frame.columns
    assert sorted(set(frame.step)) == [0, 1, 2] and frame.index[0].endswith("/permanent_ckpt-0")
    weights = np.load(work / "exported" / "weights.npy")
    assert weights.shape == (18, 4970)
    xb, _ = dataset_arrays(back.dataset("test"))
    torch.testing.assert_close(xb, x)
    ordered = sorted(zoo.entries, key=lambda e: (e.extra["run"], e.extra["epoch"]))
    for e, f in zip(ordered, back.entries):
        with torch.no_grad():
            torch.testing.assert_close(f.load_model()(xb), e.load_model()(x), atol=1e-5, rtol=0)
        assert f.metrics["test_acc"] == e.metrics["test_acc"]
        assert f.hparams["learning_rate"] == e.hparams["learning_rate"]
    # the authors' layout: bias before kernel, TF kernel layout (kh, kw, in, out)
    first = ordered[0].load_model()
    conv = first[0]
    np.testing.assert_array_equal(weights[0, :16], conv.bias.detach().numpy())
    np.testing.assert_array_equal(weights[0, 16:160].reshape(3, 3, 1, 16),
                                  conv.weight.detach().permute(2, 3, 1, 0).numpy())


def test_a_diverging_run_stays_in_the_zoo_flagged(tmp_path):
    recipe = tmp_path / "blow.toml"
    recipe.write_text(TINY.replace("runs = 6", "runs = 2").replace('optimizer = ["adam", "rmsprop"]',
                                                                    'optimizer = ["sgd"]')
                      .replace("learning_rate = { log_uniform = [1e-3, 1e-2] }",
                               "learning_rate = { log_uniform = [1e12, 1e12] }"))
    out = build_zoo(load_recipe(recipe), tmp_path / "z", progress=False)
    zoo = load_zoo(out)
    final = zoo.final_models().entries
    assert len(final) == 2 and all(e.metrics["diverged"] for e in final)
    for e in final:
        assert all(torch.isfinite(p).all() for p in e.load_model().parameters())
