"""Each measure against a value computed by hand (numpy, float64) on a tiny network."""

import copy

import math

import numpy as np
import pytest
import torch
from torch import nn

from pgen.errors import UnknownNameError
from pgen.measures import (REGISTRY, MeasureData, MeasureError, MeasureSettings, compute_measure, evaluate_measure,
                           get_measure,
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
    with pytest.raises(UnknownNameError, match="unknown measure 'nope'"):
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
    # Keras's layers: Dense(tanh) (input x) and Dense (input a1); the tanh is no layer of its own
    first = np.mean([float((j ** 2).mean()) for j in (j_in, j_a1)])
    assert first != pytest.approx(np.mean([float((j ** 2).mean()) for j in (j_in, j_h1, j_a1)]), rel=1e-3)
    one_batch = MeasureData(x, data.y[:16])
    assert compute_measure("jacobian_norm", model, None, one_batch) == pytest.approx(first, rel=1e-5)


def _kit_sharpness_reference(model, data, seed):
    """kit_sharpness as first transcribed from the kit (pgen 38d9376): a one-hot and a
    softmax per step, torch.optim.SGD, a clamp per tensor; the reference its faster
    loop must equal bit for bit."""
    from pgen.measures._util import all_weights
    from pgen.measures.kit_sharpness import _batches

    x, y = data.x.float(), data.y
    stream = _batches(len(x), torch.Generator().manual_seed(seed))
    orig = {k: v.clone() for k, v in all_weights(model).items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3)
    weights = all_weights(model)

    def accuracy(batches):
        total = 0.0
        with torch.no_grad():
            for _ in range(batches):
                idx = next(stream)
                total += (model(x[idx]).argmax(1) == y[idx]).float().mean().item()
        return total / batches

    high, low, m = 0.5, 0.0, 0.25
    for _ in range(20):
        m = (high + low) / 2
        boxes = {k: (orig[k] - orig[k].abs() * m, orig[k] + orig[k].abs() * m) for k in weights}
        min_acc = 10.0
        for _ in range(3):
            if min_acc < 0.8:
                continue
            model.load_state_dict(orig, strict=False)
            for _ in range(20):
                idx = next(stream)
                opt.zero_grad(set_to_none=True)
                one_hot = torch.nn.functional.one_hot(y[idx], data.num_classes).float()
                (-(model(x[idx]) * torch.log_softmax(one_hot, dim=1)).sum(1).mean()).backward()
                opt.step()
                with torch.no_grad():
                    for k, w in weights.items():
                        torch.clamp(w, *boxes[k], out=w)
            min_acc = min(min_acc, accuracy(3 if min_acc < 0.8 else 10))
        deviate = 1.0 - min_acc
        if high - low < 1e-5 or abs(deviate - 0.1) < 1e-2:
            break
        high, low = (m, low) if deviate > 0.1 else (high, m)
    model.load_state_dict(orig, strict=False)
    return float(m)


@pytest.mark.parametrize("seed", [0, 3])
def test_kit_sharpness_equals_its_first_transcription(data, seed):
    """The loop with the objective's table, foreach SGD and clip gives the value of the
    plain transcription, exactly, on a trained and an untrained network."""
    for model in (trained(tiny_mlp(13, hidden=16), data).eval(), tiny_mlp(5).eval()):
        fast = compute_measure("kit_sharpness", model, None, data, MeasureSettings(seed=seed))
        assert fast == _kit_sharpness_reference(model, data, seed)


def test_pass_counter_counts_the_kit_passes(data):
    """benchmarks/measure_floor.py counts a model's outermost calls (not its layers'), by
    gradient mode and batch size: kit_sharpness runs, per restart, 20 forward+backward
    passes of 64 samples and 10 forward passes of 64."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "measure_floor", Path(__file__).resolve().parents[1] / "benchmarks" / "measure_floor.py")
    floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floor)

    model = tiny_mlp(5)
    with floor.PassCounter() as counter:
        with torch.no_grad():
            model(data.x[:5])
        model(data.x[:7])
    assert counter.counts == {(False, 5): 1, (True, 7): 1}
    model(data.x[:3])  # after the block: not counted
    assert counter.counts == {(False, 5): 1, (True, 7): 1}

    with floor.PassCounter() as counter:
        compute_measure("kit_sharpness", model, None, data, MeasureSettings(seed=0))
    assert set(counter.counts) == {(True, 64), (False, 64)}
    restarts = counter.counts[(False, 64)] // 10
    assert counter.counts == {(True, 64): 20 * restarts, (False, 64): 10 * restarts} and restarts >= 1


def test_kit_sharpness_objective_bounds_and_determinism(data):
    from pgen.measures.kit_sharpness import _kit_objective, _kit_objective_table

    logits = torch.randn(5, 3, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1, 0])
    log_sm = np.log(np.exp(np.eye(3)) / np.exp(np.eye(3)).sum(1, keepdims=True))  # log_softmax of one-hot rows
    expected = -np.mean([(logits[i].numpy() * log_sm[labels[i]]).sum() for i in range(5)])
    assert float(_kit_objective(logits, labels, _kit_objective_table(3, torch.float64, "cpu"))) == \
        pytest.approx(expected, rel=1e-12)

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


def test_cli_lists_measures_with_the_sign_convention(capsys):
    from pgen.cli import main

    assert main(["measures"]) == 0
    out = capsys.readouterr().out
    assert "sign +1: larger value predicts worse generalization" in out
    assert "kit_sharpness" in out and "-1" in out
    assert "extra [weightwatcher]" in out and "pip install 'pgen-pvector[NAME]'" in out  # what each needs
    assert "seeded" in out
    assert "pgen's own" in out and "inspired by" in out  # and how faithful it is

    assert main(["measures", "--long", "pvector_angle_uncentered", "augmentation_robustness"]) == 0
    out = capsys.readouterr().out
    assert "source: Liu et al., Machine Learning 111, 2022" in out  # each measure's paper and code
    assert "sumukhaithal6/pgdl" in out and "sign: the paper: models robust" in out  # and why its sign
    assert "dbi_mixup" not in out
    assert main(["measures", "nope"]) == 2


def test_every_measure_states_its_fidelity_and_the_reason_for_its_sign():
    from pgen.measures import FIDELITY

    table = list_measures()
    assert set(table["fidelity"]) <= set(FIDELITY)
    assert (table["sign_reason"].str.len() > 20).all()
    with pytest.raises(ValueError, match="sign_reason"):
        from pgen.measures import register
        register("unexplained", description="d", sign=1, reference="r", sign_reason="")


# --------------------------------------------------------------------- Fantastic-style measures

def _np_margins(model, data):
    with torch.no_grad():
        z = model(data.x).double().numpy()
    y = data.y.numpy()
    correct = z[np.arange(len(y)), y]
    z[np.arange(len(y)), y] = -np.inf
    return correct - z.max(1)


def test_norm_and_margin_measures_by_hand(data):
    model, init = tiny_mlp(10), tiny_mlp(11)
    w = [model[0].weight.detach().double().numpy(), model[2].weight.detach().double().numpy()]
    w0 = [init[0].weight.detach().double().numpy(), init[2].weight.detach().double().numpy()]
    m = _np_margins(model, data)
    gamma = abs(np.sort(m)[len(m) // 10 - 1])  # the (n//10)-th smallest margin
    spec = [np.linalg.svd(a, compute_uv=False)[0] ** 2 for a in w]
    fro = [float((a ** 2).sum()) for a in w]
    d = 2
    expected = {
        "num_params": sum(p.numel() for p in model.parameters()),
        "inverse_margin": 1 / gamma ** 2,
        "log_prod_of_spec": np.log(spec).sum(),
        "log_sum_of_spec": np.log(d) + np.log(spec).sum() / d,
        "log_prod_of_spec_over_margin": np.log(spec).sum() - 2 * np.log(gamma),
        "log_sum_of_spec_over_margin": np.log(d) + (np.log(spec).sum() - 2 * np.log(gamma)) / d,
        "log_prod_of_fro": np.log(fro).sum(),
        "log_sum_of_fro": np.log(d) + np.log(fro).sum() / d,
        "log_prod_of_fro_over_margin": np.log(fro).sum() - 2 * np.log(gamma),
        "log_sum_of_fro_over_margin": np.log(d) + (np.log(fro).sum() - 2 * np.log(gamma)) / d,
        "param_norm": sum(fro),
        "dist_fro_init": sum(float(((a - b) ** 2).sum()) for a, b in zip(w, w0)),
        "dist_spec_init": sum(np.linalg.svd(a - b, compute_uv=False)[0] ** 2 for a, b in zip(w, w0)),
    }
    for name, value in expected.items():
        # margins come from float32 logits
        rel = 1e-6 if "margin" in name else 1e-9
        assert compute_measure(name, model, init, data) == pytest.approx(value, rel=rel), name


def test_path_norm_by_hand(data):
    model = tiny_mlp(12)
    w1, b1, w2, b2 = _np_weights(model)
    # all-ones input through squared weights; squared entries stay >= 0, so ReLU is the identity
    expected = ((w2 ** 2) @ ((w1 ** 2) @ np.ones(4) + b1 ** 2) + b2 ** 2).sum()
    assert compute_measure("path_norm", model, None, data) == pytest.approx(expected, rel=1e-12)
    # a BatchNorm after a Linear folds into it: path norm of the folded network by hand
    bn = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 3)).eval()
    with torch.no_grad():
        bn[1].running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        bn[1].running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
        bn[1].weight.copy_(torch.tensor([1.5, -0.7, 0.3]))
        bn[1].bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    w1, b1, gamma, beta, w2, b2 = [p.detach().double().numpy() for p in bn.parameters()]
    a = gamma / np.sqrt(bn[1].running_var.double().numpy() + bn[1].eps)
    fw1, fb1 = a[:, None] * w1, a * b1 + beta - a * bn[1].running_mean.double().numpy()
    expected = ((w2 ** 2) @ ((fw1 ** 2) @ np.ones(4) + fb1 ** 2) + b2 ** 2).sum()
    assert compute_measure("path_norm", bn, None, data) == pytest.approx(expected, rel=1e-12)
    after_relu = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.BatchNorm1d(3), nn.Linear(3, 3)).eval()
    with pytest.raises(MeasureError, match="BatchNorm"):
        compute_measure("path_norm", after_relu, None, data)


def test_fold_batchnorm_keeps_outputs_and_feeds_the_norms():
    from pathlib import Path

    from pgen.measures._util import fold_batchnorm, has_batchnorm
    from pgen.zoo import load_zoo

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 36, 5), nn.BatchNorm1d(5)).eval()
    for bn in (net[1], net[5]):
        with torch.no_grad():
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(-2, 2)
    x = torch.randn(7, 3, 8, 8)
    folded = fold_batchnorm(net)
    assert not has_batchnorm(folded) and has_batchnorm(net)  # the original is untouched
    torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    # the ported Keras Conv2D(use_bias=False) + BatchNormalization task: same logits as Keras
    task = Path(__file__).parent / "fixtures" / "pgdl" / "task_fullconv_bn"
    zoo = load_zoo(task)
    xs, ys = zoo.dataset("train").tensors
    model = zoo.entries[0].load_model()
    ref = np.load(task / "model_0" / "reference_logits.npy")
    with torch.no_grad():
        out = fold_batchnorm(model)(xs).numpy()
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
    # norm measures see the folded weights
    w = [m.weight.detach().reshape(m.weight.shape[0], -1).numpy()
         for m in fold_batchnorm(model, torch.float64).modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    expected = sum(np.log(np.linalg.svd(a, compute_uv=False)[0] ** 2) for a in w)
    value = compute_measure("log_prod_of_spec", model, None, MeasureData(xs, ys, num_classes=10))
    assert value == pytest.approx(expected, rel=1e-9)


def trained(model, data, steps=300):
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(data.x), data.y).backward()
        opt.step()
    return model.eval()


def test_flatness_measures_see_weight_scale(data):
    """A ReLU net with every layer scaled by 10 predicts the same classes but tolerates 10x
    larger absolute noise: plain PAC-Bayes flatness drops ~100x, the magnitude-aware one barely moves."""
    model = trained(tiny_mlp(13, hidden=16), data)
    big = copy.deepcopy(model)
    with torch.no_grad():
        big[0].weight.mul_(10), big[0].bias.mul_(10), big[2].weight.mul_(10), big[2].bias.mul_(100)
    s = MeasureSettings(seed=1)
    small_flat = compute_measure("pacbayes_flatness", model, None, data, s)
    big_flat = compute_measure("pacbayes_flatness", big, None, data, s)
    assert big_flat < small_flat / 20
    mag_small = compute_measure("pacbayes_mag_flatness", model, None, data, s)
    mag_big = compute_measure("pacbayes_mag_flatness", big, None, data, s)
    assert 0.2 < mag_big / mag_small < 5
    sharp = compute_measure("mag_sharpness", model, None, data, s)
    assert np.isfinite(sharp) and sharp > 0
    assert compute_measure("mag_sharpness", model, None, data, s) == sharp  # seeded


def test_linear_cka_reference_values():
    """Kornblith et al.'s reference: numpy seed 1337, X = randn(100, 10), Y = randn(100, 10) + X."""
    from pgen.measures.cka import linear_cka

    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    assert linear_cka(x, y) == pytest.approx(0.55761, abs=5e-6)
    assert linear_cka(x, y, debiased=True) == pytest.approx(0.51346, abs=5e-6)
    assert linear_cka(x, 3 * x @ np.linalg.qr(np.random.randn(10, 10))[0]) == pytest.approx(1.0)  # rotation, scale


def test_cka_measures_against_the_reference_formula(data):
    from pgen.measures.cka import linear_cka

    model, init = tiny_mlp(17, hidden=8), tiny_mlp(18, hidden=8)
    with torch.no_grad():
        f = model[1](model[0](data.x)).double().numpy()
        f0 = init[1](init[0](data.x)).double().numpy()
    x = data.x.double().numpy()

    def cka(a, b):  # Kornblith et al., eq. for linear CKA with centered features
        a, b = a - a.mean(0), b - b.mean(0)
        return np.linalg.norm(a.T @ b) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))

    assert compute_measure("cka_to_data", model, None, data) == pytest.approx(cka(f, x), rel=1e-5)
    assert compute_measure("cka_to_init", model, init, data) == pytest.approx(cka(f, f0), rel=1e-5)
    assert compute_measure("cka_to_init", model, model, data) == pytest.approx(1.0, rel=1e-9)
    assert linear_cka(f, x) == pytest.approx(cka(f, x), rel=1e-12)


def test_weightwatcher_measures_when_installed(data):
    pytest.importorskip("weightwatcher")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 3)).eval()
    for name in ("ww_alpha", "ww_log_norm", "ww_log_spectral_norm", "ww_stable_rank"):
        assert np.isfinite(compute_measure(name, model, None, data)), name


def test_non_finite_value_is_an_error(data, monkeypatch):
    from pgen.measures import Measure

    list_measures()  # load the registry before patching it
    monkeypatch.setitem(REGISTRY, "always_nan", Measure("always_nan", lambda *a: float("nan"), "test", 1))
    with pytest.raises(MeasureError, match="always_nan returned nan"):
        compute_measure("always_nan", tiny_mlp(0), None, data)


# --------------------------------------------------------------------- PAC-Bayes bounds, sharpness, size term

def test_channels_last_copy_computes_the_same_logits():
    """channels_last_on_cpu restrides the 4-D weights in place, also of a convolution with
    one input channel (where .contiguous() would keep the NCHW strides and with them the
    slow channels-first pooling), leaves other weights alone, and the model computes the
    same logits up to float rounding; a 3-D convolution's 5-D weights are not touched."""
    import copy

    from pgen.measures._util import channels_last_on_cpu

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 2 * 2, 10)).eval()
    x = torch.randn(32, 1, 12, 12)
    fast = copy.deepcopy(net)
    restore = channels_last_on_cpu(fast, x[:2])
    assert fast[0].weight.stride() == (9, 1, 3, 1) and net[0].weight.stride() == (9, 9, 3, 1)
    assert fast[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert fast[7].weight.stride() == net[7].weight.stride()
    with torch.no_grad():
        assert fast[2](fast[1](fast[0](x))).is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fast(x), net(x), rtol=1e-5, atol=1e-5)
    restore()
    assert fast[0].weight.stride() == (9, 9, 3, 1) and torch.equal(fast[0].weight, net[0].weight)
    net3d = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 2 * 2, 3))
    strides = net3d[0].weight.stride()
    with torch.no_grad():
        channels_last_on_cpu(net3d, torch.randn(2, 1, 4, 4, 4))
        net3d(torch.randn(2, 1, 4, 4, 4))
    assert net3d[0].weight.stride() == strides


class _ViewingCNN(nn.Module):
    """A user's CNN that flattens with .view(), which channels-last activations refuse."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        h = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(h.view(h.size(0), -1))


class _MemoryOrderCNN(nn.Module):
    """A forward that reads a weight in memory order (as a C extension assuming contiguity
    would): channels-last weights silently change its output."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(2, 4, 3), nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        w = self.conv.weight
        return self.fc(torch.relu(self.conv(x)).flatten(1)) + torch.as_strided(w, (10,), (1,))


def test_channels_last_keeps_the_layout_of_a_model_whose_output_it_changes():
    import copy

    from pgen.measures._util import channels_last_on_cpu

    torch.manual_seed(0)
    net = _MemoryOrderCNN().eval()
    x = torch.randn(8, 2, 6, 6)
    copied = copy.deepcopy(net)
    w = copied.conv.weight
    assert not torch.equal(torch.as_strided(w, (10,), (1,)),  # the test's premise: the layout changes the output
                           torch.as_strided(w.contiguous(memory_format=torch.channels_last), (10,), (1,)))
    channels_last_on_cpu(copied, x[:2])
    assert copied.conv.weight.stride() == net.conv.weight.stride()
    with torch.no_grad():
        assert torch.equal(copied(x), net(x))


def test_channels_last_keeps_the_layout_of_a_model_that_cannot_take_it():
    """A forward that .view()s its activations keeps its weights' layout (found by a trial
    forward in eval mode that leaves BatchNorm's statistics and the training flag alone),
    and pacbayes_flatness is computed on it as on any model."""
    import copy

    from pgen.measures._util import channels_last_on_cpu

    torch.manual_seed(0)
    net = _ViewingCNN().train()
    x = torch.randn(64, 1, 12, 12)
    stats = net.bn.running_mean.clone()
    copied = copy.deepcopy(net)
    channels_last_on_cpu(copied, x[:2])
    assert copied.conv.weight.stride() == net.conv.weight.stride() == (9, 9, 3, 1)
    assert copied.training and torch.equal(copied.bn.running_mean, stats)
    data = MeasureData(x, torch.randint(0, 3, (64,)), num_classes=3)
    value = compute_measure("pacbayes_flatness", net.eval(), None, data, MeasureSettings(seed=0))
    assert math.isfinite(value) and value > 0


def test_pacbayes_bounds_are_jiang_et_al_eqs_48_49_56_57(data):
    from pgen.measures.pacbayes import noise_sigma

    model, init = tiny_mlp(21), tiny_mlp(22)
    d = MeasureData(data.x, data.y, train_size=600)
    s = MeasureSettings(seed=1)
    w = np.concatenate([model[0].weight.detach().double().numpy().ravel(), model[2].weight.detach().double().numpy().ravel()])
    w0 = np.concatenate([init[0].weight.detach().double().numpy().ravel(), init[2].weight.detach().double().numpy().ravel()])
    sigma = noise_sigma(model, d, s, magnitude_aware=False)
    assert compute_measure("pacbayes_init", model, init, d, s) == pytest.approx(
        np.sum((w - w0) ** 2) / (4 * sigma ** 2) + np.log(600 / sigma) + 10, rel=1e-9)
    assert compute_measure("pacbayes_orig", model, init, d, s) == pytest.approx(
        np.sum(w ** 2) / (4 * sigma ** 2) + np.log(600 / sigma) + 10, rel=1e-9)
    assert compute_measure("pacbayes_flatness", model, None, d, s) == pytest.approx(1 / sigma ** 2, rel=1e-12)
    sm, eps, omega = noise_sigma(model, d, s, magnitude_aware=True), 1e-3, len(w)

    def mag(v):
        return 0.25 * np.sum(np.log((eps ** 2 + (sm ** 2 + 1) * np.sum(v ** 2) / omega)
                                    / (eps ** 2 + sm ** 2 * (w - w0) ** 2))) + np.log(600 / sm) + 10
    assert compute_measure("pacbayes_mag_init", model, init, d, s) == pytest.approx(mag(w - w0), rel=1e-9)
    assert compute_measure("pacbayes_mag_orig", model, init, d, s) == pytest.approx(mag(w), rel=1e-9)
    with pytest.raises(MeasureError, match="training-set size"):
        compute_measure("pacbayes_orig", model, None, MeasureData(data.x, data.y), s)


def test_dataset_size_term_is_dziugaite_et_als_adjustment(data):
    model = tiny_mlp(23)
    d = MeasureData(data.x, data.y, train_size=500)
    plain, adjusted = MeasureSettings(), MeasureSettings(dataset_size_term=True)
    v = compute_measure("param_norm", model, None, d, plain)
    assert compute_measure("param_norm", model, None, d, adjusted) == pytest.approx(np.sqrt(v / 500), rel=1e-12)
    lv = compute_measure("log_prod_of_fro", model, None, d, plain)
    assert compute_measure("log_prod_of_fro", model, None, d, adjusted) == pytest.approx(0.5 * (lv - np.log(500)))
    # measures without a bound form are left alone; the unadjusted value is kept beside
    assert compute_measure("sum_squared_weights", model, None, d, adjusted) == compute_measure(
        "sum_squared_weights", model, None, d, plain)
    assert evaluate_measure("param_norm", model, None, d, adjusted).extra["without_size_term"] == pytest.approx(v)
    with pytest.raises(MeasureError, match="training-set size"):
        compute_measure("param_norm", model, None, MeasureData(data.x, data.y), adjusted)


def test_margin_measures_flag_a_negative_10th_percentile_margin(data):
    model = tiny_mlp(24)
    with torch.no_grad():
        model[2].bias.copy_(torch.tensor([0.0, 0.0, 50.0]))  # class 2 always wins: most samples are wrong
    r = evaluate_measure("inverse_margin", model, None, data)
    assert r.extra["margin_10th"] < 0
    assert r.value == pytest.approx(1 / r.extra["margin_10th"] ** 2)  # |gamma|, as the reference code


def test_plain_sharpness_box_is_absolute_and_the_magnitude_aware_one_relative(data):
    from pgen.measures._util import accuracy
    from pgen.measures.sharpness import _worst_case_drop

    model = trained(tiny_mlp(25), data).eval()  # trained: an untrained net's drop is capped near chance
    s = MeasureSettings(seed=2)
    base = accuracy(model, data.x, data.y, s)
    # the same function with the first layer scaled by 100 and the second by 1/100: a plain box of 0.05
    # barely moves the large first-layer weights relative to their size but swamps the tiny second layer's
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled[0].weight.mul_(100); scaled[0].bias.mul_(100); scaled[2].weight.div_(100)
    assert accuracy(scaled, data.x, data.y, s) == base
    for seed in range(5):  # each seed's random start
        s = MeasureSettings(seed=seed)
        drop = lambda m, a, mag: _worst_case_drop(m, data, s, a, base, mag)  # noqa: E731
        assert drop(model, 0.0, False) == 0.0  # a box of width 0 leaves the model as it is
        assert drop(scaled, 0.05, False) > drop(model, 0.05, False) + 0.1
        assert abs(drop(scaled, 0.05, True) - drop(model, 0.05, True)) < 0.1
    value = compute_measure("sharpness", model, None, data, s)
    assert np.isfinite(value) and value > 0 and value == compute_measure("sharpness", model, None, data, s)


def test_dataset_size_term_from_the_command_line(tiny_zoo, tmp_path):
    import pandas as pd

    from pgen.cli import main

    for flag, out in (([], "plain"), (["--dataset-size-term"], "sized")):
        assert main(["score", str(tiny_zoo), "--out", str(tmp_path / out), "--samples", "100",
                     "--measures", "param_norm", *flag]) == 0
    plain = pd.read_csv(tmp_path / "plain" / "models.csv").set_index("model_id")["param_norm"]
    sized = pd.read_csv(tmp_path / "sized" / "models.csv").set_index("model_id")
    assert (sized["param_norm.without_size_term"] == plain).all()
    assert (sized["param_norm"] < plain).all()  # sqrt(v / m) with m the model's training-set size


def test_settled_drop_takes_the_branch_of_the_exact_drop_and_stops_early():
    """settled_drop returns the exact drop, or a bound on the same side of the band; far
    from the target it stops before reading every batch (#37 item 1)."""
    from pgen.measures._util import settled_drop

    rng = np.random.default_rng(0)
    target, tol, n, batch = 0.1, 0.01, 1000, 256
    stopped_early = 0
    for _ in range(300):
        base = rng.uniform(0.5, 1.0)
        runs_correct = []
        draws = int(rng.choice([1, 10]))
        level = rng.uniform(0.0, 1.0)
        for _ in range(draws):
            per_sample = rng.random(n) < np.clip(base - level * rng.uniform(0, 0.4), 0, 1)
            runs_correct.append([int(per_sample[a:a + batch].sum()) for a in range(0, n, batch)])
        read = []

        def run(counts):
            def batches():
                for a, c in zip(range(0, n, batch), counts):
                    read.append(1)
                    yield c, min(batch, n - a)
            return batches

        exact = base - sum(sum(c) / n for c in runs_correct) / draws
        value, started = settled_drop(base, [run(c) for c in runs_correct], n, target=target, tolerance=tol)
        if abs(exact - target) < tol:
            assert value == exact
        else:
            assert abs(value - target) >= tol and (value > target) == (exact > target)
            assert (value >= target) == (exact >= target)
        if len(read) < draws * len(runs_correct[0]):
            stopped_early += 1
    assert stopped_early > 50


def test_settled_drop_with_a_risk_stops_after_three_draws_and_is_rarely_wrong():
    """With ``risk`` the Monte-Carlo draws of a step stop once a Student-t interval puts the
    10-draw mean outside the band; over 4000 simulated steps (draw accuracies normal around
    a level, sd 0.01-0.05) the side it settles on is that of the full mean in all but a
    share near ``risk``, it never returns a drop in the band, and it saves draws."""
    from pgen.measures._util import settled_drop

    rng = np.random.default_rng(1)
    n, target, tol, risk = 1000, 0.1, 0.01, 0.01
    settled = wrong = drawn_total = 0
    for _ in range(4000):
        base, spread = 0.95, rng.uniform(0.01, 0.05)
        accs = np.clip(base - rng.uniform(0.0, 0.3) + rng.normal(0, spread, 10), 0, 1)
        runs = [(lambda a=a: iter([(int(round(a * n)), n)])) for a in accs]
        exact = base - np.mean([round(a * n) / n for a in accs])
        value, drawn = settled_drop(base, runs, n, target=target, tolerance=tol, risk=risk)
        drawn_total += drawn
        if drawn < 10:
            settled += 1
            assert abs(value - target) >= tol
            wrong += (value > target) != (exact > target) or abs(exact - target) < tol
        else:
            assert value == pytest.approx(exact)
    assert settled > 1500 and drawn_total < 0.75 * 4000 * 10
    assert wrong / settled < 3 * risk, (wrong, settled)


def _bisection(drop, *, target, tolerance, depth, upper=1.0, max_doublings=10):
    """The search the flatness measures used before #37 (pgen 7bc75d0's bisect_scale), as reference."""
    lower = 0.0
    for _ in range(max_doublings):
        if drop(upper) >= target:
            break
        lower, upper = upper, upper * 2
    scale = upper
    for _ in range(depth):
        scale = (lower + upper) / 2
        d = drop(scale)
        if abs(d - target) < tolerance:
            break
        lower, upper = (lower, scale) if d > target else (scale, upper)
    return scale


def _logistic_drop(height, slope, root, target=0.1):
    """An accuracy drop rising as a logistic curve in ln(scale), equal to ``target`` at ``root``."""
    centre = math.log(root) + math.log(height / target - 1) / slope
    return lambda a: height / (1 + math.exp(-slope * (math.log(a) - centre)))


def test_find_scale_lands_in_the_band_in_fewer_steps_than_bisection():
    """On drops shaped like the measures' (logistic in ln scale, roots from 1e-3 to 3,
    slopes 1.5-4, heights 0.3-0.9), find_scale stops in the band like the bisection it
    replaced, with at most two thirds of its evaluations in all."""
    from pgen.measures._util import find_scale

    target, tol = 0.1, 0.01
    steps = {"find_scale": 0, "bisection": 0}
    for height in (0.3, 0.6, 0.9):
        for slope in (1.5, 2.5, 4.0):
            for root in (1e-3, 4e-3, 0.02, 0.07, 0.3, 0.8, 3.0):
                curve = _logistic_drop(height, slope, root)
                for name in steps:
                    calls = []

                    def drop(a):
                        calls.append(a)
                        return curve(a)
                    if name == "find_scale":
                        found = find_scale(drop, target=target, tolerance=tol, depth=15, ceiling=height)
                    else:
                        found = _bisection(drop, target=target, tolerance=tol, depth=15)
                    assert abs(curve(found) - target) < tol, (name, height, slope, root, found)
                    steps[name] += len(calls)
    assert steps["find_scale"] <= 2 / 3 * steps["bisection"], steps

    # a drop above the band at every scale (mag_sharpness when its box's eps alone costs too
    # much): the bisection's finest scale, 2**-depth, as the bisection gave, in fewer steps
    calls = []
    always = lambda a: calls.append(a) or 0.5  # noqa: E731
    assert find_scale(always, target=target, tolerance=tol, depth=12, ceiling=0.9) == 2.0 ** -12
    assert _bisection(lambda a: 0.5, target=target, tolerance=tol, depth=12) == 2.0 ** -12
    assert len(calls) < 12 and min(calls) == 2.0 ** -12


def test_find_scale_with_noisy_drops_and_witnesses():
    """With noise on every evaluation (sd 0.02, as PAC-Bayes's 10-draw mean near the target)
    the returned scale is one whose noisy drop fell in the band, so its true drop is within
    the band widened by the noise; a LowerBound (a witness) moves the search down by the
    largest jump, whatever its size."""
    from pgen.measures._util import LowerBound, find_scale

    rng = np.random.default_rng(3)
    for trial in range(200):
        curve = _logistic_drop(rng.uniform(0.3, 0.9), rng.uniform(1.5, 4.0), math.exp(rng.uniform(-7, 0)))
        seen = []

        def noisy(a):
            seen.append(curve(a) + rng.normal(0, 0.02))
            return seen[-1]
        found = find_scale(noisy, target=0.1, tolerance=0.01, depth=15, ceiling=0.9)
        if abs(seen[-1] - 0.1) < 0.01:  # stopped in the band (the rest ran out of steps, as bisection could)
            assert abs(curve(found) - 0.1) < 0.01 + 5 * 0.02
    tried = []

    def witness_first(a):
        tried.append(a)
        return LowerBound(0.2) if len(tried) == 1 else 0.1
    find_scale(witness_first, target=0.1, tolerance=0.01, depth=5, ceiling=0.9, max_jump=8.0)
    assert tried == [1.0, pytest.approx(1 / 8)]


def test_sharpness_witness_takes_the_branch_of_the_full_ascent(data, monkeypatch):
    """A step that the witness settles above the band (an early iterate of the ascent already
    drops the accuracy by >= 0.11 whatever the unseen samples give) is above it after the
    full 10-step ascent too, at every scale of a grid from the saturated to the flat end, on
    a trained network, both box kinds."""
    import pgen.measures.sharpness as sharpness
    from pgen.measures._util import LowerBound, accuracy

    model = trained(tiny_mlp(13, hidden=16), data).eval()
    s = MeasureSettings(seed=2, batch_size=16)
    base = accuracy(model, data.x, data.y, s)
    fired = 0
    for magnitude_aware in (False, True):
        for alpha in np.geomspace(1e-3, 4.0, 25):
            quick = sharpness._worst_case_drop(model, data, s, float(alpha), base, magnitude_aware)
            with monkeypatch.context() as m:
                m.setattr(sharpness, "_witness", lambda *a: None)
                full = sharpness._worst_case_drop(model, data, s, float(alpha), base, magnitude_aware)
            if isinstance(quick, LowerBound):
                fired += 1
                assert full >= sharpness.TARGET_DROP + sharpness.TOLERANCE, (alpha, magnitude_aware, quick, full)
            else:
                assert quick == full
    assert fired >= 10
