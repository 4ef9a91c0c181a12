"""P-vector math: arrays in, vectors and spectra out.

The P-vector of an ``n x d`` feature matrix is its top *left* singular vector, a unit
vector in sample space R^n (Liu et al., Machine Learning 111, 2022). Because it lives in
sample space, P-vectors of models with different widths can be compared by the angle
between them.

Conventions used throughout pgen
--------------------------------
* **Sign.** Singular vectors are defined up to sign. pgen returns the vector whose entry
  of largest magnitude is positive (the first such entry on ties), so repeated calls and
  different methods agree bit-for-bit in sign.
* **Centering.** ``center=True`` subtracts the column (feature) means first, i.e. the
  P-vector is the top principal-component score vector (PCA reading).
  ``center=False`` uses the raw matrix (plain SVD reading). The default is ``True``:
  on digits, uncentered angles sit at 4-9 degrees for every model *including random
  initialisation*, because the top uncentered direction is dominated by the mean
  activation; only centered angles move with training (see docs/findings/centering.md, "Choosing the
  centering default", and ``pgen study``).
* **Stability.** The vector is numerically determined only when sigma1 > sigma2. With a
  relative gap ``(sigma1 - sigma2) / sigma1`` below ``min_gap`` (default 1e-3) a
  perturbation of the features at float32 rounding level can turn the vector by a
  visible angle; pgen then warns (:class:`UnstablePVectorWarning`) and marks the result
  ``stable=False``. It never substitutes a randomized solver: those are 11 to 74 degrees
  off at gaps near 1.02 (``python benchmarks/pvector.py``).
The package is math only (arrays in, vectors and spectra out): ``solvers`` (exact, gram,
lanczos, torch), ``streaming`` (:class:`StreamingPVector`), ``angles``, ``result``
(:class:`PVectorResult`) and ``_validation``.
"""

from pgen.pvector.angles import angle, angle_matrix
from pgen.pvector.result import DEFAULT_MIN_GAP, PVectorResult, UnstablePVectorWarning
from pgen.pvector.solvers import METHODS, p_vector, p_vector_spectrum, top_singular_vectors
from pgen.pvector.streaming import StreamingPVector

__all__ = [
    "DEFAULT_MIN_GAP",
    "METHODS",
    "PVectorResult",
    "StreamingPVector",
    "UnstablePVectorWarning",
    "angle",
    "angle_matrix",
    "p_vector",
    "p_vector_spectrum",
    "top_singular_vectors",
]
