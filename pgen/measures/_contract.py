"""The measure contract as checks a user can run on their own measure (``pgen measures
check``), the same ones ``tests/test_measure_contract.py`` asserts for every built-in
measure: on a tiny MLP and a tiny CNN, a finite value; the same value again with the same
seed; the model's weights, device and training flag untouched by the measure itself (pgen
restores them anyway, but a measure that changes them is wrong elsewhere); for a measure
not declared stochastic, no dependence on the batch size or the seed; and what it declares
(initial weights, image inputs) honoured: a measure that reads what it did not declare
fails where pgen gives it nothing.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from pgen.measures import MeasureData, MeasureSettings, MeasureValue, evaluate_measure, get_measure

__all__ = ["Verdict", "tiny_models", "tiny_data", "check_measure"]


@dataclass(frozen=True)
class Verdict:
    check: str
    passed: bool
    detail: str = ""

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.check}" + (f": {self.detail}" if self.detail else "")


def tiny_models():
    """``({"mlp": (model, init), "cnn": (model, init)}, (x, y))``: two small "trained"
    models (moved away from their initial weights, BatchNorm statistics set) on 48 samples
    of 1 x 6 x 6 in 3 classes."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(3)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 3))
    mlp0 = copy.deepcopy(mlp)
    with torch.no_grad():  # "trained": moved away from the initial weights
        for p in mlp.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    torch.manual_seed(4)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    cnn0 = copy.deepcopy(cnn)
    with torch.no_grad():
        for p in cnn.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        cnn[1].running_mean.uniform_(-0.1, 0.1, generator=g)
    x = torch.rand(48, 1, 6, 6, generator=g)
    y = torch.arange(48) % 3
    return {"mlp": (mlp, mlp0), "cnn": (cnn, cnn0)}, (x, y)


def tiny_data(x, y, **kwargs) -> MeasureData:
    """The tiny samples as a measure gets them, with test inputs and pseudo-test copies (other
    draws of the same shape) for measures that read them."""
    g = torch.Generator().manual_seed(1)
    return MeasureData(x, y, train_size=len(x), x_test=torch.rand(x.shape, generator=g),
                       x_pseudo=(x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1), **kwargs)


def _value(name, model, init, x, y, **settings) -> float:
    return evaluate_measure(name, model, init, tiny_data(x, y), MeasureSettings(**settings)).value


def _raw_call_changes(m, model, init, x, y) -> str:
    """What the measure's own function (not pgen's wrapper, which restores everything)
    changes on the model: weights, training flag or device; '' when nothing."""
    model.eval()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    m.fn(model, init, tiny_data(x, y), MeasureSettings(seed=5))
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k].cpu())]
    problems = []
    if changed:
        problems.append(f"changes {len(changed)} weight tensor(s) in place, first {changed[0]}")
    if model.training:
        problems.append("leaves the model in training mode")
    if any(p.device.type != "cpu" for p in model.parameters()):
        problems.append("moves the model to another device")
    return "; ".join(problems)


def check_measure(name: str) -> list[Verdict]:
    """Every contract check on the registered measure ``name`` (see the module docstring)."""
    m = get_measure(name)
    out: list[Verdict] = []
    models, (x, y) = tiny_models()
    archs = ["cnn"] if m.needs_images else ["mlp", "cnn"]
    for arch in archs:
        model, init = models[arch]
        model.train()
        try:
            start = time.perf_counter()
            first = _value(name, model, init, x, y, seed=5)
            seconds = time.perf_counter() - start
        except Exception as exc:
            out.append(Verdict(f"runs on a tiny {arch}", False, f"{type(exc).__name__}: {exc}"))
            continue
        out.append(Verdict(f"runs on a tiny {arch}", math.isfinite(first), f"value {first:.6g} in {seconds:.3g} s"))
        again = _value(name, model, init, x, y, seed=5)
        out.append(Verdict(f"same seed, same value ({arch})", again == first,
                           "" if again == first else f"{first!r} then {again!r}"))
        if not m.stochastic:
            other = _value(name, model, init, x, y, seed=5, batch_size=7)
            close = math.isclose(other, first, rel_tol=1e-4, abs_tol=1e-6)
            out.append(Verdict(f"independent of the batch size ({arch})", close,
                               "" if close else f"{first!r} at batch 256, {other!r} at batch 7 (declare "
                                                "stochastic=True if it samples)"))
            seeded = _value(name, model, init, x, y, seed=6)
            close = math.isclose(seeded, first, rel_tol=1e-4, abs_tol=1e-6)
            out.append(Verdict(f"independent of the seed ({arch})", close,
                               "" if close else f"seed 5 gives {first!r}, seed 6 {seeded!r}: it draws random numbers "
                                                "but is not declared stochastic=True"))
        problem = _raw_call_changes(m, model, init, x, y)
        out.append(Verdict(f"leaves the model as it found it ({arch})", not problem, problem))
    out += _declarations(name, m, models, x, y)
    return out


def _declarations(name, m, models, x, y) -> list[Verdict]:
    out = []
    mlp, _ = models["mlp"]
    settings = MeasureSettings(seed=5)
    if not m.needs_init:  # it gets no initial weights: does it still run?
        try:
            m.fn(mlp.eval(), None, tiny_data(x, y), settings)
            out.append(Verdict("runs without initial weights, as it declares (needs_init=False)", True))
        except Exception as exc:
            out.append(Verdict("runs without initial weights, as it declares (needs_init=False)", False,
                               f"{type(exc).__name__}: {exc}; declare needs_init=True if it reads init_model"))
    if not m.needs_images:  # flat inputs, as an MLP on vectors gets them
        flat = nn.Sequential(nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
        try:
            flat_data = tiny_data(x.reshape(len(x), -1), y)
            value = m.fn(flat, None if not m.needs_init else copy.deepcopy(flat), flat_data, settings)
            ok = math.isfinite(value.value if isinstance(value, MeasureValue) else float(value))
            out.append(Verdict("runs on flat (non-image) inputs, as it declares (needs_images=False)", ok))
        except Exception as exc:
            out.append(Verdict("runs on flat (non-image) inputs, as it declares (needs_images=False)", False,
                               f"{type(exc).__name__}: {exc}; declare needs_images=True if it needs (N, C, H, W)"))
    return out
