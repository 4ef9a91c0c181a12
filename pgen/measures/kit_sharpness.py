"""The PGDL kit's sharpness: the largest box around the weights that keeps accuracy.

Bisection on a relative box size ``m`` in [0, 0.5] (20 steps at most): for each ``m``,
up to 3 restarts of 20 SGD steps (learning rate 1e-3, batches of 64 from a shuffled,
repeated stream), every weight clipped after each step to ``w0 +- |w0| * m``; the
accuracy of the perturbed model on 10 batches (3 once a restart fell below 0.8) gives
``deviate = 1 - min accuracy``; stop when ``|deviate - 0.1| < 0.01``. Returns ``m``.

Reproduced as the kit wrote it, including one quirk: the kit calls
``CategoricalCrossentropy(from_logits=True)(logits, one_hot)``, i.e. with the arguments
swapped, so the objective its SGD descends is ``-sum_c logits_c * log_softmax(one_hot)_c``
(mean over the batch), not the usual cross-entropy. A larger ``m`` means a flatter model,
so the measure's sign is -1.
"""

from __future__ import annotations

import torch

from pgen.measures import model_device, register
from pgen.measures._util import all_weights

BATCH = 64


def _batches(n: int, generator: torch.Generator):
    """An endless stream of index batches over shuffled, repeated epochs."""
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < BATCH:
            pending = torch.cat([pending, torch.randperm(n, generator=generator)])
        yield pending[:BATCH]
        pending = pending[BATCH:]


def _kit_objective_table(num_classes: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Row c: ``log_softmax(one_hot(c))``, the factor the kit's swapped cross-entropy
    multiplies a class-c sample's logits by (computed once; the softmax runs row by row,
    so a row is the number a per-batch one-hot would give)."""
    return torch.log_softmax(torch.eye(num_classes, dtype=dtype, device=device), dim=1)


def _kit_objective(logits: torch.Tensor, labels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The kit's ``CategoricalCrossentropy(from_logits=True)(logits, one_hot)``:
    ``-sum_c logits_c * log_softmax(one_hot)_c``, mean over the batch."""
    return -(logits * table[labels]).sum(1).mean()


@register("kit_sharpness", sign_reason="the kit's measure is the box size itself: a wider box is a flatter minimum, predicted to generalize better",
          sign=-1, family="flatness", stochastic=True,
          description="largest relative weight box keeping accuracy within 0.1, by bisection (PGDL kit baseline)",
          reference="PGDL starting kit")
def kit_sharpness(model, init_model, data, settings) -> float:
    device = model_device(model)
    x, y = data.x.to(device).float(), data.y.to(device)
    g = torch.Generator().manual_seed(settings.seed)
    stream = _batches(len(x), g)
    weights = all_weights(model)  # the model's own tensors: copies into them change the model
    tensors = list(weights.values())
    originals = [v.clone() for v in tensors]
    params = [p for p in model.parameters() if p.requires_grad]
    table = _kit_objective_table(data.num_classes, params[0].dtype, device)

    def accuracy(batches: int) -> float:
        # The kit averages the batches' accuracies; every batch holds BATCH samples, so
        # that is the count of hits over all of them / BATCH / batches, exactly (each
        # batch's mean is a multiple of 1/64, exact in float32 and in their double sum),
        # read with one synchronisation instead of one per batch.
        hits = torch.zeros((), dtype=torch.long, device=device)
        with torch.no_grad():
            for _ in range(batches):
                idx = next(stream).to(device)
                hits += (model(x[idx]).argmax(1) == y[idx]).sum()
        return hits.item() / BATCH / batches

    high, low, m = 0.5, 0.0, 0.25
    try:
        for _ in range(20):
            m = (high + low) / 2
            lows = [w0 - w0.abs() * m for w0 in originals]
            highs = [w0 + w0.abs() * m for w0 in originals]
            min_acc = 10.0
            for _ in range(3):
                if min_acc < 0.8:
                    continue
                torch._foreach_copy_(tensors, originals)  # back to the trained weights
                for _ in range(20):
                    idx = next(stream).to(device)
                    with torch.enable_grad():
                        grads = torch.autograd.grad(_kit_objective(model(x[idx]), y[idx], table), params,
                                                    allow_unused=True)
                    with torch.no_grad():  # the kit's SGD step (lr 1e-3), then the clip into the box
                        stepped = [(p, g) for p, g in zip(params, grads) if g is not None]
                        torch._foreach_add_([p for p, _ in stepped], [g for _, g in stepped], alpha=-1e-3)
                        torch._foreach_maximum_(tensors, lows)  # clamp(w, low, high), all tensors at once
                        torch._foreach_minimum_(tensors, highs)
                min_acc = min(min_acc, accuracy(3 if min_acc < 0.8 else 10))
            deviate = 1.0 - min_acc
            if high - low < 1e-5 or abs(deviate - 0.1) < 1e-2:
                break
            if deviate > 0.1:
                high = m
            else:
                low = m
    finally:
        with torch.no_grad():
            torch._foreach_copy_(tensors, originals)
    return float(m)
