"""Benchmark: feature extraction + streaming P-vector against the bare forward pass.

Same model, samples, batch size and device for both. The bare pass is the physical limit
of any P-vector pipeline (every sample must go through the network once); the ratio says
what pgen adds on top: the hook, the float64 Gram accumulation and the spill to disk,
and the final eigen-solve and second pass. The two are interleaved and each timed
``--repeat`` times; the best of each counts.

Usage::

    python benchmarks/features.py                      # ResNet-18, 32x32, CPU
    python benchmarks/features.py --device cuda --n 20000
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from pgen.features import as_loader, model_p_vectors
from pgen.devices import tf32_mode


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2048, help="samples")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default="resnet18", help="torchvision model name")
    parser.add_argument("--tf32", action="store_true", help="CUDA: TF32 on for both (default: off for both, "
                                                            "pgen's default)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(num_classes=10).to(args.device).eval()
    x = torch.rand(args.n, 3, 32, 32)
    y = torch.zeros(args.n, dtype=torch.long)

    def bare():
        with torch.inference_mode(), tf32_mode(args.device, args.tf32):
            for xb, _ in as_loader((x, y), batch_size=args.batch_size):
                model(xb.to(args.device))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def pgen_pvector():
        res = model_p_vectors(model, (x, y), batch_size=args.batch_size, device=args.device, allow_tf32=args.tf32)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return res

    bare()  # warm-up of both paths (allocator, kernels, cuBLAS/cuSOLVER handles)
    pgen_pvector()
    times = {"bare forward": [], "features + streaming P-vector": []}
    for _ in range(args.repeat):
        for name, fn in (("bare forward", bare), ("features + streaming P-vector", pgen_pvector)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = min(times["bare forward"])
    ours = min(times["features + streaming P-vector"])
    print(f"{args.model}, {args.n} samples of 3x32x32, batch {args.batch_size}, device {args.device}, "
          f"TF32 {'on' if args.tf32 else 'off'}")
    for name, ts in times.items():
        print(f"  {name:<32} best {min(ts):8.3f} s   ({', '.join(f'{t:.3f}' for t in ts)})")
    overhead = ours / base - 1
    print(f"  ratio {ours / base:.3f} (overhead {100 * overhead:+.1f}%; target <= 1.10) -> "
          f"{'PASS' if overhead <= 0.10 else 'MISS'}")


if __name__ == "__main__":
    main()
