"""Benchmark: the PGDL port's fidelity to Keras, and TFRecord reading speed.

1. For every model of the fixture tasks in tests/fixtures/pgdl (written by real Keras 2),
   the largest |torch logit - Keras logit| relative to the Keras logits' scale.
2. Reading a synthetic CIFAR-size shard (default 10000 records of 32x32x3 float32) into
   NCHW tensors with every CRC checked, against the floor any checked reader pays in the
   same run: reading the file's bytes and computing CRC-32C over all of it.

Usage::

    python benchmarks/pgdl.py [--records 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pgen.zoo import load_zoo
from pgen.zoo.pgdl import read_tfrecord_dataset
from pgen.zoo.tfrecord import crc32c, write_pgdl_shard

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pgdl"


def fidelity() -> None:
    print("task               model     max |torch - keras| / max |keras|")
    worst = 0.0
    for task in ("task_vgg_like", "task_nin", "task_fullconv_bn"):
        zoo = load_zoo(FIXTURES / task)
        x, _ = zoo.dataset("train").tensors
        for entry in zoo:
            ref = np.load(FIXTURES / task / entry.id / "reference_logits.npy")
            with torch.inference_mode():
                out = entry.load_model()(x).numpy()
            rel = float(np.abs(out - ref).max() / np.abs(ref).max())
            worst = max(worst, rel)
            print(f"{task:18s} {entry.id:9s} {rel:.2e}")
    print(f"worst: {worst:.2e} (requirement 1e-4)\n")


def _write_shard(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    write_pgdl_shard(path, (rng.random((32, 32, 3), dtype=np.float32) for _ in range(n)), (i % 10 for i in range(n)))


def reading(records: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write_shard(folder / "shard_0.tfrecord", records)
        size = (folder / "shard_0.tfrecord").stat().st_size
        floors, reads = [], []
        for _ in range(3):
            t = time.perf_counter()
            crc32c((folder / "shard_0.tfrecord").read_bytes())
            floors.append(time.perf_counter() - t)
            t = time.perf_counter()
            ds = read_tfrecord_dataset(folder)
            reads.append(time.perf_counter() - t)
        assert ds.tensors[0].shape == (records, 3, 32, 32)
        floor, read = min(floors), min(reads)
        print(f"{records} records ({size / 2**20:.0f} MiB): bytes + CRC floor {floor:.3f} s, "
              f"pgen reader {read:.3f} s ({records / read:,.0f} records/s), ratio {read / floor:.1f}x")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10000)
    args = parser.parse_args(argv)
    fidelity()
    reading(args.records)


if __name__ == "__main__":
    main()
