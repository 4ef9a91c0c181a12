"""pgen's own zoo format.

A folder with::

    zoo.json          {"format": "pgen-zoo", "version": 1, "name": ..., "dataset": {"name": "digits"},
                       "input_shape": [1, 8, 8], "num_classes": 10,
                       "hparam_grid": {"width": [16, 64], ...}}      # grid optional
    manifest.jsonl    one JSON object per model (checkpoint):
                       {"id": "...", "checkpoint": "checkpoints/x.safetensors",
                        "initial_checkpoint": "checkpoints/x-init.safetensors",   # optional
                        "arch": "cnn", "model_kwargs": {"width": 16, "depth": 2},
                        "hparams": {...}, "metrics": {...},
                        "run": "...", "epoch": 12, "step": 504}
    checkpoints/      safetensors files or torch state dicts (.pt, loaded weights_only)

Checkpoints never execute code on load: safetensors, or ``torch.load(weights_only=True)``.
Checkpoint paths must stay inside the zoo folder.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from pgen.data import load_dataset
from pgen.errors import InputError, PgenNotice
from pgen.models import build_model, model_arguments
from pgen.zoo.base import Zoo, ZooEntry, ZooError, check_metrics, read_json, safe_join, zoo_file
from pgen.paths import replace_link

__all__ = ["NativeZoo", "load_state_dict", "save_state_dict"]

FORMAT = "pgen-zoo"
REQUIRED_FIELDS = ("id", "checkpoint", "arch", "hparams", "metrics")
# The type every known manifest field must have (None allowed where the field is optional).
_FIELD_TYPES = {"id": (str, int), "checkpoint": (str,), "arch": (str,), "hparams": (dict,), "metrics": (dict,),
                "model_kwargs": (dict, type(None)), "initial_checkpoint": (str, type(None)),
                "train_data": (str, type(None))}


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint without unpickling arbitrary objects."""
    if not path.exists():
        raise ZooError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except ZooError:
        raise
    except Exception as exc:  # corrupt file, pickled objects refused by weights_only, ...
        if "Weights only load failed" in str(exc):  # torch's advice (weights_only=False) would run the file's code
            raise ZooError(f"checkpoint {path} holds pickled Python objects (a whole model, not its weights), which "
                           "pgen never unpickles: save model.state_dict() instead (torch.save(model.state_dict(), "
                           "path)) and give the architecture with --arch") from None
        raise ZooError(f"checkpoint {path} cannot be read: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    state = _unwrap(state)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ZooError(f"checkpoint {path} is not a state dict of tensors (nor one wrapped under "
                       f"'state_dict', 'model' or 'model_state_dict')")
    return state


def _unwrap(obj):
    """The state dict inside the wrappings people save: a bare state dict, ``{"state_dict": ...}``
    (also Lightning's checkpoints), ``{"model": ...}``, ``{"model_state_dict": ...}``."""
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    return obj


_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile


def match_keys(state: dict, model_keys) -> dict:
    """``state`` with the prefixes wrappers add removed so that its keys name the model's
    parameters: ``module.`` (DataParallel, DDP) and ``_orig_mod.`` (torch.compile) wherever
    they lead a key, then one leading component shared by every key (a Lightning module's
    attribute, e.g. ``model.``) when that makes the keys match."""
    wanted = set(model_keys)

    def strip(key):
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        return key

    state = {strip(k): v for k, v in state.items()}
    if set(state) != wanted:
        heads = {k.split(".", 1)[0] for k in state}
        if len(heads) == 1 and all("." in k for k in state):
            head = next(iter(heads)) + "."
            shorter = {strip(k[len(head):]): v for k, v in state.items()}
            if set(shorter) == wanted:
                return shorter
    return state


def save_state_dict(model: nn.Module, path: Path) -> None:
    """Write a safetensors checkpoint atomically (a crash never leaves half a file)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = replace_link(path.with_name(path.name + ".tmp"))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    os.chmod(tmp, 0o666 & ~_UMASK)  # safetensors writes 0600; the zoo's other files follow the umask
    tmp.replace(path)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once, at import (os.umask cannot be read without being set)


def load_weights_into(model: nn.Module, state: dict, *, source: Path, model_id: str) -> nn.Module:
    """Strict loading: every key present, none extra, every shape equal; otherwise an error
    that names the file and the first offending keys."""
    expected = model.state_dict()
    state = match_keys(state, expected)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (model: {tuple(v.shape)})" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), first {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), first {', '.join(unexpected[:3])}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es), first {'; '.join(shapes[:3])}")
    if problems:
        raise ZooError(f"model {model_id}: weights in {source} do not fit its architecture: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
    return model


def _model_fields(row: dict) -> dict:
    """What makes a manifest row one model (a repeated row must agree on it)."""
    return {k: row.get(k) for k in ("checkpoint", "initial_checkpoint", "arch", "model_kwargs", "hparams", "metrics")}


def _check_meta(meta: dict, where: Path) -> None:
    """zoo.json's fields, of the types pgen reads them as, or a ZooError naming the field."""
    for key in ("dataset", "input_shape", "num_classes"):
        if key not in meta:
            raise ZooError(f"{where} lacks the field {key!r}")
    ds = meta["dataset"]
    if not isinstance(ds, dict) or not isinstance(ds.get("spec", ds.get("name")), str):
        raise ZooError(f"{where}: 'dataset' must be an object with a 'name' or a 'spec' string, e.g. "
                       f'{{"name": "digits"}}; got {json.dumps(ds)[:80]}')
    for key, types in (("transform", dict), ("kind", str), ("root", str)):
        if key in ds and not isinstance(ds[key], types):
            raise ZooError(f"{where}: dataset.{key} must be a {'JSON object' if types is dict else 'string'}")
    shape = meta["input_shape"]
    if not (isinstance(shape, list) and 1 <= len(shape) <= 4
            and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 16 for d in shape)):
        raise ZooError(f"{where}: 'input_shape' must be a list of 1 to 4 whole numbers between 1 and 65536; "
                       f"got {json.dumps(shape)[:80]}")
    nc = meta["num_classes"]
    if not (isinstance(nc, int) and not isinstance(nc, bool) and 1 <= nc <= 1_000_000):
        raise ZooError(f"{where}: 'num_classes' must be a whole number between 1 and 1000000; got {nc!r}")
    grid = meta.get("hparam_grid")
    if grid is not None and not (isinstance(grid, dict) and all(isinstance(v, list) for v in grid.values())):
        raise ZooError(f"{where}: 'hparam_grid' must map each hyperparameter to a list of its values")
    for key in ("checkpoint_root", "name"):
        if key in meta and not isinstance(meta[key], str):
            raise ZooError(f"{where}: {key!r} must be a string")


class NativeZoo(Zoo):
    format = FORMAT

    def __init__(self, root, name=None, trust_code: bool = False, data_root=None):
        root = Path(root).absolute()  # zoo_file joins a relative path to the root: a relative root would join twice
        self.trust_code = trust_code
        meta_path = root / "zoo.json"
        if not (meta_path.exists() or meta_path.is_symlink()):
            raise ZooError(f"{meta_path} is missing: not a pgen zoo folder")
        self.meta = read_json(zoo_file(root, meta_path, what="zoo description"), "zoo description", expect=dict)
        if self.meta.get("format") != FORMAT:
            raise ZooError(f"{meta_path}: format is {self.meta.get('format')!r}, expected {FORMAT!r}")
        _check_meta(self.meta, meta_path)
        super().__init__(root, name or self.meta.get("name"))
        self.skipped: list[str] = []
        self._train_labels = None  # the training split's labels, read once for training_data()
        # Every file a zoo names resolves inside its folder, or inside the folder the user
        # named as trusted (data_root, --data-root): a zoo.json is someone else's file.
        self.data_root = str(Path(data_root).resolve()) if data_root is not None else None  # workers reopen with it
        self.allowed_roots = [self.root.resolve()] + ([Path(self.data_root)] if data_root is not None else [])
        # Checkpoint paths are relative to checkpoint_root (the zoo folder unless zoo.json says) and may not escape it.
        self.checkpoint_root = self.contained(self.root / self.meta.get("checkpoint_root", "."),
                                              what="zoo.json's checkpoint_root", directory=True)

    def contained(self, path: Path, *, what: str, directory: bool = False) -> Path:
        """``path`` (relative to the zoo folder, or absolute) resolved inside an allowed root
        and checked to be a plain file (folder), or a ZooError that says how to allow it."""
        full = path if Path(path).is_absolute() else self.root / path
        resolved = Path(full).resolve()
        base = next((r for r in self.allowed_roots if resolved.is_relative_to(r)), None)
        if base is None:
            raise ZooError(f"{self.root}: {what} {full} is outside the zoo folder; pgen reads outside a zoo only from "
                           "a folder you name as trusted: --data-root FOLDER (data_root=FOLDER)")
        return zoo_file(base, resolved, what=what, directory=directory)

    @staticmethod
    def detect(path: Path) -> bool:
        return (path / "zoo.json").is_file()

    def _entries(self):
        manifest = self.root / "manifest.jsonl"
        if not (manifest.exists() or manifest.is_symlink()):
            raise ZooError(f"{manifest} is missing")
        manifest = zoo_file(self.root, manifest, what="zoo manifest")
        entries, seen, repeats = [], {}, 0
        for lineno, line in enumerate(manifest.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ZooError(f"{manifest}:{lineno}: not valid JSON ({exc})") from exc
            except RecursionError:
                raise ZooError(f"{manifest}:{lineno}: nested too deeply to be a manifest row") from None
            if not isinstance(row, dict):
                raise ZooError(f"{manifest}:{lineno}: a manifest row must be a JSON object, not {type(row).__name__}")
            missing = [f for f in REQUIRED_FIELDS if f not in row]
            if missing:
                ident = row.get("id", f"line {lineno}")
                raise ZooError(f"{manifest}:{lineno}: model {ident} lacks field(s) {', '.join(missing)}")
            wrong = [f"{k} is {type(row[k]).__name__}" for k, types in _FIELD_TYPES.items()
                     if k in row and (not isinstance(row[k], types) or isinstance(row[k], bool))]
            if wrong:
                raise ZooError(f"{manifest}:{lineno}: model {row['id']!r}: {', '.join(wrong)}")
            check_metrics(row["metrics"], f"{manifest}:{lineno}: model {row['id']!r}")
            if row["id"] in seen:
                first = seen[row["id"]]
                if _model_fields(first) != _model_fields(row):
                    raise ZooError(f"{manifest}:{lineno}: model {row['id']!r} appears again with other contents "
                                   "(checkpoint, architecture, hyperparameters or metrics); ids must be unique")
                repeats += 1
                continue  # a resumed build may append a row twice: the same model, kept once
            seen[row["id"]] = row
            # Refuse escaping paths now, before anything is loaded.
            safe_join(self.checkpoint_root, row["checkpoint"], what=f"model {row['id']}: checkpoint")
            if row.get("initial_checkpoint"):
                safe_join(self.checkpoint_root, row["initial_checkpoint"], what=f"model {row['id']}: initial_checkpoint")
            extra = {k: v for k, v in row.items() if k not in ("id", "hparams", "metrics")}
            entries.append(ZooEntry(str(row["id"]), dict(row["hparams"]), dict(row["metrics"]), self, extra))
        if repeats:
            warnings.warn(f"{manifest}: {repeats} repeated row(s) of a model already listed, identical, kept once",
                          PgenNotice, stacklevel=3)
        return entries

    def _load_model(self, entry, initial=False):
        key = "initial_checkpoint" if initial else "checkpoint"
        rel = entry.extra.get(key)
        if not rel:
            raise ZooError(f"model {entry.id}: this zoo records no initial weights for it")
        path = safe_join(self.checkpoint_root, rel, what=f"model {entry.id}: {key}")
        kwargs = entry.extra.get("model_kwargs")
        if kwargs is None:  # rows written by hand may keep architecture settings in hparams
            kwargs = {k: v for k, v in entry.hparams.items() if k != "arch"}
        num_classes, kwargs = model_arguments(kwargs, self.meta["num_classes"])
        try:
            model = build_model(entry.extra["arch"], input_shape=self.meta["input_shape"], num_classes=num_classes,
                                trust_code=self.trust_code, **kwargs)
        except InputError as exc:  # name the zoo and the model, as every reader's error does (same type)
            raise type(exc)(f"model {entry.id} of {self.root}: {exc}") from None
        return load_weights_into(model, load_state_dict(path), source=path, model_id=entry.id)

    def dataset(self, split="train"):
        from pgen.data import dataset_from_spec

        ds = self.meta["dataset"]
        if "spec" in ds:
            kind, _, path = ds["spec"].partition(":")
            spec = ds["spec"]
            if path:  # npz:PATH / imagefolder:PATH: a file the zoo names
                spec = f"{kind}:{self.contained(Path(path), what='dataset', directory=kind == 'imagefolder')}"
            return dataset_from_spec(spec, split, transform=ds.get("transform"))
        root = ds.get("root")
        if root is not None:
            root = self.contained(Path(root), what="dataset root", directory=True)
        return load_dataset(ds["name"], split, root=root)

    def training_data(self, entry):
        """The run's ``train_data`` file (indices and labels, written by the builder); for
        zoos built before it was recorded, the same draw re-derived from the recipe and the
        run's hparams (:func:`pgen.train.training_data`, seeded by the run's seed)."""
        import numpy as np

        rel = entry.extra.get("train_data")
        if rel:
            path = safe_join(self.checkpoint_root, rel, what=f"model {entry.id}: train_data")
            try:
                with np.load(path, allow_pickle=False) as f:
                    indices, labels = f["indices"], f["labels"]
            except (OSError, KeyError, ValueError) as exc:
                raise ZooError(f"model {entry.id}: {path} is not a training-data file (.npz with indices and "
                               f"labels): {exc}") from None
            if indices.ndim != 1 or indices.shape != labels.shape or not np.issubdtype(indices.dtype, np.integer) \
                    or not np.issubdtype(labels.dtype, np.integer):
                raise ZooError(f"model {entry.id}: {path}: indices and labels must be 1-D integer arrays of one length")
            return torch.from_numpy(indices.astype(np.int64)), torch.from_numpy(labels.astype(np.int64))
        recipe = self.meta.get("recipe")
        if not recipe or "dataset" not in self.meta or "spec" in self.meta["dataset"]:
            return None
        from pgen.data import dataset_arrays
        from pgen.train import training_data
        from pgen.zoo.builder import Recipe, _train_config

        r = Recipe(recipe, source=str(self.root / "zoo.json"))
        seed = entry.hparams.get("seed", r.seeds[0])
        cfg = _train_config(r, entry.hparams, seed)
        if self._train_labels is None:
            self._train_labels = dataset_arrays(self.dataset("train"))[1]
        return training_data(self._train_labels, cfg, self.meta["num_classes"])

    @property
    def data_kind(self) -> str | None:
        """The pseudo-test policy's data kind, where the zoo declares it (``dataset.kind``)."""
        return self.meta["dataset"].get("kind")

    @property
    def dataset_name(self) -> str:
        ds = self.meta["dataset"]
        return ds.get("name") or ds["spec"]

    def hparam_grid(self):
        return self.meta.get("hparam_grid")
