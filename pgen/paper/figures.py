"""One figure per claim, named after the appendix figure of Liu et al. 2022 it mirrors.

Each figure has a centered and an uncentered panel, and the random-vector null (median
angle between random unit vectors and a fixed one over the same samples,
:func:`pgen.stats.random_angle_null`) as a dashed line wherever an angle is plotted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pgen.paper.experiments import CENTERINGS
from pgen.report.plots import figure, save

__all__ = ["write_figures"]

COLOURS = {"mlp": "C0", "cnn": "C1", "autoencoder": "C2", "contrastive": "C3"}


def _null(ax, null):
    ax.axhline(null["median"], ls="--", c="grey", lw=1, label=f"random null {null['median']:.0f}°")


def _curves(tables, file, x, y, title, ylabel, path, null, *, hue="paradigm", unit="run", where=None, logy=False):
    fig, axes = figure(11, 4, ncols=2)
    t = tables[file]
    if where is not None:
        t = where(t)
    for ax, (tag, _) in zip(axes, CENTERINGS):
        d = t[t["centering"] == tag]
        seen = set()
        for key, g in d.groupby(unit):
            h = g[hue].iloc[0]
            ax.plot(g[x], g[y], c=COLOURS.get(h, "k"), alpha=0.7, lw=1, label=None if h in seen else h)
            seen.add(h)
        if null is not None:
            _null(ax, null)
        ax.set_title(f"{title} ({tag})")
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    return save(fig, path)


def write_figures(out: Path, tables: dict[str, pd.DataFrame], null: dict) -> dict[str, Path]:
    """Write every figure; returns {claim id: path}."""
    figs = {}
    # C1 / Fig. 11: angle matrix between the final models of the first seed
    c1 = tables["c1_common_subspace.csv"]
    fig, axes = figure(11, 4.5, ncols=2)
    for ax, (tag, _) in zip(axes, CENTERINGS):
        d = c1[(c1["centering"] == tag) & (c1["seed"] == c1["seed"].min())]
        names = list(dict.fromkeys(list(d["model_a"]) + list(d["model_b"])))
        m = np.zeros((len(names), len(names)))
        for _, r in d.iterrows():
            i, j = names.index(r["model_a"]), names.index(r["model_b"])
            m[i, j] = m[j, i] = r["angle_trained"]
        im = ax.imshow(m, vmin=0, vmax=90, cmap="viridis")
        ax.set_xticks(range(len(names)), [n.rsplit("-seed", 1)[0] for n in names], rotation=30)
        ax.set_yticks(range(len(names)), [n.rsplit("-seed", 1)[0] for n in names])
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_title(f"trained models, seed {d['seed'].min()} ({tag}); null {null['median']:.0f}°")
        ax.grid(False)
    fig.colorbar(im, ax=axes[1], label="angle (deg)")
    figs["C1"] = save(fig, out / "fig11_common_subspace.png")
    figs["C2"] = _curves(tables, "c2_training_dynamics.csv", "epoch", "angle_to_own_final",
                         "angle to the run's final model", "angle (deg)", out / "fig12_training_dynamics.png", null)
    figs["C3"] = _curves(tables, "c3_first_epoch.csv", "iteration", "angle_to_own_final",
                         "epoch 1, per iteration", "angle to final (deg)", out / "fig13_first_epoch.png", null)
    figs["C4"] = _curves(tables, "c4_cross_paradigm.csv", "epoch", "angle", "checkpoints vs other paradigms' references",
                         "angle (deg)", out / "fig14_cross_paradigm.png", null,
                         unit=["seed", "paradigm", "reference"])
    figs["C5"] = _curves(tables, "c5_model_to_data.csv", "step", "angle_to_data", "model vs data, training samples",
                         "angle (deg)", out / "fig15_model_to_data.png", null)
    # C6 / Fig. 16: angle by depth, early vs late
    c6 = tables["c6_layers.csv"]
    fig, axes = figure(11, 4, ncols=2)
    for ax, (tag, _) in zip(axes, CENTERINGS):
        d = c6[c6["centering"] == tag]
        seen = set()
        for (run, epoch), g in d.groupby(["run", "epoch"]):
            last = d[d["run"] == run]["epoch"].max()
            if epoch not in (0, 1, last):
                continue
            which = {0: "init", 1: "epoch 1"}.get(epoch, "final")
            label = f"{g['paradigm'].iloc[0]}, {which}"
            ax.plot(g["depth"], g["angle_to_data"], {"init": ":", "epoch 1": "--"}.get(which, "-"),
                    c=COLOURS.get(g["paradigm"].iloc[0], "k"), alpha=0.7, label=None if label in seen else label)
            seen.add(label)
        ax.set_xticks(sorted(d["depth"].unique()))
        ax.set_xlabel("layer depth (hidden ReLU outputs, input side first)")
        ax.set_ylabel("angle to data (deg)")
        ax.set_title(f"layer-wise, init : / epoch 1 -- / final - ({tag})")
        ax.legend(fontsize=6)
    figs["C6"] = save(fig, out / "fig16_layers.png")
    figs["C7"] = _curves(tables, "c7_entry_distribution.csv", "epoch", "w1_to_init",
                         "entry distribution: W1 to init", "W1 (entries x sqrt(n))", out / "fig17_entry_distribution.png",
                         None)
    # C8 / Fig. 19: cross-model angle by singular-vector index
    c8 = tables["c8_other_singular_vectors.csv"]
    fig, axes = figure(11, 4, ncols=2)
    for ax, (tag, _) in zip(axes, CENTERINGS):
        d = c8[c8["centering"] == tag]
        ks = sorted(d["k"].unique())
        ax.boxplot([d[d["k"] == k]["angle"] for k in ks], tick_labels=[str(k) for k in ks])
        _null(ax, null)
        ax.set_xlabel("singular vector index k")
        ax.set_ylabel("angle between trained models (deg)")
        ax.set_title(f"k-th singular vectors across paradigms ({tag})")
        ax.legend(fontsize=7)
    figs["C8"] = save(fig, out / "fig19_other_singular_vectors.png")
    # C9 / Fig. 20: log-log
    c9 = tables["c9_log_log.csv"]
    fig, axes = figure(11, 4, ncols=2)
    for ax, (tag, _) in zip(axes, CENTERINGS):
        d = c9[(c9["centering"] == tag) & (c9["test_error"] > 0)]
        for p, g in d.groupby("paradigm"):
            ax.scatter(g["angle_to_data"], g["test_error"], s=10, c=COLOURS.get(p, "k"), label=p, alpha=0.7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("angle to data P-vector (deg, log)")
        ax.set_ylabel("test error (log)")
        ax.set_title(f"epoch checkpoints of the classifiers ({tag})")
        ax.legend(fontsize=7)
    figs["C9"] = save(fig, out / "fig20_log_log.png")
    figs["C10"] = _curves(tables, "c10_explained_variance.csv", "epoch", "explained_top1",
                          "top-1 explained variance", "sigma1^2 / ||X||_F^2", out / "fig22_explained_variance.png", None)
    return figs
