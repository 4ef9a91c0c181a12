"""Benchmark: P-vector solvers, time and angle error against float64 full SVD.

Synthetic ReLU-like feature matrices (low-rank signal plus noise through a ReLU) of the
shapes named in the issue, centered and not. Every solver sees the same float32 matrix.
pgen's methods get the raw matrix with ``center=True/False``; the external baselines get
the already-centered matrix (centering done outside their timing), so any ratio favours
the baselines. Each time is the best of ``--repeat`` runs, and each ratio is against
scipy ``svds(k=1)`` measured in the same run.

Usage::

    python benchmarks/pvector.py            # all three shapes (about 3 minutes on 2 cores)
    python benchmarks/pvector.py --quick    # smaller shapes, for a smoke run
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import scipy.sparse.linalg as sla

import pgen

SHAPES = [(50000, 512), (10000, 2048), (2000, 8192)]
QUICK_SHAPES = [(5000, 256), (1000, 1024), (300, 2048)]


def relu_like(n: int, d: int, seed: int = 0, rank: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, rank), dtype=np.float32)
    w = rng.standard_normal((rank, d), dtype=np.float32) / np.float32(np.sqrt(rank))
    noise = 0.5 * rng.standard_normal((n, d), dtype=np.float32)
    return np.maximum(z @ w + noise, np.float32(0.0))  # float32, as real features are


def best_time(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes (smoke run)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per solver; the best counts")
    parser.add_argument("--skip-external-randomized", action="store_true",
                        help="skip sklearn randomized_svd and torch.svd_lowrank")
    args = parser.parse_args(argv)
    import torch
    from sklearn.utils.extmath import randomized_svd

    rows = []
    for n, d in QUICK_SHAPES if args.quick else SHAPES:
        x = relu_like(n, d)
        for center in (False, True):
            xc = x - x.mean(axis=0) if center else x
            t_full, (u_ref, s_ref, _) = best_time(
                lambda: np.linalg.svd(xc.astype(np.float64), full_matrices=False), 1
            )
            u_ref = u_ref[:, 0]
            gap = s_ref[0] / s_ref[1]
            solvers = {}
            for method in ("auto", "exact", "gram", "lanczos", "streaming"):
                def run(method=method):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", pgen.UnstablePVectorWarning)
                        return pgen.p_vector(x, center=center, method=method)
                # Full SVD is slow and deterministic: time it once.
                solvers[f"pgen {method}"] = (run, 1 if method == "exact" else args.repeat)
            solvers["scipy svds(k=1)"] = (lambda: sla.svds(xc, k=1)[0][:, 0], args.repeat)
            if not args.skip_external_randomized:
                solvers["sklearn randomized_svd(1)"] = (
                    lambda: randomized_svd(xc, n_components=1, random_state=0)[0][:, 0], args.repeat)
                solvers["torch.svd_lowrank"] = (
                    lambda: torch.svd_lowrank(torch.from_numpy(xc), q=6, niter=4)[0][:, 0].numpy(), args.repeat)
            times = {}
            for name, (fn, rep) in solvers.items():
                t, u = best_time(fn, rep)
                times[name] = t
                rows.append((f"{n}x{d}", "centered" if center else "raw", f"{gap:.4f}", name, t,
                             pgen.angle(u, u_ref), None))
            for r in rows[-len(solvers):]:
                rows[rows.index(r)] = r[:-1] + (r[4] / times["scipy svds(k=1)"],)
            rows.append((f"{n}x{d}", "centered" if center else "raw", f"{gap:.4f}", "numpy full SVD f64",
                         t_full, 0.0, t_full / times["scipy svds(k=1)"]))
            print(f"done {n}x{d} center={center}", flush=True)

    header = f"{'shape':<12}{'matrix':<10}{'s1/s2':>8}  {'solver':<27}{'time s':>9}{'err deg':>11}{'vs svds':>9}"
    print()
    print(header)
    print("-" * len(header))
    for shape, kind, gap, name, t, err, ratio in rows:
        print(f"{shape:<12}{kind:<10}{gap:>8}  {name:<27}{t:>9.3f}{err:>11.2e}{ratio:>9.2f}")

    print()
    ok = True
    by_case = {}
    for shape, kind, gap, name, t, err, ratio in rows:
        by_case.setdefault((shape, kind), {})[name] = (t, err, ratio)
    for (shape, kind), d in by_case.items():
        pg = {k: v for k, v in d.items() if k.startswith("pgen")}
        worst = max(v[1] for v in pg.values())
        auto_t, _, auto_ratio = d["pgen auto"]
        speedup = d["numpy full SVD f64"][0] / auto_t
        verdict = worst <= 1e-3 and auto_ratio <= 1.0 and speedup >= 10
        ok &= verdict
        print(f"{shape} {kind}: worst pgen error {worst:.1e} deg (target <= 1e-3); auto/svds "
              f"{auto_ratio:.2f} (target <= 1.0); full SVD / auto {speedup:.1f}x (target >= 10) "
              f"-> {'PASS' if verdict else 'MISS'}")
    print("all targets met" if ok else "some targets missed")


if __name__ == "__main__":
    main()
