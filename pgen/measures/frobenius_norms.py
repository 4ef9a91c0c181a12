"""Frobenius-norm measures (Jiang et al. 2020, eqs. 36-40, 42).

* ``log_prod_of_fro``             sum_i log ||W_i||_F^2
* ``log_sum_of_fro``              log d + (1/d) sum_i log ||W_i||_F^2
* ``log_prod_of_fro_over_margin``   log_prod_of_fro - 2 log gamma
* ``log_sum_of_fro_over_margin``    log d + (1/d) (log_prod_of_fro - 2 log gamma)
* ``dist_fro_init``               sum_i ||W_i - W_i^0||_F^2 (layer weights only, no biases)
* ``param_norm``                  sum_i ||W_i||_F^2
"""

import math

from pgen.measures import MeasureValue, register
from pgen.measures._util import BOUND_SIGN, margin_10th_percentile, weight_matrices


def _fro2(model) -> list[float]:
    return [float(w.square().sum()) for w in weight_matrices(model)]


@register("log_prod_of_fro", samples="none", sign_reason=BOUND_SIGN,
          size_term='log', sign=1, family="frobenius", description="sum of log squared Frobenius norms",
          reference="Jiang et al., ICLR 2020 (eq. 37)")
def log_prod_of_fro(model, init_model, data, settings) -> float:
    return sum(math.log(f) for f in _fro2(model))


@register("log_sum_of_fro", samples="none", sign_reason=BOUND_SIGN,
          size_term='log', sign=1, family="frobenius", description="log d + mean log squared Frobenius norm",
          reference="Jiang et al., ICLR 2020 (eq. 39)")
def log_sum_of_fro(model, init_model, data, settings) -> float:
    f = _fro2(model)
    return math.log(len(f)) + sum(math.log(v) for v in f) / len(f)


@register("log_prod_of_fro_over_margin", sign_reason=BOUND_SIGN,
          size_term='log', sign=1, family="frobenius",
          description="log prod of squared Frobenius norms / margin^2", reference="Jiang et al., ICLR 2020 (eq. 36)")
def log_prod_of_fro_over_margin(model, init_model, data, settings) -> MeasureValue:
    gamma, signed = margin_10th_percentile(model, data, settings)
    return MeasureValue(sum(math.log(f) for f in _fro2(model)) - 2 * math.log(gamma), {"margin_10th": signed})


@register("log_sum_of_fro_over_margin", sign_reason=BOUND_SIGN,
          size_term='log', sign=1, family="frobenius",
          description="log d + (log prod of squared Frobenius norms - 2 log margin) / d",
          reference="Jiang et al., ICLR 2020 (eq. 38)")
def log_sum_of_fro_over_margin(model, init_model, data, settings) -> MeasureValue:
    f = _fro2(model)
    gamma, signed = margin_10th_percentile(model, data, settings)
    return MeasureValue(math.log(len(f)) + (sum(math.log(v) for v in f) - 2 * math.log(gamma)) / len(f),
                        {"margin_10th": signed})


@register("dist_fro_init", samples="none", sign_reason=BOUND_SIGN,
          size_term='sqrt', sign=1, needs_init=True, family="distance",
          description="sum of squared Frobenius norms of (W - W_init), layer weights only",
          reference="Jiang et al., ICLR 2020 (eq. 40)")
def dist_fro_init(model, init_model, data, settings) -> float:
    return sum(float((w - w0).square().sum()) for w, w0 in zip(weight_matrices(model), weight_matrices(init_model)))


@register("param_norm", samples="none", sign_reason=BOUND_SIGN,
          size_term='sqrt', sign=1, family="frobenius", description="sum of squared Frobenius norms of the layer weights",
          reference="Jiang et al., ICLR 2020 (eq. 42)")
def param_norm(model, init_model, data, settings) -> float:
    return sum(_fro2(model))
