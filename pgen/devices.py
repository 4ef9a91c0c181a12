"""Where a model lives, and the CUDA numerics setting pgen controls: used by features,
training and the measure contract alike."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["check_device", "model_device", "tf32_mode"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any).

    Parameters
    ----------
    model : nn.Module
        Any module.

    Returns
    -------
    torch.device
        Where its first parameter or buffer lives.
    """
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def check_device(device: str, *, here: bool = True) -> None:
    """Before any model: a device that cannot run would fail every model one by one.
    ``here=False`` (models run elsewhere, e.g. on a Ray cluster's GPU nodes) checks the name only."""
    from pgen.errors import InputError

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}: {exc}") from None
    if here and dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but torch sees no CUDA device here "
                         f"(torch {torch.__version__}); use --device cpu")


@contextlib.contextmanager
def tf32_mode(device: str | torch.device, allow: bool) -> Iterator[None]:
    """On CUDA, set TF32 for matmuls and cuDNN to ``allow`` for the duration, then restore.

    Parameters
    ----------
    device : str or torch.device
        The device in use; on the CPU nothing changes.
    allow : bool
        Whether TF32 is allowed inside the block.

    Returns
    -------
    contextlib.AbstractContextManager
        A context manager.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
