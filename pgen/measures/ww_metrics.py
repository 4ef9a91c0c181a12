"""WeightWatcher's data-free layer metrics (Martin & Mahoney), through the optional
``weightwatcher`` package (``pip install 'pgen[weightwatcher]'``).

Each measure is the average over layers of ``WeightWatcher(model).analyze()``:
``ww_alpha`` (power-law exponent of the layer eigenvalue spectra; smaller is better
trained), ``ww_log_norm``, ``ww_log_spectral_norm`` and ``ww_stable_rank``. All have
sign +1. WeightWatcher needs about 50 eigenvalues per layer for a stable power-law fit,
so on tiny layers alpha is noisy.
"""

from __future__ import annotations

import math

from pgen.measures import MeasureError, register


def _summary(model, data) -> dict:
    # One slot: the four ww_* measures of one model share one analysis, and no model is kept alive longer.
    cached = data.cache.get("weightwatcher")
    if cached is not None and cached[0] is model:
        return cached[1]
    try:
        import weightwatcher as ww
    except ImportError:
        raise MeasureError("WeightWatcher measures need the optional package: pip install 'pgen[weightwatcher]'") from None
    import contextlib
    import io
    import logging

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints fit diagnostics
        details = ww.WeightWatcher(model=model).analyze(min_evals=0)
    summary = {c: float(details[c].mean()) for c in ("alpha", "log_norm", "log_spectral_norm", "stable_rank")
               if c in details}
    data.cache["weightwatcher"] = (model, summary)
    return summary


def _make(column: str, description: str):
    def measure(model, init_model, data, settings) -> float:
        value = _summary(model, data).get(column, math.nan)
        if not math.isfinite(value):
            raise MeasureError(f"WeightWatcher returned no finite {column} for this model")
        return value

    register(f"ww_{column}", sign=1, family="weightwatcher", description=description, requires="weightwatcher",
             reference="Martin & Mahoney; the weightwatcher package")(measure)


_make("alpha", "mean power-law exponent alpha of the layer spectra (WeightWatcher)")
_make("log_norm", "mean log Frobenius norm of the layers (WeightWatcher)")
_make("log_spectral_norm", "mean log spectral norm of the layers (WeightWatcher)")
_make("stable_rank", "mean stable rank of the layers (WeightWatcher)")
