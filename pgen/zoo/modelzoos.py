"""Model Zoos (Schurholt et al. 2022): Ray Tune trial folders.

An experiment folder holds ``dataset.pt`` (the exact data) and one folder per trial::

    <trial>/params.json              the trial's config ("model::nlin", "optim::lr", "seed", ...)
    <trial>/result.json              JSON lines, one per epoch: train/test loss and acc
    <trial>/checkpoint_<ep>/checkpoints   a torch state_dict at that epoch

Every checkpoint is an entry (id ``<trial>@<epoch>``), so one zoo covers training
dynamics; epoch 0, when present, is each trial's initial weights. Checkpoints load with
``torch.load(weights_only=True)``; ``dataset.pt`` too, so it must hold tensors (a dict
with ``trainset``/``testset``, each ``{"data": tensor, "targets": tensor}`` or a
``(data, targets)`` pair): pgen does not unpickle arbitrary dataset objects.

The architecture is read off the checkpoint: its 4-D weights are Conv2d layers and its
2-D weights Linear layers, in order, with the activation of ``model::nlin`` after each
layer but the last, ``model::dropout`` after each activation, and 2x2 max-pooling after
the convolutions whose pooling makes the flattened conv output match the first Linear
layer's input size (pooling earliest first when several patterns fit).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
from torch import nn

from pgen.zoo.base import Zoo, ZooEntry, ZooError
from pgen.zoo.native import load_state_dict

__all__ = ["ModelZoosZoo", "infer_sequential"]

_NONLIN = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leakyrelu": nn.LeakyReLU,
           "gelu": nn.GELU, "silu": nn.SiLU}


def infer_sequential(state: dict, input_shape, nlin="relu", dropout=0.0, source="checkpoint") -> tuple[nn.Sequential, list]:
    """Rebuild a conv/linear stack from a state dict's weight shapes (see module doc)."""
    weights = [(k, v) for k, v in state.items() if k.endswith("weight") and v.ndim in (2, 4)]
    if not weights:
        raise ZooError(f"{source}: no Conv2d or Linear weights found")
    act = _NONLIN.get(str(nlin).lower())
    if act is None:
        raise ZooError(f"{source}: unsupported nonlinearity {nlin!r}; known: {sorted(_NONLIN)}")
    convs = [v for _, v in weights if v.ndim == 4]
    linears = [v for _, v in weights if v.ndim == 2]
    if [v.ndim for _, v in weights] != [4] * len(convs) + [2] * len(linears):
        raise ZooError(f"{source}: expected all Conv2d layers before all Linear layers")
    c, h, w = input_shape
    pooling = [False] * len(convs)
    if convs:
        target = linears[0].shape[1] if linears else None
        found = None
        for pattern in sorted(itertools.product([True, False], repeat=len(convs)), key=lambda p: [not x for x in p]):
            hh, ww = h, w
            for kernel, pool in zip(convs, pattern):
                hh, ww = hh - kernel.shape[2] + 1, ww - kernel.shape[3] + 1
                if pool:
                    hh, ww = hh // 2, ww // 2
            if hh > 0 and ww > 0 and (target is None or convs[-1].shape[0] * hh * ww == target):
                found = pattern
                break
        if found is None:
            raise ZooError(f"{source}: no pooling pattern maps input {tuple(input_shape)} to the first Linear's "
                           f"{target} inputs")
        pooling = list(found)
    layers: list[nn.Module] = []
    params: list[nn.Module] = []
    n_param = len(convs) + len(linears)
    for i, kernel in enumerate(convs):
        conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], tuple(kernel.shape[2:]))
        layers.append(conv)
        params.append(conv)
        if pooling[i]:
            layers.append(nn.MaxPool2d(2))
        layers.append(act())
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Flatten())
    for j, kernel in enumerate(linears):
        lin = nn.Linear(kernel.shape[1], kernel.shape[0])
        layers.append(lin)
        params.append(lin)
        if len(convs) + j + 1 < n_param:
            layers.append(act())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers), params


def _load_by_order(params: list[nn.Module], state: dict, source: str, model_id: str) -> None:
    tensors = [v for k, v in state.items() if k.endswith(("weight", "bias")) and v.ndim in (1, 2, 4)]
    expected = [t for m in params for t in (m.weight, m.bias)]
    if len(tensors) != len(expected):
        raise ZooError(f"model {model_id}: {source} has {len(tensors)} weight/bias tensors, architecture needs {len(expected)}")
    for dst, src in zip(expected, tensors):
        if dst.shape != src.shape:
            raise ZooError(f"model {model_id}: {source}: tensor of shape {tuple(src.shape)} where {tuple(dst.shape)} is needed")
        dst.data.copy_(src)


class ModelZoosZoo(Zoo):
    format = "model-zoos"

    def __init__(self, root, name=None):
        super().__init__(root, name)
        self._data = None

    @staticmethod
    def detect(path: Path) -> bool:
        return any(p.is_dir() and (p / "params.json").is_file() for p in path.iterdir())

    def _trials(self):
        return sorted(p for p in self.root.iterdir() if p.is_dir() and (p / "params.json").is_file())

    def _entries(self):
        entries = []
        for trial in self._trials():
            try:
                params = json.loads((trial / "params.json").read_text())
            except json.JSONDecodeError as exc:
                raise ZooError(f"{trial / 'params.json'} is not valid JSON: {exc}") from exc
            results = {}
            result_path = trial / "result.json"
            if result_path.exists():
                for line in result_path.read_text().splitlines():
                    if line.strip():
                        try:
                            r = json.loads(line)
                        except json.JSONDecodeError:
                            continue  # a torn last line of a live run
                        ep = r.get("training_iteration", r.get("epoch"))
                        if ep is not None:
                            results[int(ep)] = r
            epochs = sorted(int(p.name.split("_", 1)[1]) for p in trial.glob("checkpoint_*")
                            if p.name.split("_", 1)[1].isdigit())
            hp = {k: v for k, v in params.items() if not isinstance(v, (dict, list))}
            for ep in epochs:
                r = results.get(ep, {})
                metrics = {"epoch": ep}
                for src, dst in (("train_acc", "train_acc"), ("test_acc", "test_acc"),
                                 ("train_loss", "train_loss"), ("test_loss", "test_loss")):
                    if src in r:
                        metrics[dst] = r[src]
                entries.append(ZooEntry(f"{trial.name}@{ep}", hp, metrics, self,
                                        {"trial": trial, "epoch": ep, "has_initial": 0 in epochs}))
        return entries

    def _checkpoint(self, trial: Path, epoch: int) -> Path:
        folder = trial / f"checkpoint_{epoch}"
        for name in ("checkpoints", "checkpoint", "model.pt"):
            if (folder / name).is_file():
                return folder / name
        raise ZooError(f"{folder} has no checkpoint file")

    def _load_model(self, entry, initial=False):
        trial, epoch = entry.extra["trial"], entry.extra["epoch"]
        if initial:
            if not entry.extra["has_initial"]:
                raise ZooError(f"model {entry.id}: trial {trial.name} has no checkpoint_0 (initial weights)")
            epoch = 0
        path = self._checkpoint(trial, epoch)
        state = load_state_dict(path)
        x, _ = self._split("train")
        nlin = entry.hparams.get("model::nlin", "relu")
        dropout = float(entry.hparams.get("model::dropout", 0.0) or 0.0)
        model, params = infer_sequential(state, tuple(x.shape[1:]), nlin, dropout, source=str(path))
        _load_by_order(params, state, str(path), entry.id)
        return model

    def _split(self, split):
        if self._data is None:
            path = self.root / "dataset.pt"
            if not path.exists():
                raise ZooError(f"{path} is missing: the Model Zoos format keeps the data there")
            try:
                self._data = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ZooError(f"{path} cannot be loaded as tensors (pgen does not unpickle dataset objects; "
                               f"save it as a dict of tensors): {exc}") from exc
        key = {"train": "trainset", "test": "testset"}[split]
        part = self._data.get(key) if isinstance(self._data, dict) else None
        if isinstance(part, dict):
            part = (part.get("data"), part.get("targets"))
        if not (isinstance(part, (tuple, list)) and len(part) == 2 and all(isinstance(t, torch.Tensor) for t in part)):
            raise ZooError(f"{self.root / 'dataset.pt'}: {key} must be (data, targets) tensors")
        x, y = part
        x = x.float()
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.permute(0, 3, 1, 2)
        return x, y.long()

    def dataset(self, split="train"):
        return torch.utils.data.TensorDataset(*self._split(split))
