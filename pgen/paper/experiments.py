"""Training runs of the paper study and the P-vectors and spectra collected from them.

Four learning paradigms, as in Liu et al. 2022 (abstract, A.0, A.3): two supervised
classifiers (an MLP and a CNN), an autoencoder whose bottleneck code is the feature, and a
small SimCLR-style contrastive model (NT-Xent over two views made with pgen's augmentation
policy; the feature is the encoder output, before the projection head, as in SimCLR).
Every P-vector is taken over the same samples in the same order: the first ``samples``
of the test split (model-to-model angles, as the paper's A.2 uses the test sets) and the
first ``samples`` of the training split (model-to-data angles, A.4).

Checkpoints: the initial weights, every iteration of epoch 1 and the end of every later
epoch. At each one the feature layer's top-5 left singular vectors (epoch checkpoints) or
P-vector (iterations) are stored for both centerings, with the singular values and total
energy; at epoch checkpoints the classifiers' hidden layers too (for A.5).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pgen.augment import policy_for, pseudo_test_set
from pgen.data import dataset_arrays, dataset_info, load_dataset
from pgen.errors import InputError
from pgen.features import extract_features
from pgen.models import build_model
from pgen.pvector import angle, top_singular_vectors
from pgen.paths import replace_link

__all__ = ["PARADIGMS", "PaperSettings", "RunResult", "run_experiment", "load_run", "save_run"]

PARADIGMS = ("mlp", "cnn", "autoencoder", "contrastive")
CLASSIFIERS = ("mlp", "cnn")
TOP_K = 5
CENTERINGS = (("centered", True), ("uncentered", False))


@dataclass(frozen=True)
class PaperSettings:
    """Every setting of the study; stated beside the claims table and stored with the runs.

    Parameters
    ----------
    dataset : str, default="mnist5k"
        The dataset the study trains on.
    seeds : int, default=3
        Runs per paradigm.
    epochs : int, default=15
        Training epochs.
    samples : int, default=1000
        Samples the P-vectors are over.
    train_samples : int, optional
        Train on the first N of the training split (None: all).
    batch_size : int, default=128
        Training batch size.
    classifier_lr : float, default=0.05
        SGD with momentum 0.9, the classifiers.
    unsupervised_lr : float, default=1e-3
        Adam, the autoencoder and the contrastive model.
    temperature : float, default=0.5
        NT-Xent temperature.
    width : int, default=256
        Hidden width.
    code : int, default=64
        Autoencoder bottleneck; contrastive projection size.
    device : str, default="cpu"
        Where the runs train.
    bootstrap : int, default=50
        Resamples of the sample set for the stability study.
    root : str, optional
        Folder of a torchvision dataset (cifar10, ...).
    paradigms : tuple of str
        The paradigms trained (default all four).
    """

    dataset: str = "mnist5k"
    seeds: int = 3
    epochs: int = 15
    samples: int = 1000
    train_samples: int | None = None  # train on the first N of the training split (None: all)
    batch_size: int = 128
    classifier_lr: float = 0.05  # SGD, momentum 0.9 (the classifiers)
    unsupervised_lr: float = 1e-3  # Adam (autoencoder, contrastive)
    temperature: float = 0.5  # NT-Xent
    width: int = 256
    code: int = 64  # autoencoder bottleneck; contrastive projection size
    device: str = "cpu"
    bootstrap: int = 50  # resamples of the sample set for the stability study
    root: str | None = None  # folder of a torchvision dataset (cifar10, cifar100, ...)
    paradigms: tuple[str, ...] = PARADIGMS

    def to_json(self) -> dict:
        out = asdict(self)
        out["paradigms"] = list(self.paradigms)
        return out


# ------------------------------------------------------------------------- the models


class Autoencoder(nn.Module):
    """MLP autoencoder; the feature is the bottleneck ``code`` (output of ``encoder``)."""

    def __init__(self, input_shape, width: int, code: int):
        super().__init__()
        d = math.prod(input_shape)
        self.input_shape = tuple(input_shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, width), nn.ReLU(), nn.Linear(width, code))
        self.decoder = nn.Sequential(nn.Linear(code, width), nn.ReLU(), nn.Linear(width, d))

    def forward(self, x):
        return self.decoder(self.encoder(x)).view(len(x), *self.input_shape)


class Contrastive(nn.Module):
    """SimCLR-style encoder + projection head; the feature is the encoder output."""

    def __init__(self, input_shape, width: int, code: int):
        super().__init__()
        d = math.prod(input_shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, code))

    def forward(self, x):
        return self.head(self.encoder(x))


def build_paradigm(paradigm: str, info, s: PaperSettings) -> tuple[nn.Module, str, list[str]]:
    """(model, feature layer, hidden layers in depth order for A.5; empty when not studied)."""
    if paradigm == "mlp":
        model = build_model("mlp", input_shape=info.input_shape, num_classes=info.num_classes, width=s.width, depth=3)
    elif paradigm == "cnn":
        model = build_model("cnn", input_shape=info.input_shape, num_classes=info.num_classes, width=16, depth=2,
                            hidden=s.width)
    elif paradigm == "autoencoder":
        model = Autoencoder(info.input_shape, s.width, s.code)
        return model, "encoder", []
    elif paradigm == "contrastive":
        model = Contrastive(info.input_shape, s.width, s.code)
        return model, "encoder", []
    else:
        raise InputError(f"unknown paradigm {paradigm!r}; known: {', '.join(PARADIGMS)}")
    relus = [name for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
    return model, relus[-1], relus  # the last ReLU output is the penultimate feature


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalized-temperature cross-entropy over the 2N views of a batch."""
    z = nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = len(z1)
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return nn.functional.cross_entropy(sim, target)


# ------------------------------------------------------------------------ one run


@dataclass
class RunResult:
    """Everything one training run leaves: P-vectors, spectra and checkpoint metrics."""

    run: str
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (k, n) float32
    spectra: list[dict] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)
    bootstrap: list[dict] = field(default_factory=list)


def vector_key(run: str, step: int, layer: str, samples: str, centering: str) -> str:
    return f"{run}|s{step}|{layer}|{samples}|{centering}"


def _features(model, x, layers, device):
    ds = torch.utils.data.TensorDataset(x, torch.zeros(len(x), dtype=torch.long))
    feats = extract_features(model, ds, layers=layers, batch_size=1000, device=device)
    return {k: v.reshape(len(x), -1) for k, v in feats.items()}


def run_experiment(paradigm: str, seed: int, s: PaperSettings, data: dict) -> RunResult:
    """Train one model of ``paradigm`` from ``seed`` and collect everything at every checkpoint.

    ``data`` holds the tensors: ``x_train, y_train, x_test, y_test`` (full splits) and the
    fixed sample sets ``probe_test, probe_train``.
    """
    info = data["info"]
    run = f"{paradigm}-seed{seed}"
    torch.manual_seed(seed)
    model, feature_layer, depth_layers = build_paradigm(paradigm, info, s)
    model.to(s.device)
    result = RunResult(run)
    gen = torch.Generator().manual_seed(seed)
    x_train, y_train = data["x_train"], data["y_train"]
    n = len(x_train)
    iters_per_epoch = math.ceil(n / s.batch_size)
    if paradigm in CLASSIFIERS:
        opt = torch.optim.SGD(model.parameters(), lr=s.classifier_lr, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=s.unsupervised_lr)
    policy = policy_for(info.kind)

    def loss_of(xb, yb, step):
        xb, yb = xb.to(s.device), yb.to(s.device)
        if paradigm in CLASSIFIERS:
            return nn.functional.cross_entropy(model(xb), yb)
        if paradigm == "autoencoder":
            return nn.functional.mse_loss(model(xb), xb)
        # two views of the batch, each drawn from its own seeded generator
        views = [pseudo_test_set(xb.cpu(), yb.cpu(), policy, seed=seed * 1_000_003 + 2 * step + v)[0].to(s.device)
                 for v in (0, 1)]
        return nt_xent(model(views[0]), model(views[1]), s.temperature)

    def collect(step: int, epoch: int, train_loss: float):
        model.eval()
        is_epoch = step % iters_per_epoch == 0  # the initial weights (step 0) and every epoch end
        layers = [feature_layer] + (depth_layers if is_epoch else [])
        layers = list(dict.fromkeys(layers))
        with torch.no_grad():
            row = {"run": run, "paradigm": paradigm, "seed": seed, "step": step, "epoch": epoch,
                   "iteration_in_epoch1": step if step <= iters_per_epoch else np.nan,
                   "is_epoch_end": bool(is_epoch), "train_loss": train_loss}
            if paradigm in CLASSIFIERS:
                for split in ("train", "test"):
                    logits = model(data[f"x_{split}"].to(s.device)).float().cpu()
                    y = data[f"y_{split}"]
                    row[f"{split}_acc"] = float((logits.argmax(1) == y).float().mean())
                    row[f"{split}_ce"] = float(nn.functional.cross_entropy(logits, y))
            elif paradigm == "autoencoder":
                x = data["x_test"].to(s.device)
                row["test_mse"] = float(nn.functional.mse_loss(model(x), x))
            for samples in ("test", "train"):
                feats = _features(model, data[f"probe_{samples}"], layers, s.device)
                for layer, f in feats.items():
                    name = "feature" if layer == feature_layer else layer
                    k = TOP_K if (layer == feature_layer and is_epoch) else 1
                    if layer != feature_layer and samples == "test":
                        continue  # the layer study is about model vs data: training samples only
                    for tag, centered in CENTERINGS:
                        u, sv, total = top_singular_vectors(f, k=max(k, 2), center=centered)
                        result.vectors[vector_key(run, step, name, samples, tag)] = u[:, :k].T.astype(np.float32)
                        result.spectra.append({"run": run, "step": step, "layer": name, "samples": samples,
                                               "centering": tag, "n_features": f.shape[1], "total_energy": total,
                                               **{f"s{j + 1}": float(v) for j, v in enumerate(sv)}})
            result.checkpoints.append(row)
        model.train()

    collect(0, 0, math.nan)
    step = 0
    for epoch in range(1, s.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen)
        losses = []
        for a in range(0, n, s.batch_size):
            idx = order[a : a + s.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_of(x_train[idx], y_train[idx], step)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            if epoch == 1 and step < iters_per_epoch:
                collect(step, epoch, losses[-1])
        collect(step, epoch, float(np.mean(losses)))
    _bootstrap(model, feature_layer, run, s, data, result)
    return result


def bootstrap_resamples(data: dict, n_resamples: int) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """The resamples of the training sample set and the data P-vector of each, both
    centerings: drawn once per study (kept in ``data``) and shared by every run, so that the
    runs' bootstrap angles compare and the data side is not recomputed per run."""
    key = ("bootstrap", n_resamples)
    if key not in data:
        x = data["probe_train"].reshape(len(data["probe_train"]), -1).numpy().astype(np.float64)
        rng = np.random.default_rng(12345)
        resamples = []
        for _ in range(n_resamples):
            idx = rng.integers(0, len(x), len(x))
            resamples.append((idx, {tag: top_singular_vectors(x[idx], k=2, center=centered)[0][:, 0]
                                    for tag, centered in CENTERINGS}))
        data[key] = resamples
    return data[key]


def _bootstrap(model, feature_layer, run, s: PaperSettings, data, result: RunResult) -> None:
    """How far the final model-to-data angle moves when the sample set is resampled."""
    if s.bootstrap <= 0:
        return
    model.eval()
    with torch.no_grad():
        f = _features(model, data["probe_train"], [feature_layer], s.device)[feature_layer].astype(np.float64)
    for b, (idx, data_vectors) in enumerate(bootstrap_resamples(data, s.bootstrap)):
        for tag, centered in CENTERINGS:
            um = top_singular_vectors(f[idx], k=2, center=centered)[0][:, 0]
            result.bootstrap.append({"run": run, "resample": b, "centering": tag,
                                     "angle_to_data": angle(um, data_vectors[tag])})


# ---------------------------------------------------------------------- persistence


def save_run(folder: Path, r: RunResult) -> None:
    """One file per finished run, written atomically: a rerun skips it (resume)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = replace_link(folder / f".{r.run}.tmp.npz")
    tables = {name: pd.DataFrame(rows).to_json(orient="records") for name, rows in
              (("spectra", r.spectra), ("checkpoints", r.checkpoints), ("bootstrap", r.bootstrap))}
    np.savez_compressed(tmp, **{f"v::{k}": v for k, v in r.vectors.items()},
                        tables=np.array(json.dumps(tables)))
    tmp.replace(folder / f"{r.run}.npz")


def load_run(path: Path) -> RunResult:
    with np.load(path, allow_pickle=False) as z:
        vectors = {k[3:]: z[k] for k in z.files if k.startswith("v::")}
        tables = json.loads(str(z["tables"]))
    r = RunResult(path.stem, vectors)
    for name in ("spectra", "checkpoints", "bootstrap"):
        setattr(r, name, json.loads(tables[name]))
    return r


def load_data(s: PaperSettings) -> dict:
    info = dataset_info(s.dataset)
    train = load_dataset(s.dataset, "train", root=s.root)
    test = load_dataset(s.dataset, "test", root=s.root)
    x_train, y_train = dataset_arrays(train)
    x_test, y_test = dataset_arrays(test)
    if s.train_samples is not None:
        if s.train_samples < 10:
            raise InputError(f"train_samples must be at least 10; got {s.train_samples}")
        x_train, y_train = x_train[: s.train_samples], y_train[: s.train_samples]
    n = min(s.samples, len(x_test), len(x_train))
    if n < 10:
        raise InputError(f"--samples must be at least 10; got {s.samples}")
    return {"info": info, "x_train": x_train.float(), "y_train": y_train, "x_test": x_test.float(), "y_test": y_test,
            "probe_test": x_test[:n].float(), "probe_train": x_train[:n].float()}


def data_vectors(data: dict) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Data P-vectors (top-5 left singular vectors of the raw inputs) of both sample sets."""
    vectors, spectra = {}, []
    for samples in ("test", "train"):
        x = data[f"probe_{samples}"].reshape(len(data[f"probe_{samples}"]), -1).numpy()
        for tag, centered in CENTERINGS:
            u, sv, total = top_singular_vectors(x, k=TOP_K, center=centered)
            vectors[f"data|s0|input|{samples}|{tag}"] = u.T.astype(np.float32)
            spectra.append({"run": "data", "step": 0, "layer": "input", "samples": samples, "centering": tag,
                            "n_features": x.shape[1], "total_energy": total,
                            **{f"s{j + 1}": float(v) for j, v in enumerate(sv)}})
    return vectors, spectra
