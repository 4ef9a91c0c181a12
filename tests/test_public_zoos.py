"""Public zoos read as their authors wrote them (issue: Small CNN Zoo and Model Zoos fixes).

Each test builds a small archive in the authors' published layout and checks pgen's
loader against an independent implementation of the authors' architecture and
preprocessing, written from their code's description (google-research
dnn_predict_accuracy/train_network.py; ModelZoos/ModelZooDataset def_net.py and
dataset_base.py).
"""

import gzip
import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pgen.zoo import ZooError, load_zoo
from test_zoo import tf_conv, write_small_cnn_zoo, write_model_zoos

# ---------------------------------------------------------------- Small CNN Zoo


def write_published_small_cnn_zoo(folder, dataset="cifar10", activation="selu"):
    """The layout as downloaded: an unnamed first column (the checkpoint path) in metrics.csv.gz."""
    weights, layout = write_small_cnn_zoo(folder, rows=3, bad_rows=())  # grey networks, as published
    with gzip.open(folder / "metrics.csv.gz", "wt") as fh:
        fh.write(",config.activation,config.dataset,config.dropout,step,train_accuracy,test_accuracy\n")
        for r in range(3):
            fh.write(f"gs://zoo/{dataset}/run{r}/permanent_ckpt-86,{activation},{dataset},0.0,86,0.6,0.5\n")
    return weights, layout


def test_small_cnn_zoo_metrics_index_is_the_checkpoint_not_a_metric(tmp_path):
    write_published_small_cnn_zoo(tmp_path / "cifar10")
    zoo = load_zoo(tmp_path / "cifar10")
    e = zoo["1"]
    assert e.extra["checkpoint"] == "gs://zoo/cifar10/run1/permanent_ckpt-86"
    assert not any(k.startswith("Unnamed") or k == "" for k in e.metrics)
    assert e.metrics["test_acc"] == pytest.approx(0.5)


def test_small_cnn_zoo_grey_is_the_plain_channel_mean_of_signed_pixels(tmp_path, monkeypatch):
    weights, layout = write_published_small_cnn_zoo(tmp_path / "cifar10", activation="selu")
    rgb = torch.rand(5, 3, 28, 28, generator=torch.Generator().manual_seed(0))  # in [0, 1], as torchvision gives
    asked = {}

    def fake_load_dataset(name, split="train", *, root=None, download=False):
        asked.update(name=name, split=split, root=root)
        return TensorDataset(rgb, torch.arange(5))

    monkeypatch.setattr("pgen.data.load_dataset", fake_load_dataset)
    zoo = load_zoo(tmp_path / "cifar10", data_root=tmp_path / "datasets")
    x, _ = zoo.dataset("test")[2]
    assert asked == {"name": "cifar10", "split": "test", "root": tmp_path / "datasets"}
    # the authors: /255 (torchvision's [0, 1]), to [-1, 1], then tf.math.reduce_mean over channels
    reference = np.mean(rgb[2].double().numpy() * 2 - 1, axis=0, keepdims=True)
    np.testing.assert_allclose(x.double().numpy(), reference, atol=1e-6)
    luminance = (0.299 * rgb[2, 0] + 0.587 * rgb[2, 1] + 0.114 * rgb[2, 2]) * 2 - 1
    assert float((x[0] - luminance).abs().max()) > 0.01  # what pgen did before differs

    # logits of the selu network on that input, against a numpy forward pass of the flat row
    model = zoo["2"].load_model()
    get = {var: weights[2].astype(np.float64)[a:b].reshape(shape) for var, a, b, shape in layout}
    selu = lambda v: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * np.expm1(v))
    h = reference
    for name in ("conv2d", "conv2d_1", "conv2d_2"):
        h = selu(tf_conv(h, get[f"sequential/{name}/kernel:0"], get[f"sequential/{name}/bias:0"]))
    ref = h.mean(axis=(1, 2)) @ get["sequential/dense/kernel:0"] + get["sequential/dense/bias:0"]
    with torch.no_grad():
        out = model(x[None]).double().numpy()[0]
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_small_cnn_zoo_with_dropout_has_the_authors_dropout_layers(tmp_path):
    write_small_cnn_zoo(tmp_path / "mnist", rows=2, bad_rows=())
    with gzip.open(tmp_path / "mnist" / "metrics.csv.gz", "wt") as fh:
        fh.write("config.activation,config.dataset,config.dropout,step,train_accuracy,test_accuracy\n")
        fh.write("relu,mnist,0.2,86,0.6,0.5\nrelu,mnist,0.0,86,0.6,0.5\n")
    zoo = load_zoo(tmp_path / "mnist")
    assert sum(isinstance(m, nn.Dropout) for m in zoo["0"].load_model()) == 3  # one after each conv block
    assert sum(isinstance(m, nn.Dropout) for m in zoo["1"].load_model()) == 0


def test_data_root_is_refused_where_a_format_keeps_its_data(tmp_path):
    task = Path(__file__).parent / "fixtures" / "pgdl" / "task_nin"  # a PGDL task: data inside, always
    with pytest.raises(ZooError, match="keeps its data in the zoo folder"):
        load_zoo(task, data_root=tmp_path)


# ---------------------------------------------------------------- Model Zoos


class AuthorsCNN(nn.Module):
    """Model Zoos' ``CNN`` as def_net.py describes it, with its ``module_list`` names:
    conv 5x5 (8), pool, act, [dropout], conv 5x5 (6), pool, act, [dropout], conv 2x2 (4),
    act, flatten, linear 36 -> 20, act, [dropout], linear 20 -> 10."""

    def __init__(self, dropout):
        super().__init__()
        act = nn.LeakyReLU
        blocks = [nn.Conv2d(1, 8, 5), nn.MaxPool2d(2, 2), act()] + ([nn.Dropout(dropout)] if dropout else [])
        blocks += [nn.Conv2d(8, 6, 5), nn.MaxPool2d(2, 2), act()] + ([nn.Dropout(dropout)] if dropout else [])
        blocks += [nn.Conv2d(6, 4, 2), act(), nn.Flatten(), nn.Linear(36, 20), act()]
        blocks += ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(20, 10)]
        self.module_list = nn.ModuleList(blocks)

    def forward(self, x):
        for m in self.module_list:
            x = m(x)
        return x


class Unpicklable:
    """Unpickling this creates a marker file: it proves whether params.pkl was ever opened."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_published_model_zoo(folder, kind="CNN", dropout=0.1, trials=2, data_folder=None):
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    data = {"trainset": TensorDataset(torch.rand(12, 1, 28, 28, generator=g), torch.randint(0, 10, (12,), generator=g)),
            "testset": TensorDataset(torch.rand(6, 1, 28, 28, generator=g), torch.randint(0, 10, (6,), generator=g)),
            "valset": TensorDataset(torch.rand(4, 1, 28, 28, generator=g), torch.randint(0, 10, (4,), generator=g)),
            "dataset_seed": 42}
    (data_folder or folder).mkdir(exist_ok=True)
    torch.save(data, (data_folder or folder) / "dataset.pt")
    nets = {}
    for t in range(trials):
        trial = folder / f"NN_tune_trainable_{t:05d}_{t}_seed={t}"
        trial.mkdir()
        params = {"model::type": kind, "model::nlin": "leakyrelu", "model::dropout": dropout,
                  "model::channels_in": 1, "model::o_dim": 10, "model::init_type": "kaiming_uniform",
                  "optim::lr": 1e-3 * (t + 1), "seed": t}
        (trial / "params.json").write_text(json.dumps(params))
        with (trial / "params.pkl").open("wb") as fh:
            pickle.dump(Unpicklable(folder / f"UNPICKLED_{t}"), fh)
        lines = [json.dumps({"training_iteration": ep, "train_acc": 0.1 * ep, "val_acc": 0.085 * ep,
                             "test_acc": 0.08 * ep, "train_loss": 2 - 0.1 * ep, "val_loss": 2.05 - 0.1 * ep,
                             "test_loss": 2.1 - 0.1 * ep}) for ep in range(1, 4)]
        (trial / "result.json").write_text("\n".join(lines) + "\n")
        for ep in (0, 3):
            torch.manual_seed(10 * t + ep)
            net = AuthorsCNN(dropout) if kind == "CNN" else None
            (trial / f"checkpoint_{ep:06d}").mkdir()
            torch.save(net.state_dict(), trial / f"checkpoint_{ep:06d}" / "checkpoints")
            nets[(t, ep)] = net.eval()
    return nets, data


def test_model_zoos_as_published(tmp_path):
    nets, data = write_published_model_zoo(tmp_path / "zoo")
    zoo = load_zoo(tmp_path / "zoo")
    assert [e.id for e in zoo] == ["NN_tune_trainable_00000_0_seed=0@0", "NN_tune_trainable_00000_0_seed=0@3",
                                   "NN_tune_trainable_00001_1_seed=1@0", "NN_tune_trainable_00001_1_seed=1@3"]
    e = zoo["NN_tune_trainable_00001_1_seed=1@3"]
    assert e.metrics["val_acc"] == pytest.approx(0.255) and e.metrics["val_loss"] == pytest.approx(1.75)
    x = data["trainset"].tensors[0]
    model = e.load_model()
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), nets[(1, 3)](x).numpy(), atol=1e-6)
        np.testing.assert_allclose(e.load_model(initial=True)(x).numpy(), nets[(1, 0)](x).numpy(), atol=1e-6)
    # the authors' layers, dropout where they put it and nowhere else
    assert [type(m).__name__ for m in model] == [type(m).__name__ for m in nets[(1, 3)].module_list]
    assert len(zoo.dataset("val")) == 4 and torch.equal(zoo.dataset("test").tensors[0], data["testset"].tensors[0])
    assert not list((tmp_path / "zoo").glob("UNPICKLED_*"))  # params.pkl was never unpickled


def test_model_zoos_resnet18_is_built_from_model_type(tmp_path):
    import torchvision

    folder = tmp_path / "zoo"
    folder.mkdir()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g)
    torch.save({"trainset": TensorDataset(x, torch.tensor([1, 2])), "testset": TensorDataset(x, torch.tensor([1, 2]))},
               folder / "dataset.pt")
    trial = folder / "NN_tune_trainable_00000_0"
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps({"model::type": "Resnet18", "model::channels_in": 3,
                                                    "model::o_dim": 10, "model::nlin": "relu", "model::dropout": 0}))
    # reference: torchvision's ResNet-18 changed as def_net.py describes (3x3 stride-1 conv1, no bias, no max-pool)
    torch.manual_seed(3)
    ref = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=10)
    ref.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    ref.maxpool = nn.Identity()
    for m in ref.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    (trial / "checkpoint_000001").mkdir()
    torch.save(ref.state_dict(), trial / "checkpoint_000001" / "checkpoints")
    start = time.perf_counter()
    model = load_zoo(folder)["NN_tune_trainable_00000_0@1"].load_model()
    assert time.perf_counter() - start < 20  # no search over pooling patterns
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), ref.eval()(x).numpy(), atol=1e-5)


def test_model_zoos_sparsified_twins_are_refused_with_the_reason(tmp_path):
    write_published_model_zoo(tmp_path / "zoo", trials=1)
    trial = next((tmp_path / "zoo").glob("NN_tune_*"))
    params = json.loads((trial / "params.json").read_text())
    (trial / "params.json").write_text(json.dumps({**params, "model::type": "CNN_ARD"}))
    with pytest.raises(ZooError, match="sparsified twin .*variance parameters"):
        load_zoo(tmp_path / "zoo")[0].load_model()


def test_model_zoos_without_model_type_fall_back_boundedly(tmp_path):
    nets, data = write_model_zoos(tmp_path / "old")  # no model::type: shape inference still works
    assert load_zoo(tmp_path / "old")[1].load_model() is not None
    from pgen.zoo.modelzoos import infer_sequential

    state = {f"l{i}.weight": torch.zeros(4, 4, 3, 3) for i in range(20)} | {"fc.weight": torch.zeros(10, 4)}
    start = time.perf_counter()
    with pytest.raises(ZooError, match="name the architecture in model::type"):
        infer_sequential(state, (4, 32, 32))
    assert time.perf_counter() - start < 1


def test_model_zoos_data_root_and_what_dataset_pt_may_hold(tmp_path):
    write_published_model_zoo(tmp_path / "zoo", trials=1, data_folder=tmp_path / "data")
    with pytest.raises(ZooError, match="dataset.pt is missing"):
        load_zoo(tmp_path / "zoo").dataset("train")
    zoo = load_zoo(tmp_path / "zoo", data_root=tmp_path / "data")
    assert len(zoo.dataset("train")) == 12
    from pgen.cli import main  # the way a user passes it

    assert main(["score", str(tmp_path / "zoo"), "--out", str(tmp_path / "out"), "--samples", "10",
                 "--data-root", str(tmp_path / "data")]) == 0
    assert main(["zoo", "info", str(tmp_path / "zoo"), "--data-root", str(tmp_path / "data")]) == 0

    # anything but tensors and TensorDatasets stays refused
    from test_zoo import PickledObject

    torch.save({"trainset": PickledObject()}, tmp_path / "data" / "dataset.pt")
    with pytest.raises(ZooError, match="does not unpickle"):
        load_zoo(tmp_path / "zoo", data_root=tmp_path / "data").dataset("train")
