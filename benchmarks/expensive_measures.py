"""Benchmark: the five expensive measures, this tree against a baseline commit (#37 item 1).

``sharpness``, ``mag_sharpness``, ``pacbayes_flatness``, ``pacbayes_mag_flatness`` and
``kit_sharpness`` make most of a full benchmark's time. This script computes them on the
final models of the given zoos twice in one run, with the code of ``--baseline`` (a git
revision, extracted to a temporary folder) and with this tree's, each in its own process
with one thread, the two alternating measure by measure, on the data that ``pgen score`` gives them (the first ``--n`` training
samples, or the model's own), once per seed (``--seeds``, default 3: seeds 0, 1, 2). It
prints per measure and zoo:

* the median and maximum seconds per model (each model's mean over the seeds), old and
  new, and their ratios; then the same for the five measures together;
* the values: all five are stochastic (seeded by ``settings.seed``), so a change of the
  search moves a value within the spread of the measure's own seeds, and the second table
  puts the two side by side, on log10 of the value: ``sd old`` / ``sd new`` the root mean
  square over models of the standard deviation over seeds (not the median: the old
  bisection returned points of a dyadic grid, so many models give every seed the same
  value and a median of 0), ``diff`` the median over models of new minus old (each the
  mean over seeds) with a 95% bootstrap interval over models (a systematic shift), and
  ``|diff| <= sd`` the share of models whose |new - old| (seed means) is at most the old
  seeds' standard deviation; then, since pgen uses these values through their ranks, the
  Kendall tau across models between two seeds of the old code (``tau old-old``, mean over
  seed pairs) beside the tau between the new code and the old at different seeds
  (``tau new-old``): a change within the seeds' spread ranks the models as a reseed
  does. Identical codes print diff 0 and equal taus.

Usage::

    python benchmarks/expensive_measures.py ZOO [ZOO ...] --baseline f796a2d [--every 4] [--seeds 3]
    python benchmarks/expensive_measures.py fantastic-mnist5k mnist5k --baseline ddd2fb2 --every 4

A ZOO is a folder or the name of a zoo built with ``pgen zoo build``.

``--every K`` takes every K-th final model (the slowest zoos take an hour in full).
"""

from __future__ import annotations

import argparse
import json
import math
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
from dataclasses import replace
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
for line in sys.stdin:  # "model_id measure seed": one measurement per request, so two codes can alternate
    model_id, name, seed = line.split()
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
        data.cache.clear()  # the PAC-Bayes sigma is kept per model and seed; each request computes its own
        value, error = evaluate_measure(name, model, None, data, replace(settings, seed=int(seed))).value, None
    except Exception as exc:
        value, error = None, f"{type(exc).__name__}: {exc}"
    print(json.dumps({"model": model_id, "measure": name, "value": value, "error": error,
                      "seconds": time.perf_counter() - t}), flush=True)
"""


def _baseline_tree(rev: str, folder: Path) -> Path:
    paths = ["pgen"]  # and the recipes pgen/recipes links to, where the revision has them
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{rev}:model_zoos/recipes"]).returncode == 0:
        paths.append("model_zoos/recipes")
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *paths], check=True, capture_output=True).stdout
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

    def measure(self, model_id: str, name: str, seed: int) -> dict:
        self.proc.stdin.write(f"{model_id} {name} {seed}\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def _bootstrap_median_ci(x, rng, reps: int = 2000) -> tuple[float, float]:
    import numpy as np

    idx = rng.integers(0, len(x), size=(reps, len(x)))
    medians = np.median(x[idx], axis=1)
    return float(np.quantile(medians, 0.025)), float(np.quantile(medians, 0.975))


def summarize(rows: list[dict], seeds: int) -> str:
    """The timing and value tables (see the module docstring) of the measurements ``rows``."""
    import numpy as np
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    out = [f"seconds per model (mean over {seeds} seeds), one thread",
           f"{'zoo':<20} {'measure':<22} {'models':>6} {'old med':>8} {'new med':>8} {'ratio':>6} "
           f"{'old max':>8} {'new max':>8} {'ratio':>6}"]
    values = ["log10 of the value: seed sd (rms over models), new - old (median over models, 95% bootstrap CI), "
              "Kendall tau across models between seeds",
              f"{'zoo':<20} {'measure':<22} {'models':>6} {'sd old':>7} {'sd new':>7} {'diff':>7} "
              f"{'CI':>17} {'|diff| <= sd':>12} {'tau old-old':>12} {'tau new-old':>12}"]
    names = [m for m in MEASURES if any(r["measure"] == m for r in rows)]
    names += sorted({r["measure"] for r in rows} - set(names))
    together = "all five" if names == list(MEASURES) else "together"
    for zoo in dict.fromkeys(r["zoo"] for r in rows):
        totals = {}
        for name in names:
            mine = [r for r in rows if r["zoo"] == zoo and r["measure"] == name]
            models = list(dict.fromkeys(r["model"] for r in mine))
            sec = {code: np.array([np.mean([r["seconds"] for r in mine if r["model"] == m and r["code"] == code])
                                   for m in models]) for code in ("old", "new")}
            for code in sec:
                totals[code] = totals.get(code, 0) + sec[code]
            out.append(f"{zoo:<20} {name:<22} {len(models):>6} {np.median(sec['old']):8.2f} "
                       f"{np.median(sec['new']):8.2f} {np.median(sec['old']) / np.median(sec['new']):6.2f} "
                       f"{sec['old'].max():8.2f} {sec['new'].max():8.2f} {sec['old'].max() / sec['new'].max():6.2f}")
            logs = {code: [[math.log10(r["value"]) for r in mine if r["model"] == m and r["code"] == code
                            and r["value"] is not None and r["value"] > 0] for m in models] for code in ("old", "new")}
            both = [i for i in range(len(models)) if len(logs["old"][i]) == seeds and len(logs["new"][i]) == seeds]
            failed = len(models) - len(both)
            if not both:
                values.append(f"{zoo:<20} {name:<22} {0:>6} (no model with a value from every seed in both codes)")
                continue
            sd = {code: np.array([np.std(logs[code][i], ddof=1) if seeds > 1 else 0.0 for i in both])
                  for code in logs}
            diff = np.array([np.mean(logs["new"][i]) - np.mean(logs["old"][i]) for i in both])
            lo, hi = _bootstrap_median_ci(diff, rng)
            within = np.mean(np.abs(diff) <= sd["old"]) if seeds > 1 else float("nan")
            pairs = [(a, b) for a in range(seeds) for b in range(seeds) if a != b]
            tau_old = np.mean([kendalltau([logs["old"][i][a] for i in both], [logs["old"][i][b] for i in both])[0]
                               for a, b in pairs]) if pairs else float("nan")
            tau_new = np.mean([kendalltau([logs["new"][i][a] for i in both], [logs["old"][i][b] for i in both])[0]
                               for a, b in pairs]) if pairs else float("nan")
            rms = {code: float(np.sqrt(np.mean(sd[code] ** 2))) for code in sd}
            values.append(f"{zoo:<20} {name:<22} {len(both):>6} {rms['old']:7.3f} {rms['new']:7.3f} "
                          f"{np.median(diff):+7.3f} [{lo:+7.3f}, {hi:+7.3f}] {within:12.0%} {tau_old:12.3f} "
                          f"{tau_new:12.3f}" + (f"  ({failed} models without a value)" if failed else ""))
        out.append(f"{zoo:<20} {together:<22} {len(totals['old']):>6} {np.median(totals['old']):8.2f} "
                   f"{np.median(totals['new']):8.2f} {np.median(totals['old']) / np.median(totals['new']):6.2f} "
                   f"{totals['old'].max():8.2f} {totals['new'].max():8.2f} "
                   f"{totals['old'].max() / totals['new'].max():6.2f}")
        out.append(f"{zoo:<20} {together + ', total':<22} {'':>6} {totals['old'].sum():8.1f} {totals['new'].sum():8.1f} "
                   f"{totals['old'].sum() / totals['new'].sum():6.2f}")
    return "\n".join(out + [""] + values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("zoos", nargs="*", help="zoo folders, or names of zoos built with pgen zoo build")
    parser.add_argument("--baseline", help="git revision of the old code")
    parser.add_argument("--every", type=int, default=1, help="every K-th final model")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1 per model and measure (default 3)")
    parser.add_argument("--n", type=int, default=1000, help="samples, as pgen score --n-samples")
    parser.add_argument("--measures", nargs="+", default=list(MEASURES), metavar="NAME",
                        help="the measures to time (default: the five)")
    parser.add_argument("--json", help="also write every measurement here")
    parser.add_argument("--from-json", help="print the tables of an earlier run's --json instead of measuring")
    args = parser.parse_args(argv)

    if args.from_json:
        rows = json.loads(Path(args.from_json).read_text())
        print(summarize(rows, max(r["seed"] for r in rows) + 1))
        return
    if not args.zoos or not args.baseline:
        parser.error("ZOO and --baseline are needed (or --from-json)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pgen-baseline-") as tmp:
        old_root = _baseline_tree(args.baseline, Path(tmp))
        for zoo in args.zoos:
            if Path(zoo).exists():  # the workers run elsewhere; a zoo name stays a name (the cache's zoo)
                zoo = str(Path(zoo).resolve())
            workers = {"old": _Worker(old_root, zoo, args.n), "new": _Worker(ROOT, zoo, args.n)}
            try:
                for model_id in workers["new"].ids[::args.every]:
                    for seed in range(args.seeds):
                        for name in args.measures:  # old and new alternate, measure by measure: drifts of a shared machine hit both
                            for label, worker in workers.items():
                                rows.append(dict(worker.measure(model_id, name, seed), zoo=Path(zoo).name,
                                                 code=label, seed=seed))
                    if args.json:  # kept as it grows: an interrupted run keeps what it measured
                        Path(args.json).write_text(json.dumps(rows, indent=1))
            finally:
                for worker in workers.values():
                    worker.close()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"baseline {args.baseline} against this tree; every {args.every}. final model; seeds 0-{args.seeds - 1}")
    print(summarize(rows, args.seeds))


if __name__ == "__main__":
    main()
