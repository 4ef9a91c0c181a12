"""The Small CNN Zoo (Unterthiner et al. 2020, "Predicting Neural Network Accuracy from Weights").

One folder per dataset with::

    weights.npy       (rows, 4970) flat float32 weights, memory-mapped (never read whole)
    metrics.csv.gz    one row per weights row: config.* columns, step, train/test accuracy, loss
    layout.csv        varname, start_idx, end_idx, shape: where each tensor sits in a row

Flat order puts each layer's bias BEFORE its kernel; kernels are TensorFlow layout
(kh, kw, in, out). Architecture (the authors' ``build_cnn``): 3 x Conv2D(16, 3x3,
stride 2, valid) + activation (relu, tanh, sigmoid, selu or linear), a Dropout after each
when ``config.dropout`` > 0, GlobalAveragePooling, Dense(10). Rows with non-finite
weights or metrics are skipped and counted (``zoo.skipped``).

Preprocessing, as google-research/google-research ``dnn_predict_accuracy/train_network.py``
(``_preprocess_batch``) does: pixels / 255, scaled to [-1, 1], then, for colour datasets,
the plain mean over the three channels (``tf.math.reduce_mean(image, axis=-1)``; not
luminance weights). ``metrics.csv.gz``'s unnamed first column is the checkpoint path (the
authors' colab reads it with ``index_col=0``): it becomes each entry's
``extra["checkpoint"]``, not a metric. The datasets (mnist, fashion_mnist, cifar10,
svhn_cropped) are read from ``data_root`` (``load_zoo(path, data_root=...)``,
``--data-root``) or pgen's data cache.
"""

from __future__ import annotations

import ast
import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pgen.errors import InputError
from pgen.models import SmallCNN
from pgen.zoo.base import Zoo, ZooEntry, ZooError, zoo_file

__all__ = ["SmallCNNZoo", "SmallCNN"]

# config.dataset -> pgen's dataset name; mnist5k: pgen's own zoos exported (pgen zoo export --format smallcnn)
_DATASETS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist", "cifar10": "cifar10", "svhn_cropped": "svhn",
             "mnist5k": "mnist5k"}


class SmallCNNZoo(Zoo):
    format = "small-cnn-zoo"

    def __init__(self, root, name=None, data_root=None):
        super().__init__(root, name)
        self.data_root = data_root
        self.skipped = 0
        self._layout = self._read_layout()
        try:
            self._weights = np.load(zoo_file(self.root, "weights.npy", what="Small CNN Zoo weights"), mmap_mode="r",
                                    allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ZooError(f"{self.root / 'weights.npy'} cannot be read: {exc}") from exc
        if self._weights.ndim != 2:
            raise ZooError(f"{self.root / 'weights.npy'}: expected (rows, params), got shape {self._weights.shape}")
        need = max(end for _, _, end, _ in self._layout)
        if self._weights.shape[1] < need:
            raise ZooError(f"{self.root / 'weights.npy'} has {self._weights.shape[1]} columns; layout.csv needs {need}")

    @staticmethod
    def detect(path: Path) -> bool:
        return (path / "weights.npy").is_file() and (path / "layout.csv").is_file()

    def _read_layout(self):
        path = zoo_file(self.root, "layout.csv", what="Small CNN Zoo layout")
        try:
            with path.open() as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ZooError(f"{path} is not a valid layout file: {exc}") from exc
        layout = []
        for line, r in enumerate(rows, start=2):
            try:
                name, a, b = r["varname"], int(r["start_idx"]), int(r["end_idx"])
                shape = ast.literal_eval(r["shape"]) if isinstance(r["shape"], str) and len(r["shape"]) < 200 else None
            except (KeyError, TypeError, ValueError, SyntaxError, RecursionError, MemoryError) as exc:
                raise ZooError(f"{path}:{line}: not a layout row (varname, start_idx, end_idx, shape): {exc}") from None
            if not (isinstance(name, str) and isinstance(shape, (tuple, list)) and 1 <= len(shape) <= 4
                    and all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 1 << 20 for s in shape)
                    and 0 <= a <= b):
                raise ZooError(f"{path}:{line}: {r.get('varname')!r}: a shape of 1-4 positive sizes and "
                               f"0 <= start_idx <= end_idx are needed, got shape {r.get('shape')!r}, {a}..{b}")
            if b - a != math.prod(shape):
                raise ZooError(f"{path}: {name} spans {b - a} values but has shape {tuple(shape)}")
            layout.append((name, a, b, tuple(shape)))
        if not layout:
            raise ZooError(f"{path} lists no weights")
        return layout

    def _entries(self):
        path = zoo_file(self.root, "metrics.csv.gz", what="Small CNN Zoo metrics")
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise ZooError(f"{path} cannot be read: {exc}") from exc
        checkpoints = [None] * len(frame)
        first = frame.columns[0] if len(frame.columns) else ""
        if str(first) == "" or str(first).startswith("Unnamed"):  # the checkpoint path (index_col=0 upstream)
            checkpoints = [str(v) for v in frame[first]]
            frame = frame.drop(columns=[first])
        if len(frame) != self._weights.shape[0]:
            raise ZooError(f"{path} has {len(frame)} rows but weights.npy has {self._weights.shape[0]}")
        config_cols = [c for c in frame.columns if c.startswith("config.")]
        metric_cols = [c for c in frame.columns if not c.startswith("config.")]
        entries = []
        numeric = frame[metric_cols].select_dtypes("number")
        finite_metrics = np.isfinite(numeric.to_numpy(dtype=float)).all(axis=1)
        for i in range(len(frame)):
            # Checking one row at a time keeps memory flat on a 5 GB weights file.
            if not finite_metrics[i] or not np.isfinite(self._weights[i]).all():
                self.skipped += 1
                continue
            row = frame.iloc[i]
            hp = {c[len("config."):]: _plain(row[c]) for c in config_cols}
            metrics = {_metric_name(c): _plain(row[c]) for c in metric_cols}
            entries.append(ZooEntry(str(i), hp, metrics, self, {"row": i, "checkpoint": checkpoints[i]}))
        return entries

    def _load_model(self, entry, initial=False):
        if initial:
            raise ZooError(f"model {entry.id}: the Small CNN Zoo records no initial weights")
        flat = np.asarray(self._weights[entry.extra["row"]], dtype=np.float32)
        kernels = [(n, a, b, s) for n, a, b, s in self._layout if "kernel" in n]
        biases = [(n, a, b, s) for n, a, b, s in self._layout if "bias" in n]
        if len(kernels) != len(biases) or len(kernels) < 2:
            raise ZooError(f"{self.root / 'layout.csv'}: expected one bias per kernel")
        if any(len(s) != 4 for _, _, _, s in kernels[:-1]) or len(kernels[-1][3]) != 2 \
                or any(len(s) != 1 for _, _, _, s in biases):
            raise ZooError(f"{self.root / 'layout.csv'}: expected 4-D conv kernels, a 2-D last kernel and 1-D biases")
        in_channels = kernels[0][3][2]
        filters = kernels[0][3][3]
        dropout = entry.hparams.get("dropout", 0.0) or 0.0
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ZooError(f"model {entry.id}: config.dropout must be a rate in [0, 1), got {dropout!r}")
        try:
            model = SmallCNN((in_channels,), kernels[-1][3][1], filters, len(kernels) - 1,
                             str(entry.hparams.get("activation", "relu")), float(dropout))
        except InputError as exc:
            raise ZooError(f"model {entry.id}: {exc}") from None
        params = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
        for module, (kn, ka, kb, ks), (bn, ba, bb, bs) in zip(params, kernels, biases):
            kernel = torch.from_numpy(flat[ka:kb].reshape(ks).copy())
            if isinstance(module, nn.Conv2d):
                kernel = kernel.permute(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
            else:
                kernel = kernel.T  # (in, out) -> (out, in)
            if kernel.shape != module.weight.shape:
                raise ZooError(f"model {entry.id}: {kn} has shape {tuple(kernel.shape)}, layer needs {tuple(module.weight.shape)}")
            module.weight.data.copy_(kernel)
            module.bias.data.copy_(torch.from_numpy(flat[ba:bb].copy()))
        return model

    def dataset(self, split="train"):
        from pgen.data import MappedDataset, load_dataset

        names = {str(e.hparams.get("dataset", "")) for e in self.entries}
        name = _DATASETS.get(next(iter(names), ""), None)
        if name is None:
            raise ZooError(f"zoo {self.root}: unknown dataset {names}; expected one of {sorted(_DATASETS)}")
        return MappedDataset(load_dataset(name, split, root=self.data_root), _grayscale_signed)


def _grayscale_signed(x, y):
    """The Small CNN Zoo's inputs: pixels in [0, 1] scaled to [-1, 1], then the plain mean
    over the channels (train_network.py ``_preprocess_batch``)."""
    return (x * 2 - 1).mean(dim=0, keepdim=True), y


def _metric_name(col: str) -> str:
    return {"test_accuracy": "test_acc", "train_accuracy": "train_acc"}.get(col, col)


def _plain(v):
    return v.item() if hasattr(v, "item") else v
