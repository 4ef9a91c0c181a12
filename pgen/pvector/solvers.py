"""Solvers for the top singular triplet: exact SVD, Gram + MRRR, blocked Lanczos, torch on CUDA."""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.linalg

from pgen.errors import InputError, UnknownNameError
from pgen.pvector._validation import _canonical_sign, _prepare, _torch, _zero_matrix_error
from pgen.pvector.result import DEFAULT_MIN_GAP, PVectorResult, UnstablePVectorWarning

__all__ = ["METHODS", "p_vector", "p_vector_spectrum", "top_singular_vectors"]

METHODS = ("auto", "exact", "gram", "lanczos", "streaming")
# Up to this smaller dimension a Gram matrix + dense eigensolver beats Lanczos on CPU.
_GRAM_MAX_SMALL_DIM = 64


def _exact(x: np.ndarray, center: bool, k: int):
    x64 = np.asarray(x, dtype=np.float64)
    if center:
        x64 = x64 - x64.mean(axis=0)
    u, s, vt = np.linalg.svd(x64, full_matrices=False)
    return u[:, 0], s[:k], float(np.sum(s**2)), vt[0]


def _row_blocks(n: int, d: int, target_bytes: int = 32 << 20):
    step = max(1, target_bytes // max(1, 8 * d))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


_NUMPY_EIGH_MAX_DIM = 256  # below this, a full numpy eigh beats scipy's subset driver (see _top_eigenpairs)
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
    if d <= _NUMPY_EIGH_MAX_DIM:
        # Small: numpy's own LAPACK. numpy and scipy each bundle an OpenBLAS with its own
        # thread pool; calling scipy right after numpy's multithreaded product makes the two
        # pools fight over the cores (measured: 1347 x 64 features, 9.9 ms mixed vs 1.3 ms
        # numpy only, on 2 cores), which dominates at this size.
        w, vecs = np.linalg.eigh(g)
        return w[::-1][:k], vecs[:, -1]
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
    bounds = _row_blocks(n, d) if n >= d else None
    if n >= d and len(bounds) == 1:
        # One block (up to 32 MB): convert once and take the mean of the float64 copy
        # (0.15 ms instead of 0.25 ms at 4000 x 64, where the whole solve takes ~3 ms).
        whole = np.array(x, dtype=np.float64)
        mu = whole.mean(axis=0) if center else None
        if center:
            whole -= mu
    else:
        whole = None
        mu = x.mean(axis=0, dtype=np.float64) if center else None

    def centered64(blk):
        blk = np.array(blk, dtype=np.float64)
        if center:
            blk -= mu
        return blk

    if n >= d:
        g = np.zeros((d, d))
        blk = None
        for a, b in bounds:
            blk = whole if whole is not None else centered64(x[a:b])
            g += blk.T @ blk
        w, v1 = _top_eigenpairs(g, k)
        if len(bounds) == 1:  # one block (up to 32 MB): reuse it rather than convert it again
            u = blk @ v1
        else:
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


def _lanczos(x: np.ndarray, center: bool, k: int, tol: float = 1e-5, maxiter: int = 500, gap_only: bool = False,
             min_gap: float | None = None):
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
    other Ritz values are converged only until sigma1/sigma2 is known to 1%, or, given
    ``min_gap``, until the stability check is decided: the same bound on the eigengap
    (lambda1 >= theta1, lambda2 <= theta2 + r2) puts the relative singular gap at or above
    ``min_gap``, so the Ritz values' own gap is too (all :func:`p_vector` needs); otherwise
    to a relative residual of ``_RITZ_VALUE_RTOL``.

    With float32 features the operator rounds at eps32 * sigma1^2, so sigma_i is accurate
    to about ``eps32 * (sigma1 / sigma_i)^2`` relative (1e-4 needs sigma_i >= 0.025
    sigma1). The P-vector is unaffected (a small sigma2 means a huge gap); use
    ``method="gram"`` (float64 products) when small singular values matter.
    """
    n, d = x.shape
    dtype = x.dtype
    step = max(1, _L2_BLOCK_BYTES // (x.itemsize * d))
    bounds = [(a, min(n, a + step)) for a in range(0, n, step)]
    # Column sums block by block through BLAS (a block's sum in the working precision over
    # at most `step` rows, the blocks summed in float64): within 1e-7 relative of numpy's
    # float64 mean on 2000x8192 float32 matrices, about 4x faster (benchmarks/pvector_passes.py).
    ones = np.ones(step, dtype=dtype)
    colsum = np.zeros(d)
    for a, b in bounds:
        colsum += ones[: b - a] @ x[a:b]
    mean = colsum / n

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
            values_ok = bool(np.all(residuals <= value_tol))
            if gap_only and min_gap is not None and k > 1 and not values_ok:
                # the stability check decided: the singular gap's lower bound clears min_gap
                values_ok = 1.0 - math.sqrt(max(second + residuals[1], 0.0) / top) >= min_gap
            if exhausted or (vector_ok and values_ok):
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
        raise UnknownNameError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
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
        ``.vector`` (the P-vector), ``.singular_values`` (top k), ``.gap``, ``.stable``,
        ``.explained_variance_ratio`` and ``.reconstruction_error`` (E_k).

    Raises
    ------
    InputError
        When the matrix has fewer than two samples or is not finite.
    UnknownNameError
        When ``method`` is not one of :data:`METHODS`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((200, 30))
    >>> res = p_vector_spectrum(x, k=3)
    >>> res.vector.shape, len(res.singular_values), bool(res.stable)
    ((200,), 3, True)
    """
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise InputError(f"k must be an integer >= 2 (the gap needs sigma2); got {k!r}")
    if not (0 <= min_gap < 1):
        raise InputError(f"min_gap must be in [0, 1); got {min_gap!r}")
    x = _prepare(features)
    n, d = tuple(x.shape)
    k = int(min(k, n, d)) if min(n, d) >= 2 else 2
    resolved = _resolve_method(method, x)
    if resolved == "streaming":
        from pgen.pvector.streaming import StreamingPVector  # it builds on these solvers

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
        u, s, total, v1 = _lanczos(x, center, k, gap_only=_gap_only, min_gap=min_gap)
    return _finish(u, s, total, v1, n=n, d=d, center=center, method=resolved, min_gap=min_gap, k=k)


def p_vector(features, *, center: bool = True, method: str = "auto", min_gap: float = DEFAULT_MIN_GAP) -> np.ndarray:
    """Unit top left singular vector of a feature matrix, shape ``(n_samples,)``.

    Canonical sign: the entry of largest magnitude is positive.

    Parameters
    ----------
    features : array-like or torch.Tensor of shape (n_samples, n_features)
        One row per sample; more dimensions are flattened (conv maps).
    center : bool, default=True
        Subtract column means first (the PCA reading, pgen's default).
    method : {"auto", "exact", "gram", "lanczos", "streaming"}, default="auto"
        The solver; see :func:`p_vector_spectrum`.
    min_gap : float, default=1e-3
        Relative spectral gap below which the vector is unstable.

    Returns
    -------
    numpy.ndarray of shape (n_samples,)
        The P-vector, unit length.

    Raises
    ------
    InputError
        When the matrix has fewer than two samples or is not finite.
    UnknownNameError
        When ``method`` is not one of :data:`METHODS`.

    Warns
    -----
    UnstablePVectorWarning
        When (sigma1 - sigma2) / sigma1 is below ``min_gap``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.outer([3.0, 1.0, 2.0], [1.0, 2.0]) + 0.01 * np.eye(3, 2)
    >>> np.round(p_vector(x, center=False), 3)
    array([0.802, 0.268, 0.534])
    """
    return p_vector_spectrum(features, center=center, method=method, k=2, min_gap=min_gap, _gap_only=True).vector



def top_singular_vectors(features, *, k: int = 5, center: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """The top ``k`` left singular vectors, their singular values and the total energy.

    For the studies that look past the P-vector (the paper's A.7 and A.9: the 2nd to 5th
    singular vectors, explained variance, reconstruction error ``E_k = ||X - U_k S_k V_k^T||_F^2
    = total - sum(s[:k]**2)``). Float64 Gram matrix of the smaller side and a dense
    eigensolver, so it is exact for the small matrices of the studies; column 0 is the
    P-vector (same canonical sign as :func:`p_vector`). Vectors with tied singular values
    are not determined; the caller sees the values and judges.

    Parameters
    ----------
    features : array-like or torch.Tensor of shape (n_samples, n_features)
        The feature matrix, one row per sample.
    k : int, default=5
        Number of singular vectors.
    center : bool, default=True
        Subtract column means first.

    Returns
    -------
    U : ndarray of shape (n_samples, k)
        float64, unit columns, canonical signs.
    s : ndarray of shape (k,)
        The singular values, descending.
    total_energy : float
        The squared Frobenius norm of the (centered) matrix.
    """
    x = _prepare(features)
    if not isinstance(x, np.ndarray):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if center:
        x = x - x.mean(axis=0)
    n, d = x.shape
    k = int(min(k, n, d))
    if k < 1:
        raise InputError(f"k must be at least 1; got {k}")
    total = float(np.einsum("ij,ij->", x, x))
    if total == 0:
        raise _zero_matrix_error(center, (n, d))
    small = min(n, d)
    g = x @ x.T if n <= d else x.T @ x
    w, vecs = scipy.linalg.eigh(g, subset_by_index=[small - k, small - 1], check_finite=False)
    w, vecs = np.clip(w[::-1], 0, None), vecs[:, ::-1]
    s = np.sqrt(w)
    if n <= d:
        u = vecs
    else:
        u = x @ vecs
        norms = np.linalg.norm(u, axis=0)
        u = u / np.where(norms > 0, norms, 1)
    u = np.stack([_canonical_sign(u[:, j]) for j in range(k)], axis=1)
    return u, s, total

# --------------------------------------------------------------------------- angles
