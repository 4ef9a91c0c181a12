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
    # Feature vectors (no image geometry): noise only.
    "vector": Policy("vector", 0, 0.0, (1.0, 1.0), False, 0.0, 0.05),
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
    """
    g = torch.Generator().manual_seed(seed)
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
