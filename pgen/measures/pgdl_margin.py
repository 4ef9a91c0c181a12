"""The PGDL winners' normalised margins on augmented and on mixed-up data (Natekar & Sharma 2020).

Faithful to the authors' code (parthnatekar/pgdl: ``complexitymeasures.py``
``complexityMargin``, ``computecomplexityfinal.py`` ``CustomComplexityFinal`` with its
defaults: 500 samples in 10 shuffled batches of 50, ``penalize=True``,
``metric='batch_variance'``; paper: arXiv 2012.02775). For each sample, at the output h
of the model's first Conv/Dense layer (with its activation, as a Keras layer):

    margin = (z_y - z_j) / (||d(z_y - z_j)/dh||_2 + 1e-7)

with z the logits, y the label and j the highest other class: negative when the model
is wrong (the code's penalty for misclassified samples swaps in the label and the
predicted class, which is this). All margins are then divided by
``sqrt(5%-trimmed mean over features of the per-feature variance of h) + 1e-7`` over all
the samples, and averaged. The code's complexity is minus this mean; pgen keeps the
margin itself with sign -1 (a larger normalised margin predicts better generalization).

* ``augment_margin``: each batch augmented as the code's ``DataAugmentor``: a random
  left-right flip, hue shift U[-0.05, 0.05] and saturation x U[0.6, 1.2] (RGB inputs
  only: tf.image needs three channels), brightness + U[-0.05, 0.05], contrast x
  U[0.7, 1.0] about each channel's mean, and half the time a central zoom to a scale drawn
  from ``np.arange(0.85, 1.0, 0.01)`` (16 values, the last 1.0 by float rounding, as in the
  code; ``crop_and_resize``); each draw per image.
* ``mixup_margin``: each batch sorted by label and mixed 0.5/0.5 with a random
  permutation within each label (a sample may meet itself), as the code's
  ``batchMixupLabelwiseLinear``.

``augment_margin`` needs image inputs (its augmentations are image operations);
``mixup_margin`` runs on any input.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import trim_mean

from pgen.measures import MeasureError, model_device, register
from pgen.measures._image_ops import adjust_contrast, adjust_hue, adjust_saturation, crop_and_resize_center, uniform
from pgen.measures._util import capture_output, is_conv, is_dense, keras_layers, shuffled_stream

SAMPLES, BATCH = 500, 50
MARGIN_SIGN = ("the code returns minus the mean margin as its complexity; a larger normalised margin predicts a "
               "smaller gap (Natekar & Sharma 2020)")
ZOOM_SCALES = np.arange(0.85, 1.0, 0.01)  # as in the code: 16 scales, 0.85 ... 0.99 and (float rounding) 1.0


def margin_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The output module of the first layer with filters or units (Conv or Dense)."""
    for layer, output in keras_layers(model):
        if is_conv(layer) or is_dense(layer):
            return output
    raise MeasureError("the model has no Conv or Linear layer")


def standard_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The code's DataAugmentor.augment: flip, colour (hue, saturation, brightness, contrast), zoom."""
    n = len(x)
    x = x.clone()
    flip = torch.rand(n, generator=generator) < 0.5
    x[flip] = x[flip].flip(-1)
    if x.shape[1] == 3:
        x = adjust_hue(x, uniform(n, -0.05, 0.05, generator))
        x = adjust_saturation(x, uniform(n, 0.6, 1.2, generator))
    x = x + uniform(n, -0.05, 0.05, generator).to(x.dtype).view(-1, 1, 1, 1)
    x = adjust_contrast(x, uniform(n, 0.7, 1.0, generator))
    zoom = torch.rand(n, generator=generator) < 0.5
    scales = torch.as_tensor(ZOOM_SCALES[torch.randint(len(ZOOM_SCALES), (n,), generator=generator).numpy()])
    if zoom.any():
        x[zoom] = crop_and_resize_center(x[zoom], scales[zoom])
    return x


def labelwise_mixup(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The code's batchMixupLabelwiseLinear: sorted by label, each mixed 0.5/0.5 with a random
    member (itself included) of its label."""
    order = torch.argsort(y, stable=True)
    xs, ys = x[order], y[order]
    partner = torch.arange(len(ys))
    for label in torch.unique(ys):
        idx = torch.nonzero(ys == label).flatten()
        partner[idx] = idx[torch.randperm(len(idx), generator=generator)]
    return (xs + xs[partner]) / 2, ys


def signed_margins(model, layer, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: (z_y - max other z) / (||gradient of it w.r.t. ``layer``'s output|| + 1e-7),
    and that output flattened (float64, on the CPU)."""
    captured, handle = capture_output(layer)
    device = model_device(model)
    try:
        with torch.enable_grad():
            z = model(x.to(device).float())
            h = captured[0]
            yd = y.to(device)
            true = z.gather(1, yd[:, None]).squeeze(1)
            other = z.scatter(1, yd[:, None], float("-inf")).max(1).values
            diff = true - other
            (grad,) = torch.autograd.grad(diff.sum(), h)  # samples are independent in eval mode
    finally:
        handle.remove()
    norm = grad.reshape(len(grad), -1).double().norm(dim=1)
    return (diff.detach().double() / (norm + 1e-7)).cpu(), h.detach().reshape(len(h), -1).double().cpu()


def normalized_margin(model, data, settings, transform) -> float:
    """The mean normalised margin over SAMPLES shuffled samples, batches of BATCH transformed."""
    g = torch.Generator().manual_seed(settings.seed)
    layer = margin_layer(model)
    idx = shuffled_stream(len(data.x), SAMPLES, g)
    margins, feats = [], []
    for a in range(0, SAMPLES, BATCH):
        xb, yb = transform(data.x[idx[a:a + BATCH]].float(), data.y[idx[a:a + BATCH]], g)
        m, h = signed_margins(model, layer, xb, yb)
        margins.append(m)
        feats.append(h)
    variance = torch.cat(feats).var(0, correction=0).numpy()
    sigma = float(np.sqrt(trim_mean(variance, proportiontocut=0.05)))
    return float(np.nanmean((torch.cat(margins) / (sigma + 1e-7)).numpy()))


def _augment(x, y, g):
    if x.dim() != 4:
        raise MeasureError("augment_margin's augmentations need image inputs (N, C, H, W)")
    return standard_augment(x, g), y


@register("augment_margin", version=2, sign_reason=MARGIN_SIGN,
          sign=-1, family="pgdl-winner", stochastic=True, needs_images=True,
          description="mean signed margin / first-layer gradient norm / sqrt(trimmed feature variance), "
                      "on the authors' flip, colour and zoom augmentations (500 samples)",
          reference="Natekar & Sharma 2020, arXiv 2012.02775 (PGDL first place); code: parthnatekar/pgdl "
                    "complexitymeasures.py complexityMargin(augment='standard')")
def augment_margin(model, init_model, data, settings) -> float:
    return normalized_margin(model, data, settings, _augment)


@register("mixup_margin", version=2, sign_reason=MARGIN_SIGN,
          sign=-1, family="pgdl-winner", stochastic=True,
          description="mean signed margin / first-layer gradient norm / sqrt(trimmed feature variance), "
                      "on label-wise 0.5 mixups (500 samples)",
          reference="Natekar & Sharma 2020, arXiv 2012.02775 (PGDL first place); code: parthnatekar/pgdl "
                    "complexitymeasures.py complexityMargin(augment='mixup')")
def mixup_margin(model, init_model, data, settings) -> float:
    return normalized_margin(model, data, settings, labelwise_mixup)
