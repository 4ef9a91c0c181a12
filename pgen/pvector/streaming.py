"""The streaming P-vector: a float64 Gram matrix accumulated batch by batch, features spilled to disk."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from pgen.errors import InputError
from pgen.pvector._validation import _is_torch, _torch
from pgen.pvector.result import DEFAULT_MIN_GAP, PVectorResult
from pgen.pvector.solvers import _finish, _gram, _lanczos, _row_blocks, _top_eigenpairs

__all__ = ["StreamingPVector"]


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
    expected_rows : int, optional
        How many rows will come, where the caller knows. Fewer than the feature dimension
        (a wide convolutional layer on 1000 samples): no d x d Gram is accumulated, and the
        result solves the smaller n x n Gram of the kept matrix (a 2704-wide layer: 1.25 s
        of eigh on the d x d Gram, plus its accumulation, per layer and model).
    """

    def __init__(self, *, center=True, k=5, min_gap=DEFAULT_MIN_GAP, spill_dir=None, max_gram_features=4096,
                 max_memory_bytes=1 << 30, expected_rows=None):
        if k < 2:
            raise InputError(f"k must be >= 2; got {k}")
        self.center = center
        self.k = k
        self.min_gap = min_gap
        self.spill_dir = spill_dir
        self.max_gram_features = max_gram_features
        self.max_memory_bytes = max_memory_bytes
        self.expected_rows = expected_rows
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
            raise InputError("a batch must be 2-D (rows, features); got a 1-D vector")
        batch = batch.reshape(batch.shape[0], -1)
        if batch.shape[0] == 0:
            return
        if self.d is None:
            self.d = int(batch.shape[1])
            dev = batch.device
            self._shift = batch.to(torch.float64).mean(dim=0)
            self._colsum = torch.zeros(self.d, dtype=torch.float64, device=dev)
            wide = self.expected_rows is not None and self.expected_rows < self.d
            if self.d <= self.max_gram_features and not wide:
                self._gram = torch.zeros(self.d, self.d, dtype=torch.float64, device=dev)
        elif batch.shape[1] != self.d:
            raise InputError(f"batch has {batch.shape[1]} features; earlier batches had {self.d}")
        if batch.is_cuda:
            bad = (~torch.isfinite(batch)).sum()
            self._bad = bad if self._bad is None else self._bad + bad
        elif not bool(torch.isfinite(batch).all()):
            raise InputError(f"batch starting at row {self.n} contains NaN or Inf values")
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
            raise InputError(f"a P-vector needs at least 2 samples; got {self.n}")
        if self._bad is not None and int(self._bad) > 0:
            raise InputError(f"the features contain {int(self._bad)} NaN or Inf value(s)")
        k = min(self.k, self.n, self.d)
        if self.n < self.d and self._spill is None:  # wide and in memory: the n x n Gram is the smaller
            return _finish(*_gram(self._matrix(), self.center, k), n=self.n, d=self.d, center=self.center,
                           method="streaming", min_gap=self.min_gap, k=k)
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
