"""The trusted-benchmark protocol: mnist1d, training to a criterion, bit-identical builds,
each model measured on its own training data."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from pgen.augment import Policy, policy_for, pseudo_test_set
from pgen.data import dataset_arrays, load_dataset
from pgen.errors import InputError
from pgen.measures import MeasureData, compute_measure
from pgen.models import build_model
from pgen.score import ScoreSettings, score_zoo
from pgen.train import TrainConfig, evaluate, train_model, training_data
from pgen.zoo import load_zoo
from pgen.zoo.builder import Recipe, build_zoo

PROTOCOL_RECIPE = """
name = "proto"
dataset = "mnist1d"
seeds = [0, 1]
[train]
arch = "cnn"
depth = 1
epochs = 2
target_train_loss = 0.01
batch_size = 256
lr = 0.05
[grid]
width = [2, 4]
[checkpoints]
initial = true
"""

NOISY_RECIPE = """
name = "noisy"
dataset = "digits"
seeds = [3]
[train]
arch = "mlp"
depth = 1
width = 8
epochs = 3
batch_size = 64
lr = 0.05
[grid]
train_fraction = [0.2, 1.0]
label_noise = [0.0, 0.3]
[checkpoints]
initial = false
"""


def _recipe(text):
    import tomllib

    return Recipe(tomllib.loads(text), "test")


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "checkpoints").iterdir())}


# ----------------------------------------------------------------------------- mnist1d


def test_mnist1d_is_the_packages_default_dataset():
    from mnist1d.data import get_dataset_args, make_dataset

    train, test = load_dataset("mnist1d", "train"), load_dataset("mnist1d", "test")
    (x, y), (xt, yt) = dataset_arrays(train), dataset_arrays(test)
    assert x.shape == (4000, 1, 40) and xt.shape == (1000, 1, 40)
    assert set(y.tolist()) == set(range(10))
    state = np.random.get_state()
    ref = make_dataset(get_dataset_args())  # the package itself, independent of pgen's cache
    np.random.set_state(state)
    np.testing.assert_allclose(x[:, 0].numpy(), ref["x"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(yt.numpy(), ref["y_test"])


def test_mnist1d_generation_leaves_numpy_global_state(monkeypatch, tmp_path):
    monkeypatch.setenv("PGEN_CACHE", str(tmp_path))  # nothing cached: generated here
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    load_dataset("mnist1d", "test")
    assert np.random.random() == expected
    assert (tmp_path / "data").is_dir()  # cached as .npz for the next call


def test_one_dimensional_cnn_and_pseudo_test_policy():
    model = build_model("cnn", input_shape=(1, 40), num_classes=10, width=4, depth=2)
    assert isinstance(model[0], torch.nn.Conv1d) and model(torch.randn(3, 1, 40)).shape == (3, 10)
    x = torch.randn(50, 1, 40, dtype=torch.float64)
    shift_only = Policy("signal-1d", 0, 0.05, (1.0, 1.0), False, 0.0, 0.0)
    out, labels = pseudo_test_set(x, torch.arange(50), shift_only, copies=2)
    assert out.shape == (100, 1, 40) and torch.equal(labels, torch.arange(50).repeat(2))
    for i in range(100):  # each copy is the signal shifted by -2..2 samples, zero-filled (numpy reference)
        src = x[i % 50, 0].numpy()
        candidates = []
        for k in range(-2, 3):
            ref = np.zeros(40)
            if k >= 0:
                ref[k:] = src[:40 - k]
            else:
                ref[:k] = src[-k:]
            candidates.append(np.abs(out[i, 0].numpy() - ref).max())
        assert min(candidates) < 1e-12
    policy = policy_for("signal-1d")
    noisy, _ = pseudo_test_set(x, torch.arange(50), policy, seed=1)
    again, _ = pseudo_test_set(x, torch.arange(50), policy, seed=1)
    assert torch.equal(noisy, again) and not torch.equal(noisy, x)


# ----------------------------------------------------------------------------- training to a criterion


def test_training_stops_at_the_criterion_or_the_cap():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, width=16, depth=1)
    r = train_model(model, train, test, TrainConfig(epochs=5, lr=0.05, target_train_loss=100.0), num_classes=10)
    assert r["converged"] and r["epoch"] == 1  # any loss is below 100: stops after the first epoch
    x, y = dataset_arrays(train)
    assert r["train_loss"] == pytest.approx(evaluate(model, x, y)[1], abs=1e-6)
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, width=16, depth=1)
    r = train_model(model, train, test, TrainConfig(epochs=2, lr=0.05, target_train_loss=1e-9), num_classes=10)
    assert not r["converged"] and r["epoch"] == 2 and r["train_loss"] > 1e-9



def test_a_run_stuck_at_chance_stops_early_and_a_healthy_one_is_unchanged():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")

    def run(lr, stop):
        torch.manual_seed(0)
        model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, width=16, depth=1)
        cfg = TrainConfig(epochs=8, lr=lr, target_train_loss=1e-9, stop_at_chance_epochs=stop)
        return model, train_model(model, train, test, cfg, num_classes=10)

    # lr 50 with momentum sends the weights to a constant (or non-finite) prediction at once
    _, stuck = run(50.0, 2)
    assert stuck["stalled"] and not stuck["converged"] and stuck["epoch"] <= 2
    assert not stuck["train_loss"] < 0.95 * math.log(10)  # at chance level (or NaN)
    _, capped = run(50.0, None)
    assert capped["epoch"] == 8 and "stalled" not in capped
    # a run that learns is never at chance for 2 epochs: bit-identical with and without the rule
    a, ra = run(0.05, 2)
    b, rb = run(0.05, None)
    assert "stalled" not in ra and ra["epoch"] == rb["epoch"] == 8
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(InputError, match="stop_at_chance_epochs"):
        TrainConfig(stop_at_chance_epochs=3).validate()
    # the recipe key reaches every run's training settings, as a user writes it
    from pgen.zoo.builder import _train_config, find_recipe

    recipe = Recipe.load(find_recipe("fantastic-mnist1d"))
    cfg = _train_config(recipe, recipe.runs()[0]["hparams"], 0)
    assert cfg.stop_at_chance_epochs == 20 and cfg.target_train_loss == 0.01

def test_protocol_build_is_bit_identical_and_records_convergence(tmp_path):
    recipe = _recipe(PROTOCOL_RECIPE)
    one = build_zoo(recipe, tmp_path / "one", progress=False)
    two = build_zoo(recipe, tmp_path / "two", progress=False, workers=2)
    assert _digests(one) == _digests(two)  # same recipe and seed: the same bytes, whatever the workers
    assert (one / "manifest.jsonl").read_text() == (two / "manifest.jsonl").read_text()
    zoo = load_zoo(one)
    assert len(zoo) == 4
    for e in zoo:
        assert e.metrics["converged"] is False  # 2 epochs of width-2 CNNs cannot reach 0.01
        assert e.extra["epoch"] == 2 and e.metrics["train_loss"] > 0.01


# ----------------------------------------------------------------------------- own training data


@pytest.fixture(scope="module")
def noisy_zoo(tmp_path_factory):
    return build_zoo(_recipe(NOISY_RECIPE), tmp_path_factory.mktemp("noisy") / "noisy", progress=False)


def test_training_data_is_recorded_and_rederivable(noisy_zoo, tmp_path):
    zoo = load_zoo(noisy_zoo)
    labels_all = dataset_arrays(zoo.dataset("train"))[1]
    for e in zoo:
        idx, labels = e.training_data()
        cfg = TrainConfig(train_fraction=e.hparams["train_fraction"], label_noise=e.hparams["label_noise"], seed=3)
        ref_idx, ref_labels = training_data(labels_all, cfg, 10)
        assert torch.equal(idx, ref_idx) and torch.equal(labels, ref_labels)
        assert len(idx) == round(e.hparams["train_fraction"] * 1347)
        flipped = float((labels != labels_all[idx]).float().mean())
        assert flipped == pytest.approx(e.hparams["label_noise"], abs=0.06)
    # a zoo built before train_data was recorded: the same draw, re-derived from the recipe
    rows = [json.loads(line) for line in (noisy_zoo / "manifest.jsonl").read_text().splitlines()]
    old = tmp_path / "old"
    import shutil

    shutil.copytree(noisy_zoo, old)
    (old / "manifest.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "train_data"}) + "\n"
                                                for r in rows))
    for a, b in zip(load_zoo(old), zoo):
        assert all(torch.equal(u, v) for u, v in zip(a.training_data(), b.training_data()))


def test_label_using_measures_see_each_models_own_training_data(noisy_zoo, tmp_path):
    zoo = load_zoo(noisy_zoo)
    settings = ScoreSettings(n_samples=2000, measures=("own_train_error", "shared_sample_error", "inverse_margin",
                                                       "pvector_angle"))
    table = score_zoo(zoo, tmp_path / "out", settings=settings, progress=False).table.set_index("model_id")
    x_all, y_all = dataset_arrays(zoo.dataset("train"))
    for e in zoo:
        model = e.load_model()
        idx, labels = e.training_data()
        row = table.loc[e.id]
        # train accuracy and the control are on the samples and labels the model was trained on
        assert row["train_acc"] == pytest.approx(e.metrics["train_acc"], abs=1e-9)
        assert row["own_train_error"] == pytest.approx(1 - e.metrics["train_acc"], abs=1e-9)
        assert row["train_samples"] == len(idx)
        own = MeasureData(x_all[idx], labels)
        assert row["inverse_margin"] == pytest.approx(compute_measure("inverse_margin", model, None, own), rel=1e-6)
        # the shared samples: every clean training sample, true labels
        acc = int((model(x_all).argmax(1) == y_all).sum()) / len(y_all)
        assert row["shared_sample_error"] == pytest.approx(1 - acc, abs=1e-9)
    # the noisy, sub-sampled models differ between the two controls; the clean full one does not
    full_clean = next(e.id for e in zoo if e.hparams == {"train_fraction": 1.0, "label_noise": 0.0})
    assert table.loc[full_clean, "own_train_error"] == pytest.approx(table.loc[full_clean, "shared_sample_error"])
    noisy = next(e.id for e in zoo if e.hparams == {"train_fraction": 1.0, "label_noise": 0.3})
    assert table.loc[noisy, "own_train_error"] > table.loc[noisy, "shared_sample_error"] + 0.05


def test_shared_samples_when_asked(noisy_zoo, tmp_path):
    zoo = load_zoo(noisy_zoo)
    settings = ScoreSettings(n_samples=2000, own_training_data=False, measures=("own_train_error",))
    table = score_zoo(zoo, tmp_path / "out", settings=settings, progress=False).table
    assert (table["own_train_error"] - (1 - table["train_acc"])).abs().max() < 1e-9
    assert "train_samples" not in table or table["train_samples"].isna().all()


def test_one_dimensional_zoo_scores_end_to_end(tmp_path):
    """mnist1d models through pgen score: P-vector angle, pseudo-test accuracy on the 1-D
    policy, and the CLI's zoo build with workers."""
    from pgen.cli import main

    recipe = tmp_path / "proto.toml"
    recipe.write_text(PROTOCOL_RECIPE.replace("seeds = [0, 1]", "seeds = [0]"))
    assert main(["zoo", "build", str(recipe), "--out", str(tmp_path / "zoo"), "--workers", "2"]) == 0
    settings = ScoreSettings(n_samples=300, measures=("pvector_angle", "own_train_error"))
    table = score_zoo(tmp_path / "zoo", tmp_path / "out", settings=settings, progress=False).table
    assert len(table) == 2 and table["pvector_angle"].between(0, 90).all()
    assert table["pseudo_test_acc"].between(0, 1).all() and table["train_samples"].eq(4000).all()


def test_benchmark_cli_protocol_options(tiny_zoo, tmp_path, capsys):
    from pgen.cli import main

    args = ["benchmark", str(tiny_zoo), "--out", str(tmp_path / "b"), "--samples", "100", "--measures",
            "pvector_angle,sum_squared_weights", "--learned", "--bootstrap", "20", "--all-models", "--shared-samples"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "learned:statnn-gap" in out and "learned:statnn-test_acc" in out and "Direction not resolved" in out
    summary = __import__("pandas").read_csv(tmp_path / "b" / "summary_tiny.csv").set_index("measure")
    assert "learned:statnn-gap" in summary.index and "tau_gap_minus_angle" in summary.columns


def test_score_cli_shared_samples(noisy_zoo, tmp_path):
    import pandas as pd

    from pgen.cli import main

    for flag, out in (([], "own"), (["--shared-samples"], "shared")):
        assert main(["score", str(noisy_zoo), "--out", str(tmp_path / out), "--samples", "2000", "--no-report",
                     "--measures", "own_train_error", *flag]) == 0
    own = score_zoo(noisy_zoo, tmp_path / "own", settings=ScoreSettings(n_samples=2000, measures=("own_train_error",)),
                    progress=False).table.set_index("model_id")
    shared = score_zoo(noisy_zoo, tmp_path / "shared", progress=False, settings=ScoreSettings(
        n_samples=2000, own_training_data=False, measures=("own_train_error",))).table.set_index("model_id")
    noisy = [e.id for e in load_zoo(noisy_zoo) if e.hparams["label_noise"] > 0]
    assert (own.loc[noisy, "own_train_error"] > shared.loc[noisy, "own_train_error"]).all()
    assert len(pd.read_sql("SELECT * FROM results", __import__("sqlite3").connect(tmp_path / "own" / "results.sqlite")))
