"""A zoo of models the user holds in Python: ``Zoo.from_models(...)``, ``pgen.score_models(...)``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from pgen.errors import InputError
from pgen.zoo.base import Zoo, ZooEntry, ZooError

__all__ = ["ModelsZoo", "as_dataset"]


def as_dataset(data, what: str = "data") -> Dataset:
    """A torch Dataset from a Dataset, an ``(x, y)`` pair of tensors or arrays, or a dataset
    spec (:func:`pgen.data.dataset_from_spec`, train split)."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, str):
        from pgen.data import dataset_from_spec

        return dataset_from_spec(data, "train")
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for v in data)
        if len(x) != len(y):
            raise InputError(f"{what}: {len(x)} inputs but {len(y)} labels")
        from pgen.data import class_labels

        return TensorDataset(x.float(), class_labels(y, what))
    raise InputError(f"{what} must be a torch Dataset, an (x, y) pair or a dataset spec; got {type(data).__name__}")


class ModelsZoo(Zoo):
    """Models given as a mapping id -> ``nn.Module`` or id -> callable returning one (so that
    a large zoo is never held in memory at once), with their data and optional metrics.

    Its identity includes a fingerprint of every model's weights, so a results store
    never confuses two different sets of models that share ids.
    """

    format = "in-memory"
    reopenable = False  # worker processes cannot reopen it from a folder

    def __init__(self, models: Mapping[str, nn.Module | Callable[[], nn.Module]], data, *,
                 metrics: Mapping[str, Mapping] | None = None, hparams: Mapping[str, Mapping] | None = None,
                 test_data=None, initial_models: Mapping | None = None, name: str = "models",
                 data_kind: str | None = None):
        if not models:
            raise InputError("no models given")
        super().__init__(Path(f"<in-memory:{name}>"), name)
        self._models = dict(models)
        self._initial = dict(initial_models or {})
        self._metrics = {str(k): dict(v) for k, v in (metrics or {}).items()}
        self._hparams = {str(k): dict(v) for k, v in (hparams or {}).items()}
        unknown = sorted((set(self._metrics) | set(self._hparams)) - {str(k) for k in self._models})
        if unknown:
            raise InputError(f"metrics or hparams for unknown model id(s): {', '.join(unknown[:5])}")
        self._train = as_dataset(data, "data")
        self._test = as_dataset(test_data, "test_data") if test_data is not None else None
        if data_kind is None and isinstance(data, str):
            from pgen.data import DATASETS

            data_kind = DATASETS[data].kind if data in DATASETS else None
        self._data_kind = data_kind

    @staticmethod
    def detect(path: Path) -> bool:
        return False

    @property
    def data_kind(self) -> str | None:
        """The pseudo-test policy's kind when given or implied by a named dataset; else None
        (pgen then uses one without flips)."""
        return self._data_kind

    def _entries(self):
        return [ZooEntry(str(k), self._hparams.get(str(k), {}), self._metrics.get(str(k), {}), self, {"key": k})
                for k in self._models]

    def _get(self, source, entry, what):
        obj = source[entry.extra["key"]]
        model = obj if isinstance(obj, nn.Module) else obj()
        if not isinstance(model, nn.Module):
            raise ZooError(f"model {entry.id}: the {what} callable returned {type(model).__name__}, not an nn.Module")
        return model

    def _load_model(self, entry, initial=False):
        if initial:
            if entry.extra["key"] not in self._initial:
                raise ZooError(f"model {entry.id}: no initial weights given (initial_models=...)")
            return self._get(self._initial, entry, "initial model")
        return self._get(self._models, entry, "model")

    def dataset(self, split="train"):
        if split == "train":
            return self._train
        if split == "test" and self._test is not None:
            return self._test
        raise ZooError(f"{self.name}: no {split} data given (test_data=...)")

    def identity(self) -> str:
        if self._identity is None:
            h = hashlib.sha256(super().identity().encode())
            for e in self.entries:
                try:
                    state = e.load_model().state_dict()
                except Exception as exc:  # that model's failure, recorded when it is scored; its text marks it here
                    h.update(f"{e.id} failed to load: {type(exc).__name__}: {exc}".encode())
                    continue
                for key, tensor in sorted(state.items()):
                    h.update(key.encode())
                    h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            self._identity = f"{self.name}:{h.hexdigest()[:16]}"
        return self._identity
