"""P-vector math: arrays in, vectors and spectra out.

The P-vector of an ``n x d`` feature matrix is its top *left* singular vector, a unit
vector in sample space R^n (Liu et al., Machine Learning 111, 2022). Because it lives in
sample space, P-vectors of models with different widths can be compared by the angle
between them.

Conventions used throughout pgen
--------------------------------
* **Sign.** Singular vectors are defined up to sign. pgen returns the vector whose entry
  of largest magnitude is positive (the first such entry on ties), so repeated calls and
  different methods agree bit-for-bit in sign.
* **Centering.** ``center=True`` subtracts the column (feature) means first, i.e. the
  P-vector is the top principal-component score vector (PCA reading).
  ``center=False`` uses the raw matrix (plain SVD reading). The default is ``True``:
  on digits, uncentered angles sit at 4-9 degrees for every model *including random
  initialisation*, because the top uncentered direction is dominated by the mean
  activation; only centered angles move with training (see README, "Choosing the
  centering default", and ``pgen study``).
* **Stability.** The vector is numerically determined only when sigma1 > sigma2. With a
  relative gap ``(sigma1 - sigma2) / sigma1`` below ``min_gap`` (default 1e-3) a
  perturbation of the features at float32 rounding level can turn the vector by a
  visible angle; pgen then warns (:class:`UnstablePVectorWarning`) and marks the result
  ``stable=False``. It never substitutes a randomized solver: those are 11 to 74 degrees
  off at gaps near 1.02 (``python benchmarks/pvector.py``).
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

__all__ = [
    "METHODS",
    "PVectorResult",
    "StreamingPVector",
    "UnstablePVectorWarning",
    "angle",
    "angle_matrix",
    "p_vector",
    "p_vector_spectrum",
]

METHODS = ("auto", "exact", "gram", "lanczos", "streaming")
DEFAULT_MIN_GAP = 1e-3
# Up to this smaller dimension a Gram matrix + dense eigensolver beats Lanczos on CPU.
_GRAM_MAX_SMALL_DIM = 64


class UnstablePVectorWarning(UserWarning):
    """The spectral gap is too small for the top singular vector to be well determined."""


@dataclass(frozen=True)
class PVectorResult:
    """A P-vector with the spectrum it came from.

    Attributes
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


def _is_torch(x) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "detach")


def _prepare(features, name: str = "features"):
    """Validate a feature matrix; return a float32/float64 numpy array or a CUDA tensor."""
    if _is_torch(features):
        t = features.detach()
        if t.dtype.is_complex:
            raise TypeError(f"{name}: complex tensors are not supported")
        if not t.dtype.is_floating_point or t.dtype in (_torch().float16, _torch().bfloat16):
            t = t.float()
        if t.ndim > 2:
            t = t.reshape(t.shape[0], -1)
        _check_shape(tuple(t.shape), name)
        if not bool(_torch().isfinite(t).all()):
            bad = int((~_torch().isfinite(t)).sum())
            raise ValueError(f"{name} contain {bad} NaN or Inf value(s)")
        if t.is_cuda:
            return t
        return t.cpu().numpy()
    x = np.asarray(features)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a numeric matrix, got dtype {x.dtype}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64 if x.dtype.kind in "iub" else np.float32)
    if x.ndim > 2:
        x = x.reshape(x.shape[0], -1)
    _check_shape(x.shape, name)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise ValueError(f"{name} contain {bad} NaN or Inf value(s)")
    return x


def _check_shape(shape, name):
    if len(shape) != 2:
        raise ValueError(
            f"{name} must be a 2-D (n_samples, n_features) matrix; got {len(shape)}-D "
            f"input of shape {shape}"
        )
    n, d = shape
    if n < 2:
        raise ValueError(f"{name}: a P-vector needs at least 2 samples; got {n}")
    if d < 1:
        raise ValueError(f"{name}: the matrix has no feature columns (shape {shape})")


def _torch():
    import torch

    return torch


def _canonical_sign(u: np.ndarray) -> np.ndarray:
    i = int(np.argmax(np.abs(u)))
    return -u if u[i] < 0 else u


def _zero_matrix_error(centered: bool, shape) -> ValueError:
    what = "constant (every column equals its mean)" if centered else "all zero"
    return ValueError(
        f"features of shape {shape} are {what}: the top singular vector is undefined"
    )


# --------------------------------------------------------------------------- solvers


def _exact(x: np.ndarray, center: bool, k: int):
    x64 = np.asarray(x, dtype=np.float64)
    if center:
        x64 = x64 - x64.mean(axis=0)
    u, s, vt = np.linalg.svd(x64, full_matrices=False)
    return u[:, 0], s[:k], float(np.sum(s**2)), vt[0]


def _row_blocks(n: int, d: int, target_bytes: int = 32 << 20):
    step = max(1, target_bytes // max(1, 8 * d))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


_L2_BLOCK_BYTES = 2 << 20  # row blocks of the Lanczos operator: one core's L2
_MAX_CANCELLATION = 10.0  # raw / centered energy up to which Lanczos centres implicitly
_RITZ_VALUE_RTOL = 1e-4  # Lanczos residual (relative to sigma1^2) for sigma2..sigma_k


def _top_eigenpairs(g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenvalues (descending) and the top eigenvector of a symmetric matrix.

    LAPACK's MRRR driver (dsyevr) computes only the requested pairs: 3-5x faster than a
    full ``eigh`` at d = 512-2048 (tridiagonalization stays, the back-transformation of
    the other d - k vectors goes), with the same backward stability.
    """
    d = g.shape[0]
    w, vecs = scipy.linalg.eigh(g, subset_by_index=[d - k, d - 1], driver="evr", check_finite=False)
    return w[::-1], vecs[:, -1]


def _gram(x: np.ndarray, center: bool, k: int):
    """Float64 Gram matrix of the smaller side and a dense symmetric eigensolver.

    Row blocks (or column blocks when n < d) are converted to float64 and centered there,
    so neither the products nor the centering lose precision whatever the column means;
    BLAS-3 ``dgemm`` accumulates ``Xc^T Xc`` (or ``Xc Xc^T``). Cost n*d*min(n, d), independent
    of the spectral gap, which makes it the better route for centered features with a
    small feature dimension (their gaps near 1.01 slow Lanczos down).
    """
    n, d = x.shape
    mu = x.mean(axis=0, dtype=np.float64) if center else None

    def centered64(blk):
        blk = np.array(blk, dtype=np.float64)
        if center:
            blk -= mu
        return blk

    if n >= d:
        bounds = _row_blocks(n, d)
        g = np.zeros((d, d))
        for a, b in bounds:
            blk = centered64(x[a:b])
            g += blk.T @ blk
        w, v1 = _top_eigenpairs(g, k)
        u = np.empty(n)
        for a, b in bounds:
            u[a:b] = centered64(x[a:b]) @ v1
    else:
        g = np.zeros((n, n))
        step = max(1, (32 << 20) // max(1, 8 * n))
        def column_blocks():
            for c in range(0, d, step):
                cols = np.array(x[:, c : c + step], dtype=np.float64)
                if center:
                    cols -= mu[c : c + step]
                yield c, cols

        for _, cols in column_blocks():
            g += cols @ cols.T
        w, u = _top_eigenpairs(g, k)
        v1 = np.zeros(d)
        for c, cols in column_blocks():
            v1[c : c + cols.shape[1]] = cols.T @ u
    total = float(np.trace(g))
    s = np.sqrt(np.clip(w[:k], 0.0, None))
    return u, s, total, v1


def _lanczos(x: np.ndarray, center: bool, k: int, tol: float = 1e-5, maxiter: int = 500, gap_only: bool = False):
    """Top-k eigenpairs of ``Xc^T Xc`` by Lanczos, Xc the (centered) matrix.

    Unrestarted Lanczos with full (twice-applied) reorthogonalisation: the fewest matrix
    passes of any Krylov method, and every Ritz value comes for free, so sigma2 (the gap)
    costs nothing extra. The operator ``v -> sum_B Bc^T (Bc v)`` runs over row blocks
    that fit in a core's L2 cache, so X is read from memory once per iteration (not
    twice). Centering is implicit while the mean does not dominate, and explicit
    otherwise (see the comment in the body), so it never suffers cancellation. Block products
    run in the matrix's own precision (float32 features stay float32, as in
    ``scipy.sparse.linalg.svds``); Krylov vectors and the final projection are float64.

    Convergence: a Ritz value is a lower bound of its eigenvalue and lies within its
    residual of it, so ``theta1 - theta2 - r2`` bounds the eigengap from below and, by
    Davis-Kahan, ``r1 / gap`` bounds the sine of the P-vector's error: iteration stops when
    that bound is below ``tol`` radians (1e-5 rad = 5.7e-4 degrees). With ``gap_only`` the
    other Ritz values are converged only until sigma1/sigma2 is known to 1% (all
    :func:`p_vector` needs for its stability check); otherwise to a relative residual of
    ``_RITZ_VALUE_RTOL``.

    With float32 features the operator rounds at eps32 * sigma1^2, so sigma_i is accurate
    to about ``eps32 * (sigma1 / sigma_i)^2`` relative (1e-4 needs sigma_i >= 0.025
    sigma1). The P-vector is unaffected (a small sigma2 means a huge gap); use
    ``method="gram"`` (float64 products) when small singular values matter.
    """
    n, d = x.shape
    dtype = x.dtype
    mean = x.mean(axis=0, dtype=np.float64)
    step = max(1, _L2_BLOCK_BYTES // (x.itemsize * d))
    bounds = [(a, min(n, a + step)) for a in range(0, n, step)]

    # Centering. Implicit (B v - (mu.v) 1, B^T y - mu sum(y)) needs no copy and is as
    # accurate as explicit centering while the mean does not dominate: rounding is
    # amplified by raw energy / centered energy, allowed up to _MAX_CANCELLATION. Beyond
    # that, centre explicitly: once in memory, or per block into a reused buffer for
    # memory-mapped (spilled) features.
    raw_total = sum(float(np.vdot(x[a:b], x[a:b])) for a, b in bounds)
    mode = "none"
    total = raw_total
    if center:
        total = raw_total - n * float(mean @ mean)
        if total * _MAX_CANCELLATION >= raw_total:
            mode = "implicit"
        else:
            mode = "blockwise" if isinstance(x, np.memmap) else "copy"
    # Explicit centering subtracts in float64 and rounds the result: subtracting in
    # float32 would add rounding of the order eps * |mean|, not eps * |x - mean|.
    work = x
    if mode == "copy":
        work = np.empty_like(x)
        for a, b in bounds:
            work[a:b] = np.asarray(x[a:b], dtype=np.float64) - mean
    buf = np.empty((step, d), dtype=dtype) if mode == "blockwise" else None
    shift64 = mean if mode == "implicit" else None

    def blocks():
        for a, b in bounds:
            blk = work[a:b]
            if mode == "blockwise":
                blk = buf[: b - a]
                blk[...] = np.asarray(work[a:b], dtype=np.float64) - mean
            yield a, b, blk

    y_all = np.empty(n, dtype=dtype)

    def op(v):
        v_low = v.astype(dtype)
        acc = np.zeros(d)
        if mode == "implicit":
            offset = dtype.type(shift64 @ v)
            for a, b, blk in blocks():
                yb = np.dot(blk, v_low, out=y_all[a:b])
                yb -= offset
                acc += blk.T @ yb
            acc -= shift64 * float(y_all.sum(dtype=np.float64))
        else:
            for _, _, blk in blocks():
                acc += blk.T @ (blk @ v_low)
        return acc

    if mode in ("copy", "blockwise"):
        # Per-block dot products in the working precision, summed in float64.
        total = sum(float(np.vdot(blk, blk)) for _, _, blk in blocks())

    maxiter = min(maxiter, d)
    k = min(k, d)
    q = np.random.default_rng(0x9E3779B9).standard_normal(d)
    q /= np.linalg.norm(q)
    if not center and np.linalg.norm(mean) > 0:
        # Uncentered features (ReLU outputs, pixels) have a top right singular vector
        # close to the mean row: start there (plus the random vector, so the start is
        # never orthogonal to it). Saves most iterations when sigma1 >> sigma2.
        q = q + 10.0 * mean / np.linalg.norm(mean)
        q /= np.linalg.norm(q)
    basis = np.empty((maxiter + 1, d))  # rows never reached are never touched
    basis[0] = q
    alpha, beta = [], []
    theta = y = None
    for j in range(maxiter):
        w = op(basis[j])
        alpha.append(float(basis[j] @ w))
        q_mat = basis[: j + 1]
        for _ in range(2):
            w -= q_mat.T @ (q_mat @ w)
        b = float(np.linalg.norm(w))
        m = j + 1
        exhausted = b <= 1e-12 * max(abs(a) for a in alpha)  # invariant subspace found
        if m >= min(k + 1, d) or exhausted:
            theta, y = scipy.linalg.eigh_tridiagonal(np.array(alpha), np.array(beta))
            top = max(abs(theta[-1]), np.finfo(float).tiny)
            residuals = np.abs(b * y[-1, ::-1][:k])
            second = theta[-2] if m > 1 else 0.0
            safe_gap = max(theta[-1] - second - (residuals[1] if k > 1 else 0.0), 0.0)
            vector_ok = residuals[0] <= max(tol * safe_gap, 1e-13 * top)
            if gap_only:
                value_tol = max(_RITZ_VALUE_RTOL * top, 1e-2 * (theta[-1] - second))
            else:
                value_tol = _RITZ_VALUE_RTOL * top
            if exhausted or (vector_ok and np.all(residuals <= value_tol)):
                break
        if m == maxiter:
            break
        beta.append(b)
        basis[j + 1] = w / b
    m = len(alpha)
    if theta is None or len(theta) != m:
        theta, y = scipy.linalg.eigh_tridiagonal(np.array(alpha), np.array(beta[: m - 1]))
    theta, y = theta[::-1], y[:, ::-1]
    v1 = basis[:m].T @ y[:, 0]
    u = np.empty(n)
    v1_low = v1.astype(dtype)
    for a, b, blk in blocks():
        u[a:b] = blk @ v1_low
    if mode == "implicit":
        u -= float(mean @ v1)
    s = np.sqrt(np.clip(theta[:k], 0.0, None))
    if len(s) < k:
        s = np.concatenate([s, np.zeros(k - len(s))])
    return u, s, total, v1


def _torch_solve(t, center: bool, k: int, method: str):
    """Gram / exact solvers on a CUDA tensor, in float64 on the device."""
    torch = _torch()
    x = t.to(torch.float64)
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    n, d = x.shape
    total = float((x * x).sum())
    if method == "exact":
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        return u[:, 0].cpu().numpy(), s[:k].cpu().numpy(), total, vh[0].cpu().numpy()
    if n >= d:
        w, v = torch.linalg.eigh(x.T @ x)
        v1 = v[:, -1]
        u = x @ v1
    else:
        w, vecs = torch.linalg.eigh(x @ x.T)
        u = vecs[:, -1]
        v1 = x.T @ u
    s = torch.sqrt(torch.clamp(torch.flip(w, [0])[:k], min=0))
    return u.cpu().numpy(), s.cpu().numpy(), total, v1.cpu().numpy()


def _resolve_method(method: str, x) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method != "auto":
        return method
    if not isinstance(x, np.ndarray):  # CUDA tensor: float64 Gram on the device
        return "gram"
    # Measured on centered ReLU-like matrices (sigma1/sigma2 1.004-1.024, 2-core CPU):
    # cache-blocked Lanczos beats the float64 Gram + top-k eigensolver from 1000x512
    # (9 vs 25 ms) to 50000x512 (0.34 vs 0.42 s) and 2000x1024 (18 vs 168 ms), tying
    # only at 50000x384; it reads X once per pass while the Gram costs n d^2 whatever
    # the gap. Unrestarted, it ends exactly after at most d passes.
    if min(x.shape) <= _GRAM_MAX_SMALL_DIM:
        return "gram"
    return "lanczos"


def _finish(u, s, total, v1, *, n, d, center, method, min_gap, k, warn=True):
    if total <= 0 or s[0] <= 0 or not np.isfinite(s[0]):
        raise _zero_matrix_error(center, (n, d))
    norm = np.linalg.norm(u)
    if norm == 0 or not np.isfinite(norm):
        raise _zero_matrix_error(center, (n, d))
    u = np.asarray(u, dtype=np.float64) / norm
    # Keep v consistent with the sign flip of u so that X v = sigma u still holds.
    sign = -1.0 if u[int(np.argmax(np.abs(u)))] < 0 else 1.0
    u = u * sign
    v1 = None if v1 is None else np.asarray(v1, dtype=np.float64) * sign / max(np.linalg.norm(v1), 1e-300)
    s = np.asarray(s, dtype=np.float64)
    if len(s) < k:
        s = np.concatenate([s, np.zeros(k - len(s))])
    result = PVectorResult(
        vector=u,
        singular_values=s,
        total_energy=float(total),
        n_samples=n,
        n_features=d,
        centered=center,
        method=method,
        min_gap=min_gap,
        right_vector=v1,
    )
    if warn and not result.stable:
        warnings.warn(
            f"P-vector of a {n}x{d} matrix is not stable: sigma1/sigma2 = {result.gap:.6f} "
            f"(relative gap {result.relative_gap:.2e} < min_gap {min_gap:g}); the top "
            "singular vector is nearly degenerate with the second one",
            UnstablePVectorWarning,
            stacklevel=3,
        )
    return result


def p_vector_spectrum(
    features,
    *,
    center: bool = True,
    method: str = "auto",
    k: int = 5,
    min_gap: float = DEFAULT_MIN_GAP,
    _gap_only: bool = False,
) -> PVectorResult:
    """P-vector with sigma1, sigma2, gap, explained variance and reconstruction error.

    Parameters
    ----------
    features : array-like or torch.Tensor of shape (n_samples, n_features)
        The feature matrix, one row per sample. Inputs with more than two dimensions are
        flattened to ``(n_samples, -1)`` (conv maps). CUDA tensors are solved on the GPU.
    center : bool, default=True
        Subtract column means first (PCA reading). See the module docstring.
    method : {"auto", "exact", "gram", "lanczos", "streaming"}, default="auto"
        ``exact``: float64 full SVD. ``gram``: float64 Gram matrix of the smaller side and
        a dense eigensolver. ``lanczos``: cache-blocked Lanczos on the Gram operator.
        ``streaming``: :class:`StreamingPVector` fed in batches (features spilled to
        disk). ``auto``: ``gram`` on CUDA and for tiny matrices (min(n, d) <= 64); else
        ``lanczos``.
    k : int, default=5
        Number of top singular values to report (at least 2, for the gap).
    min_gap : float, default=1e-3
        Relative gap (sigma1 - sigma2) / sigma1 below which the result is flagged
        unstable and an :class:`UnstablePVectorWarning` is issued.

    Returns
    -------
    PVectorResult
    """
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k must be an integer >= 2 (the gap needs sigma2); got {k!r}")
    if not (0 <= min_gap < 1):
        raise ValueError(f"min_gap must be in [0, 1); got {min_gap!r}")
    x = _prepare(features)
    n, d = tuple(x.shape)
    k = int(min(k, n, d)) if min(n, d) >= 2 else 2
    resolved = _resolve_method(method, x)
    if resolved == "streaming":
        acc = StreamingPVector(center=center, k=k, min_gap=min_gap)
        step = max(1, (32 << 20) // max(1, 4 * d))
        for a in range(0, n, step):
            acc.update(x[a : a + step])
        return acc.result()
    if not isinstance(x, np.ndarray):
        u, s, total, v1 = _torch_solve(x, center, k, "exact" if resolved == "exact" else "gram")
        if resolved == "lanczos":  # Lanczos on the GPU gains nothing over a float64 Gram there.
            resolved = "gram"
    elif resolved == "exact":
        u, s, total, v1 = _exact(x, center, k)
    elif resolved == "gram":
        u, s, total, v1 = _gram(x, center, k)
    else:
        u, s, total, v1 = _lanczos(x, center, k, gap_only=_gap_only)
    return _finish(u, s, total, v1, n=n, d=d, center=center, method=resolved, min_gap=min_gap, k=k)


def p_vector(features, *, center: bool = True, method: str = "auto", min_gap: float = DEFAULT_MIN_GAP) -> np.ndarray:
    """Unit top left singular vector of a feature matrix, shape ``(n_samples,)``.

    Canonical sign: the entry of largest magnitude is positive. Warns with
    :class:`UnstablePVectorWarning` when the spectral gap is too small for a stable
    vector. See :func:`p_vector_spectrum` for the parameters and for the spectrum.
    """
    return p_vector_spectrum(features, center=center, method=method, k=2, min_gap=min_gap, _gap_only=True).vector


# --------------------------------------------------------------------------- angles


def _as_vector(u, name):
    if _is_torch(u):
        u = u.detach().cpu().numpy()
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector; got shape {u.shape}")
    if u.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(u).all():
        raise ValueError(f"{name} contains NaN or Inf")
    norm = np.linalg.norm(u)
    if norm == 0:
        raise ValueError(f"{name} is the zero vector: its angle is undefined")
    return u / norm


def angle(u, v) -> float:
    """Angle in degrees between two P-vectors, ``arccos(|<u, v>|)``, in [0, 90].

    Inputs need not be unit length (they are normalised) and their sign is irrelevant.
    """
    a = _as_vector(u, "u")
    b = _as_vector(v, "v")
    if a.shape != b.shape:
        raise ValueError(
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
    others : same, optional
        If given, return the (m, m2) matrix of angles between ``vectors`` and ``others``;
        otherwise the symmetric (m, m) matrix with a zero diagonal.
    """
    a = _stack(vectors, "vectors")
    b = a if others is None else _stack(others, "others")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
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
        raise ValueError(f"{name} is empty")
    lengths = {r.size for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"{name} have different lengths {sorted(lengths)}")
    return np.stack(rows)


# --------------------------------------------------------------------------- streaming


class StreamingPVector:
    """P-vector of a feature matrix fed batch by batch (n may exceed memory).

    First pass (:meth:`update`): accumulate the float64 Gram matrix ``X^T X`` of rows
    shifted by the first batch's mean (which keeps the later centering free of
    cancellation) and the column sums, and keep each batch (float32, on its own device)
    for the second pass: in memory up to ``max_memory_bytes``, beyond that in a spill
    file on disk. :meth:`result`: the top eigenvectors of the (centered) Gram give v and
    the spectrum; the second pass gives ``u = (X - mean) v / ||.||``. When the feature
    dimension exceeds ``max_gram_features``, the Gram is skipped and the stored matrix is
    solved by (memory-mapped) Lanczos instead.

    Batches may be numpy arrays or torch tensors; CUDA tensors are accumulated on their
    device without a host synchronisation per batch (NaN/Inf are counted on the device
    and reported by :meth:`result`).

    Parameters
    ----------
    center : bool, default=True
    k : int, default=5
    min_gap : float, default=1e-3
    spill_dir : str, optional
        Folder for the spill file (default: the system temp folder). The file is deleted
        by :meth:`close` or when the object is garbage collected.
    max_gram_features : int, default=4096
    max_memory_bytes : int, default=1 GiB
        Features kept in memory (host or device) before spilling to disk.
    """

    def __init__(self, *, center=True, k=5, min_gap=DEFAULT_MIN_GAP, spill_dir=None, max_gram_features=4096,
                 max_memory_bytes=1 << 30):
        if k < 2:
            raise ValueError(f"k must be >= 2; got {k}")
        self.center = center
        self.k = k
        self.min_gap = min_gap
        self.spill_dir = spill_dir
        self.max_gram_features = max_gram_features
        self.max_memory_bytes = max_memory_bytes
        self.n = 0
        self.d = None
        self._gram = None
        self._colsum = None
        self._shift = None
        self._chunks = []  # float32 batches kept in memory, on their device
        self._chunk_bytes = 0
        self._bad = None  # device-side count of NaN/Inf for CUDA batches
        self._spill = None
        self._spill_path = None

    def update(self, batch) -> None:
        """Add a batch of rows, shape ``(b, d)`` (trailing dims are flattened)."""
        torch = _torch()
        if isinstance(batch, np.ndarray) or not _is_torch(batch):
            batch = torch.from_numpy(np.ascontiguousarray(np.asarray(batch, dtype=np.float32)))
        batch = batch.detach()
        if batch.ndim == 1:
            raise ValueError("a batch must be 2-D (rows, features); got a 1-D vector")
        batch = batch.reshape(batch.shape[0], -1)
        if batch.shape[0] == 0:
            return
        if self.d is None:
            self.d = int(batch.shape[1])
            dev = batch.device
            self._shift = batch.to(torch.float64).mean(dim=0)
            self._colsum = torch.zeros(self.d, dtype=torch.float64, device=dev)
            if self.d <= self.max_gram_features:
                self._gram = torch.zeros(self.d, self.d, dtype=torch.float64, device=dev)
        elif batch.shape[1] != self.d:
            raise ValueError(f"batch has {batch.shape[1]} features; earlier batches had {self.d}")
        if batch.is_cuda:
            bad = (~torch.isfinite(batch)).sum()
            self._bad = bad if self._bad is None else self._bad + bad
        elif not bool(torch.isfinite(batch).all()):
            raise ValueError(f"batch starting at row {self.n} contains NaN or Inf values")
        shifted = batch.to(torch.float64) - self._shift
        self._colsum += shifted.sum(dim=0)
        if self._gram is not None:
            self._gram.addmm_(shifted.T, shifted)
        self._store(batch.to(torch.float32))
        self.n += int(batch.shape[0])

    def _store(self, rows) -> None:
        if self._spill is None and self._chunk_bytes + rows.numel() * 4 <= self.max_memory_bytes:
            self._chunks.append(rows.clone())  # the caller may reuse its buffer
            self._chunk_bytes += rows.numel() * 4
            return
        if self._spill is None:
            fd, self._spill_path = tempfile.mkstemp(prefix="pgen-features-", suffix=".f32", dir=self.spill_dir)
            self._spill = os.fdopen(fd, "wb")
            for chunk in self._chunks:
                self._spill.write(chunk.cpu().numpy().tobytes())
            self._chunks, self._chunk_bytes = [], 0
        self._spill.write(rows.cpu().numpy().tobytes())

    def _matrix(self) -> np.ndarray:
        """The stored features as one (n, d) float32 array (a memmap when spilled)."""
        if self._spill is None:
            return _torch().cat(self._chunks).cpu().numpy()
        self._spill.flush()
        return np.memmap(self._spill_path, dtype=np.float32, mode="r", shape=(self.n, self.d))

    def result(self) -> PVectorResult:
        """Finish: the P-vector and spectrum of everything fed so far."""
        torch = _torch()
        if self.d is None or self.n < 2:
            raise ValueError(f"a P-vector needs at least 2 samples; got {self.n}")
        if self._bad is not None and int(self._bad) > 0:
            raise ValueError(f"the features contain {int(self._bad)} NaN or Inf value(s)")
        k = min(self.k, self.n, self.d)
        if self._gram is None:
            return _finish(*_lanczos(self._matrix(), self.center, k), n=self.n, d=self.d, center=self.center,
                           method="streaming", min_gap=self.min_gap, k=k)
        # Finish on the Gram's own device (a float64 eigh on the GPU when features are there).
        g, colsum, shift = self._gram, self._colsum, self._shift
        mean_shifted = colsum / self.n
        if self.center:
            g = g - self.n * torch.outer(mean_shifted, mean_shifted)
            offset = shift + mean_shifted  # true column mean
        else:
            # X^T X = S^T S + s c^T + c s^T + n s s^T, with S the shifted rows, c = colsum.
            g = g + torch.outer(shift, colsum) + torch.outer(colsum, shift) + self.n * torch.outer(shift, shift)
            offset = torch.zeros_like(shift)
        g = (g + g.T) / 2
        if g.is_cuda:  # stays on the device that holds the features
            w_t, v_t = torch.linalg.eigh(g)
            w, v1_t = w_t.flip(0).cpu().numpy(), v_t[:, -1]
        else:
            w, v1 = _top_eigenpairs(g.numpy(), k)
            v1_t = torch.from_numpy(np.ascontiguousarray(v1))
        shift_dot = float(offset.to(v1_t.device) @ v1_t)
        total = float(torch.trace(g))
        v1 = v1_t.cpu().numpy()
        if self._spill is None:  # second pass chunk by chunk, where the features live
            u = torch.cat([chunk.to(torch.float64) @ v1_t.to(chunk.device) for chunk in self._chunks])
            u = u.cpu().numpy() - shift_dot
        else:
            x = self._matrix()
            u = np.empty(self.n)
            for a, b in _row_blocks(self.n, self.d):
                u[a:b] = np.asarray(x[a:b], dtype=np.float64) @ v1 - shift_dot
        s = np.sqrt(np.clip(w[:k], 0.0, None))
        return _finish(u, s, total, v1, n=self.n, d=self.d, center=self.center,
                       method="streaming", min_gap=self.min_gap, k=k)

    def close(self) -> None:
        """Free the stored features and delete the spill file."""
        self._chunks, self._chunk_bytes = [], 0
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        if self._spill_path and os.path.exists(self._spill_path):
            os.unlink(self._spill_path)
        self._spill_path = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
