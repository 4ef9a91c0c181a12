"""Benchmark: ``pgen.p_vector(method="auto")`` on a suite of spectra, against scipy ``svds``.

Real features differ from the synthetic matrix of ``benchmarks/pvector.py``: trained
networks often have a near-degenerate cluster at the top of their spectrum, which slows
Krylov solvers. The suite spans what features look like (all float32, centered by the
solver):

* ``cluster-k``: ReLU of a rank-k signal plus noise, ``max(Z_k W_k * 0.3 + N * 0.5, 0)``
  (k = 2, 5, 20, 100; k = 20 is the matrix of the speed issue);
* ``powerlaw-a``: singular values i^-a (a = 0.5, 1, 2) with random singular vectors;
* ``lowrank-s``: rank 10 plus Gaussian noise of scale s (0.1, 0.5, 2);
* ``heavyrows``: Gaussian rows scaled by |Student-t(2)| factors;
* ``features-<zoo>-w<width>``: penultimate features of trained digits / mnist5k models.

Each synthetic family runs at the three sizes of ``benchmarks/pvector.py``. Times are the
median of ``--repeat`` runs; pgen gets the raw float32 matrix (centering, and any float64
conversion, inside its time); ``svds(k=1)`` gets a pre-centered copy.

Every timed call starts from a quiet state: the two solvers alternate, each after a pause
(``--pause``, 0.3 s). numpy and scipy each bundle an OpenBLAS whose threads keep spinning
for a while after a call; on 2 cores a call into one library right after the other's runs
up to 3x slower (a 4000x64 Gram product, timed once by hand: 1.3 ms alone, 3.5-30 ms right after scipy's
``eigh``). Without the pause, whichever solver ran right after the untimed reference (scipy)
or after the other solver paid for it, so the ratios measured the order of the calls. The reference vector
is the top eigenvector of the float64 Gram matrix from ``scipy.linalg.eigh`` (independent
of pgen's code), the angle error is against it, and full SVD is timed once per size
(float64 ``numpy.linalg.svd``) for its ratio. The table prints the worst ratio first.

Usage::

    python benchmarks/pvector_spectra.py            # the whole suite (about 10 minutes on 2 cores)
    python benchmarks/pvector_spectra.py --quick    # small sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as sla

import pgen

SIZES = [(50000, 512), (10000, 2048), (2000, 8192)]
QUICK_SIZES = [(3000, 128), (600, 512)]


def cluster(n, d, k, rng):
    a = (rng.standard_normal((n, k), dtype=np.float32) @ rng.standard_normal((k, d), dtype=np.float32)) * 0.3
    return np.maximum(a + 0.5 * rng.standard_normal((n, d), dtype=np.float32), 0)


def powerlaw(n, d, a, rng):
    r = min(n, d)
    u, _ = np.linalg.qr(rng.standard_normal((n, r), dtype=np.float32))
    v, _ = np.linalg.qr(rng.standard_normal((d, r), dtype=np.float32))
    s = np.arange(1, r + 1, dtype=np.float32) ** -a
    return (u * s) @ v.T


def lowrank(n, d, noise, rng):
    signal = rng.standard_normal((n, 10), dtype=np.float32) @ rng.standard_normal((10, d), dtype=np.float32)
    return signal / np.sqrt(np.float32(d)) * 3 + noise * rng.standard_normal((n, d), dtype=np.float32)


def heavyrows(n, d, rng):
    scale = np.abs(rng.standard_t(2, size=(n, 1))).astype(np.float32)
    return rng.standard_normal((n, d), dtype=np.float32) * scale


FAMILIES = {
    **{f"cluster-{k}": (lambda n, d, rng, k=k: cluster(n, d, k, rng)) for k in (2, 5, 20, 100)},
    **{f"powerlaw-{a}": (lambda n, d, rng, a=a: powerlaw(n, d, a, rng)) for a in (0.5, 1, 2)},
    **{f"lowrank-{s}": (lambda n, d, rng, s=s: lowrank(n, d, s, rng)) for s in (0.1, 0.5, 2)},
    "heavyrows": heavyrows,
}


def real_features(quick):
    """Penultimate features of trained models of the embedded zoos (several widths)."""
    from pgen.data import dataset_arrays
    from pgen.features import extract_features
    from pgen.zoo import load_zoo

    out = {}
    for zoo_name in (["digits"] if quick else ["digits", "mnist5k"]):
        zoo = load_zoo(zoo_name).final_models()
        x, y = dataset_arrays(zoo.dataset("train"))
        seen = set()
        for e in zoo:
            key = (e.hparams.get("arch"), e.hparams.get("width"))
            if key in seen:
                continue
            seen.add(key)
            f = extract_features(e.load_model(), (x, y), layers="penultimate")["penultimate"]
            out[f"features-{zoo_name}-{key[0]}-w{key[1]}"] = np.asarray(f, dtype=np.float32)
    return out


def quiet_call(fn, pause):
    """``fn()`` and its wall time, after ``pause`` seconds in which other thread pools go idle."""
    time.sleep(pause)
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def alternating_medians(fns, repeat, pause):
    """Median time of each function, calling them in turn ``repeat`` times, each from quiet."""
    times = [[] for _ in fns]
    outs = [None] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t, outs[i] = quiet_call(fn, pause)
            times[i].append(t)
    return [float(np.median(t)) for t in times], outs


def reference_vector(x):
    xc = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    n, d = xc.shape
    g = xc.T @ xc if n >= d else xc @ xc.T
    w, v = scipy.linalg.eigh(g, subset_by_index=[len(g) - 2, len(g) - 1])
    top = v[:, -1]
    u = xc @ top if n >= d else top
    return u / np.linalg.norm(u), float(np.sqrt(w[-1] / max(w[-2], 1e-300)))


def angle_deg(a, b):
    c = abs(float(a @ b)) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(min(1.0, c))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per solver; the median counts")
    parser.add_argument("--families", help="comma-separated subset of the families")
    parser.add_argument("--pause", type=float, default=0.3,
                        help="seconds of quiet before every timed call (0: back to back)")
    args = parser.parse_args(argv)
    families = {k: v for k, v in FAMILIES.items() if not args.families or k in args.families.split(",")}
    rows = []

    def measure(name, x, full_svd_seconds):
        u_ref, gap = reference_vector(x)
        xc = x - x.mean(axis=0)

        def pgen_auto():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", pgen.UnstablePVectorWarning)
                return pgen.p_vector(x, center=True)  # method "auto", as users call it

        (t_auto, t_svds), (u, _) = alternating_medians(
            [pgen_auto, lambda: sla.svds(xc, k=1, random_state=0)], args.repeat, args.pause)
        rows.append({"matrix": name, "shape": f"{x.shape[0]}x{x.shape[1]}", "gap": gap, "auto_s": t_auto,
                     "svds_s": t_svds, "ratio_svds": t_auto / t_svds,
                     "ratio_full": t_auto / full_svd_seconds if full_svd_seconds else float("nan"),
                     "err_deg": angle_deg(u, u_ref)})
        r = rows[-1]
        print(f"{name:<34} {r['shape']:>11} gap {gap:7.4f}  auto {t_auto:7.3f} s  svds {t_svds:7.3f} s  "
              f"auto/svds {r['ratio_svds']:5.2f}  auto/full {r['ratio_full']:6.3f}  err {r['err_deg']:.1e} deg",
              flush=True)

    for n, d in QUICK_SIZES if args.quick else SIZES:
        rng = np.random.default_rng(7)
        t0 = time.perf_counter()
        np.linalg.svd(cluster(n, d, 20, rng).astype(np.float64), full_matrices=False)
        full = time.perf_counter() - t0
        print(f"-- {n}x{d}: float64 full SVD {full:.1f} s", flush=True)
        for name, make in families.items():
            measure(f"{name}", make(n, d, np.random.default_rng(7)), full)
    if not args.families:
        print("-- real features", flush=True)
        for name, f in real_features(args.quick).items():
            measure(name, f, None)
    worst = sorted(rows, key=lambda r: -r["ratio_svds"])
    print("\nworst first (auto / svds, median of", args.repeat, "runs):")
    for r in worst[:5]:
        print(f"  {r['matrix']:<34} {r['shape']:>11}  {r['ratio_svds']:.2f}  err {r['err_deg']:.1e} deg")
    bad = [r for r in rows if r["ratio_svds"] > 1.0 or r["err_deg"] > 1e-3]
    print(f"{len(rows)} matrices; auto slower than svds or off by > 1e-3 deg on {len(bad)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
