"""One short check of pgen's CUDA paths (run on a GPU machine).

1. P-vectors of CUDA tensors (float64 Gram and exact SVD on the device) against the CPU
   float64 full SVD, with GPU times, on the pvector benchmark's shapes.
2. model_p_vectors(device="cuda") against device="cpu" on the same ResNet-18 and data.
3. Every registered measure with ``MeasureSettings(device=...)`` against its CPU value,
   with times, on a ported PGDL model (the Conv2D + BatchNorm fixture task).

Usage::

    python benchmarks/cuda_check.py                          # all three, on CUDA
    python benchmarks/cuda_check.py --measures-only --device cpu   # dry run of part 3
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

import pgen
from pgen.features import model_p_vectors

from pvector import relu_like  # benchmarks/pvector.py

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pgdl" / "task_fullconv_bn"


def pvectors_on_device() -> None:
    for n, d in [(50000, 512), (10000, 2048), (2000, 8192)]:
        x = relu_like(n, d)
        for center in (False, True):
            xc = x.astype(np.float64) - (x.astype(np.float64).mean(0) if center else 0)
            u_ref = np.linalg.svd(xc, full_matrices=False)[0][:, 0]
            xt = torch.from_numpy(x).cuda()
            for method in ("auto", "exact"):
                pgen.p_vector(xt, center=center, method=method)  # warm-up
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                u = pgen.p_vector(xt, center=center, method=method)
                torch.cuda.synchronize()
                t = time.perf_counter() - t0
                print(f"{n}x{d} center={center!s:<5} cuda {method:<5} {t:7.4f} s  error {pgen.angle(u, u_ref):.2e} deg")


def features_on_device() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x = torch.rand(512, 3, 32, 32)
    cpu = model_p_vectors(model, x, batch_size=128, device="cpu")["penultimate"]
    gpu = model_p_vectors(model, x, batch_size=128, device="cuda")["penultimate"]
    print(f"ResNet-18 penultimate P-vector cuda vs cpu: {pgen.angle(cpu.vector, gpu.vector):.2e} deg, "
          f"sigma1 {cpu.sigma1:.6g} vs {gpu.sigma1:.6g}")


def measures_vs_cpu(device: str) -> None:
    """Each measure on ``device`` and on the CPU: same model, data and seed."""
    from pgen.measures import MeasureData, MeasureError, MeasureSettings, compute_measure, list_measures
    from pgen.zoo import load_zoo

    zoo = load_zoo(FIXTURE)
    x, y = zoo.dataset("train").tensors
    entry = zoo.entries[0]
    print(f"measures on {zoo.name}/{entry.id}: cpu vs {device}")
    for name in list_measures()["name"]:
        runs = []
        for dev in ("cpu", device):
            t0 = time.perf_counter()
            try:
                value = compute_measure(name, entry.load_model(), entry.load_model(initial=True),
                                        MeasureData(x, y, num_classes=10), MeasureSettings(device=dev, batch_size=64))
            except MeasureError as exc:
                value = f"n/a: {exc}"
            runs.append((value, time.perf_counter() - t0))
        (a, ta), (b, tb) = runs
        both = isinstance(a, float) and isinstance(b, float)
        rel = f"{abs(a - b) / max(abs(a), 1e-12):.1e}" if both else "-"
        print(f"  {name:30s} cpu {str(a)[:20]:>20} ({ta:6.3f} s)  {device} {str(b)[:20]:>20} ({tb:6.3f} s)  rel {rel}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--measures-only", action="store_true")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        assert torch.cuda.is_available(), "no CUDA device"
        print(torch.cuda.get_device_name(0), "torch", torch.__version__)
    if not args.measures_only:
        pvectors_on_device()
        features_on_device()
    measures_vs_cpu(args.device)


if __name__ == "__main__":
    main()
