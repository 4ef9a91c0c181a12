"""Input checks shared by the solvers, the streaming accumulator and the angles."""

from __future__ import annotations

import numpy as np

from pgen.errors import InputError


def _is_torch(x) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "detach")


def _prepare(features, name: str = "features"):
    """Validate a feature matrix; return a float32/float64 numpy array or a CUDA tensor."""
    if _is_torch(features):
        t = features.detach()
        if t.dtype.is_complex:
            raise InputError(f"{name}: complex tensors are not supported")
        if not t.dtype.is_floating_point or t.dtype in (_torch().float16, _torch().bfloat16):
            t = t.float()
        if t.ndim > 2:
            t = t.reshape(t.shape[0], -1)
        _check_shape(tuple(t.shape), name)
        if not bool(_torch().isfinite(t).all()):
            bad = int((~_torch().isfinite(t)).sum())
            raise InputError(f"{name} contain {bad} NaN or Inf value(s)")
        if t.is_cuda:
            return t
        return t.cpu().numpy()
    x = np.asarray(features)
    if x.dtype.kind not in "fiub":
        raise InputError(f"{name}: expected a numeric matrix, got dtype {x.dtype}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64 if x.dtype.kind in "iub" else np.float32)
    if x.ndim > 2:
        x = x.reshape(x.shape[0], -1)
    _check_shape(x.shape, name)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise InputError(f"{name} contain {bad} NaN or Inf value(s)")
    return x


def _check_shape(shape, name):
    if len(shape) != 2:
        raise InputError(
            f"{name} must be a 2-D (n_samples, n_features) matrix; got {len(shape)}-D "
            f"input of shape {shape}"
        )
    n, d = shape
    if n < 2:
        raise InputError(f"{name}: a P-vector needs at least 2 samples; got {n}")
    if d < 1:
        raise InputError(f"{name}: the matrix has no feature columns (shape {shape})")


def _torch():
    import torch

    return torch


def _canonical_sign(u: np.ndarray) -> np.ndarray:
    i = int(np.argmax(np.abs(u)))
    return -u if u[i] < 0 else u


def _zero_matrix_error(centered: bool, shape) -> InputError:
    what = "constant (every column equals its mean)" if centered else "all zero"
    return InputError(
        f"features of shape {shape} are {what}: the top singular vector is undefined"
    )
