"""Helpers shared by several measures."""

from __future__ import annotations

import torch
from torch import nn

from pgen.measures import MeasureError


def all_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every floating-point tensor of the state, parameters AND buffers (BatchNorm running
    statistics), as Keras's ``model.get_weights()`` returns them."""
    return {k: v.detach() for k, v in model.state_dict().items() if v.is_floating_point()}


def paired_weights(model: nn.Module, init_model: nn.Module) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    a, b = all_weights(model), all_weights(init_model)
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise MeasureError("the initial model's weights do not match the trained model's")
    return [(k, a[k], b[k]) for k in a]


def layers_of(model: nn.Module) -> list[nn.Module]:
    """The model's layers: a Sequential's children (a ported Keras layer each), else its leaf modules."""
    if isinstance(model, nn.Sequential):
        return list(model.children())
    return [m for m in model.modules() if not list(m.children())]
