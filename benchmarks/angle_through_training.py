"""The P-vector angle at every checkpoint of a zoo (``--with-checkpoints`` at scale).

Scores every checkpoint of a zoo (the initial weights and each saved epoch, not only the
final models) with the angle in both centerings and the weight-only measures, then, per
epoch: the median angle, and Kendall tau of the angle against the gap and against test
accuracy with 95% bootstrap CIs over runs (each run of a sampled zoo is its own cell).
Beside the angles, their null: the angle between two independent random unit vectors in
R^n (n the samples) has median ~90 degrees and sd 180/pi/sqrt(n) (1.8 degrees at n = 1000).

    python benchmarks/angle_through_training.py smallcnn-mnist5k --workers 2 \\
        --out reports/benchmark-example/smallcnn-mnist5k

Writes ``checkpoints_<zoo>.csv`` (one row per checkpoint) and ``angle_by_epoch_<zoo>.csv``
into ``--out``; its store (``checkpoints.sqlite``) resumes an interrupted run.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pgen.paths import safe_filename
from pgen.score import ScoreSettings, score_zoo
from pgen.stats import correlations
from pgen.zoo import load_zoo

MEASURES = ("pvector_angle", "pvector_angle_uncentered", "sum_squared_weights", "param_norm", "distance_from_init",
            "log_prod_of_spec", "log_sum_of_fro", "path_norm")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("zoo")
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--bootstrap", type=int, default=2000)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    zoo = load_zoo(args.zoo)
    t0 = time.perf_counter()
    run = score_zoo(zoo, out / "checkpoints-store", settings=ScoreSettings(measures=MEASURES), workers=args.workers)
    seconds = time.perf_counter() - t0
    table = run.table.copy()
    by_id = {e.id: e for e in zoo.entries}
    table["run"] = [by_id[i].extra.get("run", i) for i in table["model_id"]]
    table["epoch"] = [by_id[i].extra.get("epoch") for i in table["model_id"]]
    name = safe_filename(zoo.name)
    keep = ["model_id", "run", "epoch", "train_acc", "test_acc", "gap", *[m for m in MEASURES if m in table]]
    table[keep].to_csv(out / f"checkpoints_{name}.csv", index=False)
    rows = []
    for epoch, part in table.groupby("epoch"):
        for measure in ("pvector_angle", "pvector_angle_uncentered"):
            row = {"epoch": epoch, "measure": measure, "models": int(part[measure].notna().sum()),
                   "median_angle": float(part[measure].median()),
                   "null_median": 90.0, "null_sd": 180 / math.pi / math.sqrt(1000)}
            for target in ("gap", "test_acc"):
                c = correlations(part[measure], part[target], methods=("kendall",), n_boot=args.bootstrap,
                                 name_x=measure, name_y=target).iloc[0]
                row.update({f"tau_{target}": c["value"], f"tau_{target}_ci_low": c["ci_low"],
                            f"tau_{target}_ci_high": c["ci_high"]})
            rows.append(row)
    summary = pd.DataFrame(rows)
    summary.to_csv(out / f"angle_by_epoch_{name}.csv", index=False)
    with pd.option_context("display.width", 200):
        print(summary.round(3).to_string(index=False))
    print(f"{len(table)} checkpoints scored in {seconds:.0f} s ({len(table) / seconds:.2f} models/s, "
          f"{args.workers} worker(s)); wrote {out / f'checkpoints_{name}.csv'} and {out / f'angle_by_epoch_{name}.csv'}")


if __name__ == "__main__":
    main()
