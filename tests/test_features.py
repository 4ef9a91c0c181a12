"""Feature extraction: shapes, dataset order, hooks, streaming P-vectors."""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import pgen
from pgen.features import data_p_vector, extract_features, model_p_vectors, resolve_layers
from pgen.models import build_model


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(37, 3, 32, 32, generator=g), torch.randint(0, 10, (37,), generator=g)


def per_sample(fn, x):
    """Reference: run each sample alone, in order (no batching involved)."""
    with torch.no_grad():
        return torch.cat([fn(x[i : i + 1]) for i in range(len(x))]).flatten(1).numpy()


def test_mlp_penultimate_is_input_of_last_linear():
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, width=16, depth=2).eval()
    x = torch.rand(25, 1, 8, 8)
    feats = extract_features(model, x, batch_size=7)
    ref = per_sample(nn.Sequential(*list(model)[:-1]), x)
    assert feats["penultimate"].shape == (25, 16)
    np.testing.assert_allclose(feats["penultimate"], ref, atol=1e-6)


def test_cnn_named_layer_and_flattening():
    torch.manual_seed(0)
    model = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=4, depth=2, hidden=12).eval()
    x = torch.rand(19, 1, 8, 8)
    feats = extract_features(model, x, layers=["0", "penultimate", "logits", "input"], batch_size=5)
    assert feats["0"].shape == (19, 4 * 8 * 8)  # conv map flattened C*H*W
    np.testing.assert_allclose(feats["0"], per_sample(model[0], x), atol=1e-6)
    assert feats["penultimate"].shape == (19, 12)
    np.testing.assert_allclose(feats["logits"], per_sample(model, x), atol=1e-5)
    np.testing.assert_allclose(feats["input"], x.flatten(1).numpy())


def test_resnet18_shapes_and_order(images):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x, y = images
    feats = extract_features(model, (x, y), layers=["penultimate", "layer3", "logits"], batch_size=8)
    assert feats["penultimate"].shape == (37, 512)
    assert feats["layer3"].shape == (37, 256 * 2 * 2)
    assert feats["logits"].shape == (37, 10)
    body = nn.Sequential(*list(model.children())[:-1]).eval()
    np.testing.assert_allclose(feats["penultimate"], per_sample(body, x), atol=1e-4)
    # Reversing the data reverses the features: rows follow dataset order.
    rev = extract_features(model, x.flip(0), batch_size=8)["penultimate"]
    np.testing.assert_allclose(rev[::-1], feats["penultimate"], atol=1e-4)


def test_model_mode_is_restored(images):
    model = torchvision.models.resnet18(num_classes=10).train()
    extract_features(model, images[0][:4], batch_size=2)
    assert model.training


def test_streaming_p_vector_equals_one_shot(images):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x, _ = images
    feats = extract_features(model, x, layers=["penultimate", "layer4"], batch_size=8)
    res = model_p_vectors(model, x, layers=["penultimate", "layer4"], batch_size=8)
    for layer in ("penultimate", "layer4"):
        for center in (True,):
            one = pgen.p_vector_spectrum(feats[layer], center=center, method="exact")
            assert pgen.angle(res[layer].vector, one.vector) < 1e-3
            assert res[layer].sigma1 == pytest.approx(one.sigma1, rel=1e-5)


def test_data_p_vector(images):
    x, y = images
    d = data_p_vector((x, y), center=False, batch_size=10)
    ref = pgen.p_vector(x.flatten(1).numpy(), center=False, method="exact")
    assert pgen.angle(d.vector, ref) < 1e-4


def test_model_without_linear_uses_last_leaf_input():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.rand(6, 1, 8, 8)
    spec = resolve_layers(model, "penultimate", example=x)
    assert spec["penultimate"] == ("3", "input")
    assert extract_features(model, x)["penultimate"].shape == (6, 4)


def test_unknown_layer_is_a_clear_error():
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ValueError, match="no module named 'layer9'"):
        extract_features(model, torch.rand(4, 1, 8, 8), layers="layer9")


def test_shuffled_loader_refused():
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(4, 3)), shuffle=True)
    with pytest.raises(ValueError, match="dataset order"):
        extract_features(nn.Linear(3, 2), loader)


def _small_cnn():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(inplace=True), nn.Flatten(),
                         nn.Linear(8 * 15 * 15, 16), nn.ReLU(inplace=True), nn.Linear(16, 10))


@pytest.mark.parametrize("n", [37, 21])
def test_one_pass_gives_the_accuracy_and_the_p_vectors_of_separate_passes(images, n):
    """evaluate_with_p_vectors == pgen.train.evaluate + model_p_vectors over the first n."""
    from pgen.features import evaluate_with_p_vectors
    from pgen.pvector import angle
    from pgen.train import evaluate

    x, y = images
    model = _small_cnn()
    acc, loss, pvs = evaluate_with_p_vectors(model, x, y, n=n, centers=(True, False), batch_size=8)
    ref_acc, ref_loss = evaluate(model, x, y)
    assert acc == ref_acc
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    for center in (True, False):
        ref = model_p_vectors(model, (x[:n], y[:n]), center=center, batch_size=8)["penultimate"]
        assert angle(pvs[center].vector, ref.vector) < 1e-4
        np.testing.assert_allclose(pvs[center].singular_values, ref.singular_values, rtol=1e-6)
