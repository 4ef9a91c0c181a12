"""Benchmark: models per second with the local executor and with Ray, and what it means at scale.

1. **Throughput.** Each zoo (default: the embedded digits and mnist5k zoos, their first
   ``--limit`` models, targets + the P-vector angle on 1000 samples) is scored from scratch
   into a fresh folder by: one process (the baseline), the local executor with 2 worker
   processes, and Ray on a local ``ray.cluster_utils.Cluster`` of 1 and of 2 worker nodes
   (one CPU each) on this machine. Each Ray cluster is warmed up first (its worker processes
   start and import torch, which is timed and printed on its own), so that the throughput is
   the steady state; the one-process baseline is measured again at the end to show drift.
   Ratios are models/s against the first baseline of the same invocation.
2. **Estimates.** From the per-model seconds of one slot (one core, torch on one thread)
   measured in part 1 (the 2-worker runs) and the seconds of every default measure on the
   PGDL fixture models (tests/fixtures/pgdl, one thread), the
   wall time of (a) the Small CNN Zoo (270,000 checkpoints, targets + P-vector angle) and
   (b) a PGDL task of 100 models with every measure, on N parallel task slots. Both are
   extrapolations: printed with what they assume.

Usage::

    python benchmarks/scale.py                      # digits + mnist5k, 48 models each
    python benchmarks/scale.py --limit 24 --skip-ray
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from pgen.score import ScoreSettings, score_zoo
from pgen.zoo import load_zoo

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pgdl"


def timed(zoo, out, settings, limit, **kwargs) -> tuple[float, int]:
    t = time.perf_counter()
    run = score_zoo(zoo, out, settings=settings, limit=limit, progress=False, **kwargs)
    seconds = time.perf_counter() - t
    if len(run.errors):
        raise RuntimeError(f"{run.name}: {len(run.errors)} failures, first: {run.errors['error'].iloc[0]}")
    return seconds, run.computed


def ray_cluster(nodes: int):
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(nodes):
        c.add_node(num_cpus=1)
    ray.init(address=c.address, logging_level="WARNING")
    c.wait_for_nodes()
    return c


def throughput(zoos, settings, limit, skip_ray, work: Path) -> dict:
    rows, k = [], 0

    def measure(label, **kwargs):
        nonlocal k
        for zoo in zoos:
            k += 1
            seconds, n = timed(zoo, work / f"run{k}", settings, limit, **kwargs)
            rows.append({"zoo": zoo.name, "executor": label, "models": n, "seconds": seconds})

    for zoo in zoos:  # this process's one-off costs (reading the data, torch's first calls) before timing
        timed(zoo, work / f"warmup-{zoo.name}", settings, 2)
    measure("1 process")
    measure("local, 2 workers", workers=2)
    starts = {}
    if not skip_ray:
        import ray

        from pgen.executors import RayExecutor

        for nodes in (1, 2):
            c = ray_cluster(nodes)
            try:
                t = time.perf_counter()  # workers start and import torch: once per cluster
                timed(zoos[0], work / f"warm{nodes}", settings, 2 * nodes, executor=RayExecutor())
                starts[nodes] = time.perf_counter() - t
                measure(f"ray, {nodes} node{'s' if nodes > 1 else ''}", executor=RayExecutor())
            finally:
                ray.shutdown()
                c.shutdown()
    measure("1 process (again)")
    base = {r["zoo"]: r["models"] / r["seconds"] for r in rows if r["executor"] == "1 process"}
    print(f"\n{'zoo':12} {'executor':20} {'models':>6} {'seconds':>8} {'models/s':>9} {'vs 1 process':>12}")
    for r in rows:
        rate = r["models"] / r["seconds"]
        print(f"{r['zoo']:12} {r['executor']:20} {r['models']:6d} {r['seconds']:8.2f} {rate:9.2f} "
              f"{rate / base[r['zoo']]:11.2f}x")
    for nodes, s in starts.items():
        print(f"ray, {nodes} node(s): starting the workers (import torch, read the zoo) and a first "
              f"{2 * nodes} models took {s:.1f} s before the timed runs")
    # one slot (one core, torch on one thread): alone (Ray, one node of one CPU), and sharing the
    # machine with a second slot (a 2-worker run's seconds x 2 per model)
    per_slot = {r["zoo"]: {"shared": 2 * r["seconds"] / r["models"]} for r in rows
                if r["executor"] == "local, 2 workers"}
    for r in rows:
        if r["executor"] == "ray, 1 node":
            per_slot[r["zoo"]]["alone"] = r["seconds"] / r["models"]
    return {"rows": rows, "per_slot": per_slot}


def pgdl_measure_costs(measures: list[str]) -> dict:
    """Seconds of each measure per model on the PGDL fixture tasks (each on its own samples),
    torch on one thread: the cost of one slot."""
    import torch

    from pgen.measures import MeasureSettings, compute_for_entry
    from pgen.pgdl import measure_data_for

    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    costs: dict[str, list[float]] = {m: [] for m in measures}
    samples = {}
    for task in ("task_nin", "task_vgg_like", "task_fullconv_bn"):
        zoo = load_zoo(FIXTURES / task, build=False, progress=False)
        data = measure_data_for(zoo, 1000)
        samples[task] = len(data.x)
        for entry in list(zoo)[:2]:
            for m in measures:
                t = time.perf_counter()
                try:
                    compute_for_entry(m, entry, data, MeasureSettings())
                except Exception as exc:  # shown, not hidden: a measure that cannot run here costs nothing
                    print(f"  {task}/{entry.id} {m}: {type(exc).__name__}: {exc}")
                    continue
                costs[m].append(time.perf_counter() - t)
    torch.set_num_threads(threads)
    return {"median": {m: statistics.median(v) for m, v in costs.items() if v}, "samples": samples}


def estimates(per_slot: dict, pgdl: dict, slots=(1, 8, 64, 512)) -> None:
    print("\nEstimates (extrapolated from the costs measured above; wall = models x seconds per model / slots,")
    print("perfect scaling assumed: no start-up, no I/O limit; a slot is one CPU core of this machine)")
    cost = per_slot.get("mnist5k") or next(iter(per_slot.values()))
    lo, hi = min(cost.values()), max(cost.values())
    print(f"(a) Small CNN Zoo, 270,000 checkpoints, targets + P-vector angle: {lo:.3f}-{hi:.3f} s per model and "
          "slot (this run's mnist5k models: one slot alone on Ray, and two slots sharing this machine; a proxy "
          "of its ~5k-parameter CNNs, whose 32x32 inputs cost more than mnist5k's 28x28)")
    for n in slots:
        print(f"    {n:4d} slots: {270_000 * lo / n / 60:9.1f} - {270_000 * hi / n / 60:9.1f} min")
    total = sum(pgdl["median"].values())
    n_fix = min(pgdl["samples"].values())
    scale = 1000 / n_fix
    top = sorted(pgdl["median"].items(), key=lambda kv: -kv[1])[:4]
    print(f"(b) PGDL task, 100 models, every default measure ({len(pgdl['median'])}): {total:.2f} s per model "
          f"and slot on the PGDL fixtures' conv models and their {n_fix}-{max(pgdl['samples'].values())} samples "
          "(medians; costliest: " + ", ".join(f"{m} {s:.2f} s" for m, s in top) +
          f"); x{scale:.1f} for 1000 samples (assumes cost linear in n; the competition's models are wider)")
    for n in (n for n in slots if n <= 100):  # more slots than models: a model's families at most
        print(f"    {n:4d} slots: {100 * total * scale / n / 60:9.1f} min")
    print("    A GPU slot's cost was not measured here (no GPU); with --gpus-per-model 0.25 a slot is a quarter GPU.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoos", nargs="+", default=["digits", "mnist5k"])
    parser.add_argument("--limit", type=int, default=48, help="models per zoo (default 48)")
    parser.add_argument("--skip-ray", action="store_true", help="local executor only")
    parser.add_argument("--skip-estimates", action="store_true")
    args = parser.parse_args(argv)

    zoos = [load_zoo(z) for z in args.zoos]
    settings = ScoreSettings()  # targets + the P-vector angle on the first 1000 training samples
    work = Path(tempfile.mkdtemp(prefix="pgen-scale-"))
    try:
        res = throughput(zoos, settings, args.limit, args.skip_ray, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.skip_estimates:
        from pgen.benchmark import default_measures

        estimates(res["per_slot"], pgdl_measure_costs(default_measures()))


if __name__ == "__main__":
    main()
