"""A model's weight space as the neural-functional layers read it.

The NF-layers of Zhou et al. (NeurIPS 2023, "Permutation Equivariant Neural Functionals";
the ``nfn`` package) take a network as its layers' weights and biases, each with a batch
and a channel axis: an MLP layer's weight ``(B, 1, out, in)``, a convolution's
``(B, 1, out, in, h, w)``, a bias ``(B, 1, out)``. The hidden neurons (channels) of
consecutive layers must be the same neurons: layer i's ``in`` is layer i-1's ``out``.

:func:`weight_layout` reads that layout off a model (never from a hard-coded table):
its ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` layers in the order the model registers
them. Two adaptations keep the symmetry exact:

* a ``Conv1d`` kernel ``(out, in, k)`` is a ``(out, in, k, 1)`` kernel;
* a ``Linear`` layer after convolutions whose input is the last feature map flattened
  (``in = channels x positions``, pgen's ``cnn``) is a kernel over those positions,
  ``(out, channels, positions, 1)``: permuting the channels permutes whole blocks of its
  inputs, as a convolution's. After global pooling (the Small CNN) ``in = channels``.

A layer without a bias gets zeros (the same function). Any other module that holds
parameters (batch or layer norms, embeddings) is refused with its name, as is a chain whose
layers do not connect; skip connections cannot be seen from the weights and are the
user's to rule out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pgen.errors import InputError

__all__ = ["LayerSpec", "weight_layout", "layout_mismatch", "weight_space", "check_layout"]

_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the weight space: its module name, kind, and the weight's shape as the
    NF-layers read it (``(out, in)`` or ``(out, in, h, w)``). Two layouts are the same when
    kinds, shapes and biases agree: module names may differ (a dropout layer shifts the
    indices of an ``nn.Sequential``).

    Parameters
    ----------
    name : str
        The module's name in the model.
    kind : str
        ``linear``, ``conv1d`` or ``conv2d``.
    shape : tuple of int
        The weight's shape as the NF-layers read it.
    bias : bool
        Whether the layer has a bias.
    """

    name: str = field(compare=False)
    kind: str  # "linear", "conv1d", "conv2d"
    shape: tuple[int, ...]
    bias: bool

    def describe(self) -> str:
        return f"{self.name} ({self.kind}, weight {'x'.join(map(str, self.shape))}{'' if self.bias else ', no bias'})"

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape), "bias": self.bias}

    @classmethod
    def from_json(cls, d: dict) -> "LayerSpec":
        return cls(str(d["name"]), str(d["kind"]), tuple(int(s) for s in d["shape"]), bool(d["bias"]))


def weight_layout(model: nn.Module, *, where: str = "model") -> tuple[LayerSpec, ...]:
    """The weight-space layout of ``model`` (module docstring); :class:`InputError` naming
    the first module that does not fit.

    Parameters
    ----------
    model : nn.Module
        A chain of Linear, Conv1d and Conv2d layers (activations, pooling, dropout and
        flattening between them).
    where : str, default="model"
        How the model is named in errors.

    Returns
    -------
    tuple of LayerSpec
        One per layer with weights.

    Raises
    ------
    InputError
        Naming the first module that does not fit (batch norm, a branch...).
    """
    layers: list[tuple[str, nn.Module]] = []
    for name, mod in model.named_modules():
        own = [p for p in mod.parameters(recurse=False)]
        if not own:
            continue
        if not isinstance(mod, _SUPPORTED):
            raise InputError(f"{where}: layer {name or '(root)'} ({type(mod).__name__}) holds parameters; the "
                             "neural-functional predictors read MLPs and CNNs of Linear, Conv1d and Conv2d layers only")
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)) and mod.groups != 1:
            raise InputError(f"{where}: layer {name} is a grouped convolution (groups={mod.groups}); "
                             "the neural-functional predictors need ordinary ones")
        layers.append((name, mod))
    if len(layers) < 2:
        raise InputError(f"{where}: the neural-functional predictors need at least 2 Linear/Conv layers; "
                         f"found {len(layers)}")
    out, prev_out, seen_conv = [], None, False
    for name, mod in layers:
        w = mod.weight
        if isinstance(mod, nn.Conv2d):
            shape, kind = tuple(w.shape), "conv2d"
        elif isinstance(mod, nn.Conv1d):
            shape, kind = (*w.shape, 1), "conv1d"
        else:
            o, i = w.shape
            kind = "linear"
            shape = (o, i)
            if prev_out is not None and i != prev_out:
                if seen_conv and i % prev_out == 0:  # the flattened feature map of the last convolution
                    shape = (o, prev_out, i // prev_out, 1)
                else:
                    raise InputError(f"{where}: layer {name} takes {i} inputs but the layer before has {prev_out} "
                                     "outputs; the neural-functional predictors need a chain of layers")
        if prev_out is not None and shape[1] != prev_out:
            raise InputError(f"{where}: layer {name} takes {shape[1]} channels but the layer before has {prev_out}; "
                             "the neural-functional predictors need a chain of layers")
        seen_conv = seen_conv or kind != "linear"
        out.append(LayerSpec(name, kind, shape, mod.bias is not None))
        prev_out = shape[0]
    return tuple(out)


def layout_mismatch(expected: tuple[LayerSpec, ...], got: tuple[LayerSpec, ...], *,
                    reference: str = "the predictor was fit on") -> str | None:
    """``None`` when ``got`` is ``expected``; else one line naming the first layer that
    differs (``reference`` says where ``expected`` comes from).

    Parameters
    ----------
    expected : tuple of LayerSpec
        The reference layout.
    got : tuple of LayerSpec
        The layout compared.
    reference : str
        Where ``expected`` comes from, for the message.

    Returns
    -------
    str or None
        None when they agree, else the first difference.
    """
    for i, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return f"layer {i + 1} is {b.describe()}; {reference} {a.describe()}"
    if len(expected) != len(got):
        if len(got) > len(expected):
            return (f"layer {len(expected) + 1} ({got[len(expected)].describe()}) is one more than the "
                    f"{len(expected)} layers {reference}")
        return (f"the model ends after {len(got)} layers; {reference} {len(expected)} "
                f"(layer {len(got) + 1}: {expected[len(got)].describe()})")
    return None


def check_layout(model: nn.Module, expected: tuple[LayerSpec, ...], *, where: str = "model") -> None:
    """:class:`InputError` naming the first layer of ``model`` that does not fit ``expected``.

    Parameters
    ----------
    model : nn.Module
        The model checked.
    expected : tuple of LayerSpec
        The layout it must have.
    where : str, default="model"
        How the model is named in the error.

    Raises
    ------
    InputError
        Naming the first layer that does not fit.
    """
    problem = layout_mismatch(expected, weight_layout(model, where=where))
    if problem:
        raise InputError(f"{where}: {problem}")


def weight_space(models, layout: tuple[LayerSpec, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The weights and biases of ``models`` (each with ``layout``) as batched float32 tensors
    with one channel: ``([B, 1, *shape] per layer], [B, 1, out] per layer)``.

    Parameters
    ----------
    models : sequence of nn.Module
        Models of one layout.
    layout : tuple of LayerSpec
        Their layout (:func:`weight_layout`).

    Returns
    -------
    tuple of list of torch.Tensor
        ``(weights, biases)``: per layer ``[B, 1, *shape]`` and ``[B, 1, out]``.
    """
    weights = [np.empty((len(models), 1, *spec.shape), np.float32) for spec in layout]
    biases = [np.zeros((len(models), 1, spec.shape[0]), np.float32) for spec in layout]
    for j, model in enumerate(models):
        mods = dict(model.named_modules())
        own = weight_layout(model, where=f"model {j}")
        problem = layout_mismatch(layout, own)
        if problem:
            raise InputError(f"model {j}: {problem}")
        for k, spec in enumerate(own):
            mod = mods[spec.name]
            # one reshape covers every case: a Conv1d kernel gains a unit axis, and nn.Flatten orders a
            # (channels, positions) map channel-major, so input c * positions + p lands at [:, c, p, 0]
            weights[k][j, 0] = mod.weight.detach().cpu().numpy().reshape(spec.shape)
            if mod.bias is not None:
                biases[k][j, 0] = mod.bias.detach().cpu().numpy()
    return [torch.from_numpy(w) for w in weights], [torch.from_numpy(b) for b in biases]

