"""One short check of pgen's CUDA paths (run on a GPU machine).

1. P-vectors of CUDA tensors (float64 Gram and exact SVD on the device) against the CPU
   float64 full SVD, with GPU times, on the pvector benchmark's shapes.
2. model_p_vectors(device="cuda") against device="cpu" on the same ResNet-18 and data.

Usage: python benchmarks/cuda_check.py
"""

import time

import numpy as np
import torch
import torchvision

import pgen
from pgen.features import model_p_vectors

from pvector import relu_like  # benchmarks/pvector.py

assert torch.cuda.is_available(), "no CUDA device"
print(torch.cuda.get_device_name(0), "torch", torch.__version__)
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

torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=10)
x = torch.rand(512, 3, 32, 32)
cpu = model_p_vectors(model, x, batch_size=128, device="cpu")["penultimate"]
gpu = model_p_vectors(model, x, batch_size=128, device="cuda")["penultimate"]
print(f"ResNet-18 penultimate P-vector cuda vs cpu: {pgen.angle(cpu.vector, gpu.vector):.2e} deg, "
      f"sigma1 {cpu.sigma1:.6g} vs {gpu.sigma1:.6g}")
