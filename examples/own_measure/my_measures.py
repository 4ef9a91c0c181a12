"""Two measures of your own, as pgen loads them with `--plugin my_measures.py --trust-code`.

`weight_energy` is written for pgen (the measure signature of `pgen.measures`); `kit_style`
is a PGDL-competition-style `complexity(model, dataset)` (here the mean squared Jacobian-free
margin of the logits), registered through the adapter. Both are checked by
`pgen measures check my_measures.py --trust-code` and ranked by `pgen benchmark`.
"""

import torch

from pgen.measures import register
from pgen.measures.adapters import register_complexity


@register("weight_energy", description="mean squared weight over all parameters", sign=1,
          reference="examples/own_measure (a worked example, not a published measure)",
          sign_reason="an illustration: larger weights read as a more complex function, predicted to generalize "
                      "worse", samples="none")
def weight_energy(model, init_model, data, settings):
    params = list(model.parameters())
    with torch.no_grad():
        return float(sum(p.pow(2).sum() for p in params) / sum(p.numel() for p in params))


def logit_spread(model, dataset):
    """PGDL style: a complexity (larger predicts a larger gap) of a model and (x, y) batches."""
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in dataset.batch(64):
            logits = model(x)
            total += float(logits.std(dim=1).sum())
            count += len(x)
    return -total / count  # a small spread of the logits: an unsure model, predicted to generalize worse


register_complexity(logit_spread, name="kit_style_logit_spread",
                    reference="examples/own_measure (a PGDL-style submission, for illustration)")
