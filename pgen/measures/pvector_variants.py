"""The P-vector variants registered in ``docs/pvector-variants.md`` (2026-12-07), before any
was scored: the definitions there are the contract, and these functions compute them.

Every variant uses centered features (pgen's reading of the paper; ``pvector_angle_uncentered``
keeps the literal one), sign +1 (a larger angle predicts worse generalization, Liu et al.
2022, sec. 5 and A.8), angles in degrees by :func:`pgen.pvector.angle`:

* ``pvector_angle_layer_mean``: the mean over hidden layers of each layer's model-to-data
  angle. A hidden layer is every convolution or ``Linear`` but the last ``Linear``, taken
  after the activation that follows it (a layer with none, as the Small CNN Zoo's "linear"
  runs, at its own output); one forward pass for all layers.
* ``pvector_subspace_k5``: the mean of the 5 principal angles between the top-5 left singular
  subspaces of the penultimate features and of the data (Bjorck and Golub 1973).
* ``pvector_angle_test_inputs``: the angle on the first test inputs (no labels).
* ``pvector_angle_pseudo_test``: the angle on the pseudo-test copies of the shared samples.
* ``pvector_feature_shift``: the angle between the top right singular vectors (feature-space
  principal directions) of the penultimate features on the training samples and on the test
  inputs (P-vectors of two sample sets live in different spaces; right vectors do not).
* ``pvector_angle_own_data``: the angle on the model's own training samples, the data
  P-vector from those inputs.
"""

from __future__ import annotations

import math

import numpy as np

from pgen.features import extract_features, model_p_vectors
from pgen.measures import MeasureError, MeasureValue, register
from pgen.measures._util import ACTIVATIONS, is_conv, is_dense, keras_layers
from pgen.measures.pvector_angle import data_vector, scored_p_vector
from pgen.pvector import angle

REFERENCE = ("docs/pvector-variants.md (registered 2026-12-07), after Liu et al., Machine Learning 111, 2022 "
             "(A.5 layers, A.7 singular vectors, A.8 the model-to-data angle)")
SIGN_REASON = ("Liu et al. 2022 (sec. 5, A.8): a model whose principal subspace is farther from the data's "
               "generalizes worse; the registration keeps the angle's sign for every variant")


def _model_angle(model, inputs, x, data, settings, key) -> float:
    pv = scored_p_vector(model, data, inputs, x, settings, center=True)
    return angle(pv.vector, data_vector(data, x, key, center=True))


def hidden_layers(model) -> list[str]:
    """The module names whose outputs are the model's hidden layers (module docstring): for
    every convolution or Linear but the last Linear, the first activation after it (before
    the next such layer; a BatchNorm between is passed over), else the layer itself."""
    names = {id(m): n for n, m in model.named_modules()}
    leaves = [m for layer, out in keras_layers(model) for m in dict.fromkeys((layer, out))]
    weighted = [i for i, m in enumerate(leaves) if is_conv(m) or is_dense(m)]
    if weighted and is_dense(leaves[weighted[-1]]):
        weighted = weighted[:-1]  # the logits layer
    out = []
    for j, i in enumerate(weighted):
        end = weighted[j + 1] if j + 1 < len(weighted) else len(leaves)
        activation = next((m for m in leaves[i + 1:end] if isinstance(m, ACTIVATIONS)), leaves[i])
        if id(activation) in names:
            out.append(names[id(activation)])
    return list(dict.fromkeys(out))


@register("pvector_angle_layer_mean", family="p-vector", sign=1, samples="shared", fidelity="pgen's own",
          sign_reason=SIGN_REASON, reference=REFERENCE,
          description="mean over hidden layers of the centered model-to-data P-vector angle (deg)")
def pvector_angle_layer_mean(model, init_model, data, settings) -> MeasureValue:
    layers = hidden_layers(model)
    if not layers:
        raise MeasureError("the model has no hidden convolution or Linear layer")
    pvs = model_p_vectors(model, (data.x, data.y), layers=layers, center=True, batch_size=settings.batch_size,
                          device=settings.device, allow_tf32=settings.allow_tf32)
    target = data_vector(data, data.x, ("data_pvector", True), center=True)
    angles = [angle(pvs[name].vector, target) for name in layers]
    return MeasureValue(float(np.mean(angles)), {"layers": float(len(angles)), "first": angles[0],
                                                 "last": angles[-1]})


def _top_left(matrix: np.ndarray, k: int) -> np.ndarray:
    """The top-k left singular vectors of the centered matrix; a MeasureError where they do
    not span a unique k-dimensional subspace (rank below k, e.g. the constant features of a
    network whose units all died: LAPACK would return an arbitrary basis, and an angle)."""
    centered = matrix - matrix.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(centered, full_matrices=False)
    if s[0] == 0 or s[k - 1] <= 1e-12 * s[0]:
        raise MeasureError(f"the centered features ({matrix.shape[0]} x {matrix.shape[1]}) have rank below {k}: "
                           f"their top-{k} subspace is undefined")
    return u[:, :k]


@register("pvector_subspace_k5", family="p-vector", sign=1, samples="shared", fidelity="pgen's own",
          sign_reason=SIGN_REASON, reference=REFERENCE,
          description="mean of the 5 principal angles (deg) between the top-5 centered singular subspaces of "
                      "penultimate features and data")
def pvector_subspace_k5(model, init_model, data, settings) -> MeasureValue:
    k = 5
    feats = extract_features(model, (data.x, data.y), layers=settings.layer, batch_size=settings.batch_size,
                             device=settings.device, allow_tf32=settings.allow_tf32)[settings.layer]
    if min(feats.shape) < k:
        raise MeasureError(f"the features ({feats.shape[0]} x {feats.shape[1]}) have no {k}-dimensional subspace")
    key = ("data_top_left", k)
    if key not in data.cache:
        data.cache[key] = _top_left(data.x.reshape(len(data.x), -1).double().numpy(), k)
    cosines = np.linalg.svd(_top_left(feats.astype(np.float64), k).T @ data.cache[key], compute_uv=False)
    angles = np.degrees(np.arccos(np.clip(cosines, 0.0, 1.0)))
    return MeasureValue(float(angles.mean()), {"smallest": float(angles.min()), "largest": float(angles.max())})


@register("pvector_angle_test_inputs", family="p-vector", sign=1, samples="shared", fidelity="pgen's own",
          inputs_from=("test",), sign_reason=SIGN_REASON, reference=REFERENCE,
          description="the centered P-vector angle (deg) on the first test inputs (no labels)")
def pvector_angle_test_inputs(model, init_model, data, settings) -> float:
    return _model_angle(model, "test", data.x_test, data, settings, ("data_pvector_test", True))


@register("pvector_angle_pseudo_test", family="p-vector", sign=1, samples="shared", fidelity="pgen's own",
          inputs_from=("pseudo-test",), sign_reason=SIGN_REASON, reference=REFERENCE,
          description="the centered P-vector angle (deg) on pseudo-test copies of the shared samples")
def pvector_angle_pseudo_test(model, init_model, data, settings) -> float:
    return _model_angle(model, "pseudo", data.x_pseudo, data, settings, ("data_pvector_pseudo", True))


@register("pvector_feature_shift", family="p-vector", sign=1, samples="shared", fidelity="pgen's own",
          inputs_from=("test",), sign_reason=SIGN_REASON + " (here: the principal feature direction moving "
                                                           "from training to test inputs)",
          reference=REFERENCE + "; right singular vectors instead of P-vectors (see the docstring)",
          description="angle (deg) between the top feature-space singular directions on training and on test "
                      "inputs (penultimate, centered)")
def pvector_feature_shift(model, init_model, data, settings) -> float:
    directions = []
    for inputs, x in (("train", data.x), ("test", data.x_test)):
        pv = scored_p_vector(model, data, inputs, x, settings, center=True)
        if pv.right_vector is None:
            raise MeasureError("the P-vector solver returned no right singular vector")
        directions.append(pv.right_vector)
    value = angle(*directions)
    if not math.isfinite(value):
        raise MeasureError("the feature-space angle is undefined")
    return value


@register("pvector_angle_own_data", family="p-vector", sign=1, samples="own", fidelity="pgen's own",
          sign_reason=SIGN_REASON, reference=REFERENCE,
          description="the centered P-vector angle (deg) on the model's own training samples")
def pvector_angle_own_data(model, init_model, data, settings) -> MeasureValue:
    # the data P-vector of these very inputs: per model when they are its own, cached when shared
    key = ("data_pvector", True) if not data.own else ("data_pvector_own", id(data))
    value = _model_angle(model, "train", data.x, data, settings, key)
    if data.own:
        data.cache.pop(key, None)  # one model's own samples: nothing to share
    return MeasureValue(value, {"own_samples": float(data.own)})
