"""The one Zoo interface that every zoo format implements."""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn
from torch.utils.data import Dataset

from pgen.errors import UnknownNameError, ZooError
from pgen.paths import plain_file

__all__ = ["Zoo", "ZooEntry", "ZooError", "read_json", "safe_join", "zoo_file", "check_metrics"]

MAX_JSON_BYTES = 256 << 20  # a zoo's JSON files (configs, manifests, results) are kilobytes to megabytes


def safe_join(root: Path, relative: str, *, what: str = "path") -> Path:
    """``root / relative``, refusing absolute paths and anything that escapes ``root``.

    Parameters
    ----------
    root : Path
        The zoo folder.
    relative : str
        A path read from the zoo's files.
    what : str, default="path"
        What the path is, for the error.

    Returns
    -------
    Path
        The joined path, inside ``root``.

    Raises
    ------
    ZooError
        For an absolute path or one that escapes ``root``.
    """
    rel = Path(relative)
    if rel.is_absolute():
        raise ZooError(f"{what} {relative!r} is absolute; zoo paths must be relative to {root}")
    resolved = (root / rel).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ZooError(f"{what} {relative!r} escapes the zoo folder {root}")
    if resolved.exists():  # FIFOs, devices and sockets are refused as zoo_file refuses them
        zoo_file(root, resolved, what=what, directory=resolved.is_dir())
    return resolved


def zoo_file(root: Path, path: str | Path, *, what: str, directory: bool = False) -> Path:
    """``path`` (absolute, or relative to ``root``) resolved, checked to be inside ``root``
    and to be a regular file (a folder with ``directory=True``), before anything reads it.

    A symlink out of the zoo, a FIFO (which would block the read forever), a device such as
    ``/dev/zero`` (which never ends) or a socket is refused with a :class:`ZooError` naming
    the file.
    """
    import os

    given = Path(path)
    full = given if given.is_absolute() else Path(root) / given
    resolved = Path(os.path.realpath(full))
    if not resolved.is_relative_to(Path(os.path.realpath(root))):
        raise ZooError(f"{what}: {full} resolves to {resolved}, outside the zoo folder {root}")
    plain_file(full, what=what, directory=directory, error=ZooError)
    return resolved


NUMERIC_METRICS = ("train_acc", "test_acc", "train_loss", "test_loss")  # read as numbers by every statistic
ACCURACIES = ("train_acc", "test_acc")


def check_metrics(metrics, where: str) -> dict:
    """A model's recorded metrics, or a ZooError naming ``where``: an object whose
    accuracies are numbers in [0, 1] and whose losses are finite numbers (a string such as
    "high" would otherwise fail later, in a subtraction, naming nothing)."""
    if not isinstance(metrics, dict):
        raise ZooError(f"{where}: metrics must be a JSON object, not {type(metrics).__name__}")
    for key in NUMERIC_METRICS:
        value = metrics.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ZooError(f"{where}: metric {key} must be a finite number; got {value!r}")
        if key in ACCURACIES and not 0 <= value <= 1:
            raise ZooError(f"{where}: metric {key} must be an accuracy between 0 and 1; got {value!r}")
    return metrics


def read_json(path: Path, what: str, *, expect: type | None = None):
    """A zoo's JSON file, or a :class:`ZooError` naming it: unreadable, over
    :data:`MAX_JSON_BYTES`, not UTF-8, not JSON, nested too deeply for the parser (a
    ``RecursionError`` otherwise), or not of the ``expect`` type."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ZooError(f"{what}: {path} is {size} bytes, more than the {MAX_JSON_BYTES} a JSON file may have")
        data = json.loads(path.read_bytes().decode("utf-8"))
    except ZooError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ZooError(f"{what}: {path} cannot be read as JSON: {exc}") from None
    except RecursionError:
        raise ZooError(f"{what}: {path} is nested too deeply to be a JSON file pgen reads") from None
    if expect is not None and not isinstance(data, expect):
        raise ZooError(f"{what}: {path} must hold a JSON {'object' if expect is dict else expect.__name__}, "
                       f"not {type(data).__name__}")
    return data


@dataclass
class ZooEntry:
    """One model of a zoo. Weights load lazily through the owning zoo.

    Parameters
    ----------
    id : str
        The model's id, unique in its zoo.
    hparams : dict
        The model's hyperparameter values.
    metrics : dict
        ``train_acc``, ``test_acc`` and whatever else the zoo records.
    zoo : Zoo
        The zoo that loads its weights.
    extra : dict
        Format-specific fields (checkpoint path, epoch, step, ...).
    """

    id: str
    hparams: dict[str, Any]
    metrics: dict[str, Any]
    zoo: Zoo = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    def load_model(self, initial: bool = False) -> nn.Module:
        """The model in eval mode; with ``initial=True`` the same architecture with its
        initial weights (a :class:`ZooError` where the format has none)."""
        model = self.zoo._load_model(self, initial=initial)
        return model.eval()

    def training_data(self):
        """``(indices into the zoo's training split, labels)`` the model was trained on,
        where the zoo records them; else None."""
        return self.zoo.training_data(self)


class Zoo(ABC):
    """A population of trained models with their hparams and metrics.

    Subclasses implement :meth:`_entries`, :meth:`_load_model` and :meth:`dataset`.

    Parameters
    ----------
    root : str or Path
        The zoo's folder; every file it reads must lie inside it (or in a trusted data root).
    name : str, optional
        The zoo's name (default: the folder's name).
    """

    format: str = "abstract"

    def __init__(self, root: str | Path, name: str | None = None):
        self.root = Path(root).absolute()  # readers join paths to it; a relative root would be joined twice
        self.name = name or self.root.name
        self._cache: list[ZooEntry] | None = None
        self._identity: str | None = None

    @abstractmethod
    def _entries(self) -> list[ZooEntry]:
        """All entries (metadata only; no weights are read)."""

    @abstractmethod
    def _load_model(self, entry: ZooEntry, initial: bool = False) -> nn.Module:
        """Build the entry's model and load its weights."""

    @abstractmethod
    def dataset(self, split: str = "train") -> Dataset:
        """The zoo's data split as a torch Dataset, in its canonical order."""

    @property
    def entries(self) -> list[ZooEntry]:
        if self._cache is None:
            entries = self._entries()
            if not entries:
                raise ZooError(f"zoo {self.root} has no models")
            self._cache = entries
        return self._cache

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ZooEntry]:
        return iter(self.entries)

    def __getitem__(self, key: int | str) -> ZooEntry:
        if isinstance(key, int):
            return self.entries[key]
        for e in self.entries:
            if e.id == key:
                return e
        raise UnknownNameError(f"zoo {self.name} has no model {key!r}")

    def final_models(self) -> Zoo:
        """A view of this zoo without intermediate checkpoints (entries whose ``extra``
        says ``final: False``); zoos without checkpoints come back unchanged."""
        import copy

        view = copy.copy(self)
        view._cache = [e for e in self.entries if e.extra.get("final", True)]
        if len(view._cache) < len(self.entries):
            view._identity = self.identity() + ":final"
        return view

    def identity(self) -> str:
        """What the zoo is, independent of where it lies: its name and a hash of every
        entry's id, hparams and metrics. Results are keyed by it, so a moved or copied zoo
        keeps its results and a changed one does not reuse stale ones."""
        if self._identity is None:
            rows = [[e.id, e.hparams, e.metrics] for e in self.entries]
            digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
            self._identity = f"{self.name}@{digest[:16]}"
        return self._identity

    @staticmethod
    def from_models(models, data, **kwargs) -> Zoo:
        """A zoo of models held in Python (:class:`pgen.zoo.memory.ModelsZoo`): ``models``
        maps ids to ``nn.Module`` or to callables returning one; ``data`` is a Dataset, an
        ``(x, y)`` pair or a dataset spec; keywords ``metrics``, ``hparams`` (id -> dict),
        ``test_data``, ``initial_models``, ``name``, ``data_kind``. Score it with
        :func:`pgen.score.score_zoo` or :func:`pgen.benchmark.run_benchmark` like any zoo."""
        from pgen.zoo.memory import ModelsZoo

        return ModelsZoo(models, data, **kwargs)

    def training_data(self, entry: ZooEntry):
        """What ``entry`` was trained on: ``(indices into dataset("train"), labels)`` as
        int64 tensors, or None where the format does not record it (then measures see the
        shared samples)."""
        return None

    def hparam_grid(self) -> dict[str, list] | None:
        """``{hparam: possible values}`` when the zoo is a full grid (PGDL style), else None."""
        return None

    def describe(self) -> dict:
        """Format, name, root and size, for result files and reports."""
        return {"format": self.format, "name": self.name, "identity": self.identity(), "root": str(self.root),
                "models": len(self)}

    def to_frame(self) -> pd.DataFrame:
        """One row per model: id, ``hp.<name>`` columns and metric columns."""
        rows = []
        for e in self.entries:
            row = {"model_id": e.id}
            row.update({f"hp.{k}": v for k, v in e.hparams.items()})
            row.update(e.metrics)
            rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, root={str(self.root)!r})"
