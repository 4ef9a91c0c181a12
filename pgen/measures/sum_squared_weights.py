"""Sum of squared weights, the PGDL kit's first baseline.

Over every floating-point tensor of the model state (parameters and BatchNorm running
statistics), exactly as the kit sums ``model.get_weights()``.
"""

from pgen.measures import register
from pgen.measures._util import all_weights


@register("sum_squared_weights", samples="none", sign_reason="the PGDL starting kit's baseline, which returns it as a complexity: larger predicts a larger gap",
          sign=1, family="norm",
          description="sum of squared weights incl. BN statistics (PGDL kit baseline)",
          reference="PGDL starting kit")
def sum_squared_weights(model, init_model, data, settings) -> float:
    return float(sum(w.double().square().sum() for w in all_weights(model).values()))
