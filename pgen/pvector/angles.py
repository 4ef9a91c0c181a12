"""Angles between P-vectors, accurate near 0 and 90 degrees."""

from __future__ import annotations

import numpy as np

from pgen.errors import InputError
from pgen.pvector._validation import _is_torch

__all__ = ["angle", "angle_matrix"]


def _as_vector(u, name):
    if _is_torch(u):
        u = u.detach().cpu().numpy()
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 1:
        raise InputError(f"{name} must be a 1-D vector; got shape {u.shape}")
    if u.size == 0:
        raise InputError(f"{name} is empty")
    if not np.isfinite(u).all():
        raise InputError(f"{name} contains NaN or Inf")
    norm = np.linalg.norm(u)
    if norm == 0:
        raise InputError(f"{name} is the zero vector: its angle is undefined")
    return u / norm


def angle(u, v) -> float:
    """Angle in degrees between two P-vectors, ``arccos(|<u, v>|)``, in [0, 90].

    Parameters
    ----------
    u, v : array-like of shape (n,)
        Two vectors over the same n samples. They need not be unit length (they are
        normalised) and their sign is irrelevant (P-vectors are defined up to sign).

    Returns
    -------
    float
        Degrees in [0, 90]; 90 for orthogonal vectors.

    Raises
    ------
    InputError
        When the lengths differ, or a vector is empty, zero or not finite.

    Examples
    --------
    >>> angle([1.0, 0.0], [1.0, 1.0])
    45.0
    >>> angle([1.0, 2.0], [-2.0, -4.0])
    0.0
    """
    a = _as_vector(u, "u")
    b = _as_vector(v, "v")
    if a.shape != b.shape:
        raise InputError(
            f"P-vectors have different lengths ({a.size} and {b.size}): they must come "
            "from the same samples in the same order"
        )
    return _kahan_angle(a, b)


def _kahan_angle(a: np.ndarray, b: np.ndarray) -> float:
    # 2 atan2(|a - sb|, |a + sb|) for unit a, b: exact near 0 and 90 degrees, where
    # arccos(|<a, b>|) loses half the digits (arccos(1 - 1e-16) is already 1e-6 degrees).
    s = 1.0 if float(a @ b) >= 0 else -1.0
    return float(np.degrees(2.0 * np.arctan2(np.linalg.norm(a - s * b), np.linalg.norm(a + s * b))))


def angle_matrix(vectors, others=None) -> np.ndarray:
    """Pairwise angles in degrees.

    Parameters
    ----------
    vectors : sequence of 1-D arrays, or 2-D array of shape (m, n)
        The P-vectors, each over the same n samples.
    others : sequence of 1-D arrays, or 2-D array of shape (m2, n), optional
        If given, return the (m, m2) matrix of angles between ``vectors`` and ``others``;
        otherwise the symmetric (m, m) matrix with a zero diagonal.

    Returns
    -------
    numpy.ndarray
        Degrees in [0, 90]: (m, m) symmetric with a zero diagonal, or (m, m2).

    Raises
    ------
    InputError
        When the vectors differ in length.
    """
    a = _stack(vectors, "vectors")
    b = a if others is None else _stack(others, "others")
    if a.shape[1] != b.shape[1]:
        raise InputError(
            f"P-vectors have different lengths ({a.shape[1]} and {b.shape[1]}): they "
            "must come from the same samples in the same order"
        )
    cos = np.clip(np.abs(a @ b.T), 0.0, 1.0)
    out = np.degrees(np.arccos(cos))
    # Recompute nearly parallel pairs with the accurate formula (see _kahan_angle).
    for i, j in zip(*np.nonzero(cos > 1 - 1e-6)):
        out[i, j] = _kahan_angle(a[i], b[j])
    if others is None:
        np.fill_diagonal(out, 0.0)
        out = (out + out.T) / 2
    return out


def _stack(vectors, name):
    rows = [_as_vector(v, f"{name}[{i}]") for i, v in enumerate(list(vectors))]
    if not rows:
        raise InputError(f"{name} is empty")
    lengths = {r.size for r in rows}
    if len(lengths) != 1:
        raise InputError(f"{name} have different lengths {sorted(lengths)}")
    return np.stack(rows)
