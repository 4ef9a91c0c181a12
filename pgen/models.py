"""Small architectures that pgen trains itself (study, zoo recipes).

An architecture is referenced by name plus keyword hparams, so a manifest row
(``arch="cnn"``, ``{"width": 32, "depth": 2}``) rebuilds exactly the same module:
``build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=32, depth=2)``.
"""

from __future__ import annotations

import math

from torch import nn

from pgen.errors import UnknownNameError

__all__ = ["ARCHITECTURES", "build_model"]


class MLP(nn.Sequential):
    """Flatten -> depth x (Linear(width) -> ReLU -> Dropout) -> Linear(num_classes)."""

    def __init__(self, input_shape, num_classes, width=64, depth=2, dropout=0.0):
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            fan_in = width
        layers.append(nn.Linear(fan_in, num_classes))
        super().__init__(*layers)


class CNN(nn.Sequential):
    """depth x (Conv3x3(width * 2^i) -> ReLU -> MaxPool2 while the map is >= 4 px) ->
    Flatten -> Linear(hidden) -> ReLU -> Dropout -> Linear(num_classes)."""

    def __init__(self, input_shape, num_classes, width=16, depth=2, dropout=0.0, hidden=64):
        channels, h, w = input_shape
        layers: list[nn.Module] = []
        for i in range(depth):
            out = width * 2**i
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU()]
            if min(h, w) >= 4:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            channels = out
        layers += [nn.Flatten(), nn.Linear(channels * h * w, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(hidden, num_classes))
        super().__init__(*layers)


ARCHITECTURES = {"mlp": MLP, "cnn": CNN}


def build_model(arch: str, *, input_shape, num_classes: int, **hparams) -> nn.Module:
    """Build a fresh (randomly initialised) model of a named architecture.

    Unknown hparams that are training settings (lr, batch_size, ...) are ignored; only
    the architecture's own keyword arguments are passed on.
    """
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise UnknownNameError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}") from None
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "input_shape", "num_classes"}
    kwargs = {k: v for k, v in hparams.items() if k in accepted}
    return cls(tuple(input_shape), num_classes, **kwargs)
