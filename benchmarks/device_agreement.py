"""``pgen score`` on the CPU and on another device: the same values?

Scores each zoo twice, on ``cpu`` and on ``--device`` (TF32 off, pgen's default), into
two result folders, and compares model by model: P-vector angles must agree within
0.05 degrees and train / test / pseudo-test accuracies exactly, except for predictions
that flip on a tie: where an accuracy differs, every sample whose predicted class differs
between the devices is listed with the gap between its two largest logits (float64 on the
CPU), and the difference is accepted only if each such gap is below TIE_TOLERANCE times
the sample's largest |logit| (float32 GEMMs sum in different orders on each device).
Prints PASS or MISS per zoo with the largest differences, and the seconds each device took.

Usage::

    python benchmarks/device_agreement.py --device cuda --zoos digits mnist5k
    python benchmarks/device_agreement.py --device cpu --zoos digits   # dry run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pgen.score import ScoreSettings, _Context, score_zoo
from pgen.zoo import load_zoo

ANGLE_TOLERANCE = 0.05  # degrees
TIE_TOLERANCE = 1e-4  # a flipped prediction's top-2 logit gap, relative to its largest |logit|


def _predictions(model, x, batch_size=1024):
    return torch.cat([model(x[a:a + batch_size]) for a in range(0, len(x), batch_size)])


def flipped_predictions(zoo_name, model_id, settings, device):
    """(sample index, relative top-2 gap) of every prediction that differs between the CPU and ``device``."""
    zoo = load_zoo(zoo_name)
    ctx = _Context(zoo, settings)
    flips = []
    with torch.no_grad():
        model = zoo[model_id].load_model().eval()
        for name, x in (("train", ctx.x_train), ("test", ctx.x_test), ("pseudo", ctx.x_pseudo)):
            if x is None:
                continue
            cpu = _predictions(model.float().cpu(), x.float()).argmax(1)
            dev = _predictions(model.float().to(device), x.float().to(device)).argmax(1).cpu()
            exact = _predictions(model.double().cpu(), x.double())
            top2 = exact.topk(2, dim=1).values
            rel_gap = (top2[:, 0] - top2[:, 1]) / exact.abs().max(1).values.clamp_min(1e-300)
            for i in torch.nonzero(cpu != dev).flatten().tolist():
                flips.append((name, i, float(rel_gap[i])))
    return flips


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
        ties_only = True
        if acc > 0:
            cols = ["train_acc", "test_acc", "pseudo_test_acc"]
            differing = [m for m in a.index if any(a.at[m, c] != b.at[m, c] for c in cols)]
            for m in differing:
                flips = flipped_predictions(zoo, m, settings, args.device)
                ties_only &= bool(flips) and all(g < TIE_TOLERANCE for _, _, g in flips)
                print(f"  {m}: predictions that differ (split, sample, top-2 logit gap / max |logit|): "
                      + ", ".join(f"({s_}, {i}, {g:.1e})" for s_, i, g in flips))
        passed = len(a) == len(b) and angle <= ANGLE_TOLERANCE and ties_only
        ok &= passed
        print(f"{zoo}: {len(a)} models; max |angle cpu - {args.device}| {angle:.2e} deg (<= {ANGLE_TOLERANCE}), "
              f"max |accuracy difference| {acc:.2e} (= 0 but for ties below {TIE_TOLERANCE:g}); cpu "
              f"{seconds['cpu']:.1f} s, {args.device} {seconds[args.device]:.1f} s -> {'PASS' if passed else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
