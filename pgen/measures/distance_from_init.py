"""Squared distance from the initial weights, the PGDL kit's second baseline."""

from pgen.measures import register
from pgen.measures._util import paired_weights


@register("distance_from_init", samples="none", sign_reason="the PGDL starting kit's baseline, which returns it as a complexity: larger predicts a larger gap (Nagarajan & Kolter 2019: distance from init grows with the gap)",
          sign=1, needs_init=True, family="distance",
          description="squared Euclidean distance of all weights from their initial values (PGDL kit baseline)",
          reference="PGDL starting kit; Jiang et al. 2020")
def distance_from_init(model, init_model, data, settings) -> float:
    return float(sum((w.double() - w0.double()).square().sum() for _, w, w0 in paired_weights(model, init_model)))
