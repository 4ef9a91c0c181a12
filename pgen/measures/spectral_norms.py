"""Spectral-norm measures (Jiang et al. 2020, eqs. 31-35, 41).

With d layers of weight matrices W_i (conv kernels reshaped to (out, in*kh*kw)) and the
10th-percentile margin gamma:

* ``log_prod_of_spec``            sum_i log ||W_i||_2^2
* ``log_sum_of_spec``             log d + (1/d) sum_i log ||W_i||_2^2
* ``log_prod_of_spec_over_margin``  log_prod_of_spec - 2 log gamma
* ``log_sum_of_spec_over_margin``   log d + (1/d) (log_prod_of_spec - 2 log gamma)
* ``dist_spec_init``              sum_i ||W_i - W_i^0||_2^2

BatchNorm layers that directly follow a Conv/Linear are folded into its weights first, as
Jiang et al. do (:func:`pgen.measures._util.weight_matrices`). The margin measures use
|gamma| as the reference code does and store the signed gamma as ``.margin_10th``.
"""

import math

from pgen.measures import MeasureValue, register
from pgen.measures._util import BOUND_SIGN, margin_10th_percentile, spectral_norm, weight_matrices


def _log_prod(model) -> tuple[float, int]:
    mats = weight_matrices(model)
    return sum(math.log(spectral_norm(w) ** 2) for w in mats), len(mats)


@register("log_prod_of_spec", samples="none", sign_reason=BOUND_SIGN,
          size_term='log', sign=1, family="spectral", description="sum of log squared spectral norms",
          reference="Jiang et al., ICLR 2020 (eq. 32)")
def log_prod_of_spec(model, init_model, data, settings) -> float:
    return _log_prod(model)[0]


@register("log_sum_of_spec", samples="none", sign_reason=BOUND_SIGN,
          size_term='log', sign=1, family="spectral",
          description="log d + mean log squared spectral norm (log of the sum bound)",
          reference="Jiang et al., ICLR 2020 (eq. 35)")
def log_sum_of_spec(model, init_model, data, settings) -> float:
    lp, d = _log_prod(model)
    return math.log(d) + lp / d


@register("log_prod_of_spec_over_margin", sign_reason=BOUND_SIGN,
          size_term='log', sign=1, family="spectral",
          description="log prod of squared spectral norms / margin^2", reference="Jiang et al., ICLR 2020 (eq. 31)")
def log_prod_of_spec_over_margin(model, init_model, data, settings) -> MeasureValue:
    gamma, signed = margin_10th_percentile(model, data, settings)
    return MeasureValue(_log_prod(model)[0] - 2 * math.log(gamma), {"margin_10th": signed})


@register("log_sum_of_spec_over_margin", sign_reason=BOUND_SIGN,
          size_term='log', sign=1, family="spectral",
          description="log d + (log prod of squared spectral norms - 2 log margin) / d",
          reference="Jiang et al., ICLR 2020 (eq. 34)")
def log_sum_of_spec_over_margin(model, init_model, data, settings) -> float:
    lp, d = _log_prod(model)
    gamma, signed = margin_10th_percentile(model, data, settings)
    return MeasureValue(math.log(d) + (lp - 2 * math.log(gamma)) / d, {"margin_10th": signed})


@register("dist_spec_init", samples="none", sign_reason=BOUND_SIGN,
          size_term='sqrt', sign=1, needs_init=True, family="distance",
          description="sum of squared spectral norms of (W - W_init)", reference="Jiang et al., ICLR 2020 (eq. 41)")
def dist_spec_init(model, init_model, data, settings) -> float:
    return sum(spectral_norm(w - w0) ** 2 for w, w0 in zip(weight_matrices(model), weight_matrices(init_model)))
