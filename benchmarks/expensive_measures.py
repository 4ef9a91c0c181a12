"""Benchmark: the five expensive measures, this tree against a baseline commit (#37 item 1).

``sharpness``, ``mag_sharpness``, ``pacbayes_flatness``, ``pacbayes_mag_flatness`` and
``kit_sharpness`` make most of a full benchmark's time. This script computes them on the
final models of the given zoos twice in one run, with the code of ``--baseline`` (a git
revision, extracted to a temporary folder) and with this tree's, each in its own process
with one thread, the two alternating measure by measure, on the data that ``pgen score`` gives them (the first ``--n`` training
samples, or the model's own). It prints per measure and zoo the median and maximum
seconds per model, old and new, their ratios, and the largest difference of the values
(these measures are seeded: the changes are meant to leave every value equal).

Usage::

    python benchmarks/expensive_measures.py ZOO [ZOO ...] --baseline f796a2d [--every 4]
    python benchmarks/expensive_measures.py fantastic-mnist5k mnist5k --baseline f796a2d --every 4

A ZOO is a folder or the name of a zoo built with ``pgen zoo build``.

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
from pgen.score import ScoreSettings, _Context, _own_training_data

zoo_path, n = sys.argv[1], int(sys.argv[2])
from pgen.zoo import load_zoo
zoo = load_zoo(zoo_path).final_models()
s = ScoreSettings(n_samples=n)
ctx = _Context(zoo, s)
settings = s.measure_settings("cpu")
print(json.dumps({"ids": [e.id for e in zoo.entries]}), flush=True)
loaded = {}
for line in sys.stdin:  # "model_id measure": one measurement per request, so two codes can alternate
    model_id, name = line.split()
    if model_id not in loaded:
        entry = zoo[model_id]
        own = _own_training_data(entry, ctx, s)
        data = ctx.measure_data if own is None else MeasureData(
            ctx.x_train[own[0][:n]], own[1][:n], num_classes=ctx.measure_data.num_classes,
            train_size=len(own[0]), own=True)
        loaded = {model_id: (entry.load_model(), data)}
    model, data = loaded[model_id]
    t = time.perf_counter()
    try:
        value, error = evaluate_measure(name, model, None, data, settings).value, None
    except Exception as exc:
        value, error = None, f"{type(exc).__name__}: {exc}"
    print(json.dumps({"model": model_id, "measure": name, "value": value, "error": error,
                      "seconds": time.perf_counter() - t}), flush=True)
"""


def _baseline_tree(rev: str, folder: Path) -> Path:
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "pgen"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(folder, filter="data")
    return folder


class _Worker:
    """A process computing measures with the code under ``code_root``, one request at a time."""

    def __init__(self, code_root: Path, zoo: str, n: int):
        env = dict(os.environ, PYTHONPATH=str(code_root), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, zoo, str(n)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir())
        self.ids = self._reply()["ids"]

    def _reply(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"a measure worker ended (exit {self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def measure(self, model_id: str, name: str) -> dict:
        self.proc.stdin.write(f"{model_id} {name}\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main(argv=None):
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("zoos", nargs="+", help="zoo folders, or names of zoos built with pgen zoo build")
    parser.add_argument("--baseline", required=True, help="git revision of the old code")
    parser.add_argument("--every", type=int, default=1, help="every K-th final model")
    parser.add_argument("--n", type=int, default=1000, help="samples, as pgen score --n-samples")
    parser.add_argument("--json", help="also write every measurement here")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="pgen-baseline-") as tmp:
        old_root = _baseline_tree(args.baseline, Path(tmp))
        for zoo in args.zoos:
            if Path(zoo).exists():  # the workers run elsewhere; a zoo name stays a name (the cache's zoo)
                zoo = str(Path(zoo).resolve())
            workers = {"old": _Worker(old_root, zoo, args.n), "new": _Worker(ROOT, zoo, args.n)}
            try:
                for model_id in workers["new"].ids[::args.every]:
                    for name in MEASURES:  # old and new alternate, measure by measure: drifts of a shared machine hit both
                        for label, worker in workers.items():
                            rows.append(dict(worker.measure(model_id, name), zoo=Path(zoo).name, code=label))
            finally:
                for worker in workers.values():
                    worker.close()
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
