"""Zoo interface, pgen's own format and builder, Small CNN Zoo and Model Zoos loaders."""

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import pgen
from pgen.zoo import ZooError, load_zoo
from pgen.zoo.builder import Recipe, build_zoo
from pgen.zoo.modelzoos import infer_sequential
from pgen.zoo.smallcnn import SmallCNN

FIXTURES = Path(__file__).parent / "fixtures"


class PickledObject:
    """A module-level class: pickle can store it, weights_only loading must refuse it."""


def copy_zoo(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_build_and_load(tiny_zoo):
    zoo = load_zoo(tiny_zoo)
    assert zoo.format == "pgen-zoo"
    # 4 runs x (final + 2 in-epoch checkpoints)
    assert len(zoo) == 12
    finals = [e for e in zoo if e.extra["final"]]
    assert [e.id for e in finals] == [f"tiny-{i:04d}" for i in range(4)]
    e = zoo["tiny-0001"]
    assert e.hparams == {"arch": "mlp", "width": 8}
    assert 0 <= e.metrics["train_acc"] <= 1 and 0 <= e.metrics["test_acc"] <= 1
    model = e.load_model()
    assert not model.training
    x, y = pgen.data.dataset_arrays(zoo.dataset("test"))
    acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(e.metrics["test_acc"], abs=1e-6)  # the recorded metric is reproducible
    init = e.load_model(initial=True)
    assert any(not torch.equal(a, b) for a, b in zip(init.state_dict().values(), model.state_dict().values()))
    assert zoo.hparam_grid() == {"arch": ["mlp", "cnn"], "width": [4, 8]}
    assert list(zoo.to_frame().columns[:3]) == ["model_id", "hp.arch", "hp.width"]


def test_in_epoch_checkpoints(tiny_zoo):
    zoo = load_zoo(tiny_zoo)
    steps = sorted(e.extra["step"] for e in zoo if e.extra["run"] == "tiny-0000")
    # digits train split: 1347 samples / 64 per batch = 22 steps in the epoch.
    assert steps == [1, 3, 22]


def test_build_is_deterministic_and_resumes(tiny_zoo, tmp_path):
    out = build_zoo(FIXTURES / "tiny.toml", tmp_path / "again", progress=False, limit=2)
    assert len(load_zoo(out)) == 6
    mtime = (out / "checkpoints" / "tiny-0000.safetensors").stat().st_mtime_ns
    build_zoo(FIXTURES / "tiny.toml", out, progress=False)  # resume: trains the other 2 only
    assert (out / "checkpoints" / "tiny-0000.safetensors").stat().st_mtime_ns == mtime
    zoo, ref = load_zoo(out), load_zoo(tiny_zoo)
    assert len(zoo) == len(ref)
    for e in ref:
        a, b = e.load_model().state_dict(), zoo[e.id].load_model().state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_path_escaping_the_zoo_is_refused(tiny_zoo, tmp_path):
    z = copy_zoo(tiny_zoo, tmp_path / "z")
    rows = (z / "manifest.jsonl").read_text().splitlines()
    row = json.loads(rows[0])
    row["checkpoint"] = "../../etc/passwd"
    (z / "manifest.jsonl").write_text("\n".join([json.dumps(row)] + rows[1:]) + "\n")
    with pytest.raises(ZooError, match="escapes the zoo folder"):
        len(load_zoo(z))


def test_missing_field_is_named(tiny_zoo, tmp_path):
    z = copy_zoo(tiny_zoo, tmp_path / "z")
    row = json.loads((z / "manifest.jsonl").read_text().splitlines()[0])
    del row["arch"]
    (z / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ZooError, match=r"model tiny-0000@step1 lacks field\(s\) arch"):
        len(load_zoo(z))


def test_missing_and_corrupt_checkpoints(tiny_zoo, tmp_path):
    z = copy_zoo(tiny_zoo, tmp_path / "z")
    (z / "checkpoints" / "tiny-0000.safetensors").unlink()
    (z / "checkpoints" / "tiny-0001.safetensors").write_bytes(b"not a checkpoint")
    zoo = load_zoo(z)
    with pytest.raises(ZooError, match="tiny-0000.safetensors does not exist"):
        zoo["tiny-0000"].load_model()
    with pytest.raises(ZooError, match="tiny-0001.safetensors cannot be read"):
        zoo["tiny-0001"].load_model()
    zoo["tiny-0002"].load_model()  # the others still load


def test_weights_that_do_not_fit(tiny_zoo, tmp_path):
    z = copy_zoo(tiny_zoo, tmp_path / "z")
    shutil.copy(z / "checkpoints" / "tiny-0002.safetensors", z / "checkpoints" / "tiny-0000.safetensors")
    with pytest.raises(ZooError, match="model tiny-0000: weights in .* do not fit"):
        load_zoo(z)["tiny-0000"].load_model()


def test_pickled_checkpoint_is_refused(tiny_zoo, tmp_path):
    z = copy_zoo(tiny_zoo, tmp_path / "z")
    torch.save({"weight": PickledObject()}, z / "checkpoints" / "evil.pt")
    from pgen.zoo.native import load_state_dict

    with pytest.raises(ZooError, match="holds pickled Python objects .* which pgen never unpickles"):
        load_state_dict(z / "checkpoints" / "evil.pt")


def test_empty_zoo(tiny_zoo, tmp_path):
    z = copy_zoo(tiny_zoo, tmp_path / "z")
    (z / "manifest.jsonl").write_text("")
    with pytest.raises(ZooError, match="has no models"):
        len(load_zoo(z))


def test_unknown_folder_and_name(tmp_path):
    with pytest.raises(ZooError, match="no known zoo format"):
        load_zoo(tmp_path)
    with pytest.raises(ZooError, match="not an embedded zoo name"):
        load_zoo("no-such-zoo")


def test_recipe_errors(tmp_path):
    with pytest.raises(ZooError, match="lacks 'grid'"):
        Recipe({"name": "x", "dataset": "digits"})
    with pytest.raises(ZooError, match="unknown arch"):
        Recipe({"name": "x", "dataset": "digits", "grid": {"arch": ["transformer"]}})
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    with pytest.raises(ZooError, match="not valid TOML"):
        Recipe.load(bad)


def test_embedded_digits_recipe_is_a_full_grid_of_32():
    from pgen.zoo.builder import embedded_recipes

    r = Recipe.load(embedded_recipes()["digits"])
    assert len(r.runs()) >= 32
    assert len({json.dumps(run["hparams"], sort_keys=True) for run in r.runs()}) == len(r.runs())


# ---------------------------------------------------------------- Small CNN Zoo


def write_small_cnn_zoo(folder: Path, rows=4, bad_rows=(2,)):
    """A Small CNN Zoo folder in the published layout, with bias-before-kernel order."""
    folder.mkdir()
    shapes = [("conv2d", (3, 3, 1, 16)), ("conv2d_1", (3, 3, 16, 16)), ("conv2d_2", (3, 3, 16, 16)), ("dense", (16, 10))]
    layout, idx = [], 0
    for name, kshape in shapes:
        for var, shape in ((f"sequential/{name}/bias:0", (kshape[-1],)), (f"sequential/{name}/kernel:0", kshape)):
            size = int(np.prod(shape))
            layout.append((var, idx, idx + size, shape))
            idx += size
    assert idx == 4970
    with (folder / "layout.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["varname", "start_idx", "end_idx", "shape"])
        for var, a, b, shape in layout:
            w.writerow([var, a, b, str(shape)])
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((rows, 4970)).astype(np.float32) * 0.1
    for r in bad_rows:
        weights[r, 7] = np.nan
    np.save(folder / "weights.npy", weights)
    with gzip.open(folder / "metrics.csv.gz", "wt") as fh:
        fh.write("config.activation,config.dataset,config.l2reg,step,train_accuracy,test_accuracy,train_loss,test_loss\n")
        for r in range(rows):
            fh.write(f"{'tanh' if r % 2 else 'relu'},mnist,0.001,{86 * r},0.{50 + r},0.{40 + r},1.0,1.1\n")
    return weights, layout


def tf_conv(x, kernel, bias):
    """Reference: TF-layout valid conv with stride 2, written with numpy loops."""
    kh, kw, _, cout = kernel.shape
    h, w = (x.shape[1] - kh) // 2 + 1, (x.shape[2] - kw) // 2 + 1
    out = np.zeros((cout, h, w))
    for i in range(h):
        for j in range(w):
            patch = x[:, 2 * i : 2 * i + kh, 2 * j : 2 * j + kw]  # (cin, kh, kw)
            out[:, i, j] = np.einsum("chw,hwco->o", patch, kernel) + bias
    return out


def test_small_cnn_zoo(tmp_path):
    weights, layout = write_small_cnn_zoo(tmp_path / "mnist")
    zoo = load_zoo(tmp_path / "mnist")
    assert zoo.format == "small-cnn-zoo"
    assert [e.id for e in zoo] == ["0", "1", "3"] and zoo.skipped == 1
    e = zoo["1"]
    assert e.hparams["activation"] == "tanh" and e.metrics["test_acc"] == pytest.approx(0.41)
    assert isinstance(zoo._weights, np.memmap)  # memory-mapped, never read whole
    model = e.load_model()
    assert isinstance(model, SmallCNN)
    # Independent reference forward pass from the flat row and the layout.
    x = np.random.default_rng(1).uniform(-1, 1, (1, 28, 28))
    row = weights[1].astype(np.float64)
    get = {var: row[a:b].reshape(shape) for var, a, b, shape in layout}
    h = x
    for name in ("conv2d", "conv2d_1", "conv2d_2"):
        h = np.tanh(tf_conv(h, get[f"sequential/{name}/kernel:0"], get[f"sequential/{name}/bias:0"]))
    ref = h.mean(axis=(1, 2)) @ get["sequential/dense/kernel:0"] + get["sequential/dense/bias:0"]
    with torch.no_grad():
        out = model(torch.from_numpy(x[None]).float()).numpy()[0]
    np.testing.assert_allclose(out, ref, atol=1e-4)
    with pytest.raises(ZooError, match="no initial weights"):
        e.load_model(initial=True)


def test_small_cnn_zoo_bad_layout(tmp_path):
    write_small_cnn_zoo(tmp_path / "z")
    (tmp_path / "z" / "layout.csv").write_text("varname,start_idx,end_idx,shape\nx,0,5,\"(2, 2)\"\n")
    with pytest.raises(ZooError, match="spans 5 values"):
        load_zoo(tmp_path / "z")


# ---------------------------------------------------------------- Model Zoos


class ModelZoosCNN(torch.nn.Module):
    """The Model Zoos MNIST CNN, written out independently with its own module names."""

    def __init__(self):
        super().__init__()
        self.module_list = torch.nn.ModuleList([
            torch.nn.Conv2d(1, 8, 5), torch.nn.MaxPool2d(2), torch.nn.Tanh(),
            torch.nn.Conv2d(8, 6, 5), torch.nn.MaxPool2d(2), torch.nn.Tanh(),
            torch.nn.Conv2d(6, 4, 2), torch.nn.Tanh(), torch.nn.Flatten(),
            torch.nn.Linear(36, 20), torch.nn.Tanh(), torch.nn.Linear(20, 10),
        ])

    def forward(self, x):
        for m in self.module_list:
            x = m(x)
        return x


def write_model_zoos(folder: Path, trials=2):
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    data = {"trainset": {"data": torch.rand(20, 28, 28, generator=g), "targets": torch.randint(0, 10, (20,), generator=g)},
            "testset": (torch.rand(10, 28, 28, generator=g), torch.randint(0, 10, (10,), generator=g))}
    torch.save(data, folder / "dataset.pt")
    nets = {}
    for t in range(trials):
        trial = folder / f"NN_tune_trainable_{t:05d}_seed={t}"
        trial.mkdir()
        (trial / "params.json").write_text(json.dumps({"model::nlin": "tanh", "model::dropout": 0.0,
                                                        "optim::lr": 0.001 * (t + 1), "seed": t}))
        lines = [json.dumps({"training_iteration": ep, "train_acc": 0.1 * ep, "test_acc": 0.09 * ep,
                             "train_loss": 2.0 - 0.1 * ep, "test_loss": 2.1 - 0.1 * ep}) for ep in range(3)]
        (trial / "result.json").write_text("\n".join(lines) + "\n")
        for ep in (0, 2):
            torch.manual_seed(100 * t + ep)
            net = ModelZoosCNN()
            (trial / f"checkpoint_{ep}").mkdir()
            torch.save(net.state_dict(), trial / f"checkpoint_{ep}" / "checkpoints")
            nets[(t, ep)] = net
    return nets, data


def test_model_zoos(tmp_path):
    nets, data = write_model_zoos(tmp_path / "exp")
    zoo = load_zoo(tmp_path / "exp")
    assert zoo.format == "model-zoos"
    assert [e.id for e in zoo] == ["NN_tune_trainable_00000_seed=0@0", "NN_tune_trainable_00000_seed=0@2",
                                   "NN_tune_trainable_00001_seed=1@0", "NN_tune_trainable_00001_seed=1@2"]
    e = zoo[3]
    assert e.hparams["optim::lr"] == pytest.approx(0.002) and e.metrics["test_acc"] == pytest.approx(0.18)
    x, y = zoo.dataset("train").tensors
    assert x.shape == (20, 1, 28, 28)
    with torch.no_grad():
        np.testing.assert_allclose(e.load_model()(x).numpy(), nets[(1, 2)](x).numpy(), atol=1e-5)
        np.testing.assert_allclose(e.load_model(initial=True)(x).numpy(), nets[(1, 0)](x).numpy(), atol=1e-5)
    assert len(zoo.dataset("test")) == 10


def test_model_zoos_pickled_dataset_refused(tmp_path):
    write_model_zoos(tmp_path / "exp", trials=1)
    torch.save({"trainset": PickledObject()}, tmp_path / "exp" / "dataset.pt")
    zoo = load_zoo(tmp_path / "exp")
    with pytest.raises(ZooError, match="does not unpickle"):
        zoo.dataset("train")


def test_infer_sequential_errors():
    with pytest.raises(ZooError, match="no pooling pattern"):
        infer_sequential({"a.weight": torch.zeros(4, 1, 3, 3), "b.weight": torch.zeros(10, 999)}, (1, 8, 8))


def test_zoo_cli_build_list_info(tmp_path, capsys):
    from pgen.cli import main

    out = tmp_path / "cli-zoo"
    assert main(["zoo", "build", str(FIXTURES / "tiny.toml"), "--out", str(out), "--limit", "1"]) == 0
    assert f"zoo at {out}" in capsys.readouterr().out
    assert main(["zoo", "info", str(out), "--csv", str(tmp_path / "m.csv")]) == 0
    text = capsys.readouterr().out
    assert '"format": "pgen-zoo"' in text and "tiny-0000" in text
    assert len(pd.read_csv(tmp_path / "m.csv")) == 3  # one run: final + 2 in-epoch checkpoints
    assert main(["zoo", "list"]) == 0
    listing = capsys.readouterr().out
    assert "digits" in listing and "32 models" in listing and "mnist5k" in listing
