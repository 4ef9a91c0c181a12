"""Two trivial baselines that every benchmark table carries, so that leakage shows at once.

* ``own_train_error``: 1 - accuracy on the model's own training samples, with the labels it
  was trained on (the first n of them; the shared samples where the zoo records none).
  In a zoo trained to a criterion it is near 0 for every model and carries no ranking; in
  a zoo trained for a fixed number of epochs it ranks models by how far they got.
* ``shared_sample_error``: 1 - accuracy on the shared clean samples (the first n of the
  training split, true labels). For a model that never trained on many of them (a
  ``train_fraction`` below 1, noisy labels) they are held-out samples, and this baseline
  is close to test error: a measure that ranks no better than it learned nothing that
  held-out accuracy would not tell.

Neither is a generalization measure of any paper; both are pgen's controls.
"""

from pgen.measures import register
from pgen.measures._util import accuracy

_SIGN_REASON = ("a control, not a predictor of any paper: more errors on training samples go with more "
                "errors on test samples, so +1 reads it as an error")


@register("own_train_error", sign=1, family="baseline", fidelity="pgen's own", sign_reason=_SIGN_REASON,
          description="1 - accuracy on the model's own training samples and labels (control)",
          reference="pgen's control for training-set leakage (issue: a benchmark people can trust)")
def own_train_error(model, init_model, data, settings) -> float:
    return 1.0 - accuracy(model, data.x, data.y, settings)


@register("shared_sample_error", sign=1, family="baseline", fidelity="pgen's own", samples="shared",
          sign_reason=_SIGN_REASON,
          description="1 - accuracy on the shared clean samples, which some models never trained on (control)",
          reference="pgen's control for held-out leakage (issue: a benchmark people can trust)")
def shared_sample_error(model, init_model, data, settings) -> float:
    return 1.0 - accuracy(model, data.x, data.y, settings)
