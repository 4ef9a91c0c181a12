"""The PGDL winners' DB index x (1 - label-wise mixup accuracy) (Natekar & Sharma 2020).

Faithful to the authors' code (parthnatekar/pgdl: ``complexity.py`` with its default
measure 'DBI, Mixup'; ``complexitymeasures.py``: ``complexityDB(pool=True,
computeOver=400, batchSize=40)`` and ``complexityMixup``; paper: "Representation based
complexity measures for predicting generalization in deep learning", arXiv 2012.02775):

* **DB**: the layer is the first of the model's first three (Keras) layers that has
  strides (a convolution, with its activation, or a pooling layer); its output is 4x4
  max-pooled ('valid') and flattened. The data are shuffled (repeated as needed) and
  cut into 10 chunks of 120 samples (three batches of 40); the Davies-Bouldin index of
  each chunk, clustered by label (scikit-learn's, which the code copies), is averaged.
* **Mixup**: batches of ``10 * C`` samples (C classes) in data order, 10 of them; in each
  batch and for each label, every pair of that label's samples is mixed 0.5/0.5 and
  the fraction predicted as the label taken; averaged over batches, then over labels.

Where pgen's models differ from PGDL's:

* a model whose first three layers have no strides (pgen's MLPs: Flatten, Dense, Dense)
  makes the code return NaN. pgen uses the first Dense layer's activation output,
  unpooled, instead, and records ``dbi_mixup.adapted = 1`` beside the value;
* feature maps smaller than 4x4 are not pooled (Keras would fail);
* a label with fewer than two samples in a mixup batch is skipped there (the code would
  average a NaN into the result).

A larger value (less separable early features, mixups the model cannot label) predicts
a larger gap: sign +1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import davies_bouldin_score

from pgen.measures import MeasureError, MeasureValue, model_device, register
from pgen.measures._util import capture_output, is_conv, is_dense, is_pool, keras_layers, shuffled_stream

DB_CHUNKS, DB_CHUNK_SIZE = 10, 120  # computeOver // batchSize chunks of three batches of 40
MIXUP_BATCHES = 10


def db_layer(model: torch.nn.Module) -> tuple[torch.nn.Module, bool]:
    """The module whose output the DB index clusters, and whether that is pgen's adaptation."""
    layers = keras_layers(model)
    for layer, output in layers[:3]:
        if is_conv(layer) or is_pool(layer):
            return output, False
    for layer, output in layers:
        if is_dense(layer):
            return output, True
    raise MeasureError("the model has no convolution, pooling or dense layer for the DB index")


@torch.no_grad()
def layer_features(model, module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``module``'s outputs on ``x``, 4x4 max-pooled when spatial and at least 4x4, flattened, float64."""
    captured, handle = capture_output(module)
    device = model_device(model)
    batches = []
    try:
        for a in range(0, len(x), batch_size):
            captured.clear()
            model(x[a:a + batch_size].to(device).float())
            batches.append(captured[0].detach().float().cpu())  # its first call (a shared module runs again later)
    finally:
        handle.remove()
    f = torch.cat(batches)
    if f.dim() == 4 and min(f.shape[2:]) >= 4:
        f = F.max_pool2d(f, 4)
    return f.reshape(len(f), -1).double()


def chunked_db(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean Davies-Bouldin index over consecutive chunks of DB_CHUNK_SIZE rows."""
    scores = []
    for a in range(0, len(features), DB_CHUNK_SIZE):
        y = labels[a:a + DB_CHUNK_SIZE].numpy()
        if not 1 < len(np.unique(y)) < len(y):
            raise MeasureError(f"a DB chunk of {len(y)} samples has {len(np.unique(y))} labels; it needs 2 to n - 1")
        scores.append(davies_bouldin_score(features[a:a + DB_CHUNK_SIZE].numpy(), y))
    return float(np.mean(scores))


@torch.no_grad()
def labelwise_mixup_accuracy(model, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int) -> float:
    """The code's ``complexityMixup``: same-label pair mixups at 0.5, accuracy per batch and label."""
    size = 10 * num_classes
    idx = torch.arange(size * MIXUP_BATCHES) % len(x)  # tf.data repeat(): data order, cycled
    device = model_device(model)
    per_label = []
    for label in range(num_classes):
        accs = []
        for b in range(MIXUP_BATCHES):
            chunk = idx[b * size:(b + 1) * size]
            imgs = x[chunk][y[chunk] == label]
            if len(imgs) < 2:
                continue
            i, j = torch.triu_indices(len(imgs), len(imgs), 1)
            mixed = 0.5 * imgs[j] + 0.5 * imgs[i]
            pred = torch.cat([model(mixed[a:a + batch_size].to(device).float()).argmax(1).cpu()
                              for a in range(0, len(mixed), batch_size)])
            accs.append(float((pred == label).double().mean()))
        if accs:
            per_label.append(np.mean(accs))
    if not per_label:
        raise MeasureError("no label has two samples in a mixup batch")
    return float(np.mean(per_label))


@register("dbi_mixup", version=2, sign_reason='the code returns it as a complexity: less separable features and mislabelled mixups predict a larger gap (Natekar & Sharma 2020)',
          sign=1, family="pgdl-winner", stochastic=True,
          description="mean DB index of 4x4-pooled first strided-layer features over 10 shuffled chunks of 120, "
                      "x (1 - label-wise pair-mixup accuracy)",
          reference="Natekar & Sharma 2020, arXiv 2012.02775 (PGDL first place); code: parthnatekar/pgdl "
                    "complexitymeasures.py complexityDB, complexityMixup")
def dbi_mixup(model, init_model, data, settings) -> MeasureValue:
    if len(torch.unique(data.y)) < 2:
        raise MeasureError("the Davies-Bouldin index needs at least 2 classes in the data")
    module, adapted = db_layer(model)
    g = torch.Generator().manual_seed(settings.seed)
    idx = shuffled_stream(len(data.x), DB_CHUNKS * DB_CHUNK_SIZE, g)
    feats = layer_features(model, module, data.x[idx], settings.batch_size)
    db = chunked_db(feats, data.y[idx])
    acc = labelwise_mixup_accuracy(model, data.x, data.y, data.num_classes, settings.batch_size)
    return MeasureValue(db * (1 - acc), {"adapted": float(adapted), "db": db, "mixup_accuracy": acc})
