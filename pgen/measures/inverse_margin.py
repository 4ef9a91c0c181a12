"""1 / margin^2 with the 10th-percentile output margin (Jiang et al. 2020, eq. 22)."""

from pgen.measures import MeasureValue, register
from pgen.measures._util import margin_10th_percentile


@register("inverse_margin", sign_reason='margin bounds scale with 1/margin^2: a smaller margin predicts a larger gap (Jiang et al. 2020, eq. 22)',
          size_term='sqrt', sign=1, family="margin",
          description="1 / (10th-percentile margin)^2; margin = correct logit - largest other logit",
          reference="Jiang et al., ICLR 2020")
def inverse_margin(model, init_model, data, settings) -> MeasureValue:
    gamma, signed = margin_10th_percentile(model, data, settings)
    return MeasureValue(1.0 / gamma ** 2, {"margin_10th": signed})
