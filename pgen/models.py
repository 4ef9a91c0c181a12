"""Architectures by reference: pgen's own, torchvision's, and the user's.

An architecture is referenced by name plus keyword arguments, so a manifest row
(``arch="cnn"``, ``{"width": 32, "depth": 2}``) rebuilds exactly the same module:
``build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=32, depth=2)``.

* ``mlp``, ``cnn``: the small architectures pgen trains itself (study, zoo recipes);
* ``smallcnn``: the Small CNN Zoo's network (:class:`SmallCNN`; recipe ``smallcnn-mnist5k``);
* ``torchvision:NAME``: any torchvision classification model (``torchvision:resnet18``),
  built without pretrained weights from its keyword arguments (``num_classes`` defaults
  to the zoo's). Two keys adapt the input stem and are not passed to torchvision:
  ``in_channels`` (the first convolution rebuilt for that many input channels, e.g. 1 for
  grey images) and ``small_input`` (ResNet-style models: a 3x3 stride-1 ``conv1`` without
  bias and no max-pool, the usual stem for 32x32 inputs);
* ``package.module:callable``: the user's own factory, called with the keyword
  arguments; it must return an ``nn.Module``. Importing it runs the user's code, so it
  happens only with ``trust_code=True`` (``--trust-code``).
"""

from __future__ import annotations

import math

from torch import nn

from pgen.errors import InputError, UnknownNameError

__all__ = ["ARCHITECTURES", "SmallCNN", "MAX_PARAMETERS", "build_model", "model_arguments", "parameter_limit"]

MAX_PARAMETERS = 200_000_000  # 800 MB of float32 weights; zoo models hold 1e3 to 1e8


def parameter_limit() -> int:
    """The most weights one model read from a zoo may hold: the environment variable
    ``PGEN_MAX_PARAMETERS``, or :data:`MAX_PARAMETERS`. A manifest row or config asking for
    more is refused before anything is allocated."""
    import os

    text = os.environ.get("PGEN_MAX_PARAMETERS")
    try:
        return int(text) if text else MAX_PARAMETERS
    except ValueError:
        raise InputError(f"PGEN_MAX_PARAMETERS must be a whole number, got {text!r}") from None


MAX_DEPTH = 256  # hidden layers of pgen's own MLP / CNN


def _bounded(factory, what: str) -> nn.Module:
    """``factory()``, after building it once on torch's meta device (no memory) to count its
    parameters: a model over :func:`parameter_limit` or arguments it cannot take (a width of
    2.5, -3 or 2**70) are an :class:`InputError` naming ``what``, never an allocation."""
    import torch

    try:
        with torch.device("meta"):
            probe = factory()
        count = sum(p.numel() for p in probe.parameters())
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise InputError(f"{what}: cannot be built from these arguments: {exc}") from None
    limit = parameter_limit()
    if count > limit:
        raise InputError(f"{what}: would hold {count} parameters, more than {limit}; "
                         "set PGEN_MAX_PARAMETERS higher if that is intended")
    return factory()


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
    """depth x (Conv(width * 2^i) -> ReLU -> MaxPool2 while the map is >= 4 wide) ->
    Flatten -> Linear(hidden) -> ReLU -> Dropout -> Linear(num_classes).

    Images (``input_shape`` C, H, W) get 3x3 ``Conv2d``; 1-D signals (C, L, e.g. mnist1d)
    get ``Conv1d`` with kernel 5, the receptive field of the mnist1d authors' CNN.
    """

    def __init__(self, input_shape, num_classes, width=16, depth=2, dropout=0.0, hidden=64):
        channels, *spatial = input_shape
        if len(spatial) not in (1, 2):
            raise InputError(f"cnn takes (C, H, W) images or (C, L) signals; got input shape {tuple(input_shape)}")
        conv, pool, kernel = (nn.Conv2d, nn.MaxPool2d, 3) if len(spatial) == 2 else (nn.Conv1d, nn.MaxPool1d, 5)
        layers: list[nn.Module] = []
        for i in range(depth):
            out = width * 2**i
            layers += [conv(channels, out, kernel, padding=kernel // 2), nn.ReLU()]
            if min(spatial) >= 4:
                layers.append(pool(2))
                spatial = [s // 2 for s in spatial]
            channels = out
        layers += [nn.Flatten(), nn.Linear(channels * math.prod(spatial), hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(hidden, num_classes))
        super().__init__(*layers)


SMALLCNN_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "selu": nn.SELU, "linear": nn.Identity}


class SmallCNN(nn.Sequential):
    """The Small CNN Zoo's network (Unterthiner et al. 2020, google-research
    ``dnn_predict_accuracy/train_network.py`` ``build_cnn``): ``layers`` x (Conv2d(filters,
    3x3, stride 2, no padding: TF's "valid") -> activation [-> Dropout when ``dropout`` > 0])
    -> global average pooling -> Linear(num_classes). 4970 weights with the defaults on one
    input channel. Only the channel count of ``input_shape`` matters."""

    def __init__(self, input_shape, num_classes, filters=16, layers=3, activation="relu", dropout=0.0):
        act = SMALLCNN_ACTIVATIONS.get(activation)
        if act is None:
            raise InputError(f"smallcnn: unsupported activation {activation!r}; known: {sorted(SMALLCNN_ACTIVATIONS)}")
        mods: list[nn.Module] = []
        channels = input_shape[0]
        for _ in range(layers):
            mods += [nn.Conv2d(channels, filters, 3, stride=2), act()]
            if dropout > 0:
                mods.append(nn.Dropout(dropout))
            channels = filters
        mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
        super().__init__(*mods)


ARCHITECTURES = {"mlp": MLP, "cnn": CNN, "smallcnn": SmallCNN}


def build_model(arch: str, *, input_shape, num_classes: int, trust_code: bool = False, **hparams) -> nn.Module:
    """Build a fresh (randomly initialised) model of a referenced architecture (module docstring).

    For ``mlp`` / ``cnn``, hparams that are training settings (lr, batch_size, ...) are
    ignored; torchvision models and user factories get their keyword arguments as given.
    """
    if arch.startswith("torchvision:"):
        return _torchvision_model(arch.split(":", 1)[1], num_classes, dict(hparams))
    if ":" in arch:
        return _user_model(arch, dict(hparams), num_classes, trust_code)
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise UnknownNameError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}") from None
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "input_shape", "num_classes"}
    kwargs = {k: v for k, v in hparams.items() if k in accepted}
    for k, v in kwargs.items():  # width, depth, hidden: whole numbers; dropout: a rate
        if k == "activation":
            if v not in SMALLCNN_ACTIVATIONS:
                raise InputError(f"{arch}: activation={v!r} is not one of {', '.join(SMALLCNN_ACTIVATIONS)}")
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"{arch}: {k}={v!r} is not a valid value")
        top = MAX_DEPTH if k in ("depth", "layers") else 1 << 20
        ok = (0 <= v < 1) if k == "dropout" else (isinstance(v, int) and 1 <= v <= top)
        if not ok:
            raise InputError(f"{arch}: {k}={v!r} is not a valid value" + (
                f" (at most {MAX_DEPTH} layers: even the parameter count is checked by building the model, "
                "which a million layers would take minutes and gigabytes to do)" if k == "depth" else ""))
    return _bounded(lambda: cls(tuple(input_shape), num_classes, **kwargs), f"{arch} {kwargs}")


def _torchvision_model(name: str, num_classes: int, kwargs: dict) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise UnknownNameError(f"unknown torchvision classification model {name!r}; known: {', '.join(known)}")
    in_channels = kwargs.pop("in_channels", None)
    small_input = bool(kwargs.pop("small_input", False))
    kwargs.setdefault("num_classes", num_classes)
    model = _bounded(lambda: torchvision.models.get_model(name, weights=None, **kwargs), f"torchvision:{name}")
    if small_input:
        if not (isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")):
            raise InputError(f"torchvision:{name}: small_input adapts ResNet-style stems (conv1 + maxpool); "
                             "this model has none")
        model.conv1 = nn.Conv2d(model.conv1.in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    if in_channels is not None:
        _replace_first_conv(model, int(in_channels), name)
    return model


def _replace_first_conv(model: nn.Module, in_channels: int, name: str) -> None:
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(parent, child_name, nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                    child.dilation, child.groups if child.groups == 1 else in_channels, child.bias is not None,
                    child.padding_mode))
                return
    raise InputError(f"torchvision:{name}: in_channels needs a convolution to adapt; this model has none")


def model_arguments(kwargs: dict | None, num_classes: int) -> tuple[int, dict]:
    """(num_classes, other kwargs): a ``num_classes`` among an architecture's keyword
    arguments overrides the zoo's."""
    kwargs = dict(kwargs or {})
    return int(kwargs.pop("num_classes", num_classes)), kwargs


def _user_model(arch: str, kwargs: dict, num_classes: int, trust_code: bool) -> nn.Module:
    module_name, _, attr = arch.partition(":")
    if not trust_code:
        raise InputError(f"architecture {arch!r} is your own code: importing {module_name} runs it. "
                         "If you trust it, pass --trust-code (Python: trust_code=True)")
    import importlib

    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"architecture {arch!r}: cannot import {attr} from {module_name}: {exc}") from exc
    import inspect

    try:  # a factory that takes num_classes, by name or through **kwargs (timm's create_model), gets the
        # zoo's, or model_kwargs' own
        params = inspect.signature(factory).parameters
        if "num_classes" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            kwargs = {"num_classes": num_classes, **kwargs}
    except (TypeError, ValueError):
        pass
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise InputError(f"architecture {arch!r}: {attr}(**model_kwargs) returned {type(model).__name__}, "
                         "not an nn.Module")
    return model


def check_model_fits(model: nn.Module, x, labels=None, *, where: str) -> int:
    """One forward pass of one sample, before any scoring: the model takes inputs of this
    shape and returns a logits tensor (samples x classes) that covers the data's labels.
    Returns the number of classes; anything else is an InputError that says what was
    expected and what was given, naming ``where`` (the model or checkpoint).
    """
    import torch

    sample = torch.as_tensor(x[:1]).float()
    if len(sample) == 0:
        raise InputError(f"{where}: the data hold no samples")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(sample)
    except Exception as exc:  # the model's own message says what it expected (channels, features)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{where}: a forward pass of one sample of shape {tuple(sample.shape[1:])} failed: "
                         f"{text}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise InputError(f"{where}: forward returns {type(out).__name__}, not a logits tensor; wrap the model so "
                         "that forward returns the logits (samples x classes)")
    if out.dim() != 2 or out.shape[0] != 1:
        raise InputError(f"{where}: forward returns a tensor of shape {tuple(out.shape)} for one sample; "
                         "expected logits of shape (1, classes)")
    classes = int(out.shape[1])
    if labels is not None and len(labels):
        top = int(torch.as_tensor(labels).max())
        if top >= classes:
            raise InputError(f"{where}: the data's labels go up to {top}, but the model has {classes} outputs; "
                             "give the model as many classes as the data (num_classes), or the data it was "
                             "trained on")
    return classes

