"""P-vector math against float64 numpy SVD (the independent reference)."""

import warnings

import numpy as np
import pytest
import torch

import pgen
from pgen.pvector import METHODS, StreamingPVector, UnstablePVectorWarning

SOLVERS = [m for m in METHODS]


def reference(x, center):
    x = np.asarray(x, dtype=np.float64)
    if center:
        x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, 0], s


def relu_features(n, d, seed=0, rank=8, dtype=np.float32):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d))
    return np.maximum(z + 0.3 * rng.standard_normal((n, d)), 0).astype(dtype)


def small_gap_matrix(n=400, d=60, gap=1.01, seed=0):
    """A matrix with sigma1 / sigma2 exactly ``gap``, like centered ReLU features."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.linspace(1.0, 0.1, d)
    s[0] = gap * s[1]
    s[1] = s[0] / gap
    return (u * s) @ v.T, u[:, 0]


MATRICES = {
    "random": lambda: np.random.default_rng(1).standard_normal((200, 30)),
    "structured": lambda: relu_features(300, 50),
    "tall": lambda: relu_features(3000, 20, seed=2),
    "wide": lambda: relu_features(40, 900, seed=3),
    "rank_deficient": lambda: np.random.default_rng(4).standard_normal((150, 3)) @ np.random.default_rng(5).standard_normal((3, 70)),
    "large_mean": lambda: (np.random.default_rng(6).standard_normal((500, 40)) * np.linspace(1, 3, 40) + 500.0).astype(np.float32),
}


@pytest.mark.parametrize("method", SOLVERS)
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("name", list(MATRICES))
def test_matches_float64_svd(name, center, method):
    x = MATRICES[name]()
    u_ref, s_ref = reference(x, center)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnstablePVectorWarning)
        res = pgen.p_vector_spectrum(x, center=center, method=method)
    assert res.vector.shape == (x.shape[0],)
    assert np.isclose(np.linalg.norm(res.vector), 1.0)
    # Streaming spills features as float32, so float64 inputs get float32 accuracy there.
    tol = 1e-3 if x.dtype == np.float32 or method == "streaming" else 1e-6
    assert pgen.angle(res.vector, u_ref) < tol
    assert res.sigma1 == pytest.approx(s_ref[0], rel=1e-5)
    # Float32 operators (Lanczos, streaming spill) round at eps32 * sigma1^2, so sigma2 is
    # accurate to about eps32 * (sigma1 / sigma2)^2 relative (documented in _lanczos).
    low_precision = x.dtype == np.float32 and method in ("auto", "lanczos", "streaming")
    rel = 1e-5 + (10 * 6e-8 * (s_ref[0] / s_ref[1]) ** 2 if low_precision else 0)
    if s_ref[1] > 1e-10 * s_ref[0]:
        assert res.sigma2 == pytest.approx(s_ref[1], rel=rel)
    assert res.total_energy == pytest.approx(float(np.sum(s_ref**2)), rel=1e-5)
    assert res.method == method or method == "auto"


@pytest.mark.parametrize("method", SOLVERS)
def test_small_gap_is_still_exact(method):
    x, u_true = small_gap_matrix(gap=1.01)
    res = pgen.p_vector_spectrum(x, center=False, method=method)
    assert res.gap == pytest.approx(1.01, rel=1e-6)
    assert pgen.angle(res.vector, u_true) < 1e-4
    assert res.stable


def test_explained_variance_and_reconstruction_error():
    x = relu_features(200, 40, dtype=np.float64)
    _, s = reference(x, True)
    res = pgen.p_vector_spectrum(x, k=4, method="exact")
    np.testing.assert_allclose(res.explained_variance_ratio, np.cumsum(s[:4] ** 2) / np.sum(s**2), rtol=1e-10)
    # E_k = ||X - U_k S_k V_k^T||_F^2, computed directly.
    xc = x - x.mean(axis=0)
    u, sv, vt = np.linalg.svd(xc, full_matrices=False)
    for k in range(1, 5):
        direct = np.linalg.norm(xc - (u[:, :k] * sv[:k]) @ vt[:k]) ** 2
        assert res.reconstruction_error[k - 1] == pytest.approx(direct, rel=1e-8)


def test_tiny_gap_warns_and_flags():
    x, _ = small_gap_matrix(gap=1.0001)
    with pytest.warns(UnstablePVectorWarning, match="not stable"):
        res = pgen.p_vector_spectrum(x, center=False)
    assert not res.stable
    with pytest.warns(UnstablePVectorWarning):
        pgen.p_vector(x, center=False)


def test_degenerate_top_singular_value_warns():
    x = np.eye(10)
    with pytest.warns(UnstablePVectorWarning):
        res = pgen.p_vector_spectrum(x, center=False, method="exact")
    assert res.gap == pytest.approx(1.0)


@pytest.mark.parametrize("method", SOLVERS)
def test_canonical_sign(method):
    x = relu_features(100, 20)
    u = pgen.p_vector(x, method=method)
    assert u[np.argmax(np.abs(u))] > 0
    u_neg = pgen.p_vector(-x, method=method)  # negating X flips the SVD's sign freedom only
    np.testing.assert_allclose(u, u_neg, atol=1e-5)


def test_streaming_equals_one_shot():
    x = relu_features(1000, 64, seed=7)
    for center in (True, False):
        acc = StreamingPVector(center=center)
        for a in range(0, 1000, 77):  # uneven batches
            acc.update(x[a : a + 77])
        res = acc.result()
        acc.close()
        one = pgen.p_vector_spectrum(x, center=center, method="exact")
        assert pgen.angle(res.vector, one.vector) < 1e-4
        np.testing.assert_allclose(res.singular_values, one.singular_values, rtol=1e-5)


def test_streaming_wide_features_solve_the_sample_gram():
    """n < d (a convolutional layer on 300 samples): with expected_rows no d x d Gram is
    accumulated, and either way the result is the float64 SVD's."""
    x = relu_features(300, 900, seed=3)
    for center in (True, False):
        u_ref, s_ref = reference(x, center)
        for expected in (300, None):
            acc = StreamingPVector(center=center, expected_rows=expected)
            for a in range(0, 300, 64):
                acc.update(x[a : a + 64])
            assert (acc._gram is None) == (expected is not None)
            res = acc.result()
            acc.close()
            assert pgen.angle(res.vector, u_ref) < 1e-4
            np.testing.assert_allclose(res.singular_values, s_ref[:5], rtol=1e-6)


def test_streaming_without_gram_uses_spilled_matrix(tmp_path):
    x = relu_features(60, 300, seed=8)
    acc = StreamingPVector(center=True, max_gram_features=100, spill_dir=tmp_path, max_memory_bytes=20_000)
    for a in range(0, 60, 16):
        acc.update(torch.from_numpy(x[a : a + 16]))
    assert list(tmp_path.iterdir())  # features went to the spill folder
    res = acc.result()
    acc.close()
    assert not list(tmp_path.iterdir())  # and the spill file is removed
    assert pgen.angle(res.vector, reference(x, True)[0]) < 1e-3


def test_streaming_spills_to_disk_past_the_memory_budget(tmp_path):
    x = relu_features(500, 32, seed=9)
    acc = StreamingPVector(center=True, spill_dir=tmp_path, max_memory_bytes=10_000)
    for a in range(0, 500, 50):
        acc.update(x[a : a + 50])
    assert list(tmp_path.iterdir())
    res = acc.result()
    acc.close()
    assert pgen.angle(res.vector, reference(x, True)[0]) < 1e-3


def test_torch_input_cpu():
    x = relu_features(120, 30)
    assert pgen.angle(pgen.p_vector(torch.from_numpy(x)), pgen.p_vector(x)) < 1e-9


def test_angle_properties():
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(50), rng.standard_normal(50)
    a = pgen.angle(u, v)
    assert 0 <= a <= 90
    assert a == pytest.approx(pgen.angle(v, u))
    assert a == pytest.approx(pgen.angle(-u, v))
    assert a == pytest.approx(pgen.angle(3.5 * u, 0.01 * v))
    assert pgen.angle(u, u) == 0.0
    assert pgen.angle(u, -u) == 0.0
    e1, e2 = np.eye(2)
    assert pgen.angle(e1, e2) == pytest.approx(90.0)
    assert pgen.angle(e1, e1 + e2) == pytest.approx(45.0)


def test_angle_invariant_to_feature_scaling():
    x = relu_features(200, 30)
    ref = pgen.p_vector(np.random.default_rng(1).standard_normal((200, 10)))
    assert pgen.angle(pgen.p_vector(x), ref) == pytest.approx(pgen.angle(pgen.p_vector(7.0 * x), ref), abs=1e-4)


def test_angle_matrix():
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((4, 30))
    m = pgen.angle_matrix(vecs)
    assert m.shape == (4, 4)
    np.testing.assert_allclose(m, m.T)
    np.testing.assert_allclose(np.diag(m), 0)
    for i in range(4):
        for j in range(4):
            if i != j:
                assert m[i, j] == pytest.approx(pgen.angle(vecs[i], vecs[j]), abs=1e-9)
    cross = pgen.angle_matrix(vecs[:2], vecs[2:])
    assert cross.shape == (2, 2)
    assert cross[1, 0] == pytest.approx(pgen.angle(vecs[1], vecs[2]))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[1.0, np.nan], [2.0, 3.0]]), "NaN or Inf"),
        (np.array([[1.0, np.inf], [2.0, 3.0]]), "NaN or Inf"),
        (np.ones((1, 5)), "at least 2 samples"),
        (np.zeros((5, 3)), "all zero"),
        (np.arange(5.0), "2-D"),
        (np.empty((4, 0)), "no feature columns"),
    ],
)
def test_bad_input_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        pgen.p_vector(bad, center=False)


def test_constant_matrix_centered_error():
    with pytest.raises(ValueError, match="constant"):
        pgen.p_vector(np.ones((6, 4)) * 3.0, center=True)


def test_bad_method_and_k():
    with pytest.raises(ValueError, match="unknown method"):
        pgen.p_vector(np.eye(3), method="randomized")
    with pytest.raises(ValueError, match="k must be"):
        pgen.p_vector_spectrum(np.eye(3), k=1)


def test_angle_bad_input():
    with pytest.raises(ValueError, match="different lengths"):
        pgen.angle(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="1-D"):
        pgen.angle(np.ones((2, 2)), np.ones(4))
    with pytest.raises(ValueError, match="zero vector"):
        pgen.angle(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        pgen.angle(np.array([1.0, np.nan]), np.ones(2))
    with pytest.raises(ValueError, match="different lengths"):
        pgen.angle_matrix([np.ones(3), np.ones(4)])


def test_streaming_bad_batches():
    acc = StreamingPVector()
    with pytest.raises(ValueError, match="at least 2 samples"):
        acc.result()
    acc.update(np.ones((3, 4)))
    with pytest.raises(ValueError, match="features"):
        acc.update(np.ones((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        acc.update(np.full((2, 4), np.nan))
    acc.close()


@pytest.mark.parametrize("shape", [(120, 30), (30, 120)])
@pytest.mark.parametrize("center", [True, False])
def test_top_singular_vectors_match_float64_svd(shape, center):
    """Both Gram sides against numpy's float64 SVD; column 0 is the P-vector."""
    from pgen.pvector import top_singular_vectors

    rng = np.random.default_rng(3)
    x = np.maximum(rng.standard_normal(shape) * np.linspace(3, 1, shape[1]), 0).astype(np.float32)
    u, s, total = top_singular_vectors(x, k=5, center=center)
    x64 = x.astype(np.float64)
    if center:
        x64 = x64 - x64.mean(0)
    ru, rs, _ = np.linalg.svd(x64, full_matrices=False)
    np.testing.assert_allclose(s, rs[:5], rtol=1e-10)
    assert total == pytest.approx(float((rs**2).sum()), rel=1e-10)
    for j in range(5):
        assert abs(abs(u[:, j] @ ru[:, j]) - 1) < 1e-10
    assert pgen.angle(u[:, 0], pgen.p_vector(x, center=center)) < 1e-4
    assert u[np.argmax(np.abs(u[:, 0])), 0] > 0  # the canonical sign


def rank_ten_plus_noise(n=600, d=1500, noise=1.0, seed=7):
    """Rank 10 plus Gaussian noise (benchmarks/pvector_spectra.py's lowrank-2): a top
    singular value close to the next ones, where Lanczos pins sigma2 slowly."""
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n, 10), dtype=np.float32) @ rng.standard_normal((10, d), dtype=np.float32)
    return signal / np.sqrt(np.float32(d)) * 3 + noise * rng.standard_normal((n, d), dtype=np.float32)


def test_p_vector_stops_once_the_stability_check_is_decided(monkeypatch):
    """p_vector needs sigma2 only to decide stability: it stops when the eigengap's lower
    bound puts the singular gap above min_gap, in fewer Lanczos iterations than the full
    spectrum, with the same vector (against float64 SVD) and the same verdict."""
    import scipy.linalg

    calls = []
    real = scipy.linalg.eigh_tridiagonal
    monkeypatch.setattr(scipy.linalg, "eigh_tridiagonal", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = rank_ten_plus_noise()
    u_ref, s_ref = reference(x, True)
    u = pgen.p_vector(x, method="lanczos")
    decided = len(calls)
    calls.clear()
    full = pgen.p_vector_spectrum(x, k=2, method="lanczos")
    assert decided < len(calls)  # the stop binds on this matrix (fewer iterations)
    assert full.stable and 1 - s_ref[1] / s_ref[0] > 1e-3
    assert pgen.angle(u, u_ref) < 1e-3 and pgen.angle(full.vector, u_ref) < 1e-3


@pytest.mark.parametrize("gap, stable", [(1.0012, True), (1.0008, False)])
def test_p_vector_warns_exactly_when_the_spectrum_is_unstable(gap, stable):
    x, u_true = small_gap_matrix(n=400, d=120, gap=gap)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        u = pgen.p_vector(x, center=False, method="lanczos")
        res = pgen.p_vector_spectrum(x, center=False, method="lanczos")
    assert res.stable == stable
    warned = [w for w in caught if issubclass(w.category, UnstablePVectorWarning)]
    assert len(warned) == (0 if stable else 2)  # p_vector's and p_vector_spectrum's, or none
    if stable:
        assert pgen.angle(u, u_true) < 1e-3
