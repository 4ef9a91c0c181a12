"""Features and activation-reading measures see a layer's output as the layer made it, even
when the model changes that tensor in place afterwards (``out += identity``,
``ReLU(inplace=True)``, ``h.mul_()``): each value is checked against a forward pass that
returns the layer's output directly."""

import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import pgen
from pgen.features import extract_features, model_p_vectors
from pgen.measures import MeasureError, compute_measure
from pgen.measures._util import capture_output
from pgen.measures.jacobian_norm import jacobian_norm
from pgen.measures.pgdl_margin import signed_margins


class InPlaceNet(nn.Module):
    """Every hooked layer's output is changed in place after the layer ran."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(20, 32), nn.Linear(32, 24), nn.Linear(24, 5)
        self.act = nn.ReLU(inplace=True)

    def direct(self, x, upto):
        h1 = torch.tanh(self.fc1(x))
        if upto == "fc1.tanh":
            return h1
        h2 = self.fc2(h1)
        return h2 if upto == "fc2" else None

    def forward(self, x):
        h1 = torch.tanh(self.fc1(x))
        h2 = self.fc2(h1)
        h2 = self.act(h2)  # in place on fc2's output
        h1.mul_(3.0)  # in place on fc1's output (through tanh: the tensor the hook would keep)
        h2 += h1[:, :24]
        return self.head(h2)


class TanhNet(InPlaceNet):
    """The same, with tanh as a module so that a hook can name it."""

    def __init__(self):
        super().__init__()
        self.tanh = nn.Tanh()

    def forward(self, x):
        h1 = self.tanh(self.fc1(x))
        h2 = self.act(self.fc2(h1))
        h1.mul_(3.0)
        h2 += h1[:, :24]
        return self.head(h2)


def _angle_between_pvectors(a, b):
    return pgen.angle(pgen.p_vector(a, method="exact"), pgen.p_vector(b, method="exact"))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def _resnet_direct(m, x, upto):
    with torch.no_grad():
        h = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        b = m.layer1[0]
        if upto == "layer1.0.bn2":
            return b.bn2(b.conv2(b.relu(b.bn1(b.conv1(h)))))
        return m.layer4(m.layer3(m.layer2(m.layer1(h))))


@pytest.mark.parametrize("layer", ["layer1.0.bn2", "layer4"])
def test_resnet18_layer_pvector_is_that_of_the_layers_output(resnet, layer):
    x = torch.rand(48, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref = _resnet_direct(resnet, x, layer).flatten(1).numpy().astype(np.float64)
    feats = extract_features(resnet, x, layers=layer, batch_size=16)[layer]
    np.testing.assert_allclose(feats, ref, atol=1e-5)
    res = model_p_vectors(resnet, x, layers=layer, batch_size=16)[layer]
    assert pgen.angle(res.vector, pgen.p_vector(ref, method="exact")) <= 1e-4


def test_inplace_ops_after_the_hooked_module_leave_its_features_alone():
    torch.manual_seed(0)
    net = TanhNet().eval()
    x = torch.randn(64, 20)
    with torch.no_grad():
        ref = {"tanh": net.direct(x, "fc1.tanh"), "fc2": net.direct(x, "fc2")}
        ref["penultimate"] = torch.relu(ref["fc2"]) + 3.0 * ref["tanh"][:, :24]
    feats = extract_features(net, x, layers=["tanh", "fc2", "penultimate"], batch_size=16)
    for layer, r in ref.items():
        np.testing.assert_allclose(feats[layer], r.numpy(), atol=1e-6, err_msg=layer)
        pv = model_p_vectors(net, x, layers=layer, batch_size=16)[layer]
        assert pgen.angle(pv.vector, pgen.p_vector(r.double().numpy(), method="exact")) <= 1e-4, layer
    # what a kept reference would have held instead is far from it: the check can fail
    assert _angle_between_pvectors(ref["fc2"].numpy(), torch.relu(ref["fc2"]).numpy() + 3 * ref["tanh"][:, :24].numpy()) > 1


def test_a_model_that_changes_its_input_in_place_keeps_the_input_features():
    class Scales(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(x.mul_(2.0))

    x = torch.randn(10, 6)
    kept = x.clone()
    feats = extract_features(Scales(), x, layers=["input"])
    np.testing.assert_allclose(feats["input"], kept.numpy())


class GradNet(nn.Module):
    """fc2's output is changed in place after it was used, in a way autograd allows."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(20, 32), nn.Linear(32, 24), nn.Linear(24, 5)

    def from_fc2(self, h2):
        return self.head(torch.relu(h2) + (h2 + 1.0))

    def forward(self, x):
        h2 = self.fc2(torch.tanh(self.fc1(x)))
        a = torch.relu(h2)
        h2.add_(1.0)
        return self.head(a + h2)


def test_captured_output_keeps_its_values_and_its_gradient():
    torch.manual_seed(0)
    net = GradNet().eval()
    x, y = torch.randn(12, 20), torch.randint(0, 5, (12,))
    margins, h = signed_margins(net, net.fc2, x, y)
    # the reference: the same margin computed from fc2's output as an explicit input
    with torch.no_grad():
        h2 = net.fc2(torch.tanh(net.fc1(x)))
    h2.requires_grad_(True)
    with torch.enable_grad():
        z = net.from_fc2(h2)
        true = z.gather(1, y[:, None]).squeeze(1)
        other = z.scatter(1, y[:, None], float("-inf")).max(1).values
        diff = true - other
        (grad,) = torch.autograd.grad(diff.sum(), h2)
    ref = diff.detach().double() / (grad.double().norm(dim=1) + 1e-7)
    np.testing.assert_allclose(h.numpy(), h2.detach().double().numpy(), atol=1e-6)
    np.testing.assert_allclose(margins.numpy(), ref.numpy(), rtol=1e-5)
    captured, handle = capture_output(net.fc2)
    with torch.no_grad():
        net(x)
    handle.remove()
    np.testing.assert_allclose(captured[0].numpy(), h2.detach().numpy(), atol=1e-6)


def _settings():
    from pgen.score import ScoreSettings

    return ScoreSettings()


def test_jacobian_norm_is_unchanged_by_an_inplace_activation_and_refuses_a_later_change():
    class Block(nn.Module):
        def __init__(self, inplace):
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(8, 16), nn.ReLU(inplace=inplace), nn.Linear(16, 4)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    torch.manual_seed(0)
    plain = Block(False).eval()
    inplace = Block(True).eval()
    inplace.load_state_dict(plain.state_dict())
    data = type("D", (), {"x": torch.randn(40, 8), "y": torch.randint(0, 4, (40,))})()
    a = jacobian_norm(plain, None, data, _settings())
    b = jacobian_norm(inplace, None, data, _settings())
    assert math.isfinite(a) and a == pytest.approx(b, rel=1e-12)

    class LaterChange(Block):
        def forward(self, x):
            h = self.fc1(x)
            out = self.fc2(h)
            h.mul_(2.0)  # fc2's input, after fc2 ran
            return out

    changed = LaterChange(False).eval()
    with pytest.raises(MeasureError, match="changed in place after the layer ran"):
        jacobian_norm(changed, None, data, _settings())
