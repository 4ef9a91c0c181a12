"""Coverage of pgen's bootstrap intervals of Kendall's tau when seeds of a cell are replicates.

Synthetic zoos: each hyperparameter cell has a latent (u, v) with correlation rho; each of
its seeds adds small noise (sd ``noise``), so seeds of one cell move together, as in pgen's
protocol zoos. The true tau between a measure and a target over models of different cells
is (2 / pi) asin(rho / (1 + noise^2)). For each design, the share of zoos whose 95% CI
covers it, resampling cells (pgen's unit wherever a cell holds several models) and
resampling models (seeds taken as independent), and the mean width ratio of the two.

    python benchmarks/coverage.py [--draws 400] [--boot 1000]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from pgen.stats import correlations


def clustered_zoo(rng, cells: int, seeds: int, rho: float, noise: float):
    u = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=cells)
    x = np.repeat(u[:, 0], seeds) + noise * rng.standard_normal(cells * seeds)
    y = np.repeat(u[:, 1], seeds) + noise * rng.standard_normal(cells * seeds)
    return x, y, np.repeat(np.arange(cells), seeds)


def coverage(cells: int, seeds: int, rho: float, noise: float, draws: int, n_boot: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    true = 2 / math.pi * math.asin(rho / (1 + noise**2))
    hits = {"cells": 0, "models": 0}
    widths = {"cells": [], "models": []}
    for d in range(draws):
        x, y, groups = clustered_zoo(rng, cells, seeds, rho, noise)
        for unit, g in (("cells", groups), ("models", None)):
            row = correlations(x, y, methods=("kendall",), n_boot=n_boot, seed=d, groups=g).iloc[0]
            hits[unit] += row["ci_low"] <= true <= row["ci_high"]
            widths[unit].append(row["ci_high"] - row["ci_low"])
    return {"true_tau": true, "cells": hits["cells"] / draws, "models": hits["models"] / draws,
            "width_ratio": float(np.mean(widths["cells"]) / np.mean(widths["models"]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()
    print(f"{args.draws} zoos per design, {args.boot} resamples; 95% percentile intervals of Kendall tau-b")
    print(f"{'cells x seeds':>14} {'rho':>5} {'noise':>6} {'true tau':>9} {'cover (cells)':>14} "
          f"{'cover (models)':>15} {'width cells/models':>19}")
    for cells, seeds, rho, noise in ((24, 2, 0.3, 0.2), (48, 2, 0.3, 0.2), (48, 2, 0.6, 0.2), (16, 4, 0.5, 0.2),
                                     (48, 2, 0.3, 1.0)):
        r = coverage(cells, seeds, rho, noise, args.draws, args.boot)
        print(f"{cells:>8} x {seeds:<3} {rho:>5.1f} {noise:>6.1f} {r['true_tau']:>9.3f} {r['cells']:>14.3f} "
              f"{r['models']:>15.3f} {r['width_ratio']:>19.2f}")


if __name__ == "__main__":
    main()
