"""PGDL competition task folders (NeurIPS 2020 "Predicting Generalization in Deep Learning").

Two layouts are accepted::

    public_data/input_data/<task>/model_<id>/{config.json, weights.hdf5, weights_init.hdf5}
    public_data/input_data/<task>/dataset_1/train/shard_*.tfrecord
    public_data/reference_data/<task>/model_configs.json      (hparams + metrics)

and the toy layout, with ``model_configs.json`` inside the task folder. Models are Keras
Sequential configs rebuilt in torch (:mod:`pgen.zoo.keras`); data are TFRecord shards read
without TensorFlow (:mod:`pgen.zoo.tfrecord`), in sorted shard order, CRC-checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from pgen.zoo.base import Zoo, ZooEntry, ZooError, check_metrics, read_json, safe_join, zoo_file
from pgen.zoo.keras import KerasPortError, build_keras_model, load_keras_weights
from pgen.zoo.tfrecord import MAX_DATASET_ELEMENTS, TFRecordError, iter_records, parse_example, parse_tensor

__all__ = ["PGDLZoo", "read_tfrecord_dataset", "read_model_configs"]


def _model_dirs(root: Path) -> list[Path]:
    # The kit lists directory names containing "model", sorted as strings (model_1, model_10, ...).
    return sorted((p for p in root.iterdir() if p.is_dir() and "model" in p.name), key=lambda p: p.name)


def read_model_configs(path: str | Path) -> dict:
    """``model_configs.json``: ``{model id: {"hparams": {...}, "metrics": {...}}}``."""
    path = Path(path)
    configs = read_json(path, "model configs")
    if not isinstance(configs, dict) or not all(isinstance(v, dict) for v in configs.values()):
        raise ZooError(f"{path}: expected {{model id: {{'hparams': ..., 'metrics': ...}}}}")
    for key, cfg in configs.items():
        if not isinstance(cfg.get("hparams", {}), dict):
            raise ZooError(f"{path}: model {key!r}: hparams must be a JSON object")
        if "metrics" in cfg:
            check_metrics(cfg["metrics"], f"{path}: model {key!r}")
    return configs


def read_tfrecord_dataset(folder: str | Path, root: str | Path | None = None, *,
                          max_values: int = MAX_DATASET_ELEMENTS) -> TensorDataset:
    """All ``shard_*.tfrecord`` files of a folder, read in sorted name order.

    Returns a TensorDataset of NCHW (or flat) float32 inputs and int64 labels, in record
    order. Every record's CRCs are checked; errors name the shard and the record. Every
    shard must be a regular file inside ``root`` (default: the folder itself). The inputs
    may hold at most ``max_values`` values in all (a constant tensor can declare millions of
    values in a few bytes, so the record sizes alone bound nothing).
    """
    folder = Path(folder)
    root = Path(root) if root is not None else folder
    shards = sorted(p for p in folder.iterdir() if p.suffix == ".tfrecord") if folder.is_dir() else []
    if not shards:
        raise ZooError(f"{folder}: no .tfrecord shards")
    shards = [zoo_file(root, p, what=f"data shard {p.name}") for p in shards]
    xs, ys = [], []
    values = 0
    for shard in shards:
        try:
            for i, payload in enumerate(iter_records(shard)):
                try:
                    example = parse_example(payload)
                    if "inputs" not in example or "output" not in example:
                        raise TFRecordError(f"features {sorted(example)}; expected 'inputs' and 'output'")
                    x = parse_tensor(example["inputs"][0])
                    y = parse_tensor(example["output"][0])
                except (TFRecordError, IndexError, TypeError) as exc:
                    raise TFRecordError(f"{shard}: record {i}: {exc}") from None
                if y.size != 1:
                    raise TFRecordError(f"{shard}: record {i}: label has shape {y.shape}, expected a scalar")
                if xs and x.shape != xs[0].shape:
                    raise TFRecordError(f"{shard}: record {i}: input shape {x.shape} differs from {xs[0].shape}")
                values += x.size
                if values > max_values:
                    raise TFRecordError(f"{shard}: record {i}: the data would hold more than {max_values} values")
                label = y.reshape(()).item()
                if isinstance(label, bool) or not float(label).is_integer() or label < 0 or label >= 2**31:
                    # int() once read 3.7 as class 3: a label is a non-negative integer or the record is wrong
                    raise TFRecordError(f"{shard}: record {i}: label {label!r} is not a class index "
                                        "(a non-negative integer)")
                xs.append(x)
                ys.append(int(label))
        except TFRecordError as exc:
            raise ZooError(str(exc)) from None
    if not xs:
        raise ZooError(f"{folder}: its shards hold no records")
    x = torch.from_numpy(np.stack(xs).astype(np.float32, copy=False))
    if x.dim() == 4:
        x = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    return TensorDataset(x, torch.tensor(ys, dtype=torch.int64))


class PGDLZoo(Zoo):
    """A PGDL task folder. Model ids are the folder names (``model_0``, ...)."""

    format = "pgdl"

    def __init__(self, root, name=None, model_configs: str | Path | None = None):
        super().__init__(root, name)
        self.model_configs_path = Path(model_configs) if model_configs else self._find_configs()
        self._configs = read_model_configs(self.model_configs_path) if self.model_configs_path else {}
        self._data: dict[str, TensorDataset] = {}

    @staticmethod
    def detect(path: Path) -> bool:
        if not (path / "dataset_1").is_dir():
            return False
        return any((p / "config.json").is_file() for p in _model_dirs(path))

    def _find_configs(self) -> Path | None:
        here = self.root / "model_configs.json"
        if here.exists() or here.is_symlink():
            return zoo_file(self.root, here, what="model configs")
        # input_data/<task> -> reference_data/<task> (the competition's layout: beside the task, by design)
        ref = self.root.parent.parent / "reference_data" / self.root.name / "model_configs.json"
        return zoo_file(ref.parent, ref, what="model configs") if ref.exists() else None

    def model_configs(self) -> dict:
        """The raw ``model_configs.json`` (what the official scorer reads); {} if absent."""
        return self._configs

    def _config_for(self, model_id: str) -> dict:
        for key in (model_id, model_id.removeprefix("model_")):
            if key in self._configs:
                return self._configs[key]
        return {}

    def _entries(self):
        entries = []
        for d in _model_dirs(self.root):
            if not (d / "config.json").is_file():
                continue
            safe_join(self.root, d.name, what=f"model folder {d.name}")  # a symlink out of the task is refused
            cfg = self._config_for(d.name)
            hp = {k: v.get("current_value") if isinstance(v, dict) else v for k, v in cfg.get("hparams", {}).items()}
            entries.append(ZooEntry(d.name, hp, dict(cfg.get("metrics", {})), self, {"dir": d}))
        if self._configs and entries and not any(self._config_for(e.id) for e in entries):
            raise ZooError(f"{self.model_configs_path}: none of its keys match the model folders of {self.root}")
        return entries

    def hparam_grid(self):
        grid: dict[str, list] = {}
        for cfg in self._configs.values():
            for k, v in cfg.get("hparams", {}).items():
                if isinstance(v, dict) and "possible_values" in v:
                    grid.setdefault(k, list(v["possible_values"]))
        return grid or None

    def _load_model(self, entry, initial=False):
        d = entry.extra["dir"]
        where = f"model {entry.id} of {self.root}"
        weights = zoo_file(self.root, d / ("weights_init.hdf5" if initial else "weights.hdf5"), what=where)
        config_path = zoo_file(self.root, d / "config.json", what=where)
        config = read_json(config_path, where, expect=dict)
        try:
            model = build_keras_model(config, where=f"{d / 'config.json'} ({entry.id})")
            return load_keras_weights(model, weights, where=where)
        except KerasPortError as exc:
            raise ZooError(str(exc)) from None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The inputs' shape in torch order, from the task's data: not from a model's config,
        where one broken first model once stopped the run for every model."""
        return tuple(self.dataset("train").tensors[0].shape[1:])

    @property
    def data_kind(self) -> str:
        """Which pseudo-test augmentation policy fits the inputs."""
        shape = self.input_shape
        if len(shape) != 3:
            return "vector"
        return "grayscale" if shape[0] == 1 else "color"

    def dataset(self, split="train"):
        if split not in self._data:
            folder = self.root / "dataset_1" / split
            if not folder.is_dir():
                raise ZooError(f"{self.root}: no {split} data (expected {folder}); PGDL tasks ship train data only")
            zoo_file(self.root, folder, what=f"{split} data", directory=True)
            self._data[split] = read_tfrecord_dataset(folder, root=self.root)
        return self._data[split]

    def describe(self):
        return {**super().describe(), "model_configs": str(self.model_configs_path) if self.model_configs_path else None}
