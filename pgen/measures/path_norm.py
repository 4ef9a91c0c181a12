"""Path norm (Neyshabur et al. 2015; Jiang et al. 2020, eq. 44).

The sum over all input-output paths of the product of squared weights: square every
parameter, feed an all-ones input, sum the outputs. BatchNorm layers right after a
Conv/Linear are folded into it first (as Jiang et al. do); a network with a BatchNorm
that cannot be folded (after an activation) raises, having no path decomposition.
"""

import copy

import torch

from pgen.devices import model_device
from pgen.measures import MeasureError, register
from pgen.measures._util import BOUND_SIGN, fold_batchnorm, has_batchnorm


@register("path_norm", samples="none", sign_reason=BOUND_SIGN,
          size_term='sqrt', sign=1, family="path",
          description="sum over paths of the product of squared weights (all-ones input, squared parameters)",
          reference="Neyshabur et al. 2015; Jiang et al., ICLR 2020 (eq. 44)")
def path_norm(model, init_model, data, settings) -> float:
    squared = fold_batchnorm(model, torch.float64) if has_batchnorm(model) else copy.deepcopy(model).double()
    if has_batchnorm(squared):
        raise MeasureError("path norm is undefined for networks with a BatchNorm that does not follow a Conv/Linear")
    with torch.no_grad():
        for p in squared.parameters():
            p.pow_(2)
        # on the model's device: the contract places the model there, the input must follow
        ones = torch.ones((1, *data.x.shape[1:]), dtype=torch.float64, device=model_device(squared))
        return float(squared(ones).sum())
