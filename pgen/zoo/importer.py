"""``pgen zoo import``: a pgen zoo from checkpoints the user already has.

The zoo folder gets ``zoo.json``, ``manifest.jsonl``, the checkpoints under
``checkpoints/`` (their layout below their common folder kept) and an ``npz:`` or
``imagefolder:`` dataset under ``data/``, each hard-linked where the file system allows
(no space used) and copied otherwise: the zoo is self-contained, can move, and pgen never
needs to read outside it (:class:`~pgen.zoo.native.NativeZoo` refuses paths that leave it).
Every checkpoint is loaded into the architecture, strictly, before anything is written, so
a zoo that exists loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import torch

from pgen.errors import DatasetError, InputError
from pgen.models import build_model, check_model_fits, model_arguments
from pgen.zoo.base import check_metrics
from pgen.zoo.native import FORMAT, NativeZoo, load_state_dict, load_weights_into
from pgen.paths import link_or_copy, replace_link

__all__ = ["import_zoo"]


def _dataset_meta(spec: str, transform: dict | None, data_kind: str | None) -> tuple[dict, object, Path | None]:
    """The zoo's dataset entry (with a path inside the zoo, ``data/NAME``), the training
    split, and the file or folder to place there (None for a named dataset)."""
    from pgen.data import DATASETS, dataset_from_spec

    kind, _, path = spec.partition(":")
    source = None
    if path:  # npz:/imagefolder: the data go into the zoo, so the zoo names a path inside itself
        source = Path(path).resolve()
        train = dataset_from_spec(f"{kind}:{source}", "train", transform=transform)
        spec = f"{kind}:data/{source.name}"
    else:
        train = dataset_from_spec(spec, "train", transform=transform)
    meta = {"spec": spec}
    if spec in DATASETS:
        meta["name"] = spec
    if transform:
        meta["transform"] = dict(transform)
    if data_kind:
        meta["kind"] = data_kind
    return meta, train, source


def import_zoo(checkpoints, *, arch: str, dataset: str, metrics, out, model_kwargs: dict | None = None,
               name: str | None = None, transform: dict | None = None, num_classes: int | None = None,
               data_kind: str | None = None, trust_code: bool = False) -> NativeZoo:
    """Write a pgen zoo for ``checkpoints`` (see the module docstring) and return it.

    ``metrics``: a CSV path or DataFrame with one row per checkpoint: ``checkpoint`` (the
    file name as given, or its base name), ``test_acc``, optionally ``train_acc``,
    ``initial_checkpoint``, ``model_kwargs`` (a JSON object of this checkpoint's own
    architecture arguments, merged over ``model_kwargs``: one zoo can hold a sweep of
    widths) and other metrics; ``hp.<name>`` columns are hyperparameters. Every row must
    name a given checkpoint and accuracies must be numbers in [0, 1]. The model id is the
    checkpoint's file name without its suffix.
    """
    paths = [Path(c) for c in checkpoints]
    if not paths:
        raise InputError("no checkpoints given")
    for p in paths:
        if not p.is_file():
            raise InputError(f"checkpoint {p} does not exist")
    ids = [p.stem for p in paths]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InputError(f"two checkpoints share the model id(s) {', '.join(dup)} (the file name without suffix)")
    table = pd.read_csv(metrics) if not isinstance(metrics, pd.DataFrame) else metrics.copy()
    if "checkpoint" not in table.columns or "test_acc" not in table.columns:
        raise InputError(f"{metrics}: needs the columns 'checkpoint' and 'test_acc'; has {', '.join(table.columns)}")
    rows, used = {}, set()
    for given, p in zip(checkpoints, paths):
        match = (table["checkpoint"].astype(str) == str(given)) | (table["checkpoint"].astype(str) == p.name)
        hit = table[match]
        if len(hit) != 1:
            raise InputError(f"{metrics}: {len(hit)} rows for checkpoint {given} (need exactly one; the "
                             "'checkpoint' column holds the file name as given or its base name)")
        rows[p] = hit.iloc[0]
        used |= set(hit.index)
    unknown = [str(c) for i, c in table["checkpoint"].items() if i not in used]
    if unknown:
        raise InputError(f"{metrics}: {len(unknown)} row(s) name no checkpoint given on the command line, first "
                         f"{', '.join(unknown[:3])}")
    extra_cols = {"checkpoint", "initial_checkpoint", "model_kwargs"}
    for p, r in rows.items():  # numbers where numbers belong, before anything is built
        if pd.isna(r["test_acc"]):
            raise InputError(f"{metrics}: checkpoint {p.name} has no test_acc (empty or NaN); every row needs one")
        check_metrics({c: _plain(v) for c, v in r.items() if c not in extra_cols and not c.startswith("hp.")
                       and pd.notna(v)}, f"{metrics}: checkpoint {p.name}")
    meta_ds, train, data_source = _dataset_meta(dataset, transform, data_kind)
    if len(train) == 0:
        raise DatasetError(f"dataset {dataset!r} holds no training samples")
    from pgen.data import DATASETS, dataset_arrays

    x0, _ = train[0]
    input_shape = list(x0.shape)
    labels = dataset_arrays(train)[1]
    if len(torch.unique(labels)) < 2:
        raise DatasetError(f"dataset {dataset!r} holds a single class ({int(labels[0])}); pgen scores classifiers on "
                           "data of two or more classes")
    if num_classes is None:
        num_classes = DATASETS[dataset].num_classes if dataset in DATASETS else int(labels.max()) + 1
    base_kwargs = dict(model_kwargs or {})
    kwargs = {p: {**base_kwargs, **_row_kwargs(rows[p], metrics, p)} for p in paths}  # a row may widen its model

    initial = {p: Path(str(rows[p]["initial_checkpoint"])) for p in paths
               if "initial_checkpoint" in table.columns and pd.notna(rows[p]["initial_checkpoint"])}
    for p, q in list(initial.items()):
        if not q.is_absolute():
            initial[p] = p.parent / q if (p.parent / q).is_file() else q
        if not initial[p].is_file():
            raise InputError(f"initial checkpoint {q} of {p} does not exist")
    pairs = [(p, p) for p in paths] + [(p, q) for p, q in initial.items()]  # (model, checkpoint of it)
    every = [q.resolve() for _, q in pairs]
    root = Path(os.path.commonpath([str(p.parent) for p in every]))
    for p, q in pairs:  # every checkpoint must load, strictly, and run on the data before the zoo exists
        nc, arch_kwargs = model_arguments(kwargs[p], num_classes)
        model = build_model(arch, input_shape=input_shape, num_classes=nc, trust_code=trust_code, **arch_kwargs)
        load_weights_into(model, load_state_dict(q), source=q, model_id=q.stem)
        check_model_fits(model, x0[None], labels, where=f"checkpoint {q}")

    hp_cols = [c for c in table.columns if c.startswith("hp.")]
    skip = {*extra_cols, *hp_cols}
    def inside(q: Path) -> str:  # where a checkpoint goes in the zoo
        return str(Path("checkpoints") / q.resolve().relative_to(root))

    manifest = []
    for i, p in zip(ids, paths):
        r = rows[p]
        row = {"id": i, "checkpoint": inside(p), "arch": arch, "model_kwargs": kwargs[p],
               "hparams": {c[3:]: _plain(r[c]) for c in hp_cols},
               "metrics": {c: _plain(r[c]) for c in table.columns if c not in skip and pd.notna(r[c])},
               "final": True}
        if p in initial:
            row["initial_checkpoint"] = inside(initial[p])
        manifest.append(row)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for q in every:
        link_or_copy(q, out / inside(q))
    if data_source is not None:
        link_or_copy(data_source, out / "data" / data_source.name)
    zoo_meta = {"format": FORMAT, "version": 1, "name": name or out.name, "dataset": meta_ds,
                "input_shape": input_shape, "num_classes": num_classes,
                "description": f"imported: {len(paths)} checkpoint(s) of {arch}"}
    if hp_cols:
        zoo_meta["hparam_grid"] = {c[3:]: sorted({_plain(v) for v in table[c]}, key=str) for c in hp_cols}
    _write(out / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in manifest))
    _write(out / "zoo.json", json.dumps(zoo_meta, indent=1))
    return NativeZoo(out, trust_code=trust_code)


def _row_kwargs(row, metrics, path: Path) -> dict:
    """A checkpoint's own architecture arguments from the ``model_kwargs`` column (a JSON
    object), e.g. one width of a sweep; merged over ``--model-kwargs``."""
    text = row.get("model_kwargs") if "model_kwargs" in row.index else None
    if text is None or (isinstance(text, float) and pd.isna(text)):
        return {}
    try:
        value = json.loads(str(text))
    except json.JSONDecodeError as exc:
        raise InputError(f"{metrics}: checkpoint {path.name}: model_kwargs is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{metrics}: checkpoint {path.name}: model_kwargs must be a JSON object, e.g. "
                         '{"width": 64}')
    return value


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _write(path: Path, text: str) -> None:
    tmp = replace_link(path.with_name(path.name + ".tmp"))
    tmp.write_text(text)
    tmp.replace(path)
