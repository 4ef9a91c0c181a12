"""Why pgen gives the PGDL CMI no bootstrap interval: on the committed benchmark example, the
CMI of resampled design points (whole cells where cells hold several seeds, else models,
drawn with replacement, scored by the competition's scorer on the resampled rows) against
the observed CMI. A percentile interval can only cover the observed value when it lies
inside the bulk of its resamples.

    python benchmarks/cmi_bootstrap.py [--resamples 200] [--folder reports/benchmark-example]

Prints per zoo: measures with a CMI, how many have the observed CMI below the 2.5th
percentile of their resamples (outside the percentile interval), and the median over
measures of the resamples' median divided by the observed CMI (1 = unbiased).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pgen.stats import cmi_from_table, resampling_unit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--folder", default="reports/benchmark-example")
    args = ap.parse_args()
    folder = Path(args.folder)
    record = json.loads((folder / "benchmark_settings.json").read_text())
    total = outside = 0
    print(f"{'zoo':>18} {'unit':>10} {'measures':>9} {'below 2.5%':>11} {'median ratio':>13}")
    for path in sorted(folder.glob("models_*.csv")):
        table = pd.read_csv(path)
        if "zoo.converged" in table:
            table = table[~table["zoo.converged"].astype(str).str.lower().isin(["false", "0", "0.0"])]
        grid = {c[3:]: sorted(table[c].dropna().unique().tolist()) for c in table if c.startswith("hp.")
                and c != "hp.seed"}
        below, ratios, unit = 0, [], None
        for m in record["measures"]:
            if m not in table or table[m].isna().all():
                continue
            t = table[table[m].notna()].reset_index(drop=True)
            observed = cmi_from_table(t, m, grid, full_grid=False)
            if observed <= 0:
                continue
            unit = resampling_unit(t)
            rng = np.random.default_rng(0)
            vals = np.array([cmi_from_table(t.iloc[unit.indices(d)], m, grid, full_grid=False)
                             for d in unit.draws(rng, args.resamples)])
            below += observed < np.quantile(vals, 0.025)
            ratios.append(np.median(vals) / observed)
        total += len(ratios)
        outside += below
        print(f"{path.stem[7:]:>18} {unit.kind if unit else '':>10} {len(ratios):>9} {below:>11} "
              f"{np.median(ratios):>13.2f}")
    print(f"{'all':>18} {'':>10} {total:>9} {outside:>11}")


if __name__ == "__main__":
    main()
