"""Pseudo-test sets: label-preserving augmentations of training samples.

The paper's "pseudo-testing accuracy" is not defined in the available text; pgen uses the
practical reading (notes, section 1): accuracy on augmented copies of training samples,
with a policy per data type and a fixed seed. The policy's description is stored with
every result, so a number always says how it was made.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as F

from pgen.errors import UnknownNameError

__all__ = ["POLICIES", "Policy", "pseudo_test_set", "policy_for"]


@dataclass(frozen=True)
class Policy:
    name: str
    rotate_deg: float
    translate: float  # fraction of the image size
    scale: tuple[float, float]
    hflip: bool
    brightness: float  # +- fraction
    noise_std: float

    def describe(self) -> str:
        return (f"{self.name}: rotate +-{self.rotate_deg:g} deg, translate +-{self.translate:g}, "
                f"scale {self.scale[0]:g}-{self.scale[1]:g}, hflip {'yes' if self.hflip else 'no'}, "
                f"brightness +-{self.brightness:g}, gaussian noise {self.noise_std:g}")


POLICIES = {
    # Digits must not flip (2 vs 5 mirrored is not a digit); small affine jitter only.
    "grayscale-digits": Policy("grayscale-digits", 10, 0.1, (0.9, 1.1), False, 0.0, 0.02),
    "grayscale": Policy("grayscale", 5, 0.1, (0.95, 1.05), True, 0.1, 0.02),
    "color": Policy("color", 5, 0.1, (0.95, 1.05), True, 0.1, 0.02),
    "color-digits": Policy("color-digits", 5, 0.1, (0.95, 1.05), False, 0.1, 0.02),
    # 1-D signals (mnist1d): the generator's own nuisances at a small scale, i.e. a shift of
    # +-5% of the length (2 of 40 samples, zero-filled), amplitude +-10%, white noise 0.05
    # (the data have unit standard deviation).
    "signal-1d": Policy("signal-1d", 0, 0.05, (1.0, 1.0), False, 0.1, 0.05),
    # Feature vectors (no image geometry): noise only.
    "vector": Policy("vector", 0, 0.0, (1.0, 1.0), False, 0.0, 0.05),
    # Images of a kind nobody declared: the colour policy without its flips, since a flip
    # changes the class of digits, letters and other oriented data (--data-kind picks another).
    "unknown": Policy("unknown", 5, 0.1, (0.95, 1.05), False, 0.1, 0.02),
}


def policy_for(kind: str) -> Policy:
    try:
        return POLICIES[kind]
    except KeyError:
        raise UnknownNameError(f"no pseudo-test policy for data kind {kind!r}; known: {sorted(POLICIES)}") from None


def pseudo_test_set(inputs: torch.Tensor, labels: torch.Tensor, policy: Policy, *, seed: int = 0,
                    copies: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``copies`` augmented versions of every sample (N*copies, C, H, W), labels unchanged.

    Deterministic for a seed: each sample draws its own parameters from one generator.
    1-D signals (N, C, L) take the ``signal-1d`` policy: shift, amplitude and noise.
    """
    g = torch.Generator().manual_seed(seed)
    if policy.name == "signal-1d":
        return _pseudo_test_signals(inputs, labels, policy, g, copies)
    xs, ys = [], []
    h, w = inputs.shape[-2:]
    geometric = policy.rotate_deg or policy.translate or policy.scale != (1.0, 1.0) or policy.hflip
    if geometric and inputs.dim() < 3:
        raise ValueError(f"policy {policy.name!r} transforms images; inputs of shape {tuple(inputs.shape[1:])} "
                         "are not images (use the 'vector' policy)")
    for _ in range(copies):
        out = torch.empty_like(inputs)
        for i in range(len(inputs)):
            u = torch.rand(6, generator=g).tolist()
            if not geometric:
                out[i] = inputs[i] * (1 + (2 * u[5] - 1) * policy.brightness)
                continue
            angle = (2 * u[0] - 1) * policy.rotate_deg
            tx = round((2 * u[1] - 1) * policy.translate * w)
            ty = round((2 * u[2] - 1) * policy.translate * h)
            sc = policy.scale[0] + u[3] * (policy.scale[1] - policy.scale[0])
            x = F.affine(inputs[i], angle=angle, translate=[tx, ty], scale=sc, shear=[0.0, 0.0])
            if policy.hflip and u[4] < 0.5:
                x = F.horizontal_flip(x)
            if policy.brightness:
                x = x * (1 + (2 * u[5] - 1) * policy.brightness)
            out[i] = x
        if policy.noise_std:
            out = out + policy.noise_std * torch.randn(out.shape, generator=g)
        xs.append(out)
        ys.append(labels)
    return torch.cat(xs), torch.cat(ys)


def _pseudo_test_signals(inputs, labels, policy: Policy, g: torch.Generator, copies: int):
    if inputs.dim() != 3:
        raise ValueError(f"policy {policy.name!r} transforms 1-D signals (N, C, L); got inputs of shape "
                         f"{tuple(inputs.shape)}")
    n, length = len(inputs), inputs.shape[-1]
    max_shift = round(policy.translate * length)
    xs = []
    for _ in range(copies):
        u = torch.rand(n, 2, generator=g)
        shifts = torch.round((2 * u[:, 0] - 1) * max_shift).long()
        gain = 1 + (2 * u[:, 1] - 1) * policy.brightness
        # out[..., t] = x[..., t - shift], zero where t - shift falls outside the signal
        src = torch.arange(length)[None, :] - shifts[:, None]
        valid = (src >= 0) & (src < length)
        out = torch.gather(inputs, 2, src.clamp(0, length - 1)[:, None, :].expand(-1, inputs.shape[1], -1))
        out = out * valid[:, None, :] * gain[:, None, None]
        xs.append(out + policy.noise_std * torch.randn(out.shape, generator=g))
    return torch.cat(xs), labels.repeat(copies)
