"""The PGDL kit's Jacobian norm: how strongly the logits react to every layer's input.

For each batch of 16 samples (the first 33 batches, 528 samples, as the kit does), the
Jacobian of the logits with respect to each layer's input is taken per sample; the value
is the mean over layers of the mean squared Jacobian entry, averaged over batches.
Entries are computed with one backward pass per class (samples are independent in eval
mode, so summing the class logit over the batch gives every sample's row at once). The
derivative is with respect to the tensor the layer received, through every path from it to
the logits (as TensorFlow's gradient with respect to ``layer.input``); each layer works on a
copy, so an in-place layer (``ReLU(inplace=True)``) leaves that tensor as it was, and a
model that changes it in place elsewhere after the layer ran is refused (the gradient would
be that of the changed tensor).

"Every layer" is every layer as Keras lists it, as the kit's models are Keras models: an
activation module right after a Conv/Linear belongs to that layer (Keras's Conv2D/Dense
apply their activation), while Flatten, Dropout and pooling are layers of their own
(:func:`pgen.measures._util.keras_layers`). On pgen's own MLP ``[Flatten, Linear, ReLU,
Linear]`` that is three layers, not four.
"""

from __future__ import annotations

import torch

from pgen.measures import MeasureError, model_device, register
from pgen.measures._util import keras_layers

BATCH = 16
MAX_BATCHES = 33


@register("jacobian_norm", version=2, sign_reason="the PGDL starting kit's baseline, which returns it as a complexity: larger predicts a larger gap: a more input-sensitive function predicts a larger gap",
          sign=1, family="sensitivity",
          description="mean squared Jacobian of the logits w.r.t. every layer's input (PGDL kit baseline)",
          reference="PGDL starting kit")
def jacobian_norm(model, init_model, data, settings) -> float:
    device = model_device(model)
    layers = [layer for layer, _ in keras_layers(model)]
    captured: list[tuple[torch.nn.Module, torch.Tensor, int]] = []  # (layer, its input, the input's version)

    def through_a_copy(module, inp):
        # The layer gets a copy of its input, so an in-place layer changes the copy, never the
        # tensor the gradient is taken with respect to (which would silently become the changed one).
        captured.append((module, inp[0], inp[0]._version))
        return (inp[0].clone(), *inp[1:])

    handles = [layer.register_forward_pre_hook(through_a_copy) for layer in layers]
    per_batch = []
    try:
        for b in range(min(MAX_BATCHES, -(-len(data.x) // BATCH))):
            x = data.x[b * BATCH:(b + 1) * BATCH].to(device).float().requires_grad_(True)
            captured.clear()
            with torch.enable_grad():
                out = model(x)
                for layer, t, version in captured:
                    if t._version != version:
                        raise MeasureError(f"the input of layer {type(layer).__name__} is changed in place after the "
                                           "layer ran (an in-place operation such as h.mul_() or h += ...); its "
                                           "Jacobian would be that of the changed tensor")
                inputs = [t for _, t, _ in captured]
                sums = [torch.zeros((), dtype=torch.float64, device=device) for _ in inputs]
                for c in range(out.shape[1]):
                    grads = torch.autograd.grad(out[:, c].sum(), inputs, retain_graph=True, allow_unused=True)
                    for i, g in enumerate(grads):
                        if g is not None:
                            sums[i] += g.double().square().sum()
            means = [s / (out.shape[1] * t.numel()) for s, t in zip(sums, inputs)]
            per_batch.append(torch.stack(means).mean().item())
    finally:
        for h in handles:
            h.remove()
    return float(sum(per_batch) / len(per_batch))
