"""Benchmark: would a block Krylov method pay for wide matrices? Time of the cache-blocked
Gram operator ``X^T (X V)`` (as in ``pgen.pvector``'s Lanczos, row blocks of 2 MB) applied
to 1, 2, 4 and 8 vectors at once, as ratios to the single-vector operator in the same run.
A block method saves passes only if the b-vector operator costs well under b single ones.

Usage: ``python benchmarks/block_operator.py [--n 2000] [--d 8192] [--repeat 20]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--d", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((args.n, args.d), dtype=np.float32), 0)
    rows = max(1, (2 << 20) // (4 * args.d))
    bounds = [(a, min(args.n, a + rows)) for a in range(0, args.n, rows)]
    times = {}
    for b in (1, 2, 4, 8):
        v = rng.standard_normal((args.d, b)).astype(np.float32)
        v = v[:, 0] if b == 1 else v

        def op():
            acc = np.zeros(v.shape)
            for lo, hi in bounds:
                blk = x[lo:hi]
                acc += blk.T @ (blk @ v)
            return acc

        samples = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            op()
            samples.append(time.perf_counter() - t0)
        times[b] = float(np.median(samples))
        print(f"{b} vector(s): {times[b] * 1e3:6.2f} ms  ({times[b] / times[1]:.2f}x one vector, "
              f"{times[b] / times[1] / b:.2f}x per vector)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
