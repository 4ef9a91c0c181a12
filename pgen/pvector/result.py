"""The result of a P-vector computation, and the warning for an unstable one."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DEFAULT_MIN_GAP = 1e-3


class UnstablePVectorWarning(UserWarning):
    """The spectral gap is too small for the top singular vector to be well determined."""


@dataclass(frozen=True)
class PVectorResult:
    """A P-vector with the spectrum it came from.

    Parameters
    ----------
    vector : ndarray of shape (n_samples,)
        Unit top left singular vector, canonical sign (largest-magnitude entry positive).
    singular_values : ndarray of shape (k,)
        Top-k singular values of the (centered) matrix, descending.
    total_energy : float
        Squared Frobenius norm of the (centered) matrix, the sum of all sigma_i^2.
    n_samples, n_features : int
        Shape of the feature matrix.
    centered : bool
        Whether column means were subtracted.
    method : str
        The solver that produced the result (``auto`` resolved to the concrete method).
    min_gap : float
        Relative-gap threshold used for ``stable``.
    right_vector : ndarray of shape (n_features,), optional
        The top right singular vector, where the solver computed it.
    """

    vector: np.ndarray
    singular_values: np.ndarray
    total_energy: float
    n_samples: int
    n_features: int
    centered: bool
    method: str
    min_gap: float = DEFAULT_MIN_GAP
    right_vector: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def sigma1(self) -> float:
        return float(self.singular_values[0])

    @property
    def sigma2(self) -> float:
        return float(self.singular_values[1]) if len(self.singular_values) > 1 else 0.0

    @property
    def gap(self) -> float:
        """sigma1 / sigma2 (``inf`` when sigma2 is zero)."""
        return math.inf if self.sigma2 <= 0 else self.sigma1 / self.sigma2

    @property
    def relative_gap(self) -> float:
        """(sigma1 - sigma2) / sigma1, in [0, 1]."""
        return (self.sigma1 - self.sigma2) / self.sigma1

    @property
    def stable(self) -> bool:
        """True when the relative gap is at least ``min_gap``."""
        return self.relative_gap >= self.min_gap

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        """Cumulative share of ``total_energy`` in the top-1..k components."""
        return np.cumsum(self.singular_values**2) / self.total_energy

    @property
    def reconstruction_error(self) -> np.ndarray:
        """E_k = ||X - U_k S_k V_k^T||_F^2 for k = 1..len(singular_values) (appendix A.9)."""
        return np.maximum(self.total_energy - np.cumsum(self.singular_values**2), 0.0)

    def summary(self) -> dict:
        """Scalars of the result as a flat dict (for tables and results stores)."""
        out = {
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "centered": self.centered,
            "method": self.method,
            "sigma1": self.sigma1,
            "sigma2": self.sigma2,
            "gap": self.gap,
            "stable": self.stable,
        }
        for k, (ev, err) in enumerate(
            zip(self.explained_variance_ratio, self.reconstruction_error), start=1
        ):
            out[f"explained_variance_top{k}"] = float(ev)
            out[f"reconstruction_error_top{k}"] = float(err)
        return out


# --------------------------------------------------------------------------- validation
