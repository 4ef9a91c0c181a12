"""The P-vector angle (Liu et al. 2022): pgen's own measure.

The angle, in degrees, between the model's P-vector (top left singular vector of its
features at ``settings.layer``, penultimate by default, over the n samples) and the data
P-vector (the same for the raw inputs). ``pvector_angle`` centers the features when
``settings.center`` is true (pgen's default; docs/findings/centering.md says why); the paper does not
say, so ``pvector_angle_uncentered`` always gives its literal, uncentered reading.

Extra values stored beside the angle (``pvector_angle.<name>``):

* ``sigma_ratio``: sigma1 / sigma2 of the model's feature matrix;
* ``relative_spectral_gap``: (sigma1 - sigma2) / sigma1; below ``min_gap`` the P-vector is
  numerically unstable (``stable`` = 0);
* ``explained_variance``: sigma1^2 over the total energy of the (centered) features.
"""

from __future__ import annotations

from pgen.features import model_p_vectors
from pgen.measures import MeasureValue, register
from pgen.pvector import angle, p_vector


# What each P-vector measure reads, as (inputs, center): "train" is the samples the measure
# is given (data.x), "test" and "pseudo" the first n test inputs and pseudo-test copies.
# Scoring computes these P-vectors in the forward pass it runs over that split for its
# accuracies, and hands them over in MeasureData.model_pvectors.
_READS = {
    "pvector_angle": lambda s: [("train", s.center)],
    "pvector_angle_uncentered": lambda s: [("train", False)],
    "pvector_angle_test_inputs": lambda s: [("test", True)],
    "pvector_angle_pseudo_test": lambda s: [("pseudo", True)],
    "pvector_feature_shift": lambda s: [("train", True), ("test", True)],
    "pvector_angle_own_data": lambda s: [("train", True)],
}


def feature_reads(measures, settings) -> dict[str, list[tuple[str, bool]]]:
    """``{measure: [(inputs, center), ...]}`` for the measures among ``measures`` whose
    P-vectors (at ``settings.layer``) scoring can compute in its accuracy passes."""
    return {m: _READS[m](settings) for m in measures if m in _READS}


def scored_p_vector(model, data, inputs: str, x, settings, center: bool):
    """The P-vector of ``model`` at ``settings.layer`` over ``x`` (the ``inputs`` of ``data``):
    the one scoring computed in its accuracy pass when there is one for this model, else a
    pass of its own."""
    done = data.model_pvectors[1] if data.model_pvectors and data.model_pvectors[0] is model else {}
    pv = done.get((inputs, settings.layer, center))
    if pv is None:
        pv = model_p_vectors(model, (x, data.y[:len(x)]), layers=settings.layer, center=center,
                             batch_size=settings.batch_size, device=settings.device,
                             allow_tf32=settings.allow_tf32)[settings.layer]
    return pv


def data_vector(data, x, key, center: bool):
    """The P-vector of the raw inputs ``x``, kept in the zoo's cache under ``key``. The inputs
    are in memory, so the auto solver works on their smaller side instead of a d x d Gram
    (d = 3072 for 32x32 colour images, whose eigensolve dominated a few-model run)."""
    if key not in data.cache:
        data.cache[key] = p_vector(x.reshape(len(x), -1).float().cpu().numpy(), center=center)
    return data.cache[key]


def _angle(model, data, settings, center: bool) -> MeasureValue:
    target = data_vector(data, data.x, ("data_pvector", center), center)
    pv = scored_p_vector(model, data, "train", data.x, settings, center)
    extra = {"sigma_ratio": pv.gap, "relative_spectral_gap": pv.relative_gap, "explained_variance": float(pv.explained_variance_ratio[0]),
             "stable": float(pv.stable)}
    return MeasureValue(angle(pv.vector, target), extra)


@register("pvector_angle", sign_reason='Liu et al. 2022 (sec. 5, app. A.8): the angle to the data P-vector shrinks as training converges and a smaller angle goes with better test performance',
          fidelity='inspired by', sign=1, family="p-vector", samples="shared",
          description="angle (deg) between model and data P-vectors (centered features unless --no-center)",
          reference="Liu et al., Machine Learning 111, 2022 (centering: pgen's choice, docs/findings/centering.md)")
def pvector_angle(model, init_model, data, settings) -> MeasureValue:
    return _angle(model, data, settings, center=settings.center)


@register("pvector_angle_uncentered", sign_reason='Liu et al. 2022 (sec. 5, app. A.8): the angle to the data P-vector shrinks as training converges and a smaller angle goes with better test performance',
          sign=1, family="p-vector", samples="shared",
          description="angle (deg) between model and data P-vectors, uncentered features (paper's literal reading)",
          reference="Liu et al., Machine Learning 111, 2022")
def pvector_angle_uncentered(model, init_model, data, settings) -> MeasureValue:
    return _angle(model, data, settings, center=False)
