"""Write a pgen zoo of Small CNNs in the Small CNN Zoo's published format.

Unterthiner et al. (2020) publish each dataset's zoo as ``weights.npy`` (one flat float32
row per checkpoint: per layer the bias, then the kernel in TensorFlow's layout: conv
(kh, kw, in, out), dense (in, out)), ``layout.csv`` (``varname, start_idx, end_idx, shape``)
and ``metrics.csv.gz`` (the checkpoint path as an unnamed index column, then ``config.*``,
``modeldir``, ``step``, ``test_accuracy``, ``test_loss``, ``train_accuracy``,
``train_loss``). Their loaders (the colab, NFN's ``SmallCNNZooDataset``-style readers) and
pgen's :class:`~pgen.zoo.smallcnn.SmallCNNZoo` read what this writes.

Mapping: ``step`` is the epoch (the archives' steps are epochs 0..86; the checkpoint path
ends ``permanent_ckpt-<epoch>`` as theirs); the losses are cross-entropy plus the L2
penalty, as Keras's ``model.evaluate`` reports a model with a kernel regularizer; the
constants of pgen's recipe fill the other ``config.*`` columns (``b_init`` "zero",
``dnn_architecture`` "cnn", ``num_layers``, ``num_units``, ``epochs``,
``epochs_between_checkpoints`` 6). One column is pgen's own: ``diverged``.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pgen.errors import InputError
from pgen.paths import replace_link

__all__ = ["export_smallcnn"]


def _layer_names(n_conv: int) -> list[str]:
    return ["sequential/conv2d" + (f"_{i}" if i else "") for i in range(n_conv)] + ["sequential/dense"]


def _flat_row(model: nn.Module) -> tuple[np.ndarray, list[tuple[str, tuple]]]:
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    parts, layout = [], []
    for name, m in zip(_layer_names(len(layers) - 1), layers):
        w = m.weight.detach()
        kernel = w.permute(2, 3, 1, 0) if w.dim() == 4 else w.T  # -> (kh, kw, in, out) / (in, out)
        for var, t in ((f"{name}/bias:0", m.bias.detach()), (f"{name}/kernel:0", kernel)):
            parts.append(t.contiguous().numpy().astype(np.float32).ravel())
            layout.append((var, tuple(t.shape)))
    return np.concatenate(parts), layout


def _number(value) -> float:
    """A recorded number, or NaN where none is (a diverged run's overflowing loss); the
    Small CNN Zoo's readers skip rows with NaN metrics, as they do the authors' NaN runs."""
    return float("nan") if value is None else float(value)


def export_smallcnn(zoo, out: str | Path, *, final_only: bool = False, progress: bool = True) -> Path:
    """Write ``zoo`` (a pgen zoo of ``smallcnn`` models, a folder or a loaded Zoo) into the
    folder ``out`` in the Small CNN Zoo format. Every checkpoint is a row (``final_only``:
    the last of each run); rows go run by run, epochs ascending. Returns ``out``."""
    from pgen.zoo import load_zoo

    if not hasattr(zoo, "entries"):
        zoo = load_zoo(zoo, build=False, progress=False)
    entries = list(zoo.final_models().entries if final_only else zoo.entries)
    if not entries:
        raise InputError(f"zoo {zoo.root} has no models to export")
    wrong = [e.id for e in entries if e.extra.get("arch") != "smallcnn"]
    if wrong:
        raise InputError(f"zoo {zoo.root}: the Small CNN Zoo format holds smallcnn models only; "
                         f"{wrong[0]} is {zoo[wrong[0]].extra.get('arch')!r} ({len(wrong)} such)")
    entries.sort(key=lambda e: (str(e.extra.get("run", e.id)), e.extra.get("epoch") or 0))
    recipe = getattr(zoo, "meta", {}).get("recipe", {})
    train = recipe.get("train", {})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(entries), desc="exporting", unit="model")
    rows, records, layout = None, [], None
    for i, e in enumerate(entries):
        model = e.load_model()
        flat, lay = _flat_row(model)
        if rows is None:
            layout = lay
            tmp = replace_link(out / "weights.npy.tmp")
            rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(entries), flat.size))
        elif lay != layout:
            raise InputError(f"model {e.id} has another shape than the first model: one weights.npy holds one shape")
        rows[i] = flat
        hp, m = e.hparams, e.metrics
        run = str(e.extra.get("run", e.id))
        epoch = int(e.extra.get("epoch") or 0)
        penalty = _number(m.get("l2_penalty", 0.0))
        records.append({
            "": f"{zoo.name}/{run}/permanent_ckpt-{epoch}",
            "config.activation": hp.get("activation", "relu"), "config.b_init": "zero",
            "config.dataset": recipe.get("dataset", zoo.dataset_name), "config.dnn_architecture": "cnn",
            "config.dropout": hp.get("dropout", 0.0), "config.epochs": train.get("epochs"),
            "config.epochs_between_checkpoints": 6, "config.init_std": hp.get("init_std"),
            "config.l2reg": hp.get("l2reg", 0.0), "config.learning_rate": hp.get("learning_rate"),
            "config.num_layers": e.extra.get("model_kwargs", {}).get("layers", 3),
            "config.num_units": e.extra.get("model_kwargs", {}).get("filters", 16),
            "config.optimizer": hp.get("optimizer"), "config.random_seed": hp.get("seed"),
            "config.train_fraction": hp.get("train_fraction", 1.0), "config.w_init": hp.get("w_init"),
            "modeldir": f"{zoo.name}/{run}", "step": epoch,
            "test_accuracy": m.get("test_acc"), "test_loss": _number(m.get("test_loss")) + penalty,
            "train_accuracy": m.get("train_acc"), "train_loss": _number(m.get("train_loss")) + penalty,
            "diverged": bool(m.get("diverged", False)),
        })
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    rows.flush()
    del rows
    tmp.replace(out / "weights.npy")
    with replace_link(out / "layout.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["varname", "start_idx", "end_idx", "shape"])
        start = 0
        for var, shape in layout:
            size = int(np.prod(shape))
            w.writerow([var, start, start + size, str(shape)])
            start += size
    with gzip.open(replace_link(out / "metrics.csv.gz"), "wt", newline="") as fh:
        pd.DataFrame.from_records(records).to_csv(fh, index=False)
    return out
