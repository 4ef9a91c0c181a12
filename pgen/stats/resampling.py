"""The design of a zoo, as the statistics see it: what a bootstrap resamples, and how many
tests a family holds.

Seeds of one hyperparameter cell are replicates of one design point, not independent
models: their values move together. Every bootstrap in :mod:`pgen.stats` therefore
resamples whole cells (all seeds of a cell together) wherever some cell holds more than one
model, and single models where every cell holds one (:func:`resampling_unit`). A resample
is a vector of multiplicities, one per model, so each correlation of a resample is computed
from the full-zoo pair matrices at once (:func:`weighted_correlations`), equal to the
statistic of the resampled rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pgen.errors import StatsError

__all__ = ["ResamplingUnit", "resampling_unit", "hyperparameters", "weighted_correlations", "bootstrap_p",
           "percentile_interval", "holm", "check_resamples", "check_level", "MAX_RESAMPLES"]

MAX_RESAMPLES = 1_000_000  # bootstrap resamples or permutations in one call


def check_resamples(count, name: str = "n_boot", *, n_units: int | None = None) -> int:
    """``count`` as a number of resamples (0 to MAX_RESAMPLES), or a StatsError that says why."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise StatsError(f"{name} must be a whole number of resamples, not {count!r}")
    if count < 0:
        raise StatsError(f"{name} must be 0 or more, not {count}")
    if count > MAX_RESAMPLES:
        need = f" (about {count * n_units * 8 / 2**30:.1f} GiB of resamples over {n_units} units)" if n_units else ""
        raise StatsError(f"{name} = {count} is over the limit of {MAX_RESAMPLES}{need}")
    return int(count)


def check_level(level) -> float:
    """A confidence level strictly between 0 and 1, or a StatsError."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise StatsError(f"level must be a number between 0 and 1, not {level!r}") from None
    if not 0 < value < 1:
        raise StatsError(f"level must be between 0 and 1 (e.g. 0.95), not {level!r}")
    return value


def hyperparameters(hparam_grid: Mapping[str, list] | None) -> dict[str, list] | None:
    """The grid without ``seed``: a seed is a replicate, not a hyperparameter, so the
    statistics never condition on it (Psi's groups, the CMI's pairs, the robust view's
    environments); models that differ only in seed are samples of one cell.

    Parameters
    ----------
    hparam_grid : Mapping[str, list] or None
        A zoo's grid.

    Returns
    -------
    dict or None
        The grid without ``seed``; None for None.
    """
    if hparam_grid is None:
        return None
    return {h: v for h, v in hparam_grid.items() if h != "seed"}


@dataclass(frozen=True)
class ResamplingUnit:
    """What a bootstrap resamples.

    Parameters
    ----------
    kind : {"cells", "models"}
        Hyperparameter cells (every seed of a cell together) or models.
    groups : numpy.ndarray of int, shape (n,)
        The unit of each model, 0 .. count - 1.
    """

    kind: str
    groups: np.ndarray
    _members: list = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        groups = np.asarray(self.groups, dtype=np.int64)
        object.__setattr__(self, "groups", groups)
        order = np.argsort(groups, kind="stable")
        sizes = np.bincount(groups)
        object.__setattr__(self, "_members", np.split(order, np.cumsum(sizes)[:-1]))
        object.__setattr__(self, "_order", order)  # the units' members one after another
        object.__setattr__(self, "_sizes", sizes)
        object.__setattr__(self, "_starts", np.cumsum(sizes) - sizes)

    @property
    def n(self) -> int:
        """Models."""
        return len(self.groups)

    @property
    def count(self) -> int:
        """Units (cells or models)."""
        return len(self._members)

    def describe(self) -> str:
        """How the resamples were drawn, for a table's caption: e.g. '48 hyperparameter cells (1-2 models each)'."""
        if self.kind == "models":
            return f"{self.n} models"
        sizes = np.bincount(self.groups)
        return f"{self.count} hyperparameter cells ({sizes.min()}-{sizes.max()} models each)"

    def draws(self, rng: np.random.Generator, n_boot: int) -> np.ndarray:
        """(n_boot, count) unit indices, drawn with replacement, one resample per row."""
        return np.stack([rng.integers(0, self.count, self.count) for _ in range(n_boot)]) if n_boot else \
            np.empty((0, self.count), dtype=np.int64)

    def weights(self, draws: np.ndarray) -> np.ndarray:
        """(n_boot, n) multiplicity of every model in every resample."""
        counts = np.zeros((len(draws), self.count))
        np.add.at(counts, (np.arange(len(draws))[:, None], draws), 1.0)
        return counts[:, self.groups]

    def indices(self, draw: np.ndarray) -> np.ndarray:
        """The rows of one resample (a unit's models together, repeated as often as it was drawn)."""
        # Vectorized (a list of 2000 arrays per resample took 2 of 3 seconds of a 2000-model
        # summary): each drawn unit's slice of ``_order``, the slices laid end to end.
        draw = np.asarray(draw, dtype=np.int64)
        if len(draw) == 0:
            return np.empty(0, dtype=np.int64)
        sizes = self._sizes[draw]
        ends = np.cumsum(sizes)
        return self._order[np.repeat(self._starts[draw] - (ends - sizes), sizes) + np.arange(ends[-1])]

    def subset(self, keep: np.ndarray) -> ResamplingUnit:
        """The unit of the models where ``keep`` is true (cells renumbered; a zoo left with one
        model per cell is resampled by models)."""
        return _unit_from_labels(self.groups[np.asarray(keep, dtype=bool)])


def _unit_from_labels(labels) -> ResamplingUnit:
    codes = pd.factorize(pd.Series(list(labels), dtype=object))[0] if len(labels) else np.empty(0, dtype=np.int64)
    if len(codes) == 0 or np.bincount(codes).max() < 2 or codes.max() == 0:
        # one model per cell, or a single cell (its seeds are then the only replication there is)
        return ResamplingUnit("models", np.arange(len(codes)))
    return ResamplingUnit("cells", codes)


def resampling_unit(table: pd.DataFrame | None = None, *, groups=None, n: int | None = None) -> ResamplingUnit:
    """The unit a bootstrap over these models resamples.

    ``groups`` (one label per model) names the cells; else they come from ``table``'s
    ``hp.<name>`` columns other than ``hp.seed`` (models with equal values share a cell).
    Cells are the unit wherever one of two or more cells holds two or more models;
    otherwise (every cell one model, a single cell, no hyperparameter columns, or neither
    argument) the models are, with ``n`` of them.

    Parameters
    ----------
    table : pandas.DataFrame, optional
        Per-model table with ``hp.<name>`` columns.
    groups : array-like, optional
        One cell label per model (overrides ``table``).
    n : int, optional
        Number of models when neither names cells.

    Returns
    -------
    ResamplingUnit
        The unit and each model's group.

    Examples
    --------
    >>> t = pd.DataFrame({"hp.lr": [0.1, 0.1, 0.01, 0.01], "hp.seed": [0, 1, 0, 1]})
    >>> resampling_unit(t).describe()
    '2 hyperparameter cells (2-2 models each)'
    """
    if groups is None and table is not None:
        cols = sorted(c for c in table.columns if c.startswith("hp.") and c != "hp.seed")
        if cols:
            groups = ["\x1f".join(map(str, row)) for row in table[cols].itertuples(index=False)]
    if groups is None:
        count = len(table) if table is not None else n
        if count is None:
            raise StatsError("resampling_unit needs a table, groups or n")
        return ResamplingUnit("models", np.arange(count))
    return _unit_from_labels(groups)


def weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B, n): the average rank of each model's value within each resample (ties share the
    mean of their ranks, as scipy's ``rankdata``), from the resample's multiplicities."""
    less = (values[None, :] < values[:, None]).astype(float)  # less[i, j]: value j below value i
    equal = (values[None, :] == values[:, None]).astype(float)
    return weights @ less.T + (weights @ equal.T + 1.0) / 2.0


def weighted_correlations(x: np.ndarray, y: np.ndarray, weights: np.ndarray, method: str) -> np.ndarray:
    """One correlation per row of ``weights`` (multiplicities, (B, n)): equal to the
    statistic of the resampled rows to ~1e-15 (Pearson, Spearman, Kendall tau-b). A
    resample where x or y is constant gives NaN."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    support = weights > 0
    constant = np.zeros(len(weights), dtype=bool)
    for v in (x, y):
        lo = np.where(support, v[None, :], np.inf).min(1)
        hi = np.where(support, v[None, :], -np.inf).max(1)
        constant |= lo == hi
    out = np.full(len(weights), np.nan)
    w = weights[~constant]
    if len(w) == 0:
        return out
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "kendall":
            # tau-b = sum_ij w_i w_j sgn(dx) sgn(dy) / sqrt(sum w_i w_j sgn(dx)^2 * sum w_i w_j sgn(dy)^2):
            # copies of one model tie with each other, as in the resampled rows.
            sx, sy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
            quad = lambda m: ((w @ m) * w).sum(1)  # noqa: E731
            out[~constant] = quad(sx * sy) / np.sqrt(quad(sx * sx) * quad(sy * sy))
            return out
        if method == "spearman":
            xs, ys = weighted_ranks(x, w), weighted_ranks(y, w)
        elif method == "pearson":
            xs, ys = np.broadcast_to(x, w.shape), np.broadcast_to(y, w.shape)
        else:
            raise StatsError(f"unknown correlation {method!r}; known: pearson, spearman, kendall")
        total = w.sum(1, keepdims=True)
        xc = xs - (w * xs).sum(1, keepdims=True) / total
        yc = ys - (w * ys).sum(1, keepdims=True) / total
        out[~constant] = (w * xc * yc).sum(1) / np.sqrt((w * xc * xc).sum(1) * (w * yc * yc).sum(1))
    return out


def percentile_interval(values, level: float, n_boot: int) -> tuple[float, float]:
    """The percentile bootstrap interval of the finite ``values``; NaN when fewer than half
    of the ``n_boot`` resamples gave one."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if n_boot == 0 or len(v) < max(1, n_boot // 2):
        return (math.nan, math.nan)
    alpha = (1 - level) / 2
    return tuple(float(q) for q in np.quantile(v, [alpha, 1 - alpha]))


def bootstrap_p(values, null: float = 0.0) -> float:
    """Two-sided bootstrap p-value of ``null``: twice the smaller share of resamples on
    either side of it, each counted with one more ((1 + k) / (1 + B)), at most 1. It is
    below 1 - level about when the percentile interval at that level excludes ``null``;
    its smallest value is 2 / (B + 1), so a family of m tests corrected by Holm needs
    B >= 2m / alpha resamples to reject anything.

    Parameters
    ----------
    values : array-like
        The statistic over the bootstrap resamples (non-finite ones are dropped).
    null : float, default=0.0
        The value tested.

    Returns
    -------
    float
        The two-sided p-value in (0, 1]; NaN without finite resamples.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan
    below, above = np.sum(v <= null), np.sum(v >= null)
    return float(min(1.0, 2 * (1 + min(below, above)) / (1 + len(v))))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error) over the finite entries;
    NaN entries stay NaN and do not count in the family. Reject where adjusted <= alpha.

    Parameters
    ----------
    p_values : array-like
        The family's p-values; NaN entries are not tests.

    Returns
    -------
    numpy.ndarray
        Adjusted p-values, in the input's order.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03, float("nan")]).round(2).tolist()
    [0.03, 0.06, 0.06, nan]
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if len(finite) == 0:
        return out
    if (p[finite] < 0).any() or (p[finite] > 1).any():
        raise StatsError("p-values must lie in [0, 1]")
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out
