"""pgen: predict which models of a zoo generalize, from the P-vector angle and other measures."""

__version__ = "0.1.0"
DISTRIBUTION = "pgen-pvector"  # what `pip install` takes; the import name and the command are `pgen`

# Everything loads on first use (module __getattr__ below), so that `import pgen` and
# `pgen --version` / `--help` do not pay for numpy, scipy and torch.
_PVECTOR = ("PVectorResult", "StreamingPVector", "UnstablePVectorWarning", "angle", "angle_matrix", "p_vector",
            "p_vector_spectrum")

__all__ = [
    "PVectorResult",
    "StreamingPVector",
    "UnstablePVectorWarning",
    "angle",
    "angle_matrix",
    "p_vector",
    "p_vector_spectrum",
    "Zoo",
    "load_zoo",
    "score_models",
    "model_p_vectors",
    "extract_features",
    "data_p_vector",
    "__version__",
]


def __getattr__(name):
    if name in _PVECTOR:
        from pgen import pvector

        return getattr(pvector, name)
    if name == "load_zoo":
        from pgen.zoo import load_zoo

        return load_zoo
    if name == "score_models":
        from pgen.score import score_models

        return score_models
    if name == "Zoo":
        from pgen.zoo import Zoo

        return Zoo
    if name in ("model_p_vectors", "extract_features", "data_p_vector"):
        from pgen import features

        return getattr(features, name)
    raise AttributeError(f"module 'pgen' has no attribute {name!r}")
