"""The one matplotlib setup every pgen report uses, and the plots themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pgen.paths import replace_link

__all__ = ["figure", "save", "measure_scatter", "histogram", "test_vs_pseudo", "ranking_plot"]


def figure(width: float = 5.5, height: float = 4.2, ncols: int = 1):
    """A new figure and its axes (``ncols`` panels) on the non-interactive backend, in pgen's style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                         "axes.spines.right": False, "font.size": 9})
    return plt.subplots(1, ncols, figsize=(width, height))


def save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        fig.savefig(replace_link(path), dpi=110)
    except OSError as exc:  # a full disk: say which file, as every other write does
        raise OSError(exc.errno, f"cannot write the plot {path.name}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path


def _colour(ax, table: pd.DataFrame, color_by: str | None):
    """Scatter colours from a hyperparameter column (categorical legend or colour bar)."""
    if not color_by or color_by not in table.columns:
        return None
    values = table[color_by]
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > 6:
        return {"c": values.to_numpy(float), "cmap": "viridis"}
    return {"groups": list(dict.fromkeys(values.astype(str)))}


def measure_scatter(table: pd.DataFrame, measure: str, target: str, *, label: str, target_label: str,
                    fit=None, color_by: str | None = None, path: Path) -> Path:
    """``target`` against ``measure``, one point per model, with the log-log fit and its 95% band."""
    fig, ax = figure()
    x, y = table[measure].to_numpy(float), table[target].to_numpy(float)
    colour = _colour(ax, table, color_by)
    if colour and "groups" in colour:
        keys = table[color_by].astype(str).to_numpy()
        for k, g in enumerate(colour["groups"]):
            sel = keys == g
            ax.scatter(x[sel], y[sel], s=22, alpha=0.85, color=f"C{k % 10}", label=f"{color_by[3:]}={g}")
    elif colour:
        sc = ax.scatter(x, y, s=22, c=colour["c"], cmap=colour["cmap"])
        fig.colorbar(sc, ax=ax, label=color_by[3:])
    else:
        ax.scatter(x, y, s=22, alpha=0.8, label="models")
    if fit is not None and np.isfinite(x).any() and (x > 0).any():
        grid = np.geomspace(np.nanmin(x[x > 0]), np.nanmax(x), 100)
        yhat, lo, hi = fit.predict(grid, interval=True)
        ax.plot(grid, yhat, "k", lw=1.2, label=f"log-log fit: slope {fit.slope:.2f}, R$^2$ {fit.r2:.2f}")
        ax.fill_between(grid, lo, hi, color="k", alpha=0.12, label="95% CI of the mean")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel(target_label)
    ax.legend(fontsize=7)
    return save(fig, path)


def histogram(values: pd.Series, *, label: str, path: Path) -> Path:
    fig, ax = figure()
    v = values.dropna()
    ax.hist(v, bins=min(30, max(5, len(v) // 2)))
    ax.set_xlabel(label)
    ax.set_ylabel("models")
    return save(fig, path)


def test_vs_pseudo(table: pd.DataFrame, *, colour_column: str, colour_label: str, path: Path) -> Path:
    fig, ax = figure()
    sc = ax.scatter(table["pseudo_test_acc"], table["test_acc"], s=22, c=table[colour_column], cmap="viridis")
    fig.colorbar(sc, ax=ax, label=colour_label)
    lims = [min(table["pseudo_test_acc"].min(), table["test_acc"].min()), 1.0]
    ax.plot(lims, lims, "k--", lw=0.8, label="y = x")
    ax.set_xlabel("pseudo-test accuracy")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    return save(fig, path)


def ranking_plot(summaries: dict[str, pd.DataFrame], path: Path) -> Path:
    """The headline: Kendall tau of sign x measure against the gap with its bootstrap 95%
    CI, one bar per zoo, the band of random rankings (+-1.96 null sd) shaded; beside it the
    PGDL CMI with its CI and, as a tick, the 95th percentile of random rankings' CMI.
    Measures are ordered by their mean tau against the gap (best first)."""
    names = sorted({m for s in summaries.values() for m in s["measure"]})

    def column(s, name):
        col = s.set_index("measure").get(name)
        return col if col is not None else pd.Series(dtype=float)

    def mean_tau(m):
        vals = np.array([column(s, "tau_gap").get(m, np.nan) for s in summaries.values()], dtype=float)
        return float(np.mean(vals[np.isfinite(vals)])) if np.isfinite(vals).any() else np.nan

    score = {m: mean_tau(m) for m in names}
    order = sorted(names, key=lambda m: -np.nan_to_num(score[m], nan=-9))
    fig, axes = figure(11, 0.26 * len(order) + 1.6, ncols=2)
    axes[1].sharey(axes[0])
    height = 0.8 / max(1, len(summaries))
    y = np.arange(len(order))
    for k, (zname, s) in enumerate(summaries.items()):
        colour = f"C{k}"
        for ax, col in zip(axes, ("tau_gap", "cmi_gap")):
            vals = column(s, col).reindex(order).to_numpy(float)
            lo, hi = column(s, col + "_ci_low").reindex(order), column(s, col + "_ci_high").reindex(order)
            err = None
            if len(lo) and len(hi):
                err = np.nan_to_num(np.abs(np.vstack([vals - lo.to_numpy(float), hi.to_numpy(float) - vals])))
            ax.barh(y + k * height, vals, height=height, label=zname, xerr=err, color=colour,
                    error_kw={"lw": 0.7, "alpha": 0.8})
        null_sd = column(s, "tau_null_sd").dropna()
        if len(null_sd):
            band = 1.96 * float(null_sd.iloc[0])
            axes[0].axvspan(-band, band, color=colour, alpha=0.08, lw=0)
        q95 = column(s, "cmi_null_q95").reindex(order).to_numpy(float)
        axes[1].scatter(q95, y + k * height, marker="|", s=60, color="k", lw=1.2,
                        label="random rankings, 95th pct." if k == 0 else None)
    axes[0].axvline(0, color="k", lw=0.8)
    axes[0].set_xlabel("Kendall tau(sign x measure, gap), 95% CI\n(> 0: ranks the gap as intended; "
                       "shaded: random rankings)", fontsize=9)
    axes[0].set_xlim(-1, 1)
    axes[1].set_xlabel("PGDL CMI with the gap, 95% CI (grid zoos)", fontsize=9)
    axes[1].set_xlim(left=0)
    axes[0].set_yticks(y + 0.4 - height / 2)
    axes[0].set_yticklabels(order, fontsize=8)
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=8, loc="lower right")
    return save(fig, path)
