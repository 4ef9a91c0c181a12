"""Generalization measures: one small module per measure, one signature, one registry.

Every measure is a function ``fn(model, init_model, data, settings) -> float``:

* ``model``: the trained ``nn.Module`` (eval mode, on CPU; move it to
  ``settings.device`` when the measure runs batches);
* ``init_model``: the same architecture with its initial weights, or ``None`` when the
  zoo records none (measures that need it declare ``needs_init``);
* ``data``: :class:`MeasureData`, the samples every model of a zoo sees, in one fixed order;
* ``settings``: :class:`MeasureSettings`.

Sign convention (stated once, here): a measure's ``sign`` is +1 when a LARGER value
predicts WORSE generalization (a larger generalization gap, a lower test accuracy), and
-1 when a larger value predicts better generalization. ``sign * value`` is therefore
always "predicted badness"; the benchmark and ``pgen pgdl predict`` use it, so Kendall's
tau against the gap is positive when a measure works the way its authors meant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

__all__ = ["Measure", "MeasureData", "MeasureSettings", "MeasureError", "REGISTRY", "register",
           "get_measure", "list_measures", "compute_measure", "compute_for_entry"]


class MeasureError(ValueError):
    """A measure cannot run on this model or data; the message says why."""


@dataclass
class MeasureData:
    """The samples shared by every model of a zoo (inputs in the models' layout)."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int | None = None
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)  # per-zoo results, e.g. the data P-vector

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise MeasureError(f"data has {len(self.x)} inputs but {len(self.y)} labels")
        if len(self.x) < 2:
            raise MeasureError("a measure needs at least 2 samples")
        if self.num_classes is None:
            self.num_classes = int(self.y.max()) + 1


@dataclass(frozen=True)
class MeasureSettings:
    """Options shared by all measures (each measure reads the ones it needs)."""

    device: str = "cpu"
    batch_size: int = 256
    seed: int = 0
    layer: str = "penultimate"  # the P-vector angle's feature layer


@dataclass(frozen=True)
class Measure:
    name: str
    fn: Callable[[nn.Module, nn.Module | None, MeasureData, MeasureSettings], float]
    description: str
    sign: int  # +1: larger predicts worse generalization; -1: larger predicts better
    needs_init: bool = False
    family: str = ""
    reference: str = ""

    def __call__(self, model, init_model, data, settings=None) -> float:
        return compute_measure(self.name, model, init_model, data, settings)


REGISTRY: dict[str, Measure] = {}


def register(name: str, *, description: str, sign: int, needs_init: bool = False, family: str = "",
             reference: str = ""):
    """Decorator: register ``fn(model, init_model, data, settings) -> float`` under ``name``."""
    if sign not in (1, -1):
        raise ValueError(f"measure {name}: sign must be +1 or -1")

    def deco(fn):
        if name in REGISTRY:
            raise ValueError(f"measure {name!r} is registered twice")
        REGISTRY[name] = Measure(name, fn, description, sign, needs_init, family, reference)
        return fn

    return deco


def _load_all():
    # Importing a measure's module registers it: every public module of this package.
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def get_measure(name: str) -> Measure:
    _load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown measure {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def list_measures() -> pd.DataFrame:
    """Name, family, sign, whether it needs initial weights, and a one-line description."""
    _load_all()
    return pd.DataFrame([{"name": m.name, "family": m.family, "sign": f"{m.sign:+d}", "needs_init": m.needs_init,
                          "description": m.description} for m in sorted(REGISTRY.values(), key=lambda m: m.name)])


def compute_measure(name: str, model: nn.Module, init_model: nn.Module | None, data: MeasureData,
                    settings: MeasureSettings | None = None) -> float:
    """Run one measure, checking its inputs and its output."""
    m = get_measure(name)
    settings = settings or MeasureSettings()
    if m.needs_init and init_model is None:
        raise MeasureError(f"measure {name} needs the model's initial weights, which this zoo does not record")
    model.eval()
    if init_model is not None:
        init_model.eval()
    value = float(m.fn(model, init_model, data, settings))
    if not math.isfinite(value):
        raise MeasureError(f"measure {name} returned {value} for this model")
    return value


def compute_for_entry(name: str, entry, data: MeasureData, settings: MeasureSettings | None = None,
                      model: nn.Module | None = None) -> float:
    """A measure of one zoo entry: loads its model (unless given) and, only when the
    measure needs them, its initial weights."""
    model = entry.load_model() if model is None else model
    init = entry.load_model(initial=True) if get_measure(name).needs_init else None
    return compute_measure(name, model, init, data, settings)

