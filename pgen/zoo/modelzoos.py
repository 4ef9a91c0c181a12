"""Model Zoos (Schurholt et al., NeurIPS 2022 Datasets and Benchmarks): Ray Tune trial folders.

Read as the authors lay them out and read them (ModelZoos/ModelZooDataset:
``code/model_definitions/def_net.py`` for the architectures,
``code/checkpoints_to_datasets/dataset_base.py`` for the folders). An experiment folder
holds ``dataset.pt`` and one folder per trial::

    <trial>/params.json                      the config ("model::type", "model::nlin", ...)
    <trial>/params.pkl                       the same, pickled: never opened by pgen
    <trial>/result.json                      JSON lines, one per epoch: train/val/test loss, acc
    <trial>/checkpoint_000002/checkpoints    a torch state_dict (``checkpoint_2`` also read)

Every checkpoint is an entry (id ``<trial>@<epoch>``), so one zoo covers training
dynamics; epoch 0, when present, is each trial's initial weights. Checkpoints load with
``torch.load(weights_only=True)``. ``dataset.pt`` as published is a dict of
``torch.utils.data.TensorDataset`` (``trainset``, ``testset``, ``valset``, plus
``dataset_seed``): it loads with ``weights_only=True`` allowing that one class and no
other; a dict of tensors (``{"data", "targets"}`` or ``(data, targets)``) is read too.
The tensors are used as stored: they are what the trials were trained and evaluated on.

The architecture comes from ``model::type``, built as the authors' classes are:

* ``CNN`` / ``CNN2`` (28x28 inputs): three convolutions (5x5, 5x5, 2x2; 8-6-4 resp. 6-9-6
  channels), 2x2 max-pooling after the first two, then Linear(.., 20), Linear(20, 10);
  the activation ``model::nlin`` after every layer but the last; with ``model::dropout``
  > 0 a Dropout after the first two conv blocks and the hidden Linear (none after the
  third convolution);
* ``CNN3`` (32x32): three 3x3 convolutions (16-32-15) each with pooling, Linear(60, 20),
  Linear(20, 10); a Dropout after every block, whatever the rate (as in the code);
* ``MLP``: Linear layers ``model::i_dim`` -> ``model::h_dim`` ... -> ``model::o_dim``;
* ``Resnet18`` (any case): torchvision's ``ResNet(BasicBlock, [2, 2, 2, 2])`` with a 3x3
  stride-1 ``conv1`` without bias and no max-pool; ``model::nlin`` and dropout unused.

The sparsified twins (``CNN_ARD`` and other variational-dropout types) are refused: their
layers hold per-weight variance parameters and are evaluated with masks derived from
them, which pgen does not build. Without ``model::type`` the layer stack is inferred
from the checkpoint's weight shapes (a fallback, bounded: at most 12 convolutions).
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import torch
from torch import nn

from pgen.zoo.base import Zoo, ZooEntry, ZooError, read_json, zoo_file
from pgen.zoo.native import load_state_dict

__all__ = ["ModelZoosZoo", "build_architecture", "infer_sequential"]

_NONLIN = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leakyrelu": nn.LeakyReLU,
           "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU, "celu": nn.CELU}
_CHECKPOINT = re.compile(r"checkpoint_(\d+)$")
MAX_INFERRED_CONVS = 12  # 2^12 pooling patterns at most


def _act(nlin, source):
    act = _NONLIN.get(str(nlin).lower())
    if act is None:
        raise ZooError(f"{source}: unsupported nonlinearity {nlin!r}; known: {sorted(_NONLIN)}")
    return act()


def _small_cnn(channels_in, convs, hidden_in, nlin, dropout, source, pool_last=False, always_dropout=False):
    """Conv blocks (conv, [pool], activation, [dropout]) then Linear(hidden_in, 20), Linear(20, 10)."""
    layers: list[nn.Module] = []
    c = channels_in
    drop = dropout > 0 or always_dropout
    for i, (out, k) in enumerate(convs):
        last = i == len(convs) - 1
        layers.append(nn.Conv2d(c, out, k))
        if not last or pool_last:
            layers.append(nn.MaxPool2d(2, 2))
        layers.append(_act(nlin, source))
        if drop and (not last or pool_last):
            layers.append(nn.Dropout(dropout))
        c = out
    layers += [nn.Flatten(), nn.Linear(hidden_in, 20), _act(nlin, source)]
    if drop:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(20, 10))
    return nn.Sequential(*layers)


def _resnet18(channels_in, num_classes):
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    model.conv1 = nn.Conv2d(channels_in, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def build_architecture(params: dict, source: str = "params.json") -> nn.Module | None:
    """The authors' architecture named by ``model::type`` (see the module docstring), or
    None when the config names none. Built first on torch's meta device to check its
    arguments and count its parameters (:func:`pgen.models.parameter_limit`)."""
    from pgen.models import _bounded

    if params.get("model::type") is None:
        return None
    return _bounded(lambda: _architecture(params, source), source)


def _architecture(params: dict, source: str) -> nn.Module:
    kind = params.get("model::type")
    if kind is None:
        return None
    kind = str(kind)
    nlin = params.get("model::nlin", "leakyrelu")
    dropout = float(params.get("model::dropout", 0.0) or 0.0)
    channels = int(params.get("model::channels_in", 1))
    if "ARD" in kind.upper() or kind.upper().endswith("_VD"):
        raise ZooError(f"{source}: model::type {kind!r} is a sparsified twin (variational dropout / ARD): its "
                       "layers carry per-weight variance parameters beside the weights and the authors evaluate "
                       "it with a mask derived from them; pgen does not build such layers, so it refuses the "
                       "trial rather than score a different network")
    if kind == "CNN":
        return _small_cnn(channels, [(8, 5), (6, 5), (4, 2)], 36, nlin, dropout, source)
    if kind == "CNN2":
        return _small_cnn(channels, [(6, 5), (9, 5), (6, 2)], 54, nlin, dropout, source)
    if kind == "CNN3":
        return _small_cnn(channels, [(16, 3), (32, 3), (15, 3)], 60, nlin, dropout, source, pool_last=True,
                          always_dropout=True)
    if kind.lower() == "resnet18":
        return _resnet18(channels, int(params.get("model::o_dim", 10)))
    if kind == "MLP":
        dims = params.get("model::h_dim", [])
        dims = [int(params["model::i_dim"])] + (list(dims) if isinstance(dims, list) else [int(dims)])
        bias = bool(params.get("model::use_bias", True))
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b, bias=bias), _act(nlin, source)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(dims[-1], int(params.get("model::o_dim", 10)), bias=bias))
        return nn.Sequential(*layers)
    raise ZooError(f"{source}: unknown model::type {kind!r}; pgen builds CNN, CNN2, CNN3, MLP and Resnet18")


def _load_exact(model: nn.Module, state: dict, source: str, model_id: str) -> None:
    """Load a checkpoint into the authors' architecture: keys as theirs (``module_list.i``
    becomes the Sequential's ``i``), every tensor present and of the right shape."""
    renamed = {re.sub(r"^(model\.)?(module_list\.)?", "", k): v for k, v in state.items()}
    try:
        model.load_state_dict(renamed, strict=True)
    except RuntimeError as exc:
        raise ZooError(f"model {model_id}: {source} does not fit its model::type: {exc}") from exc


def infer_sequential(state: dict, input_shape, nlin="relu", dropout=0.0, source="checkpoint") -> tuple[nn.Sequential, list]:
    """Fallback for configs without ``model::type``: a conv/linear stack from the weight
    shapes (4-D weights Conv2d, 2-D Linear, in order; the activation after every layer but
    the last; 2x2 max-pooling after the convolutions whose pooling makes the flattened
    conv output match the first Linear's input, pooling earliest first)."""
    weights = [(k, v) for k, v in state.items() if k.endswith("weight") and v.ndim in (2, 4)]
    if not weights:
        raise ZooError(f"{source}: no Conv2d or Linear weights found")
    convs = [v for _, v in weights if v.ndim == 4]
    linears = [v for _, v in weights if v.ndim == 2]
    if [v.ndim for _, v in weights] != [4] * len(convs) + [2] * len(linears):
        raise ZooError(f"{source}: expected all Conv2d layers before all Linear layers")
    if len(convs) > MAX_INFERRED_CONVS:
        raise ZooError(f"{source}: {len(convs)} convolutions and no model::type in params.json: pgen infers plain "
                       f"conv stacks of at most {MAX_INFERRED_CONVS} layers; name the architecture in model::type")
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
        layers.append(_act(nlin, source))
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Flatten())
    for j, kernel in enumerate(linears):
        lin = nn.Linear(kernel.shape[1], kernel.shape[0])
        layers.append(lin)
        params.append(lin)
        if len(convs) + j + 1 < n_param:
            layers.append(_act(nlin, source))
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


_METRICS = ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss", "test_loss")


class ModelZoosZoo(Zoo):
    format = "model-zoos"

    def __init__(self, root, name=None, data_root=None):
        super().__init__(root, name)
        self.data_root = Path(data_root) if data_root is not None else None
        self._data = None

    @staticmethod
    def detect(path: Path) -> bool:
        return any(p.is_dir() and (p / "params.json").is_file() for p in path.iterdir())

    def _trials(self):
        return sorted(p for p in self.root.iterdir() if p.is_dir() and (p / "params.json").is_file())

    def _entries(self):
        entries = []
        for trial in self._trials():
            zoo_file(self.root, trial, what=f"trial {trial.name}", directory=True)  # a symlink out is refused
            params = read_json(zoo_file(self.root, trial / "params.json", what=f"trial {trial.name}"),
                               f"trial {trial.name}", expect=dict)
            results = {}
            result_path = trial / "result.json"
            if result_path.exists() or result_path.is_symlink():
                result_path = zoo_file(self.root, result_path, what=f"trial {trial.name}")
                for line in result_path.read_text().splitlines():
                    if line.strip():
                        try:
                            r = json.loads(line)
                        except (json.JSONDecodeError, RecursionError):
                            continue  # a torn last line of a live run
                        ep = r.get("training_iteration", r.get("epoch")) if isinstance(r, dict) else None
                        if isinstance(ep, (int, float)) and not isinstance(ep, bool) and float(ep).is_integer():
                            results[int(ep)] = r
            folders = {}
            for p in trial.iterdir():
                m = _CHECKPOINT.match(p.name)
                if m and p.is_dir():
                    folders.setdefault(int(m.group(1)), p)  # checkpoint_000002 and checkpoint_2 alike
            hp = {k: v for k, v in params.items() if not isinstance(v, (dict, list))}
            for ep in sorted(folders):
                r = results.get(ep, {})
                metrics = {"epoch": ep, **{k: r[k] for k in _METRICS if k in r and isinstance(r[k], (int, float))
                                           and not isinstance(r[k], bool)}}
                entries.append(ZooEntry(f"{trial.name}@{ep}", hp, metrics, self,
                                        {"trial": trial, "epoch": ep, "folders": folders, "params": params,
                                         "has_initial": 0 in folders}))
        return entries

    def _checkpoint(self, folder: Path) -> Path:
        zoo_file(self.root, folder, what=f"checkpoint folder {folder.name}", directory=True)
        for name in ("checkpoints", "checkpoint", "model.pt"):
            if (folder / name).exists() or (folder / name).is_symlink():
                return zoo_file(self.root, folder / name, what=f"checkpoint of {folder.parent.name}")
        raise ZooError(f"{folder} has no checkpoint file")

    def _load_model(self, entry, initial=False):
        epoch = entry.extra["epoch"]
        if initial:
            if not entry.extra["has_initial"]:
                raise ZooError(f"model {entry.id}: trial {entry.extra['trial'].name} has no checkpoint_0 "
                               "(initial weights)")
            epoch = 0
        path = self._checkpoint(entry.extra["folders"][epoch])
        params = entry.extra["params"]
        model = build_architecture(params, source=str(entry.extra["trial"] / "params.json"))
        state = load_state_dict(path)
        if model is not None:
            _load_exact(model, state, str(path), entry.id)
            return model
        x, _ = self._split("train")
        nlin = params.get("model::nlin", "relu")
        dropout = params.get("model::dropout", 0.0) or 0.0
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ZooError(f"{entry.extra['trial'] / 'params.json'}: model::dropout must be a rate in [0, 1), "
                           f"got {dropout!r}")
        model, layer_params = infer_sequential(state, tuple(x.shape[1:]), nlin, dropout, source=str(path))
        _load_by_order(layer_params, state, str(path), entry.id)
        return model

    def _split(self, split):
        if self._data is None:
            base = self.data_root or self.root  # --data-root is the user's own choice of folder
            path = base / "dataset.pt"
            if not (path.exists() or path.is_symlink()):
                raise ZooError(f"{path} is missing: the Model Zoos format keeps the data there "
                               "(pass data_root / --data-root if it lives elsewhere)")
            try:
                path = zoo_file(base, path, what="the zoo's data")
            except ZooError as exc:
                raise ZooError(f"{exc} (data kept elsewhere: pass data_root / --data-root)") from None
            try:
                # The published form is a dict of TensorDatasets: that one class is allowed, nothing else.
                with torch.serialization.safe_globals([torch.utils.data.TensorDataset]):
                    self._data = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ZooError(f"{path} cannot be loaded as tensors or TensorDatasets (pgen does not unpickle "
                               f"other dataset objects; save it as a dict of tensors): {exc}") from exc
        key = {"train": "trainset", "test": "testset", "val": "valset"}.get(split)
        if key is None:
            raise ZooError(f"unknown split {split!r}; Model Zoos have train, val and test")
        part = self._data.get(key) if isinstance(self._data, dict) else None
        if isinstance(part, torch.utils.data.TensorDataset):
            part = part.tensors
        if isinstance(part, dict):
            part = (part.get("data"), part.get("targets"))
        if not (isinstance(part, (tuple, list)) and len(part) == 2 and all(isinstance(t, torch.Tensor) for t in part)):
            raise ZooError(f"{self.root / 'dataset.pt'}: {key} must be (data, targets) tensors or a TensorDataset")
        x, y = part
        x = x.float()
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.permute(0, 3, 1, 2)
        from pgen.data import class_labels

        return x, class_labels(y, f"{self.root / 'dataset.pt'} ({key})")

    def dataset(self, split="train"):
        return torch.utils.data.TensorDataset(*self._split(split))
