"""``pgen score`` on the CPU and on another device: the same values?

Scores each zoo twice, on ``cpu`` and on ``--device`` (TF32 off, pgen's default), into
two result folders, and compares model by model: P-vector angles must agree within
0.05 degrees and train / test / pseudo-test accuracies exactly. Prints PASS or MISS per
zoo with the largest differences, and the seconds each device took.

Usage::

    python benchmarks/device_agreement.py --device cuda --zoos digits mnist5k
    python benchmarks/device_agreement.py --device cpu --zoos digits   # dry run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pgen.score import ScoreSettings, score_zoo

ANGLE_TOLERANCE = 0.05  # degrees


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--zoos", nargs="+", default=["digits", "mnist5k"])
    parser.add_argument("--out", help="folder for the result stores (default: a temporary one)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="pgen-agreement-"))
    settings = ScoreSettings(measures=("pvector_angle",))
    ok = True
    for zoo in args.zoos:
        runs, seconds = {}, {}
        for device in ("cpu", args.device):
            t0 = time.perf_counter()
            runs[device] = score_zoo(zoo, out / f"{zoo}-{device}", settings=settings, device=device, progress=False)
            seconds[device] = time.perf_counter() - t0
        a = runs["cpu"].table.set_index("model_id").sort_index()
        b = runs[args.device].table.set_index("model_id").sort_index()
        angle = float((a["pvector_angle"] - b["pvector_angle"]).abs().max())
        acc = max(float((a[c] - b[c]).abs().max()) for c in ("train_acc", "test_acc", "pseudo_test_acc"))
        passed = len(a) == len(b) and angle <= ANGLE_TOLERANCE and acc == 0.0
        ok &= passed
        print(f"{zoo}: {len(a)} models; max |angle cpu - {args.device}| {angle:.2e} deg (<= {ANGLE_TOLERANCE}), "
              f"max |accuracy difference| {acc:.2e} (= 0); cpu {seconds['cpu']:.1f} s, {args.device} "
              f"{seconds[args.device]:.1f} s -> {'PASS' if passed else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
