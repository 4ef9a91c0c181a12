"""Benchmark: the cost of reading Keras weights through pgen's forked reader process
(``pgen.zoo.keras.keras_weight_arrays``, bounded in time because HDF5 can loop forever on
a corrupt file) against reading them in-process, in the same run.

Usage: ``python benchmarks/hdf5_reader.py [--file WEIGHTS.hdf5] [--repeat 20]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "pgdl" / "task_nin" / "model_0" / "weights.hdf5"


def main(argv=None):
    from pgen.zoo.keras import _read_weight_arrays, keras_weight_arrays

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=DEFAULT)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    keras_weight_arrays(args.file)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.repeat):
        keras_weight_arrays(args.file)
    reader = (time.perf_counter() - t0) / args.repeat
    t0 = time.perf_counter()
    for _ in range(args.repeat):
        _read_weight_arrays(args.file)
    direct = (time.perf_counter() - t0) / args.repeat
    print(f"first read (forks the reader): {first * 1e3:.0f} ms")
    print(f"reader process, per read: {reader * 1e3:.1f} ms; in-process: {direct * 1e3:.1f} ms; "
          f"ratio {reader / direct:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
