"""Keras Sequential configs (the PGDL ``config.json``) rebuilt as torch modules.

Each Keras layer becomes ONE torch module, named as Keras would name it (``conv2d``,
``conv2d_1``, ``dense``, ...), so that "the input of layer i" means the same thing in
both frameworks (the kit's Jacobian norm and pgen's ``--layer`` rely on it). Ported
models take NCHW float32 input and compute exactly what the Keras model computes in
inference mode; the differences that matter:

* ``padding="same"`` pads the extra row/column at the bottom/right (stride > 1, even
  kernels), while torch pads symmetrically: pgen pads explicitly.
* ``Flatten`` after a conv flattens in NHWC order (H, W, C), so the Dense weights that
  follow keep their Keras row order.
* Weights load BY ORDER over the layers that have weights, from Keras 2
  ``save_weights`` HDF5 files (names bytes or str; they never match the config).

An unsupported layer or keyword argument raises :class:`KerasPortError` naming it;
nothing is silently ignored except arguments that cannot change inference (initializers,
regularizers, constraints, names, momentum, dropout rates).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pgen.errors import PgenError
from pgen.models import MAX_PARAMETERS, parameter_limit

__all__ = ["KerasPortError", "MAX_PARAMETERS", "build_keras_model", "load_keras_weights", "keras_weight_arrays"]


class KerasPortError(PgenError, ValueError):
    """A Keras config or weights file that pgen cannot reproduce exactly."""


# Keyword arguments that cannot change what a trained layer computes at inference.
_INERT = {"name", "trainable", "dtype", "input_shape", "batch_input_shape", "input_dim",
          "kernel_initializer", "bias_initializer", "kernel_regularizer", "bias_regularizer",
          "activity_regularizer", "kernel_constraint", "bias_constraint", "beta_initializer",
          "gamma_initializer", "moving_mean_initializer", "moving_variance_initializer",
          "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint",
          "momentum", "renorm", "fused", "virtual_batch_size", "seed", "noise_shape"}

_ACTIVATIONS = {
    "relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "linear": None, None: None,
    "elu": F.elu, "selu": F.selu, "softplus": F.softplus, "softsign": F.softsign,
    "swish": F.silu, "silu": F.silu, "exponential": torch.exp, "gelu": lambda x: F.gelu(x, approximate="tanh"),
    "softmax": "softmax",
}


def _activation(name, where: str):
    if not isinstance(name, (str, type(None))) or name not in _ACTIVATIONS:
        raise KerasPortError(f"{where}: unsupported activation {name!r}; supported: "
                             f"{sorted(k for k in _ACTIVATIONS if k)}")
    return _ACTIVATIONS[name]


def _apply_activation(fn, x: torch.Tensor) -> torch.Tensor:
    if fn is None:
        return x
    if fn == "softmax":  # Keras applies it over the last (channel) axis
        return torch.softmax(x, dim=1)
    return fn(x)


# Bounds checked before anything is allocated (a config is someone else's file): a layer's
# sizes, an input dimension, one sample's activations at any layer, and the parameters of a
# whole model. MAX_PARAMETERS can be raised with the environment variable PGEN_MAX_PARAMETERS.
MAX_SIZE = 1 << 20  # units, filters, kernel/pool/stride sizes, one input dimension
MAX_INPUT_ELEMENTS = 1 << 26  # values of one input sample (H x W x C)
MAX_ACTIVATIONS = 1 << 28  # values one sample produces at one layer (1 GiB of float32)


def _count(v, what: str, where: str, minimum: int = 1, maximum: int = MAX_SIZE) -> int:
    """A whole number in [minimum, maximum] (JSON may write 3 as 3.0); anything else is an error."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise KerasPortError(f"{where}: {what} must be a whole number, got {v!r}")
    if not minimum <= v <= maximum:
        raise KerasPortError(f"{where}: {what} must be between {minimum} and {maximum}, got {v!r}")
    return int(v)


def _real(v, what: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise KerasPortError(f"{where}: {what} must be a finite number, got {v!r}")
    return float(v)


def _pair(v, what: str, where: str) -> tuple[int, int]:
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return _count(v[0], what, where), _count(v[1], what, where)
    if isinstance(v, (list, tuple)):
        raise KerasPortError(f"{where}: {what} must be an int or a pair of ints, got {v!r}")
    n = _count(v, what, where)
    return n, n


def _same_pads(size: int, k: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding: the odd pixel goes after (bottom/right)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _out_size(size: int, k: int, stride: int, padding: str, dilation: int = 1) -> int:
    if padding == "same":
        return math.ceil(size / stride)
    return (size - (k - 1) * dilation - 1) // stride + 1


class KerasLayer(nn.Module):
    """Base: one Keras layer. ``weight_shapes()`` lists its weights in Keras order."""

    keras_class = "Layer"
    activation_name: str | None = None

    def extra_repr(self) -> str:
        return f"activation={self.activation_name}" if self.activation_name else ""

    def weight_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return []

    def set_keras_weights(self, arrays: list[np.ndarray]) -> None:  # pragma: no cover - weightless layers
        pass


class Conv2D(KerasLayer):
    keras_class = "Conv2D"

    def __init__(self, in_shape, where, filters, kernel_size, strides=1, padding="valid", activation=None,
                 use_bias=True, dilation_rate=1, data_format="channels_last", groups=1):
        super().__init__()
        if data_format not in ("channels_last", None):
            raise KerasPortError(f"{where}: data_format={data_format!r} is not supported (PGDL models are channels_last)")
        if groups != 1:
            raise KerasPortError(f"{where}: groups={groups} is not supported")
        if padding not in ("valid", "same"):
            raise KerasPortError(f"{where}: padding={padding!r} is not supported (valid, same)")
        if len(in_shape) != 3:
            raise KerasPortError(f"{where}: needs an image input (C, H, W), got {in_shape}")
        c, h, w = in_shape
        filters = _count(filters, "filters", where)
        _check_parameters(where, c * filters * math.prod(_pair(kernel_size, "kernel_size", where)))
        self.kernel = _pair(kernel_size, "kernel_size", where)
        self.stride = _pair(strides, "strides", where)
        self.dilation = _pair(dilation_rate, "dilation_rate", where)
        if self.stride != (1, 1) and self.dilation != (1, 1):
            raise KerasPortError(f"{where}: strides > 1 with dilation_rate > 1 is not allowed by Keras")
        self.pads = (0, 0, 0, 0)
        if padding == "same":
            top, bottom = _same_pads(h, self.kernel[0], self.stride[0], self.dilation[0])
            left, right = _same_pads(w, self.kernel[1], self.stride[1], self.dilation[1])
            self.pads = (left, right, top, bottom)
        self.conv = nn.Conv2d(c, filters, self.kernel, stride=self.stride, dilation=self.dilation, bias=use_bias)
        self.act = _activation(activation, where)
        self.activation_name = activation
        self.out_shape = (filters, _out_size(h, self.kernel[0], self.stride[0], padding, self.dilation[0]),
                          _out_size(w, self.kernel[1], self.stride[1], padding, self.dilation[1]))
        if min(self.out_shape[1:]) < 1:
            raise KerasPortError(f"{where}: input {in_shape} is too small for kernel {self.kernel}")

    def forward(self, x):
        if any(self.pads):
            x = F.pad(x, self.pads)
        return _apply_activation(self.act, self.conv(x))

    def weight_shapes(self):
        kh, kw = self.kernel
        shapes = [("kernel", (kh, kw, self.conv.in_channels, self.conv.out_channels))]
        if self.conv.bias is not None:
            shapes.append(("bias", (self.conv.out_channels,)))
        return shapes

    def set_keras_weights(self, arrays):
        self.conv.weight.data.copy_(torch.from_numpy(arrays[0]).permute(3, 2, 0, 1))  # (kh,kw,in,out)->(out,in,kh,kw)
        if self.conv.bias is not None:
            self.conv.bias.data.copy_(torch.from_numpy(arrays[1]))


class Dense(KerasLayer):
    keras_class = "Dense"

    def __init__(self, in_shape, where, units, activation=None, use_bias=True):
        super().__init__()
        if len(in_shape) != 1:
            raise KerasPortError(f"{where}: Dense on a {len(in_shape)}-D input {in_shape} is not supported; "
                                 "add Flatten or a global pooling layer before it")
        units = _count(units, "units", where)
        _check_parameters(where, in_shape[0] * units)
        self.linear = nn.Linear(in_shape[0], units, bias=use_bias)
        self.act = _activation(activation, where)
        self.activation_name = activation
        self.out_shape = (units,)

    def forward(self, x):
        return _apply_activation(self.act, self.linear(x))

    def weight_shapes(self):
        shapes = [("kernel", (self.linear.in_features, self.linear.out_features))]
        if self.linear.bias is not None:
            shapes.append(("bias", (self.linear.out_features,)))
        return shapes

    def set_keras_weights(self, arrays):
        self.linear.weight.data.copy_(torch.from_numpy(arrays[0]).T)
        if self.linear.bias is not None:
            self.linear.bias.data.copy_(torch.from_numpy(arrays[1]))


class BatchNormalization(KerasLayer):
    """Inference-mode batch norm over the channel axis, with Keras's optional gamma/beta."""

    keras_class = "BatchNormalization"

    def __init__(self, in_shape, where, axis=-1, epsilon=1e-3, center=True, scale=True):
        super().__init__()
        last = len(in_shape)  # the channel axis in Keras's NHWC numbering
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        if axis not in (-1, last):
            raise KerasPortError(f"{where}: axis={axis!r} is not supported (only the channel axis, -1)")
        c = in_shape[0]
        self.epsilon = _real(epsilon, "epsilon", where)
        if self.epsilon <= 0:  # a non-positive epsilon lets 1/sqrt(variance + epsilon) be inf or NaN
            raise KerasPortError(f"{where}: epsilon must be positive, got {epsilon!r}")
        self.gamma = nn.Parameter(torch.ones(c)) if scale else None
        self.beta = nn.Parameter(torch.zeros(c)) if center else None
        self.register_buffer("moving_mean", torch.zeros(c))
        self.register_buffer("moving_variance", torch.ones(c))
        self.out_shape = tuple(in_shape)

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        inv = torch.rsqrt(self.moving_variance + self.epsilon)
        if self.gamma is not None:
            inv = inv * self.gamma
        y = (x - self.moving_mean.view(shape)) * inv.view(shape)
        if self.beta is not None:
            y = y + self.beta.view(shape)
        return y

    def weight_shapes(self):
        c = (self.moving_mean.numel(),)
        return ([("gamma", c)] if self.gamma is not None else []) + \
               ([("beta", c)] if self.beta is not None else []) + [("moving_mean", c), ("moving_variance", c)]

    def set_keras_weights(self, arrays):
        targets = ([self.gamma] if self.gamma is not None else []) + ([self.beta] if self.beta is not None else []) \
            + [self.moving_mean, self.moving_variance]
        for t, a in zip(targets, arrays):
            t.data.copy_(torch.from_numpy(a))


class _Pool2D(KerasLayer):
    mode = "max"

    def __init__(self, in_shape, where, pool_size=2, strides=None, padding="valid", data_format="channels_last"):
        super().__init__()
        if len(in_shape) != 3:
            raise KerasPortError(f"{where}: needs an image input (C, H, W), got {in_shape}")
        if data_format not in ("channels_last", None):
            raise KerasPortError(f"{where}: data_format={data_format!r} is not supported")
        if padding not in ("valid", "same"):
            raise KerasPortError(f"{where}: padding={padding!r} is not supported (valid, same)")
        c, h, w = in_shape
        self.pool = _pair(pool_size, "pool_size", where)
        self.stride = _pair(pool_size if strides is None else strides, "strides", where)
        self.pads = (0, 0, 0, 0)
        if padding == "same":
            top, bottom = _same_pads(h, self.pool[0], self.stride[0])
            left, right = _same_pads(w, self.pool[1], self.stride[1])
            self.pads = (left, right, top, bottom)
        self.out_shape = (c, _out_size(h, self.pool[0], self.stride[0], padding),
                          _out_size(w, self.pool[1], self.stride[1], padding))
        if min(self.out_shape[1:]) < 1:
            raise KerasPortError(f"{where}: input {in_shape} is smaller than pool_size {self.pool}")

    def forward(self, x):
        if self.mode == "max":
            if any(self.pads):  # padded cells never win a max
                x = F.pad(x, self.pads, value=float("-inf"))
            return F.max_pool2d(x, self.pool, self.stride)
        if not any(self.pads):
            return F.avg_pool2d(x, self.pool, self.stride)
        # TensorFlow averages over the valid cells only; the pads are asymmetric, so
        # divide the padded sum by the padded count of real cells.
        ones = torch.ones_like(x[:1, :1])
        total = F.avg_pool2d(F.pad(x, self.pads), self.pool, self.stride)
        count = F.avg_pool2d(F.pad(ones, self.pads), self.pool, self.stride)
        return total / count


class MaxPooling2D(_Pool2D):
    keras_class = "MaxPooling2D"
    mode = "max"


class AveragePooling2D(_Pool2D):
    keras_class = "AveragePooling2D"
    mode = "avg"


class _GlobalPool2D(KerasLayer):
    def __init__(self, in_shape, where, keepdims=False, data_format="channels_last"):
        super().__init__()
        if len(in_shape) != 3:
            raise KerasPortError(f"{where}: needs an image input (C, H, W), got {in_shape}")
        if data_format not in ("channels_last", None):
            raise KerasPortError(f"{where}: data_format={data_format!r} is not supported")
        self.keepdims = bool(keepdims)
        self.out_shape = (in_shape[0], 1, 1) if keepdims else (in_shape[0],)

    def forward(self, x):
        y = x.amax(dim=(2, 3), keepdim=self.keepdims) if self.mode == "max" else x.mean(dim=(2, 3), keepdim=self.keepdims)
        return y


class GlobalAveragePooling2D(_GlobalPool2D):
    keras_class = "GlobalAveragePooling2D"
    mode = "avg"


class GlobalMaxPooling2D(_GlobalPool2D):
    keras_class = "GlobalMaxPooling2D"
    mode = "max"


class Flatten(KerasLayer):
    keras_class = "Flatten"

    def __init__(self, in_shape, where, data_format="channels_last"):
        super().__init__()
        if data_format not in ("channels_last", None):
            raise KerasPortError(f"{where}: data_format={data_format!r} is not supported")
        self.out_shape = (math.prod(in_shape),)

    def forward(self, x):
        if x.dim() == 4:  # flatten in Keras's (H, W, C) order
            x = x.permute(0, 2, 3, 1)
        return x.reshape(x.shape[0], -1)


class Dropout(KerasLayer):
    keras_class = "Dropout"

    def __init__(self, in_shape, where, rate=0.0):
        super().__init__()
        if not 0 <= _real(rate, "rate", where) < 1:
            raise KerasPortError(f"{where}: rate must be in [0, 1), got {rate!r}")
        self.out_shape = tuple(in_shape)

    def forward(self, x):  # identity at inference
        return x


class Activation(KerasLayer):
    keras_class = "Activation"

    def __init__(self, in_shape, where, activation):
        super().__init__()
        self.act = _activation(activation, where)
        self.activation_name = activation
        self.out_shape = tuple(in_shape)

    def forward(self, x):
        return _apply_activation(self.act, x)


class ReLU(KerasLayer):
    keras_class = "ReLU"

    def __init__(self, in_shape, where, max_value=None, negative_slope=0.0, threshold=0.0):
        super().__init__()
        self.max_value = None if max_value is None else _real(max_value, "max_value", where)
        self.negative_slope = _real(negative_slope, "negative_slope", where)
        self.threshold = _real(threshold, "threshold", where)
        self.out_shape = tuple(in_shape)

    def forward(self, x):
        y = torch.where(x >= self.threshold, x, self.negative_slope * (x - self.threshold))
        if self.max_value is not None:
            y = torch.clamp(y, max=self.max_value)
        return y


LAYERS: dict[str, type[KerasLayer]] = {cls.keras_class: cls for cls in (
    Conv2D, Dense, BatchNormalization, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
    GlobalMaxPooling2D, Flatten, Dropout, Activation, ReLU)}

_SNAKE = {"Conv2D": "conv2d", "Dense": "dense", "BatchNormalization": "batch_normalization",
          "MaxPooling2D": "max_pooling2d", "AveragePooling2D": "average_pooling2d",
          "GlobalAveragePooling2D": "global_average_pooling2d", "GlobalMaxPooling2D": "global_max_pooling2d",
          "Flatten": "flatten", "Dropout": "dropout", "Activation": "activation", "ReLU": "re_lu"}


def _cast_whole_floats(kwargs: dict) -> dict:
    # The kit casts whole-number floats to int before building (JSON writes 3 as 3.0).
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in kwargs.items()}


class KerasSequential(nn.Sequential):
    """A ported Keras Sequential model: NCHW (or flat) float32 in, the last layer's output out."""

    def __init__(self, layers: dict[str, KerasLayer], input_shape: tuple[int, ...]):
        super().__init__(OrderedDict(layers))
        self.input_shape = input_shape  # torch order: (C, H, W) or (features,)

    def keras_layers(self) -> list[KerasLayer]:
        return list(self.children())


def _check_parameters(where: str, count: int, before: int = 0) -> None:
    limit = parameter_limit()
    if before + count > limit:
        raise KerasPortError(f"{where}: the model would hold more than {limit} parameters (this layer adds "
                             f"{count}); set PGEN_MAX_PARAMETERS higher if that is intended")


def torch_input_shape(keras_shape) -> tuple[int, ...]:
    """A config's ``input_shape`` ([H, W, C] or [features]) in torch order ((C, H, W) or (features,))."""
    s = [int(v) for v in keras_shape]
    return (s[2], s[0], s[1]) if len(s) == 3 else tuple(s)


def build_keras_model(config: dict, *, where: str = "config") -> KerasSequential:
    """Build the torch twin of a PGDL ``config.json`` (random weights).

    Every size is checked before anything is allocated: whole numbers within
    :data:`MAX_SIZE`, an input of at most :data:`MAX_INPUT_ELEMENTS` values, and at most
    :func:`parameter_limit` weights in all (:data:`MAX_PARAMETERS`, or the environment
    variable ``PGEN_MAX_PARAMETERS``); a non-positive BatchNormalization epsilon, a
    non-finite number or an argument of the wrong type is a :class:`KerasPortError`.

    Parameters
    ----------
    config : dict
        ``{"model_config": [{"layer_name": ..., **kwargs}, ...], "input_shape": [H, W, C]}``.
    where : str
        Names the file and model in error messages.
    """
    if not isinstance(config, dict) or "model_config" not in config or "input_shape" not in config:
        raise KerasPortError(f"{where}: expected keys 'model_config' and 'input_shape'")
    shape_in = config["input_shape"]
    if not isinstance(shape_in, list) or len(shape_in) not in (1, 3):
        raise KerasPortError(f"{where}: input_shape must be [H, W, C] or [features], got {shape_in!r}")
    shape: tuple[int, ...] = torch_input_shape([_count(s, "input_shape", where) for s in shape_in])
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise KerasPortError(f"{where}: input_shape {shape_in} has more than {MAX_INPUT_ELEMENTS} values")
    if not isinstance(config["model_config"], list):
        raise KerasPortError(f"{where}: model_config must be a list of layers, got {type(config['model_config']).__name__}")
    input_shape = shape
    layers: dict[str, KerasLayer] = {}
    counts: dict[str, int] = {}
    total = 0
    for i, spec in enumerate(config["model_config"]):
        if not isinstance(spec, dict) or "layer_name" not in spec:
            raise KerasPortError(f"{where}: layer {i} has no 'layer_name'")
        kind = spec["layer_name"]
        if not isinstance(kind, str):
            raise KerasPortError(f"{where}: layer {i}: 'layer_name' must be a Keras layer class name, not "
                                 f"{type(kind).__name__} {json.dumps(kind, default=str)[:40]}")
        cls = LAYERS.get(kind)
        here = f"{where}: layer {i} ({kind})"
        if cls is None:
            raise KerasPortError(f"{here}: unsupported layer {kind!r}; supported: {sorted(LAYERS)}")
        kwargs = _cast_whole_floats({k: v for k, v in spec.items() if k != "layer_name" and k not in _INERT})
        try:
            layer = cls(shape, here, **kwargs)
        except TypeError as exc:  # an unknown keyword argument
            raise KerasPortError(f"{here}: unsupported argument ({exc})") from None
        added = sum(p.numel() for p in layer.parameters())  # each layer was bounded before it allocated
        _check_parameters(here, added, total)
        total += added
        shape = layer.out_shape
        if math.prod(shape) > MAX_ACTIVATIONS:
            raise KerasPortError(f"{here}: its output {shape} has more than {MAX_ACTIVATIONS} values per sample")
        n = counts.get(kind, 0)
        counts[kind] = n + 1
        layers[_SNAKE[kind] + (f"_{n}" if n else "")] = layer
    if not layers:
        raise KerasPortError(f"{where}: model_config is empty")
    return KerasSequential(layers, input_shape)


def _decode(name) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)


MAX_WEIGHT_ELEMENTS = 2**30  # one weight array of at most 4 GiB as float32; a larger one is a broken file


def _internal(group, name: str, path: Path):
    """``group[name]``, refusing what would read outside this file: an HDF5 external link,
    a dataset with external raw storage or a virtual dataset (both map other files' bytes),
    and a dataset too large to be a weight."""
    import h5py

    link = group.get(name, getlink=True)
    if link is None:
        raise KerasPortError(f"{path}: {group.name}/{name} is missing")
    if isinstance(link, h5py.ExternalLink):
        raise KerasPortError(f"{path}: {group.name}/{name} is an external link to {link.filename!r}; "
                             "pgen reads weights only from inside the file")
    item = group[name]
    if isinstance(item, h5py.Dataset):
        if item.external or item.is_virtual:
            raise KerasPortError(f"{path}: dataset {item.name} stores its data in other files "
                                 f"({'external storage' if item.external else 'a virtual dataset'}); refused")
        if item.size > MAX_WEIGHT_ELEMENTS:
            raise KerasPortError(f"{path}: dataset {item.name} has {item.size} elements (shape {item.shape}), "
                                 f"more than the {MAX_WEIGHT_ELEMENTS} a weight may have")
    return item


HDF5_READ_TIMEOUT = 60.0  # seconds; a weights file of a PGDL model reads in milliseconds


def keras_weight_arrays(path: str | Path, *, timeout: float | None = None) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """The weights of a Keras 2 ``save_weights`` HDF5 file, in file order.

    Returns ``[(layer name, [(weight name, array), ...]), ...]`` over the layers that
    have weights (names decoded whether stored as bytes or str).

    Read by a reader process forked once and reused, which is killed (and replaced) when a
    read takes over ``timeout`` seconds (default :data:`HDF5_READ_TIMEOUT`): on some
    corrupt files HDF5's C library loops forever, which nothing in-process can interrupt
    (the fuzz tests found one). Where ``fork`` is unavailable, or in a daemonic process,
    the file is read in-process.
    """
    return _READER.read(Path(path), HDF5_READ_TIMEOUT if timeout is None else timeout)


class _WeightReader:
    """One forked child that reads weight files on request; replaced after a hang or a crash."""

    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.proc = self.conn = None
        self.pid = None
        self.registered = False  # the exit handler that closes the reader

    def read(self, path: Path, timeout: float):
        import multiprocessing
        import os

        if "fork" not in multiprocessing.get_all_start_methods() or multiprocessing.current_process().daemon:
            # A daemonic process may not have children; pgen's daemonic workers (pgdl predict
            # --time-budget) are themselves killed by their parent when over time.
            return _read_weight_arrays(path)
        with self.lock:
            if self.proc is None or self.pid != os.getpid() or not self.proc.is_alive():
                self._start()
            self.conn.send(str(path))
            if not self.conn.poll(timeout):
                self.close()
                raise KerasPortError(f"{path}: reading the weights took over {timeout:g} s (HDF5 loops forever on "
                                     "some corrupt files); refused")
            try:
                status, payload = self.conn.recv()
            except EOFError:
                self.close()
                raise KerasPortError(f"{path}: the process reading the weights died; the file is probably "
                                     "corrupt") from None
        if status == "error":
            raise KerasPortError(payload)
        return payload

    def _start(self):
        import atexit
        import multiprocessing
        import os

        ctx = multiprocessing.get_context("fork")
        self.conn, child_end = ctx.Pipe()
        # Not daemonic (a pool worker may not have daemonic children); closed at exit instead.
        self.proc = ctx.Process(target=_serve_weight_reads, args=(child_end,), name="pgen-hdf5-reader")
        self.proc.start()
        child_end.close()
        self.pid = os.getpid()
        if not self.registered:
            atexit.register(self.close)
            self.registered = True

    def close(self):
        import os

        if self.proc is not None and self.pid == os.getpid():
            self.conn.close()
            self.proc.kill()
            self.proc.join()
        self.proc = self.conn = None


def _serve_weight_reads(conn) -> None:
    import os

    # Keep only the pipe: inherited descriptors would keep the parent's connections open after
    # it dies (a Ray worker's socket: Ray would never see the worker die, and its task would
    # hang), and the parent's own end of this pipe would hide its death from this reader.
    keep = conn.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, max(keep + 1, os.sysconf("SC_OPEN_MAX")))
    try:
        while True:
            try:
                path = conn.recv()
            except (EOFError, OSError):
                break
            try:
                conn.send(("ok", _read_weight_arrays(Path(path))))
            except KerasPortError as exc:
                conn.send(("error", str(exc)))
    finally:
        os._exit(0)  # skip the parent's exit handlers (test runners, thread pools)


_READER = _WeightReader()


def _read_weight_arrays(path: Path) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            group = fh["model_weights"] if "model_weights" in fh and "layer_names" not in fh.attrs else fh
            if "layer_names" not in group.attrs:
                raise KerasPortError(f"{path}: not a Keras weights file (no 'layer_names' attribute)")
            out = []
            for lname in group.attrs["layer_names"]:
                lname = _decode(lname)
                g = _internal(group, lname, path)
                names = [_decode(n) for n in g.attrs.get("weight_names", [])]
                if names:
                    out.append((lname, [(n, np.asarray(_internal(g, n, path), dtype=np.float32)) for n in names]))
            return out
    except KerasPortError:
        raise
    except Exception as exc:  # a corrupt file reaches HDF5's C library, which raises RuntimeError, TypeError, ...
        raise KerasPortError(f"{path}: cannot read Keras weights: {type(exc).__name__}: {exc}") from exc


def load_keras_weights(model: KerasSequential, path: str | Path, *, where: str = "model") -> KerasSequential:
    """Load a Keras weights HDF5 into a ported model BY ORDER, checking every shape."""
    path = Path(path)
    file_layers = keras_weight_arrays(path)
    targets = [(name, layer) for name, layer in model.named_children() if layer.weight_shapes()]
    if len(file_layers) != len(targets):
        raise KerasPortError(f"{where}: {path} holds weights for {len(file_layers)} layers "
                             f"({[n for n, _ in file_layers]}) but the config has {len(targets)} layers with weights "
                             f"({[n for n, _ in targets]})")
    for (fname, weights), (tname, layer) in zip(file_layers, targets):
        expected = layer.weight_shapes()
        got = [tuple(a.shape) for _, a in weights]
        if [s for _, s in expected] != got:
            raise KerasPortError(f"{where}: {path} layer {fname!r} has weights {got} but config layer {tname!r} "
                                 f"({layer.keras_class}) needs {[(n, s) for n, s in expected]}")
        layer.set_keras_weights([a for _, a in weights])
    return model

