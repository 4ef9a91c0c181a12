"""1 / margin^2 with the 10th-percentile output margin (Jiang et al. 2020, eq. 22)."""

from pgen.measures import register
from pgen.measures._util import margin_10th_percentile


@register("inverse_margin", sign=1, family="margin",
          description="1 / (10th-percentile margin)^2; margin = correct logit - largest other logit",
          reference="Jiang et al., ICLR 2020")
def inverse_margin(model, init_model, data, settings) -> float:
    return 1.0 / margin_10th_percentile(model, data, settings) ** 2
