"""pgen's errors: one base class, so the CLI (and users) can tell pgen's refusals from bugs.

Every error pgen raises on purpose derives from :class:`PgenError`. Library errors keep a
built-in second base where callers already catch one (``ValueError`` for bad values,
``OSError`` is left to Python), as scikit-learn's exceptions do. An unknown name (measure,
recipe, dataset, layer, method) is an :class:`UnknownNameError`, a ``ValueError``: never a
``KeyError``, whose message Python prints with quotes.
"""

from __future__ import annotations

__all__ = ["PgenError", "InputError", "UnknownNameError", "ZooError", "MeasureError", "StatsError", "DatasetError",
           "ResultsError", "PgenNotice"]


class PgenError(Exception):
    """Base of every error pgen raises on purpose; the message says what and where."""


class InputError(PgenError, ValueError):
    """A value given to pgen is unusable (NaN features, a 1-D batch, a bad option)."""


class UnknownNameError(PgenError, ValueError):
    """A name pgen does not know (measure, recipe, dataset, architecture, layer, method)."""


class ZooError(PgenError):
    """A zoo, one of its files, or one of its models is unusable; the message names it."""


class MeasureError(PgenError, ValueError):
    """A measure cannot run on this model or data; the message says why."""


class StatsError(PgenError, ValueError):
    """Too few models, a constant column, or an incomplete hparam grid."""


class DatasetError(PgenError, RuntimeError):
    """A dataset cannot be loaded (missing package, no network for a download)."""


class ResultsError(PgenError, ValueError):
    """A results folder or store is missing, empty or does not hold the run asked for."""


class PgenNotice(UserWarning):
    """Something a user should know that stops nothing: an option pgen capped, a duplicate
    manifest row it skipped. The command line prints it as one ``note:`` line."""

