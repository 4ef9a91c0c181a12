"""Each measure against a value computed by hand (numpy, float64) on a tiny network."""

import numpy as np
import pytest
import torch
from torch import nn

from pgen.measures import (REGISTRY, MeasureData, MeasureError, MeasureSettings, compute_measure, get_measure,
                           list_measures)


def tiny_mlp(seed=0, hidden=5, act=nn.ReLU):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, hidden), act(), nn.Linear(hidden, 3)).eval()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    return MeasureData(x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long())


def _np_weights(model):
    return [p.detach().double().numpy() for p in model.parameters()]


def test_registry_lists_every_measure_with_a_sign():
    table = list_measures()
    assert {"pvector_angle", "pvector_angle_uncentered", "sum_squared_weights", "distance_from_init",
            "jacobian_norm", "kit_sharpness"} <= set(table["name"])
    assert set(table["sign"]) <= {"+1", "-1"}
    assert get_measure("kit_sharpness").sign == -1  # a wider box means flatter: better generalization
    assert get_measure("sum_squared_weights").sign == 1
    with pytest.raises(KeyError, match="unknown measure 'nope'"):
        get_measure("nope")


def test_sum_squared_weights_and_distance_by_hand(data):
    model, init = tiny_mlp(0), tiny_mlp(1)
    w, w0 = _np_weights(model), _np_weights(init)
    assert compute_measure("sum_squared_weights", model, None, data) == pytest.approx(
        sum(float((a ** 2).sum()) for a in w), rel=1e-12)
    assert compute_measure("distance_from_init", model, init, data) == pytest.approx(
        sum(float(((a - b) ** 2).sum()) for a, b in zip(w, w0)), rel=1e-12)
    with pytest.raises(MeasureError, match="initial weights"):
        compute_measure("distance_from_init", model, None, data)


def test_sum_squared_weights_counts_batchnorm_statistics(data):
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).eval()
    model[1].running_mean.fill_(2.0)
    model[1].running_var.fill_(3.0)
    expected = sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()) + 3 * 4.0 + 3 * 9.0
    assert compute_measure("sum_squared_weights", model, None, data) == pytest.approx(expected, rel=1e-12)


def test_jacobian_norm_of_a_linear_network_by_hand(data):
    """Without nonlinearity the Jacobians are constant: W2 W1 at the input, W2 at the hidden layer."""
    model = tiny_mlp(3, act=nn.Identity)
    w1, _, w2, _ = _np_weights(model)
    # layers: Linear1 (input jac W2 W1), Identity (jac W2), Linear2 (jac W2)
    expected = np.mean([np.mean((w2 @ w1) ** 2), np.mean(w2 ** 2), np.mean(w2 ** 2)])
    assert compute_measure("jacobian_norm", model, None, data) == pytest.approx(expected, rel=1e-6)


def test_jacobian_norm_matches_autograd_jacobian(data):
    model = tiny_mlp(4, act=nn.Tanh)
    x = data.x[:16]
    # reference: full per-sample Jacobians of the logits w.r.t. the input and the hidden pre/post activations
    h1 = model[0](x)
    a1 = model[1](h1)
    j_in = torch.stack([torch.autograd.functional.jacobian(model, xi[None])[0, :, 0] for xi in x])
    j_h1 = torch.stack([torch.autograd.functional.jacobian(lambda h: model[2](model[1](h)), hi[None])[0, :, 0] for hi in h1])
    j_a1 = torch.stack([torch.autograd.functional.jacobian(model[2], ai[None])[0, :, 0] for ai in a1])
    first = np.mean([float((j ** 2).mean()) for j in (j_in, j_h1, j_a1)])
    one_batch = MeasureData(x, data.y[:16])
    assert compute_measure("jacobian_norm", model, None, one_batch) == pytest.approx(first, rel=1e-5)


def test_kit_sharpness_objective_bounds_and_determinism(data):
    from pgen.measures.kit_sharpness import _kit_objective

    logits = torch.randn(5, 3, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1, 0])
    log_sm = np.log(np.exp(np.eye(3)) / np.exp(np.eye(3)).sum(1, keepdims=True))  # log_softmax of one-hot rows
    expected = -np.mean([(logits[i].numpy() * log_sm[labels[i]]).sum() for i in range(5)])
    assert float(_kit_objective(logits, labels, 3)) == pytest.approx(expected, rel=1e-12)

    model = tiny_mlp(5)
    before = [p.detach().clone() for p in model.parameters()]
    s = MeasureSettings(seed=3)
    v1 = compute_measure("kit_sharpness", model, None, data, s)
    assert 0.0 <= v1 <= 0.5
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # weights restored
    assert compute_measure("kit_sharpness", model, None, data, s) == v1


def test_pvector_angle_matches_numpy_svd(data):
    model = tiny_mlp(6, hidden=8)
    with torch.no_grad():
        feats = model[1](model[0](data.x)).double().numpy()
    raw = data.x.double().numpy()

    def top(u, center):
        m = u - u.mean(0) if center else u
        return np.linalg.svd(m, full_matrices=False)[0][:, 0]

    for name, center in (("pvector_angle", True), ("pvector_angle_uncentered", False)):
        ref = np.degrees(np.arccos(min(1.0, abs(top(feats, center) @ top(raw, center)))))
        assert compute_measure(name, model, None, data) == pytest.approx(ref, abs=1e-4)


def test_measure_data_validation():
    with pytest.raises(MeasureError, match="3 inputs but 2 labels"):
        MeasureData(torch.zeros(3, 2), torch.zeros(2))
    assert MeasureData(torch.zeros(3, 2), torch.tensor([0, 4, 1])).num_classes == 5


def test_every_registered_measure_runs_on_a_tiny_model(data):
    model, init = tiny_mlp(7), tiny_mlp(8)
    names = list(list_measures()["name"])
    assert len(names) == len(REGISTRY) >= 6
    for name in names:
        value = compute_measure(name, model, init, data)
        assert np.isfinite(value), name


def test_cli_lists_measures_with_the_sign_convention(capsys):
    from pgen.cli import main

    assert main(["measures"]) == 0
    out = capsys.readouterr().out
    assert "sign +1: larger value predicts worse generalization" in out
    assert "kit_sharpness" in out and "-1" in out
