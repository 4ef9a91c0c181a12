"""WeightWatcher's data-free layer metrics (Martin & Mahoney), through the optional
``weightwatcher`` package (``pip install 'pgen-pvector[weightwatcher]'``).

Each measure is the average over layers of ``WeightWatcher(model).analyze()``:
``ww_alpha`` (power-law exponent of the layer eigenvalue spectra; smaller is better
trained), WeightWatcher's own predictors of test accuracy ``ww_alpha_weighted``
(alpha-hat) and ``ww_log_alpha_norm``, and ``ww_log_norm``, ``ww_log_spectral_norm``
and ``ww_stable_rank``. All have sign +1 (each measure's ``sign_reason`` gives the
source). The analysis uses the package's default ``min_evals``, so layers with too few
eigenvalues for a power-law fit are skipped rather than fitted on noise.
"""

from __future__ import annotations

import math

from pgen import DISTRIBUTION
from pgen.measures import MeasureError, register


def _summary(model, data) -> dict:
    # One slot: the four ww_* measures of one model share one analysis, and no model is kept alive longer.
    cached = data.cache.get("weightwatcher")
    if cached is not None and cached[0] is model:
        return cached[1]
    try:
        import weightwatcher as ww
    except ImportError:
        raise MeasureError("WeightWatcher measures need the optional package: "
                           f"pip install '{DISTRIBUTION}[weightwatcher]'") from None
    import contextlib
    import io
    import logging

    import warnings

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    # it prints fit diagnostics and warns (powerlaw's RuntimeWarnings) on stdout, stderr and warnings
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        details = ww.WeightWatcher(model=model).analyze()  # the package's default min_evals
    summary = {c: float(details[c].mean()) for c in COLUMNS if c in details}
    data.cache["weightwatcher"] = (model, summary)
    return summary


MM2021 = "Martin & Mahoney 2021 (Nat. Commun. 12:4122)"
COLUMNS = {
    "alpha": ("mean power-law exponent alpha of the layer spectra",
              MM2021 + ": smaller layer alphas (heavier-tailed spectra) go with better test accuracy"),
    "alpha_weighted": ("mean alpha * log10(largest eigenvalue) over layers (WeightWatcher's alpha-hat)",
                       MM2021 + ": alpha-hat is their predictor of test accuracy; smaller predicts better"),
    "log_alpha_norm": ("mean log10 Schatten alpha-norm of the layers (WeightWatcher's predictor)",
                       MM2021 + ": the log alpha-norm is their predictor of test accuracy; smaller predicts better"),
    "log_norm": ("mean log Frobenius norm of the layers",
                 MM2021 + ": a norm-based capacity metric; larger predicts worse test accuracy"),
    "log_spectral_norm": ("mean log spectral norm of the layers",
                          MM2021 + ": a norm-based capacity metric; larger predicts worse test accuracy"),
    "stable_rank": ("mean stable rank of the layers",
                    "no published source for the direction: pgen's choice (larger, less compressible layers, as "
                    "capacity); treat it as unvalidated"),
}


def _make(column: str, description: str, sign_reason: str):
    def measure(model, init_model, data, settings) -> float:
        value = _summary(model, data).get(column, math.nan)
        if not math.isfinite(value):
            raise MeasureError(f"WeightWatcher returned no finite {column} for this model")
        return value

    register(f"ww_{column}", samples="none", sign=1, family="weightwatcher", description=description + " (WeightWatcher)",
             requires="weightwatcher", sign_reason=sign_reason,
             reference="Martin, Peng & Mahoney 2021, Nat. Commun. 12:4122; code: the weightwatcher package "
                       "(WeightWatcher.analyze, its default min_evals)")(measure)


for _column, (_description, _reason) in COLUMNS.items():
    _make(_column, _description, _reason)
