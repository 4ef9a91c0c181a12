"""Helpers shared by several measures."""

from __future__ import annotations

import torch
from torch import nn

from pgen.measures import MeasureError


def all_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every floating-point tensor of the state, parameters AND buffers (BatchNorm running
    statistics), as Keras's ``model.get_weights()`` returns them."""
    return {k: v.detach() for k, v in model.state_dict().items() if v.is_floating_point()}


def paired_weights(model: nn.Module, init_model: nn.Module) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    a, b = all_weights(model), all_weights(init_model)
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise MeasureError("the initial model's weights do not match the trained model's")
    return [(k, a[k], b[k]) for k in a]


def layers_of(model: nn.Module) -> list[nn.Module]:
    """The model's layers: a Sequential's children (a ported Keras layer each), else its leaf modules."""
    if isinstance(model, nn.Sequential):
        return list(model.children())
    return [m for m in model.modules() if not list(m.children())]


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Conv and Linear modules, in forward-definition order (Fantastic's "layers")."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def weight_matrices(model: nn.Module) -> list[torch.Tensor]:
    """Each layer's kernel as a float64 matrix (out, in * kh * kw), biases excluded.

    Conv kernels are reshaped, as Jiang et al. (2020) do (an approximation of the
    convolution's operator norm, Yoshida & Miyato 2017).
    """
    mats = [m.weight.detach().double().reshape(m.weight.shape[0], -1) for _, m in weight_layers(model)]
    if not mats:
        raise MeasureError("the model has no Conv or Linear layer")
    return mats


def spectral_norm(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w, ord=2))


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, settings) -> torch.Tensor:
    """The model's outputs on ``x``, batched on ``settings.device``, back on CPU."""
    device = settings.device
    model.to(device)
    try:
        return torch.cat([model(x[a:a + settings.batch_size].to(device).float()).float().cpu()
                          for a in range(0, len(x), settings.batch_size)])
    finally:
        model.to("cpu")


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Correct-class logit minus the largest other logit, per sample."""
    correct = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    other = logits.clone()
    other.scatter_(1, labels.view(-1, 1), float("-inf"))
    return correct - other.max(1).values


def margin_10th_percentile(model: nn.Module, data, settings) -> float:
    """abs(10th-percentile margin) over the data (Jiang et al. 2020)."""
    m = margins(logits_of(model, data.x, settings), data.y)
    value = abs(float(m.kthvalue(max(1, len(m) // 10)).values))
    if value == 0:
        raise MeasureError("the 10th-percentile margin is 0; margin-normalized measures are undefined")
    return value


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings) -> float:
    return float((logits_of(model, x, settings).argmax(1) == y).double().mean())


def within_class_mixup(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, lam: float = 0.5) -> torch.Tensor:
    """Each sample mixed (lam, 1 - lam) with a random other sample of its own class."""
    partner = torch.arange(len(y))
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        partner[idx] = idx[torch.randperm(len(idx), generator=generator)]
    return lam * x + (1 - lam) * x[partner]


def first_layer(model: nn.Module) -> nn.Module:
    """The first layer: a Sequential's first child with weights (a whole ported Keras layer,
    activation included), else the first Conv/Linear module."""
    if isinstance(model, nn.Sequential):
        for child in model.children():
            if any(True for _ in child.parameters()):
                return child
    layers = weight_layers(model)
    if not layers:
        raise MeasureError("the model has no Conv or Linear layer")
    return layers[0][1]


def require_images(data, name: str) -> None:
    if data.x.dim() != 4:
        raise MeasureError(f"{name} needs image inputs (N, C, H, W); got shape {tuple(data.x.shape)}")


def bisect_scale(drop, *, target: float, tolerance: float, depth: int, upper: float = 1.0,
                 max_doublings: int = 10) -> float:
    """The perturbation scale whose accuracy ``drop(scale)`` is ``target`` (+- tolerance).

    Doubles ``upper`` (at most ``max_doublings`` times) until the drop reaches the target,
    then bisects at most ``depth`` times; returns the last midpoint (or the bracket's top
    when the target was never reached). Shared by the flatness and sharpness measures.
    """
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
        if d > target:
            upper = scale
        else:
            lower = scale
    return scale
