"""Where a Small CNN run's training time goes, and what stacking runs buys.

Times, on one thread, one epoch-slice of Adam steps at batch 32 on mnist5k's 28x28 digits:

* one run at a time: nn.Module SmallCNN + torch.optim.Adam (the baseline), split into the
  forward+backward and the optimizer step, and the same forward+backward with 1/16 of the
  filters' arithmetic absent (a 1x1 input channel count does not shrink, so it compares
  batch 32 with batch 2: what is left is per-step overhead, not convolution work);
* the stacked convolutions alone in the default layout and in channels-last;
* R runs stacked (pgen.stacked.train_stack), for several R, with and without dropout.

Prints milliseconds per run-step and the ratio to the baseline measured in the same run.

    python benchmarks/stacked_training.py            # about a minute
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from pgen.data import dataset_arrays, load_dataset
from pgen.models import SmallCNN
from pgen.stacked import RunSpec, train_stack


def _one_at_a_time(x, y, steps, batch):
    model = SmallCNN((1,), 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    g = torch.Generator().manual_seed(0)
    t_fb = t_opt = 0.0
    for _ in range(steps):
        b = torch.randint(0, x.shape[0], (batch,), generator=g)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x[b]), y[b])
        opt.zero_grad()
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        t_opt += time.perf_counter() - t1
        t_fb += t1 - t0
    return t_fb / steps, t_opt / steps


def _stacked(x, y, runs, steps, batch, dropout):
    specs = [RunSpec(i, 1e-3, 1e-4, dropout, "he_normal") for i in range(runs)]
    size = steps * batch
    t0 = time.perf_counter()
    train_stack(specs, optimizer="adam", activation="relu", train_x=x[:, 0], train_y=y, test_x=x[:10, 0],
                test_y=y[:10], train_size=size, epochs=1, checkpoint_epochs=[], batch_size=batch)
    return (time.perf_counter() - t0) / (steps * runs)


def _layouts(runs=16, batch=32, steps=30):
    """Forward+backward of the three stacked convolutions (groups = runs), in the default
    layout and in channels-last: seconds per run-step each."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, runs, 28, 28, generator=g)
    kernels = [torch.randn(runs * 16, c, 3, 3, generator=g).mul_(0.1).requires_grad_() for c in (1, 16, 16)]
    out = {}
    for name, fmt in (("default", torch.contiguous_format), ("channels-last", torch.channels_last)):
        def step():
            h = x.contiguous(memory_format=fmt)
            for k in kernels:
                h = torch.relu(F.conv2d(h, k.contiguous(memory_format=fmt), stride=2, groups=runs))
            torch.autograd.grad(h.mean(), kernels)
        for _ in range(3):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        out[name] = (time.perf_counter() - t0) / (steps * runs)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per measurement")
    ap.add_argument("--stacks", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x, y = dataset_arrays(load_dataset("mnist5k", "train"))
    x = x * 2 - 1
    fb, opt = _one_at_a_time(x, y, args.steps, 32)
    fb2, _ = _one_at_a_time(x, y, args.steps, 2)
    base = fb + opt
    print(f"one run at a time (nn.Module + torch.optim.Adam, batch 32): {base * 1e3:.2f} ms/step = "
          f"forward+backward {fb * 1e3:.2f} + optimizer {opt * 1e3:.2f}")
    print(f"  forward+backward at batch 2: {fb2 * 1e3:.2f} ms: {fb2 / fb:.0%} of batch 32's is per-step overhead")
    lay = _layouts()
    print(f"grouped convolutions alone (R=16): default layout {lay['default'] * 1e3:.2f} ms per run-step, "
          f"channels-last {lay['channels-last'] * 1e3:.2f} ms: {lay['default'] / lay['channels-last']:.1f}x")
    for dropout in (0.0, 77 / 256):
        for r in args.stacks:
            t = _stacked(x, y, r, args.steps, 32, dropout)
            print(f"stacked R={r:3d} dropout={dropout:.2f}: {t * 1e3:.2f} ms per run-step, {base / t:.1f}x the baseline")


if __name__ == "__main__":
    main()
