"""The P-vector angle (Liu et al. 2022): pgen's own measure.

The angle, in degrees, between the model's P-vector (top left singular vector of its
penultimate features over the n samples) and the data P-vector (the same for the raw
inputs). Two variants: centered features (pgen's default; see the README for why) and
uncentered, the paper's literal reading.
"""

from __future__ import annotations

from pgen.features import data_p_vector, model_p_vectors
from pgen.measures import register
from pgen.pvector import angle


def _angle(model, data, settings, center: bool) -> float:
    key = ("data_pvector", center)
    if key not in data.cache:
        data.cache[key] = data_p_vector((data.x, data.y), center=center).vector
    pv = model_p_vectors(model, (data.x, data.y), layers=settings.layer, center=center,
                         batch_size=settings.batch_size, device=settings.device)[settings.layer]
    return angle(pv.vector, data.cache[key])


@register("pvector_angle", sign=1, family="p-vector",
          description="angle (deg) between model and data P-vectors, centered features (pgen default)",
          reference="Liu et al., Machine Learning 111, 2022")
def pvector_angle(model, init_model, data, settings) -> float:
    return _angle(model, data, settings, center=True)


@register("pvector_angle_uncentered", sign=1, family="p-vector",
          description="angle (deg) between model and data P-vectors, uncentered features (paper's literal reading)",
          reference="Liu et al., Machine Learning 111, 2022")
def pvector_angle_uncentered(model, init_model, data, settings) -> float:
    return _angle(model, data, settings, center=False)
