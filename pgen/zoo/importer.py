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

from pgen.errors import InputError
from pgen.models import build_model, model_arguments
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
    ``initial_checkpoint`` and other metrics; ``hp.<name>`` columns are hyperparameters.
    The model id is the checkpoint's file name without its suffix.
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
    rows = {}
    for given, p in zip(checkpoints, paths):
        hit = table[(table["checkpoint"].astype(str) == str(given)) | (table["checkpoint"].astype(str) == p.name)]
        if len(hit) != 1:
            raise InputError(f"{metrics}: {len(hit)} rows for checkpoint {given} (need exactly one; the "
                             "'checkpoint' column holds the file name as given or its base name)")
        rows[p] = hit.iloc[0]
    meta_ds, train, data_source = _dataset_meta(dataset, transform, data_kind)
    x0, _ = train[0]
    input_shape = list(x0.shape)
    if num_classes is None:
        from pgen.data import DATASETS, dataset_arrays

        num_classes = DATASETS[dataset].num_classes if dataset in DATASETS else int(dataset_arrays(train)[1].max()) + 1
    kwargs = dict(model_kwargs or {})

    initial = {p: Path(str(rows[p]["initial_checkpoint"])) for p in paths
               if "initial_checkpoint" in table.columns and pd.notna(rows[p]["initial_checkpoint"])}
    for p, q in list(initial.items()):
        if not q.is_absolute():
            initial[p] = p.parent / q if (p.parent / q).is_file() else q
        if not initial[p].is_file():
            raise InputError(f"initial checkpoint {q} of {p} does not exist")
    every = [p.resolve() for p in paths] + [q.resolve() for q in initial.values()]
    root = Path(os.path.commonpath([str(p.parent) for p in every]))
    nc, arch_kwargs = model_arguments(kwargs, num_classes)
    for p in every:  # every checkpoint must load, strictly, before the zoo exists
        model = build_model(arch, input_shape=input_shape, num_classes=nc, trust_code=trust_code, **arch_kwargs)
        load_weights_into(model, load_state_dict(p), source=p, model_id=p.stem)

    hp_cols = [c for c in table.columns if c.startswith("hp.")]
    skip = {"checkpoint", "initial_checkpoint", *hp_cols}
    def inside(q: Path) -> str:  # where a checkpoint goes in the zoo
        return str(Path("checkpoints") / q.resolve().relative_to(root))

    manifest = []
    for i, p in zip(ids, paths):
        r = rows[p]
        row = {"id": i, "checkpoint": inside(p), "arch": arch, "model_kwargs": kwargs,
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


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _write(path: Path, text: str) -> None:
    tmp = replace_link(path.with_name(path.name + ".tmp"))
    tmp.write_text(text)
    tmp.replace(path)
