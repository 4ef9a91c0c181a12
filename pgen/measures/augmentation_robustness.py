"""The PGDL runner-up's robustness to augmentations (Aithal, Kashyap & Subramanyam 2021).

Faithful to the authors' code (sumukhaithal6/pgdl, ``runner_up_solution/complexity.py``;
paper: arXiv 2101.06459). The data are taken in order in batches of 64, at most 201
batches. Each batch is augmented seven ways:

====================  ==================================================  =======
augmentation          as in the code                                      penalty
====================  ==================================================  =======
flip                  left-right flip                                     6
saturation            HSV saturation x U[0.6, 1.6], one factor a batch     1
crop                  central crop 0.9 (TF rounding), resized back         2
sobel                 horizontal Sobel derivative / 4 + 0.5 (reflect)      3
brightness            + 0.5                                               1
flip + saturation     the flip, then its own saturation factor            12
erasing               one zeroed rectangle per image (the code's bounds)   2
====================  ==================================================  =======

For each sample and augmentation the score adds the penalty when the predicted class
changes, else |max softmax before - max softmax after|; the measure is the sum over
samples and augmentations. Grey images go to RGB and back around the saturation, as in
the code (a grey image has no saturation: only TF's grey weights, summing to 0.9999,
remain). The random draws follow the code's distributions with torch's generator.

Sign: the code returns ``-score``; PGDL's conditional mutual information does not see a
measure's sign, and the paper's argument (models robust to augmentations generalize
better, section 3) makes a larger score predict a larger gap: sign +1. Needs images.
"""

from __future__ import annotations

import torch

from pgen.measures import register
from pgen.measures._image_ops import (adjust_saturation, central_crop, grayscale_to_rgb, resize_with_pad,
                                      rgb_to_grayscale, sobel_dx, uniform)
from pgen.measures._util import logits_of

BATCH_SIZE = 64
MAX_BATCHES = 201  # the code breaks after batch index 200
PENALTIES = {"flip": 6, "saturation": 1, "crop": 2, "sobel": 3, "brightness": 1, "flip_saturation": 12,
             "erasing": 2}


def _random_saturation(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    factor = float(uniform(1, 0.6, 1.6, generator))  # tf.image.random_saturation: one factor per call
    if x.shape[1] == 1:
        return rgb_to_grayscale(adjust_saturation(grayscale_to_rgb(x), factor))
    return adjust_saturation(x, factor)


def erase_bounds(height: int, width: int, sl=0.02, sh=0.4, r1=0.3) -> tuple[int, int, int]:
    """The code's size bounds of the erased rectangle: (low, exclusive high for h, for w)."""
    area = height * width
    low = int(round((sl * area * r1) ** 0.5))  # np.round: half to even, as Python's round
    up = int(round((sh * area / r1) ** 0.5))
    return low, min(up, height), min(up, width)


def random_erase(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One zeroed rectangle per image: h in [low, h_up), w in [low, w_up), top-left corner in
    [0, H - h) x [0, W - w) (numpy's exclusive upper bounds, as the code draws them)."""
    out = x.clone()
    n, _, height, width = x.shape
    low, h_up, w_up = erase_bounds(height, width)
    for i in range(n):
        h = int(torch.randint(low, h_up, (1,), generator=generator))
        w = int(torch.randint(low, w_up, (1,), generator=generator))
        top = int(torch.randint(0, height - h, (1,), generator=generator))
        left = int(torch.randint(0, width - w, (1,), generator=generator))
        out[i, :, top:top + h, left:left + w] = 0
    return out


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The seven augmented copies of one batch, in the code's order of random draws."""
    h, w = x.shape[2:]
    flipped = x.flip(-1)
    return {
        "flip": flipped,
        "saturation": _random_saturation(x, generator),
        "crop": resize_with_pad(central_crop(x, 0.9), h, w),
        "sobel": sobel_dx(x) / 4 + 0.5,
        "brightness": x + 0.5,
        "flip_saturation": _random_saturation(flipped, generator),
        "erasing": random_erase(x, generator),
    }


def robustness_scores(p_orig: torch.Tensor, p_aug: torch.Tensor, penalty: float) -> torch.Tensor:
    """Per sample: ``penalty`` where the argmax changed, else |max p_orig - max p_aug|."""
    same = p_orig.argmax(1) == p_aug.argmax(1)
    return torch.where(same, (p_orig.max(1).values - p_aug.max(1).values).abs(), torch.full_like(p_orig[:, 0], penalty))


@register("augmentation_robustness", version=2, sign_reason="the paper: models robust to augmentations generalize better (Aithal et al. 2021, sec. 3); the code's -score only flips a sign PGDL's CMI ignores",
          sign=1, family="pgdl-runner-up", stochastic=True, needs_images=True,
          description="sum over samples of 7 augmentations' penalties (6,1,2,3,1,12,2 when the prediction "
                      "flips, else the change of the top softmax probability)",
          reference="Aithal, Kashyap & Subramanyam 2021, arXiv 2101.06459 (PGDL second place); "
                    "code: sumukhaithal6/pgdl runner_up_solution/complexity.py")
def augmentation_robustness(model, init_model, data, settings) -> float:
    g = torch.Generator().manual_seed(settings.seed)
    x_all = data.x.float()
    total = 0.0
    for start in range(0, min(len(x_all), BATCH_SIZE * MAX_BATCHES), BATCH_SIZE):
        x = x_all[start:start + BATCH_SIZE]
        p = torch.softmax(logits_of(model, x, settings).double(), 1)
        for name, xa in augment_batch(x, g).items():
            q = torch.softmax(logits_of(model, xa, settings).double(), 1)
            total += float(robustness_scores(p, q, PENALTIES[name]).sum())
    return total
