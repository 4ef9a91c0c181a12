"""The measure contract, enforced for the whole registry (one parametrized test, as
scikit-learn's test_common does for its metrics): every measure on a tiny MLP and a tiny
CNN is finite, reproducible from its seed, leaves the models exactly as it found them,
and (when deterministic) does not depend on the batch size. With CUDA present, CPU and
CUDA values agree with one model shared by all measures in several orders."""

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from pgen.measures import (REGISTRY, MeasureData, MeasureError, MeasureSettings, MeasureValue, compute_measure,
                           evaluate_measure, list_measures, register)
from pgen.measures._contract import check_measure, tiny_data, tiny_models

NAMES = list(list_measures()["name"])
CUDA = torch.cuda.is_available()


def available(name):
    m = REGISTRY[name]
    return not m.requires or importlib.util.find_spec(m.requires) is not None


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before, device, training, name):
    after = model.state_dict()
    assert before.keys() == after.keys(), name
    for k in before:
        assert torch.equal(before[k].cpu(), after[k].cpu()), f"{name} changed {k}"
        assert after[k].device.type == device, f"{name} left {k} on {after[k].device}"
    assert model.training == training, f"{name} changed the training flag"


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("name", NAMES)
def test_measure_contract(name, arch):
    if not available(name):
        pytest.skip(f"{name} needs the optional package {REGISTRY[name].requires}")
    models, (x, y) = tiny_models()
    model, init = models[arch]
    model.train()  # the contract sets eval mode and restores these flags
    init.eval()
    before, before0 = snapshot(model), snapshot(init)
    data = tiny_data(x, y)
    try:
        first = evaluate_measure(name, model, init, data, MeasureSettings(seed=5))
    except MeasureError as exc:
        # Only what the measure declares may refuse: nothing here lacks initial weights or images.
        pytest.fail(f"{name} refused the tiny {arch}: {exc}")
    assert np.isfinite(first.value) and first.seconds >= 0
    assert_unchanged(model, before, "cpu", True, name)
    assert_unchanged(init, before0, "cpu", False, name)
    # same seed, same value (fresh data object: no cache shared with the first call)
    again = compute_measure(name, model, init, tiny_data(x, y), MeasureSettings(seed=5))
    assert again == first.value, name
    meta = REGISTRY[name]
    if not meta.stochastic:
        other = compute_measure(name, model, init, tiny_data(x, y), MeasureSettings(seed=5, batch_size=7))
        assert other == pytest.approx(first.value, rel=1e-4, abs=1e-6), f"{name} depends on the batch size"
        assert compute_measure(name, model, init, tiny_data(x, y), MeasureSettings(seed=6)) == pytest.approx(
            first.value, rel=1e-4, abs=1e-6), f"{name} uses the seed but is not declared stochastic"


def test_declarations_are_checked_in_one_place():
    models, (x, y) = tiny_models()
    mlp, _ = models["mlp"]
    with pytest.raises(MeasureError, match="needs the model's initial weights"):
        compute_measure("distance_from_init", mlp, None, MeasureData(x, y, train_size=len(x)))
    with pytest.raises(MeasureError, match="needs image inputs"):
        compute_measure("augmentation_robustness", mlp, None, MeasureData(x.reshape(48, -1), y))


def test_a_measure_that_perturbs_weights_cannot_leak_them(monkeypatch):
    """The contract restores weights, device and mode even when a measure misbehaves or fails."""
    list_measures()

    def clumsy(model, init_model, data, settings):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3)
        model.train()
        return MeasureValue(1.0, {"scaled": 3.0})

    def failing(model, init_model, data, settings):
        with torch.no_grad():
            next(model.parameters()).zero_()
        raise RuntimeError("boom")

    monkeypatch.delitem(REGISTRY, "clumsy", raising=False)
    register("clumsy", description="test", sign=1, reference="test", sign_reason="test")(clumsy)
    register("failing", description="test", sign=1, reference="test", sign_reason="test")(failing)
    try:
        models, (x, y) = tiny_models()
        mlp, _ = models["mlp"]
        mlp.eval()
        before = snapshot(mlp)
        r = evaluate_measure("clumsy", mlp, None, MeasureData(x, y, train_size=len(x)))
        assert r.value == 1.0 and r.extra == {"scaled": 3.0}
        assert_unchanged(mlp, before, "cpu", False, "clumsy")
        with pytest.raises(RuntimeError, match="boom"):
            evaluate_measure("failing", mlp, None, MeasureData(x, y, train_size=len(x)))
        assert_unchanged(mlp, before, "cpu", False, "failing")
    finally:
        REGISTRY.pop("clumsy", None)
        REGISTRY.pop("failing", None)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("order", ["forward", "reverse", "shuffled"])
def test_cpu_and_cuda_agree_with_a_shared_model(order):
    models, (x, y) = tiny_models()
    names = [n for n in NAMES if available(n)]
    if order == "reverse":
        names = names[::-1]
    elif order == "shuffled":
        names = list(np.random.default_rng(0).permutation(names))
    for arch, (model, init) in models.items():
        cpu = {n: compute_measure(n, model, init, tiny_data(x, y), MeasureSettings(seed=5)) for n in names}
        shared = tiny_data(x, y)  # one data object and one model through every measure, in this order
        cuda = {n: compute_measure(n, model, init, shared, MeasureSettings(seed=5, device="cuda")) for n in names}
        assert next(model.parameters()).device.type == "cpu"
        for n in names:
            tol = 0.05 if REGISTRY[n].stochastic else 1e-3  # bisections may stop one step apart
            assert cuda[n] == pytest.approx(cpu[n], rel=tol, abs=1e-4), f"{arch} {n}: cpu {cpu[n]} cuda {cuda[n]}"


@pytest.mark.parametrize("name", ["num_params", "pvector_angle", "jacobian_norm",
                                  "augmentation_robustness", "distance_from_init"])
def test_the_users_contract_check_passes_built_in_measures(name):
    """`pgen measures check` runs the checks this module asserts; on built-in measures it passes."""
    verdicts = check_measure(name)
    assert verdicts and all(v.passed for v in verdicts), [v.line() for v in verdicts if not v.passed]

