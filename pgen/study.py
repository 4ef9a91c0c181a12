"""The first study: do model P-vectors approach the data P-vector with training?

On sklearn's digits, small MLPs and CNNs are trained from several seeds; for each model
the angle between its penultimate P-vector and the data P-vector is measured at
initialisation and after training, centered and uncentered, together with the angle
matrix between the trained models. This is also the evidence for pgen's centering
default (see ``pgen.pvector``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pgen.data import dataset_info, load_dataset
from pgen.features import data_p_vector, model_p_vectors
from pgen.models import build_model
from pgen.pvector import angle, angle_matrix
from pgen.train import TrainConfig, train_model
from pgen.paths import output_path

__all__ = ["run_study"]

ARCHS = {"mlp": {"width": 64, "depth": 2}, "cnn": {"width": 16, "depth": 2, "hidden": 64}}


def run_study(out_dir: str | Path, *, dataset: str = "digits", seeds=(0, 1, 2), epochs: int = 15,
              split: str = "test", progress: bool = True) -> dict:
    """Run the study; write ``study.csv``, ``study_pairs.csv``, ``study.png`` and the
    report ``study.md`` / ``study.html`` in ``out_dir``.

    Returns ``{"models": DataFrame, "pairs": DataFrame, "files": [paths]}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = dataset_info(dataset)
    train_set, test_set = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    samples = load_dataset(dataset, split)
    data_pv = {c: data_p_vector(samples, center=c) for c in (True, False)}

    rows, trained = [], {}
    runs = [(arch, seed) for arch in ARCHS for seed in seeds]
    iterator = runs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(runs, desc="study", unit="model")
    for arch, seed in iterator:
        torch.manual_seed(seed)
        model = build_model(arch, input_shape=info.input_shape, num_classes=info.num_classes, **ARCHS[arch])
        init = copy.deepcopy(model)
        cfg = TrainConfig(epochs=epochs, batch_size=32, lr=0.05, seed=seed)
        metrics = train_model(model, train_set, test_set, cfg, num_classes=info.num_classes)
        name = f"{arch}-seed{seed}"
        row = {"model": name, "arch": arch, "seed": seed, "train_acc": metrics["train_acc"],
               "test_acc": metrics["test_acc"]}
        for centered in (True, False):
            tag = "centered" if centered else "uncentered"
            pv_init = model_p_vectors(init, samples, center=centered)["penultimate"]
            pv_final = model_p_vectors(model, samples, center=centered)["penultimate"]
            row[f"angle_init_{tag}"] = angle(pv_init.vector, data_pv[centered].vector)
            row[f"angle_trained_{tag}"] = angle(pv_final.vector, data_pv[centered].vector)
            row[f"gap_trained_{tag}"] = pv_final.gap
            trained.setdefault(tag, {})[name] = pv_final.vector
        rows.append(row)
    models = pd.DataFrame(rows)

    pair_rows = []
    for tag, vecs in trained.items():
        names = list(vecs)
        mat = angle_matrix([vecs[n] for n in names])
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                pair_rows.append({"centering": tag, "model_a": names[i], "model_b": names[j], "angle": mat[i, j]})
    pairs = pd.DataFrame(pair_rows)

    files = [output_path(out, "study.csv"), output_path(out, "study_pairs.csv"), output_path(out, "study.png")]
    models.to_csv(files[0], index=False)
    pairs.to_csv(files[1], index=False)
    _plot(models, trained, files[2], dataset, split)
    files += _report(models, pairs, files[2], out, dataset, split, len(samples), epochs)
    return {"models": models, "pairs": pairs, "files": files}


def _report(models, pairs, plot, out, dataset, split, n, epochs) -> list[Path]:
    from pgen.report.document import Document
    from pgen.stats import random_angle_null

    null = random_angle_null(n)
    doc = Document(f"pgen study: P-vector angles on {dataset}")
    doc.paragraph(f"{len(models)} models ({', '.join(ARCHS)}; {epochs} epochs), P-vectors of the penultimate layer "
                  f"over the {n} samples of the {split} split. A random unit vector over {n} samples sits at "
                  f"{null['median']:.1f} degrees from any fixed one (90% between {null['q05']:.1f} and "
                  f"{null['q95']:.1f}): the scale for every angle below.", answer=True)
    rows = []
    for tag in ("centered", "uncentered"):
        for when in ("init", "trained"):
            v = models[f"angle_{when}_{tag}"]
            rows.append({"features": tag, "model": when, "min": v.min(), "median": v.median(), "max": v.max()})
        v = pairs.loc[pairs["centering"] == tag, "angle"]
        rows.append({"features": tag, "model": "trained vs trained", "min": v.min(), "median": v.median(),
                     "max": v.max()})
    doc.heading("Angles (degrees) to the data P-vector, and between trained models")
    doc.table(pd.DataFrame(rows), digits=3)
    doc.images([("study", plot)])
    doc.heading("Models")
    doc.table(models, digits=3)
    return doc.write(out, "study")


def _plot(models: pd.DataFrame, trained: dict, path: Path, dataset: str, split: str) -> None:
    from pgen.report.plots import figure, save

    fig, axes = figure(15, 4.5, ncols=3)
    for ax, tag in zip(axes[:2], ("centered", "uncentered")):
        x = np.arange(len(models))
        ax.bar(x - 0.2, models[f"angle_init_{tag}"], 0.4, label="at init")
        ax.bar(x + 0.2, models[f"angle_trained_{tag}"], 0.4, label="trained")
        ax.set_xticks(x, models["model"], rotation=45, ha="right")
        ax.set_ylabel("angle to data P-vector (deg)")
        ax.set_ylim(0, 90)
        ax.set_title(f"model vs data, {tag}")
        ax.legend()
    vecs = trained["centered"]
    mat = angle_matrix(list(vecs.values()))
    im = axes[2].imshow(mat, vmin=0, vmax=90, cmap="viridis")
    axes[2].set_xticks(range(len(vecs)), list(vecs), rotation=45, ha="right")
    axes[2].set_yticks(range(len(vecs)), list(vecs))
    for i in range(len(vecs)):
        for j in range(len(vecs)):
            axes[2].text(j, i, f"{mat[i, j]:.0f}", ha="center", va="center", color="w", fontsize=7)
    axes[2].set_title("angles between trained models (centered)")
    fig.colorbar(im, ax=axes[2], label="deg")
    fig.suptitle(f"P-vector angles on {dataset} ({split} split)")
    save(fig, path)
