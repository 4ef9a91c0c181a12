"""Scoring your own models: architectures by reference, `pgen zoo import`, datasets by
reference, and `pgen.score_models`."""

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import pgen
from pgen.cli import main
from pgen.errors import InputError
from pgen.models import build_model
from pgen.zoo import ZooError, load_zoo
from pgen.zoo.importer import import_zoo

CNN_KW = {"width": 4, "depth": 1}


def small_cnn(seed):
    torch.manual_seed(seed)
    return build_model("cnn", input_shape=(1, 8, 8), num_classes=10, **CNN_KW).eval()


WRAPPINGS = {
    "bare": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "model": lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
    "lightning": lambda sd: {"epoch": 2, "global_step": 40, "pytorch-lightning_version": "2.4.0",
                             "state_dict": {f"net.{k}": v for k, v in sd.items()},
                             "hyper_parameters": {"lr": 0.01}, "lr_schedulers": []},
    "dataparallel": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "compiled": lambda sd: {"state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}},
}


def write_checkpoints(folder, n=len(WRAPPINGS)):
    folder.mkdir(parents=True, exist_ok=True)
    nets, files = {}, []
    for i, (wrap, fn) in enumerate(list(WRAPPINGS.items())[:n]):
        net = small_cnn(i)
        path = folder / f"run{i}-{wrap}.pt"
        torch.save(fn(net.state_dict()), path)
        nets[path.stem] = net
        files.append(path)
    return nets, files


def write_metrics(path, files, extra=None):
    rows = [{"checkpoint": f.name, "test_acc": 0.5 + 0.05 * i, "train_acc": 0.9, "hp.lr": [0.1, 0.01][i % 2],
             **(extra or {})} for i, f in enumerate(files)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_every_wrapping_imports_and_loads_the_same_weights(tmp_path, capsys):
    nets, files = write_checkpoints(tmp_path / "ckpt")
    metrics = write_metrics(tmp_path / "metrics.csv", files)
    assert main(["zoo", "import", *map(str, files), "--arch", "cnn", "--model-kwargs", json.dumps(CNN_KW),
                 "--dataset", "digits", "--metrics", str(metrics), "--out", str(tmp_path / "zoo")]) == 0
    assert "Score it: pgen score" in capsys.readouterr().out
    assert not list((tmp_path / "zoo").glob("*.pt"))  # nothing copied
    zoo = load_zoo(tmp_path / "zoo")
    assert sorted(e.id for e in zoo) == sorted(nets)
    x = torch.rand(5, 1, 8, 8)
    for e in zoo:
        with torch.no_grad():
            assert torch.equal(e.load_model()(x), nets[e.id](x)), e.id
    assert zoo["run4-dataparallel"].hparams == {"lr": 0.1} and zoo["run1-state_dict"].metrics["test_acc"] == 0.55
    assert zoo.hparam_grid() == {"lr": [0.01, 0.1]}


def test_strict_keys_errors_name_the_file(tmp_path):
    nets, files = write_checkpoints(tmp_path / "ckpt", n=1)
    sd = nets["run0-bare"].state_dict()
    bad = tmp_path / "ckpt" / "broken.pt"
    torch.save({k: v for k, v in list(sd.items())[1:]} | {"extra.weight": torch.zeros(1)}, bad)
    metrics = write_metrics(tmp_path / "m.csv", [bad])
    with pytest.raises(ZooError, match=r"broken\.pt do not fit its architecture: 1 missing key\(s\), first "
                                       r"0\.weight; 1 unexpected key\(s\), first extra\.weight"):
        import_zoo([bad], arch="cnn", model_kwargs=CNN_KW, dataset="digits", metrics=metrics, out=tmp_path / "z")
    assert not (tmp_path / "z" / "zoo.json").exists()  # nothing written for a zoo that would not load
    with pytest.raises(ZooError, match=r"run0-bare\.pt do not fit .*shape mismatch.*\(model: \(7, 64\)\)"):
        import_zoo(files, arch="cnn", model_kwargs=CNN_KW, dataset="digits", metrics=write_metrics(
            tmp_path / "m2.csv", files), out=tmp_path / "z", num_classes=7)


def test_torchvision_models_by_reference(tmp_path):
    x = torch.rand(3, 1, 8, 8)
    for name, kwargs in (("resnet18", {"in_channels": 1, "small_input": True}), ("mobilenet_v3_small", {"in_channels": 1})):
        torch.manual_seed(0)
        net = build_model(f"torchvision:{name}", input_shape=(1, 8, 8), num_classes=10, **kwargs).eval()
        ckpt = tmp_path / f"{name}.pt"
        torch.save({"model": net.state_dict()}, ckpt)
        zoo = import_zoo([ckpt], arch=f"torchvision:{name}", model_kwargs=kwargs, dataset="digits",
                         metrics=write_metrics(tmp_path / f"{name}.csv", [ckpt]), out=tmp_path / name)
        with torch.no_grad():
            assert torch.equal(zoo[0].load_model()(x), net(x))
    resnet = build_model("torchvision:resnet18", input_shape=(1, 8, 8), num_classes=10, in_channels=1, small_input=True)
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1) and isinstance(resnet.maxpool, nn.Identity)
    with pytest.raises(pgen.errors.UnknownNameError, match="unknown torchvision classification model 'resnet19'"):
        build_model("torchvision:resnet19", input_shape=(1, 8, 8), num_classes=10)


def test_own_factory_needs_trust(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(textwrap.dedent("""
        import torch
        MARK = []
        def make(width=3):
            MARK.append(1)
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, width), torch.nn.ReLU(),
                                       torch.nn.Linear(width, 10))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InputError, match="your own code: importing my_nets runs it.*--trust-code"):
        build_model("my_nets:make", input_shape=(1, 8, 8), num_classes=10, width=5)
    import sys

    assert "my_nets" not in sys.modules  # refused before anything was imported
    net = build_model("my_nets:make", input_shape=(1, 8, 8), num_classes=10, trust_code=True, width=5)
    ckpt = tmp_path / "own.pt"
    torch.save(net.state_dict(), ckpt)
    metrics = write_metrics(tmp_path / "m.csv", [ckpt])
    args = ["zoo", "import", str(ckpt), "--arch", "my_nets:make", "--model-kwargs", '{"width": 5}', "--dataset",
            "digits", "--metrics", str(metrics), "--out", str(tmp_path / "zoo")]
    assert main(args) == 2  # one clear line, no traceback
    assert main(args + ["--trust-code"]) == 0
    with pytest.raises(InputError, match="--trust-code"):
        load_zoo(tmp_path / "zoo")[0].load_model()
    assert load_zoo(tmp_path / "zoo", trust_code=True)[0].load_model() is not None
    assert main(["score", str(tmp_path / "zoo"), "--out", str(tmp_path / "out"), "--samples", "100",
                 "--trust-code"]) == 0  # the way a user scores it
    assert pd.read_csv(tmp_path / "out" / "models.csv")["pvector_angle"].between(0, 90).all()


def test_npz_and_imagefolder_datasets(tmp_path):
    from PIL import Image

    from pgen.data import dataset_from_spec

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((20, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 3, 20),
             x_test=rng.random((6, 1, 8, 8), dtype=np.float32), y_test=rng.integers(0, 3, 6))
    train = dataset_from_spec(f"npz:{tmp_path / 'd.npz'}", "train", transform={"mean": [0.5], "std": [0.25]})
    x, y = train[3]
    expected = (np.load(tmp_path / "d.npz")["x"][3] - 0.5) / 0.25
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6)
    assert len(dataset_from_spec(f"npz:{tmp_path / 'd.npz'}", "test")) == 6

    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(
                    tmp_path / "imgs" / split / c / f"{i}.png")
    ds = dataset_from_spec(f"imagefolder:{tmp_path / 'imgs'}", "test", transform={"resize": 16, "center_crop": 8})
    x, y = ds[3]
    assert x.shape == (3, 8, 8) and y == 1
    raw = np.asarray(Image.open(tmp_path / "imgs" / "test" / "dog" / "1.png"), dtype=np.float64) / 255
    assert float(x.max()) <= 1.0 and abs(float(x.mean()) - raw.mean()) < 0.1  # same picture, resized and cropped
    with pytest.raises(pgen.errors.InputError, match="unknown preprocessing key"):
        dataset_from_spec("digits", "train", transform={"rotate": 3})


def test_imported_zoo_scores_the_same_from_the_cli_and_from_python(tmp_path, capsys):
    nets, files = write_checkpoints(tmp_path / "ckpt", n=4)
    metrics = write_metrics(tmp_path / "metrics.csv", files)
    import_zoo(files, arch="cnn", model_kwargs=CNN_KW, dataset="digits", metrics=metrics, out=tmp_path / "zoo")
    assert main(["score", str(tmp_path / "zoo"), "--out", str(tmp_path / "out"), "--samples", "300"]) == 0
    cli = pd.read_csv(tmp_path / "out" / "models.csv").set_index("model_id").sort_index()
    frame = pgen.score_models({k: (lambda k=k: nets[k]) for k in nets}, "digits", n_samples=300,
                              metrics={k: {"test_acc": 0.5} for k in nets}).table.set_index("model_id").sort_index()
    np.testing.assert_allclose(frame["pvector_angle"], cli["pvector_angle"], atol=1e-9)
    np.testing.assert_allclose(frame["train_acc"], cli["train_acc"], atol=0)
    assert list(frame.index) == sorted(nets) and (frame["test_acc"] == 0.5).all()
    # and a Zoo built from the same objects goes through the benchmark
    from pgen.benchmark import run_benchmark

    zoo = pgen.Zoo.from_models(nets, "digits", metrics={k: {"test_acc": 0.5 + 0.1 * i} for i, k in enumerate(nets)})
    res = run_benchmark([zoo], tmp_path / "bench", measures=["pvector_angle"], n_boot=20, progress=False)
    assert set(res["summaries"]["models"]["measure"]) == {"pvector_angle"}


def test_score_models_accepts_tensors_and_refuses_strangers():
    nets = {"a": small_cnn(1), "b": small_cnn(2)}
    x, y = torch.rand(40, 1, 8, 8), torch.arange(40) % 10
    frame = pgen.score_models(nets, (x, y.numpy()), n_samples=None).table
    assert list(frame["model_id"]) == ["a", "b"] and frame["pvector_angle"].between(0, 90).all()
    with pytest.raises(InputError, match="must be a torch Dataset"):
        pgen.score_models(nets, 42)
    with pytest.raises(InputError, match="unknown model id"):
        pgen.score_models(nets, (x, y), metrics={"c": {"test_acc": 1.0}})


# ----------------------------------------------------------------------------- #32: the user's journey

def test_score_models_records_a_failing_model_and_scores_the_others(tmp_path):
    """A model of the wrong input size, one that returns a tuple and a loader that raises,
    first or last: each is its model's recorded error, the others are scored, a note says so,
    and no temporary folder is left behind."""
    import tempfile

    from pgen.errors import PgenNotice

    def loader_that_raises():
        raise RuntimeError("checkpoint server down")

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_cnn(9)

        def forward(self, x):
            return self.net(x), x

    wide = nn.Sequential(nn.Flatten(), nn.Linear(100, 10))
    before = set(Path(tempfile.gettempdir()).glob("pgen-score-models-*"))
    for order in (["bad", "ok", "pair", "raises"], ["ok", "raises", "pair", "bad"]):
        nets = {"ok": small_cnn(1), "bad": wide, "pair": Pair(), "raises": loader_that_raises}
        with pytest.warns(PgenNotice, match="3 failure"):
            run = pgen.score_models({k: nets[k] for k in order}, "digits", n_samples=100)
        assert list(run.table["model_id"]) == ["ok"]
        errors = run.errors.set_index("model_id")["error"]
        assert "a forward pass of one sample of shape (1, 8, 8) failed" in errors["bad"]
        assert "forward returns tuple, not a logits tensor" in errors["pair"]
        assert "checkpoint server down" in errors["raises"]
    assert set(Path(tempfile.gettempdir()).glob("pgen-score-models-*")) == before
    with pytest.raises(InputError):
        pgen.score_models({"a": small_cnn(1)}, 42)
    assert set(Path(tempfile.gettempdir()).glob("pgen-score-models-*")) == before


def test_a_model_and_data_that_do_not_fit_are_one_line_at_import_and_at_score(tmp_path, capsys):
    """The issue's 3-channel ResNet on 1-channel digits, and labels beyond the model's classes."""
    from pgen.errors import DatasetError

    resnet = build_model("torchvision:resnet18", input_shape=(3, 8, 8), num_classes=10, small_input=True)
    torch.save(resnet.state_dict(), tmp_path / "r.pt")
    pd.DataFrame({"checkpoint": ["r.pt"], "test_acc": [0.5]}).to_csv(tmp_path / "m.csv", index=False)
    assert main(["zoo", "import", str(tmp_path / "r.pt"), "--arch", "torchvision:resnet18", "--model-kwargs",
                 '{"small_input": true}', "--dataset", "digits", "--metrics", str(tmp_path / "m.csv"),
                 "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert "a forward pass of one sample of shape (1, 8, 8) failed" in err and "channels" in err
    assert err.count("\n") == 1
    five = build_model("cnn", input_shape=(1, 8, 8), num_classes=5, **CNN_KW)
    with pytest.warns(pgen.errors.PgenNotice):
        run = pgen.score_models({"five": five, "ten": small_cnn(0)}, "digits", n_samples=100)
    assert "the data's labels go up to 9, but the model has 5 outputs" in run.errors["error"].iloc[0]
    for x, y, complaint in ((torch.rand(0, 1, 8, 8), torch.zeros(0, dtype=torch.long), "hold no samples"),
                            (torch.rand(6, 1, 8, 8), torch.zeros(6, dtype=torch.long), "hold a single class")):
        with pytest.raises((DatasetError, InputError), match=complaint):
            pgen.score_models({"a": small_cnn(0)}, (x, y))
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8), "f4"), y=np.zeros(0, "i8"))
    with pytest.raises(DatasetError, match="holds no training samples"):
        import_zoo([tmp_path / "r.pt"], arch="cnn", model_kwargs=CNN_KW, dataset=f"npz:{tmp_path / 'empty.npz'}",
                   metrics=tmp_path / "m.csv", out=tmp_path / "z2")


def test_kwargs_factories_get_num_classes_and_a_csv_row_its_own_width(tmp_path, monkeypatch):
    import sys

    (tmp_path / "my_factories.py").write_text(textwrap.dedent("""
        import torch
        def make(**kwargs):  # timm's create_model takes everything through **kwargs
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, kwargs["width"]), torch.nn.ReLU(),
                                       torch.nn.Linear(kwargs["width"], kwargs["num_classes"]))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_factories", None)
    for width in (4, 16):
        torch.manual_seed(width)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
        torch.save(net.state_dict(), tmp_path / f"w{width}.pt")
    pd.DataFrame({"checkpoint": ["w4.pt", "w16.pt"], "test_acc": [0.4, 0.6],
                  "model_kwargs": ['{"width": 4}', '{"width": 16}']}).to_csv(tmp_path / "m.csv", index=False)
    zoo = import_zoo([tmp_path / "w4.pt", tmp_path / "w16.pt"], arch="my_factories:make",
                     model_kwargs={}, dataset="digits", metrics=tmp_path / "m.csv",
                     out=tmp_path / "sweep", trust_code=True)
    assert [zoo[i].load_model()[1].out_features for i in ("w4", "w16")] == [4, 16]
    assert zoo["w16"].load_model()[3].out_features == 10  # num_classes reached make(**kwargs) (a KeyError before)


@pytest.mark.parametrize("rows, complaint", [
    ({"checkpoint": ["a.pt", "zz.pt"], "test_acc": [0.5, 0.6]}, "1 row\\(s\\) name no checkpoint given"),
    ({"checkpoint": ["a.pt"], "test_acc": ["abc"]}, "metric test_acc must be a finite number; got 'abc'"),
    ({"checkpoint": ["a.pt"], "test_acc": [float("nan")]}, "checkpoint a.pt has no test_acc"),
    ({"checkpoint": ["a.pt"], "test_acc": [1e400]}, "metric test_acc must be a finite number"),
    ({"checkpoint": ["a.pt"], "test_acc": [0.5], "model_kwargs": ["{width"]}, "model_kwargs is not JSON"),
])
def test_zoo_import_validates_metrics_csv(tmp_path, rows, complaint):
    torch.save(small_cnn(0).state_dict(), tmp_path / "a.pt")
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises((InputError, ZooError), match=complaint):
        import_zoo([tmp_path / "a.pt"], arch="cnn", model_kwargs=CNN_KW, dataset="digits", metrics=tmp_path / "m.csv",
                   out=tmp_path / "z")
    assert not (tmp_path / "z" / "zoo.json").exists()


def test_the_pseudo_test_policy_is_never_silently_wrong(tmp_path, tiny_zoo):
    """npz data of no declared kind get a policy without flips; --data-kind picks one; the
    report's answer names the policy used."""
    from pgen.data import dataset_arrays, load_dataset

    x, y = dataset_arrays(load_dataset("digits", "train"))
    x, y = x[:200].numpy(), y[:200].numpy()
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x, y_test=y)
    nets = {"a": small_cnn(0), "b": small_cnn(1)}
    run = pgen.score_models(nets, f"npz:{tmp_path / 'd.npz'}", n_samples=100)
    assert run.info["pseudo_test_policy"].startswith("unknown:") and "hflip no" in run.info["pseudo_test_policy"]
    run = pgen.score_models(nets, f"npz:{tmp_path / 'd.npz'}", n_samples=100, data_kind="color-digits")
    assert run.info["pseudo_test_policy"].startswith("color-digits:")
    with pytest.raises(pgen.errors.UnknownNameError, match="no pseudo-test policy for data kind 'digitz'"):
        pgen.score_models(nets, "digits", data_kind="digitz")
    out = tmp_path / "rep"
    assert main(["score", str(tiny_zoo), "--out", str(out), "--samples", "100", "--data-kind", "grayscale"]) == 0
    assert "Pseudo-test accuracy: policy grayscale" in (out / "report.md").read_text()
    assert main(["score", str(tiny_zoo), "--out", str(out), "--samples", "100"]) == 0  # the zoo's own kind
    assert "Pseudo-test accuracy: policy grayscale-digits" in (out / "report.md").read_text()  # digits' kind
