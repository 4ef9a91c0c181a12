"""Benchmark: the five expensive measures, this tree against a baseline commit (#37 item 1).

``sharpness``, ``mag_sharpness``, ``pacbayes_flatness``, ``pacbayes_mag_flatness`` and
``kit_sharpness`` make most of a full benchmark's time. This script computes them on the
final models of the given zoos twice in one run, with the code of ``--baseline`` (a git
revision, extracted to a temporary folder) and with this tree's, each in its own process
with one thread, on the data that ``pgen score`` gives them (the first ``--n`` training
samples, or the model's own). It prints per measure and zoo the median and maximum
seconds per model, old and new, their ratios, and the largest difference of the values
(these measures are seeded: the changes are meant to leave every value equal).

Usage::

    python benchmarks/expensive_measures.py ZOO [ZOO ...] --baseline f796a2d [--every 4]

``--every K`` takes every K-th final model (the slowest zoos take an hour in full).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import io
from pathlib import Path

MEASURES = ("sharpness", "mag_sharpness", "pacbayes_flatness", "pacbayes_mag_flatness", "kit_sharpness")
ROOT = Path(__file__).resolve().parents[1]

_WORKER = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from pgen.measures import MeasureData, evaluate_measure
from pgen.score import ScoreSettings, _Context, _own_training_data, train_size
from pgen.zoo import load_zoo

zoo_path, every, n, measures = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
zoo = load_zoo(zoo_path).final_models()
s = ScoreSettings(n_samples=n)
ctx = _Context(zoo, s)
settings = s.measure_settings("cpu")
for entry in zoo.entries[::every]:
    model = entry.load_model()
    own = _own_training_data(entry, ctx, s)
    if own is not None:
        data = MeasureData(ctx.x_train[own[0][:n]], own[1][:n], num_classes=ctx.measure_data.num_classes,
                           train_size=len(own[0]), own=True)
    else:
        data = ctx.measure_data
    for name in measures:
        t = time.perf_counter()
        try:
            value, error = evaluate_measure(name, model, None, data, settings).value, None
        except Exception as exc:
            value, error = None, f"{type(exc).__name__}: {exc}"
        print(json.dumps({"model": entry.id, "measure": name, "value": value, "error": error,
                          "seconds": time.perf_counter() - t}), flush=True)
"""


def _baseline_tree(rev: str, folder: Path) -> Path:
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "pgen"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def _run(code_root: Path, zoo: str, every: int, n: int) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(code_root), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _WORKER, zoo, str(every), str(n), ",".join(MEASURES)],
                         check=True, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main(argv=None):
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("zoos", nargs="+", help="zoo folders (built with pgen zoo build)")
    parser.add_argument("--baseline", required=True, help="git revision of the old code")
    parser.add_argument("--every", type=int, default=1, help="every K-th final model")
    parser.add_argument("--n", type=int, default=1000, help="samples, as pgen score --n-samples")
    parser.add_argument("--json", help="also write every measurement here")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="pgen-baseline-") as tmp:
        old_root = _baseline_tree(args.baseline, Path(tmp))
        for zoo in args.zoos:
            for label, root in (("old", old_root), ("new", ROOT)):
                for r in _run(root, zoo, args.every, args.n):
                    rows.append(dict(r, zoo=Path(zoo).name, code=label))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"baseline {args.baseline} against this tree; one thread each; every {args.every}. final model; "
          f"seconds per model")
    print(f"{'zoo':<20} {'measure':<22} {'models':>6} {'old med':>8} {'new med':>8} {'ratio':>6} "
          f"{'old max':>8} {'new max':>8} {'ratio':>6} {'max |diff|':>10}")
    for zoo in dict.fromkeys(r["zoo"] for r in rows):
        for name in MEASURES:
            old = {r["model"]: r for r in rows if r["zoo"] == zoo and r["measure"] == name and r["code"] == "old"}
            new = {r["model"]: r for r in rows if r["zoo"] == zoo and r["measure"] == name and r["code"] == "new"}
            so = np.array([old[m]["seconds"] for m in old])
            sn = np.array([new[m]["seconds"] for m in old])
            diffs = [abs(old[m]["value"] - new[m]["value"]) for m in old
                     if old[m]["value"] is not None and new[m]["value"] is not None]
            errors = sum((old[m]["error"] is None) != (new[m]["error"] is None) for m in old)
            diff = f"{max(diffs):10.3g}" if diffs else f"{'-':>10}"
            print(f"{zoo:<20} {name:<22} {len(old):>6} {np.median(so):8.2f} {np.median(sn):8.2f} "
                  f"{np.median(so) / np.median(sn):6.2f} {so.max():8.2f} {sn.max():8.2f} {so.max() / sn.max():6.2f} "
                  f"{diff}" + (f"  ({errors} models fail in one only)" if errors else ""))
        tot_old = sum(r["seconds"] for r in rows if r["zoo"] == zoo and r["code"] == "old")
        tot_new = sum(r["seconds"] for r in rows if r["zoo"] == zoo and r["code"] == "new")
        print(f"{zoo:<20} {'all five, total':<22} {'':>6} {tot_old:8.1f} {tot_new:8.1f} {tot_old / tot_new:6.2f}")


if __name__ == "__main__":
    main()
