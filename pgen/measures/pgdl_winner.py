"""The PGDL winners' measures (Natekar & Sharma 2020, first place).

* ``dbi_mixup``: Davies-Bouldin index of the first layer's features (2x2 max-pooled when
  spatial, flattened), clustered by label, times (1 - accuracy on 0.5/0.5 mixups of
  same-class pairs). Less separable early features and a model that cannot label its
  own in-class interpolations predict a larger gap: sign +1.
* ``augment_margin`` / ``mixup_margin``: mean over samples of (top-1 minus top-2 logit)
  divided by the norm of that difference's gradient at the first layer's output, on
  augmented inputs (horizontal flip and a 2-pixel shift) or on same-class mixups. A
  larger normalized margin predicts better generalization: sign -1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.metrics import davies_bouldin_score

from pgen.measures import MeasureError, model_device, register
from pgen.measures._util import accuracy, first_layer, within_class_mixup


def _first_layer_features(model, x, settings) -> torch.Tensor:
    layer, device = first_layer(model), model_device(model)
    out = []
    handle = layer.register_forward_hook(lambda m, i, o: out.append(o.detach()))
    try:
        with torch.no_grad():
            for a in range(0, len(x), settings.batch_size):
                model(x[a:a + settings.batch_size].to(device).float())
    finally:
        handle.remove()
    f = torch.cat(out).cpu()
    if f.dim() == 4 and min(f.shape[2:]) >= 2:
        f = F.max_pool2d(f, 2)
    return f.reshape(len(f), -1)


@register("dbi_mixup", sign=1, family="pgdl-winner", stochastic=True,
          description="Davies-Bouldin index of first-layer features x (1 - within-class mixup accuracy)",
          reference="Natekar & Sharma 2020 (PGDL first place)")
def dbi_mixup(model, init_model, data, settings) -> float:
    if len(torch.unique(data.y)) < 2:
        raise MeasureError("the Davies-Bouldin index needs at least 2 classes in the data")
    feats = _first_layer_features(model, data.x, settings).double().numpy()
    dbi = davies_bouldin_score(feats, data.y.numpy())
    g = torch.Generator().manual_seed(settings.seed)
    mixed = within_class_mixup(data.x, data.y, g)
    return float(dbi * (1 - accuracy(model, mixed, data.y, settings)))


def normalized_margin(model, x, settings) -> float:
    """Mean over samples of (top1 - top2 logit) / ||d(top1 - top2) / d(first-layer output)||."""
    layer, device = first_layer(model), model_device(model)
    captured = []
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(o))
    values = []
    try:
        for a in range(0, len(x), settings.batch_size):
            captured.clear()
            with torch.enable_grad():
                out = model(x[a:a + settings.batch_size].to(device).float())
                top = out.topk(2, dim=1).values
                margin = top[:, 0] - top[:, 1]
                (grad,) = torch.autograd.grad(margin.sum(), captured[0])
            norm = grad.reshape(len(grad), -1).norm(dim=1).clamp_min(1e-12)
            values.append((margin.detach() / norm).double().cpu())
    finally:
        handle.remove()
    return float(torch.cat(values).mean())


def _augment(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4:
        return torch.roll(x.flip(-1), shifts=(2, 2), dims=(2, 3))
    return x  # no label-preserving geometry for feature vectors


@register("augment_margin", sign=-1, family="pgdl-winner",
          description="mean (top1 - top2 logit) / first-layer gradient norm, on flipped and shifted inputs",
          reference="Natekar & Sharma 2020 (PGDL first place)")
def augment_margin(model, init_model, data, settings) -> float:
    return normalized_margin(model, _augment(data.x), settings)


@register("mixup_margin", sign=-1, family="pgdl-winner", stochastic=True,
          description="mean (top1 - top2 logit) / first-layer gradient norm, on within-class mixups",
          reference="Natekar & Sharma 2020 (PGDL first place)")
def mixup_margin(model, init_model, data, settings) -> float:
    g = torch.Generator().manual_seed(settings.seed)
    return normalized_margin(model, within_class_mixup(data.x, data.y, g), settings)
