"""Path norm (Neyshabur et al. 2015; Jiang et al. 2020, eq. 44).

The sum over all input-output paths of the product of squared weights: square every
parameter, feed an all-ones input, sum the outputs. Defined for networks without
BatchNorm (a running-statistics normalization has no path decomposition); those raise.
"""

import copy

import torch
from torch import nn

from pgen.measures import MeasureError, register


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) or type(m).__name__ == "BatchNormalization"
               for m in model.modules())


@register("path_norm", sign=1, family="path",
          description="sum over paths of the product of squared weights (all-ones input, squared parameters)",
          reference="Neyshabur et al. 2015; Jiang et al., ICLR 2020 (eq. 44)")
def path_norm(model, init_model, data, settings) -> float:
    if _has_batchnorm(model):
        raise MeasureError("path norm is undefined for networks with BatchNorm")
    squared = copy.deepcopy(model).double()
    with torch.no_grad():
        for p in squared.parameters():
            p.pow_(2)
        ones = torch.ones((1, *data.x.shape[1:]), dtype=torch.float64)
        return float(squared(ones).sum())
