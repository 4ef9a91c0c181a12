"""Benchmark: `pgen score --measures pvector_angle` against the physical floor (#37 item 2).

The floor of scoring a model's targets and its P-vector angle is one forward pass over each
split it reads (training samples, test samples, pseudo-test copies) plus the SVD of the
penultimate features; everything pgen does beyond that (loading, checks, hooks, the
streaming Gram, bookkeeping) is overhead. This script times, in one process on the same
models and data:

* ``floor``: bare forward passes (``torch.inference_mode``, same batch size) over the three
  splits and ``torch.linalg.svd`` of the centered penultimate features (float64);
* ``score``: :func:`pgen.score_models` (the API behind ``pgen score``) with
  ``measures=("pvector_angle",)``, whole call (setup included), from pgen's own store;
* ``score, separate passes``: the same with the angle's features taken in a pass of their
  own, as pgen did before the accuracy pass kept them (the baseline).

Each is run ``--repeat`` times, interleaved; the best of each counts. Prints the ratios.

Usage::

    python benchmarks/one_pass.py                    # 3 ResNet-18, 1000 train / 200 test samples, CPU
    python benchmarks/one_pass.py --models 5 --repeat 3
    python benchmarks/one_pass.py --device cuda      # part of benchmarks/gpu_check.sh
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import torch
import torchvision

import pgen
from pgen.augment import policy_for, pseudo_test_set


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _floor(models, x, y, xt, xp, batch_size: int, device: str) -> float:
    _sync(device)
    t = time.perf_counter()
    for model in models:
        model.to(device).eval()
        feats = []
        hook = model.fc.register_forward_pre_hook(lambda m, i: feats.append(i[0]))
        with torch.inference_mode():
            for split in (x, xt, xp):
                for a in range(0, len(split), batch_size):
                    model(split[a:a + batch_size].to(device))
        hook.remove()
        f = torch.cat(feats[: -(-len(x) // batch_size)]).double()
        torch.linalg.svd(f - f.mean(0), full_matrices=False)
        model.cpu()
    _sync(device)
    return time.perf_counter() - t


def _score(models, x, y, xt, yt, n: int, batch_size: int, separate: bool, device: str) -> float:
    nets = {f"resnet18-{i}": m for i, m in enumerate(models)}
    _sync(device)
    t = time.perf_counter()
    if separate:
        with mock.patch("pgen.score.feature_reads", lambda measures, settings: {}):
            run = pgen.score_models(nets, (x, y), test_data=(xt, yt), n_samples=n, batch_size=batch_size,
                                    measures=("pvector_angle",), data_kind="color", device=device)
    else:
        run = pgen.score_models(nets, (x, y), test_data=(xt, yt), n_samples=n, batch_size=batch_size,
                                measures=("pvector_angle",), data_kind="color", device=device)
    _sync(device)
    seconds = time.perf_counter() - t
    if len(run.errors):
        raise SystemExit(f"scoring failed: {run.errors.iloc[0].to_dict()}")
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--n", type=int, default=1000, help="training samples (all scored)")
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.n,), generator=g)
    xt = torch.rand(args.n_test, 3, 32, 32, generator=g)
    yt = torch.randint(0, 10, (args.n_test,), generator=g)
    xp, _ = pseudo_test_set(x, y, policy_for("color"), seed=0)
    models = []
    for i in range(args.models):
        torch.manual_seed(i)
        models.append(torchvision.models.resnet18(num_classes=10).eval())

    best = {"floor": float("inf"), "score": float("inf"), "separate": float("inf")}
    for _ in range(args.repeat):
        best["floor"] = min(best["floor"], _floor(models, x, y, xt, xp, args.batch_size, args.device))
        for key, separate in (("score", False), ("separate", True)):
            best[key] = min(best[key], _score(models, x, y, xt, yt, args.n, args.batch_size, separate, args.device))
    m = args.models
    print(f"{m} ResNet-18 on {args.device}, {args.n} train + {args.n_test} test + {len(xp)} pseudo-test samples, "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads, best of {args.repeat}")
    print(f"floor (bare passes + SVD)     {best['floor'] / m:6.3f} s/model")
    print(f"score, one pass per split     {best['score'] / m:6.3f} s/model   ratio to floor {best['score'] / best['floor']:.2f}")
    print(f"score, separate passes (old)  {best['separate'] / m:6.3f} s/model   ratio to floor "
          f"{best['separate'] / best['floor']:.2f}")


if __name__ == "__main__":
    main()
