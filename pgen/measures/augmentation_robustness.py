"""The PGDL runner-up's augmentation robustness (Aithal & Kashyap 2020).

For seven augmentations (horizontal flip, saturation x1.5, 80% center crop resized back,
Sobel edge image, brightness x1.2, flip + saturation, random erasing of 2-40% of the
image), each sample scores 1 (a fixed penalty) when the augmentation changes the
predicted class, else the drop of the predicted class's softmax probability (absolute
value). The measure is the mean over augmentations and samples: larger means less
robust, predicted to generalize worse (sign +1). Needs image inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pgen.measures import register
from pgen.measures._util import logits_of


def _saturate(x, factor=1.5):
    if x.shape[1] != 3:
        return x
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    return gray + factor * (x - gray)


def _crop(x, keep=0.8):
    h, w = x.shape[2:]
    ch, cw = max(1, round(h * keep)), max(1, round(w * keep))
    top, left = (h - ch) // 2, (w - cw) // 2
    return F.interpolate(x[:, :, top:top + ch, left:left + cw], size=(h, w), mode="bilinear", align_corners=False)


def _sobel(x):
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=x.dtype)
    k = torch.stack([kx, kx.T]).unsqueeze(1)  # (2, 1, 3, 3)
    c = x.shape[1]
    g = F.conv2d(x.reshape(-1, 1, *x.shape[2:]), k, padding=1)
    return g.square().sum(1).sqrt().reshape(len(x), c, *x.shape[2:])


def _erase(x, generator):
    out = x.clone()
    n, _, h, w = x.shape
    for i in range(n):
        area = float(torch.empty(1).uniform_(0.02, 0.4, generator=generator)) * h * w
        ratio = float(torch.empty(1).uniform_(0.3, 3.3, generator=generator))
        eh = min(h, max(1, round((area * ratio) ** 0.5)))
        ew = min(w, max(1, round((area / ratio) ** 0.5)))
        top = int(torch.randint(0, h - eh + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - ew + 1, (1,), generator=generator))
        out[i, :, top:top + eh, left:left + ew] = 0
    return out


def augmentations(x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {"flip": x.flip(-1), "saturation": _saturate(x), "crop": _crop(x), "sobel": _sobel(x),
            "brightness": x * 1.2, "flip_saturation": _saturate(x.flip(-1)), "erasing": _erase(x, generator)}


@register("augmentation_robustness", sign=1, family="pgdl-runner-up", stochastic=True,
          needs_images=True,
          description="mean softmax drop under 7 augmentations, 1 per prediction the augmentation flips",
          reference="Aithal & Kashyap 2020 (PGDL second place)")
def augmentation_robustness(model, init_model, data, settings) -> float:
    x = data.x.float()
    p = torch.softmax(logits_of(model, x, settings).double(), 1)
    pred = p.argmax(1)
    g = torch.Generator().manual_seed(settings.seed)
    scores = []
    for xa in augmentations(x, g).values():
        q = torch.softmax(logits_of(model, xa, settings).double(), 1)
        flipped = q.argmax(1) != pred
        drop = (p.gather(1, pred[:, None]) - q.gather(1, pred[:, None])).squeeze(1).abs()
        scores.append(torch.where(flipped, torch.ones_like(drop), drop))
    return float(torch.cat(scores).mean())
