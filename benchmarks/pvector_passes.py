"""Benchmark: matrix passes and the memory floor of pgen's P-vector solver and scipy svds (#37 item 3).

On wide matrices with a small spectral gap (2000x8192, sigma1/sigma2 near 1.01) both
solvers are Krylov methods bound by reading the matrix: every iteration reads all of X.
This script counts, for each matrix, how often each solver reads X, times one read of each
kind, and prints the physical floor beside both: reads x bytes of X / memory bandwidth,
the bandwidth being that of the fastest single read measured here (``X @ v`` through
numpy's BLAS, which streams X once at the machine's memory speed).

* pgen (``p_vector``, auto = Lanczos here): one cache-blocked pass per iteration
  (``B^T (B v)`` per row block of 2 MB, so each block comes from memory once), plus the
  passes for the column sums, the energy and the final ``u = X v``; counted by handing
  the solver a matrix that counts the row blocks read.
* svds (``scipy.sparse.linalg.svds(k=1)``, ARPACK) on the pre-centered matrix: ``X v`` and
  ``X^T y`` are separate reads; counted with a LinearOperator around the same matrix.

It also times one blocked pass alone (the operator's shape) and the column means two ways:
numpy's float64 reduction and the BLAS block sums the solver uses, with their difference.

Times are medians of ``--repeat`` runs, each after a pause (see pvector_spectra.py on
why: two BLAS thread pools on two cores).

Usage::

    python benchmarks/pvector_passes.py             # the 2000x8192 small-gap members of pvector_spectra.py
    python benchmarks/pvector_passes.py --families cluster-100 --repeat 3
    python benchmarks/pvector_passes.py --families lowrank-2 --seed 7   # pvector_spectra.py's draw
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse.linalg as sla

import pgen
from pgen.pvector import solvers

from pvector_spectra import FAMILIES, quiet_call


class _CountingRows(np.ndarray):
    """A float32 matrix that counts the rows read through row slices (the solver's blocks)."""

    rows_read = 0
    last = None

    def __getitem__(self, key):
        out = super().__getitem__(key)
        if isinstance(key, slice) and isinstance(out, np.ndarray) and out.ndim == 2:
            if (key.start, key.stop) != _CountingRows.last:  # vdot(B, B) reads a block once
                _CountingRows.rows_read += out.shape[0]
            _CountingRows.last = (key.start, key.stop)
        return out


def pgen_reads(x: np.ndarray) -> float:
    """Reads of X by pgen's Lanczos: row blocks read / rows (every pass, the column sums
    included, goes through row blocks)."""
    counted = x.view(_CountingRows)
    _CountingRows.rows_read, _CountingRows.last = 0, None
    solvers._lanczos(counted, True, 2, gap_only=True, min_gap=solvers.DEFAULT_MIN_GAP)  # as p_vector calls it
    return _CountingRows.rows_read / x.shape[0]


def svds_reads(xc: np.ndarray) -> float:
    counts = {"mv": 0, "rmv": 0}

    def mv(v):
        counts["mv"] += 1 if v.ndim == 1 else v.shape[1]
        return xc @ v

    def rmv(v):
        counts["rmv"] += 1 if v.ndim == 1 else v.shape[1]
        return xc.T @ v

    op = sla.LinearOperator(xc.shape, matvec=mv, rmatvec=rmv, matmat=mv, rmatmat=rmv, dtype=xc.dtype)
    sla.svds(op, k=1, random_state=0)
    return counts["mv"] + counts["rmv"]


def blocked_pass(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """One pass of the shape pgen's Lanczos operator has: ``sum_B B^T (B v)`` over row blocks
    of the solver's L2 size (without its implicit centering, which adds two vector ops)."""
    step = max(1, solvers._L2_BLOCK_BYTES // (x.itemsize * x.shape[1]))
    acc = np.zeros(x.shape[1])
    for a in range(0, len(x), step):
        block = x[a:a + step]
        acc += block.T @ (block @ v)
    return acc


def block_column_sums(x: np.ndarray) -> np.ndarray:
    """The column sums as the solver computes them: BLAS sums of row blocks added in float64."""
    step = max(1, solvers._L2_BLOCK_BYTES // (x.itemsize * x.shape[1]))
    ones = np.ones(step, dtype=x.dtype)
    total = np.zeros(x.shape[1])
    for a in range(0, len(x), step):
        total += ones[: min(step, len(x) - a)] @ x[a:a + step]
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="cluster-100,cluster-20,lowrank-0.1,lowrank-0.5,lowrank-2")
    parser.add_argument("--shape", default="2000x8192")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pause", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of each matrix's draw (pvector_spectra.py draws with 7)")
    args = parser.parse_args(argv)
    n, d = (int(s) for s in args.shape.split("x"))

    print(f"{'matrix':<14} {'solver':<6} {'time':>8} {'reads of X':>10} {'per read':>9} {'floor':>8} {'time/floor':>10}")
    for name in args.families.split(","):
        rng = np.random.default_rng(args.seed)
        x = FAMILIES[name](n, d, rng)
        xc = (x - x.mean(axis=0, dtype=np.float64)).astype(np.float32)
        v = np.random.default_rng(1).standard_normal(d).astype(np.float32)
        reads = {"pgen": pgen_reads(x), "svds": svds_reads(xc)}
        times = {"pgen": [], "svds": []}
        one_read, one_pass, sums64, sums_blas = [], [], [], []
        for _ in range(args.repeat):
            times["pgen"].append(quiet_call(lambda: pgen.p_vector(x), args.pause)[0])
            times["svds"].append(quiet_call(lambda: sla.svds(xc, k=1, random_state=0), args.pause)[0])
            one_read.append(quiet_call(lambda: xc @ v, args.pause)[0])
            one_pass.append(quiet_call(lambda: blocked_pass(x, v), args.pause)[0])
            sums64.append(quiet_call(lambda: x.mean(axis=0, dtype=np.float64), args.pause)[0])
            sums_blas.append(quiet_call(lambda: block_column_sums(x), args.pause)[0])
        mean64 = x.mean(axis=0, dtype=np.float64)
        mean_error = np.abs(block_column_sums(x) / n - mean64).max() / np.abs(mean64).max()
        read = float(np.min(one_read))  # the fastest streaming read: the memory floor of one pass
        bandwidth = x.nbytes / read
        for solver in ("pgen", "svds"):
            t = float(np.median(times[solver]))
            floor = reads[solver] * read
            print(f"{name:<14} {solver:<6} {t * 1e3:6.1f} ms {reads[solver]:10.1f} {t / reads[solver] * 1e3:6.2f} ms "
                  f"{floor * 1e3:6.1f} ms {t / floor:10.2f}")
        print(f"{'':<14} one read of X ({x.nbytes / 2**20:.0f} MiB): {read * 1e3:.2f} ms = {bandwidth / 1e9:.1f} GB/s; "
              f"one blocked pass B^T (B v): {np.median(one_pass) * 1e3:.2f} ms; "
              f"auto / svds {np.median(times['pgen']) / np.median(times['svds']):.2f}")
        print(f"{'':<14} column means: numpy float64 {np.median(sums64) * 1e3:.1f} ms, BLAS block sums "
              f"{np.median(sums_blas) * 1e3:.1f} ms, largest difference {mean_error:.1e} (relative)")


if __name__ == "__main__":
    main()
