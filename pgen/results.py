"""Scoring runs as objects: what ``pgen score`` produced, read back from its results store.

A :class:`ScoreRun` holds everything the report needs (the zoo's description and
per-model table, the settings, one row per model with every target and measure, the
failures), read from ``results.sqlite`` alone: the zoo's table and description are saved
with the run, so a report can be rebuilt after the zoo folder has moved or been deleted.
Dependencies run one way: :mod:`pgen.score` writes the store, this module reads it, and
:mod:`pgen.report` consumes the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pgen.errors import ResultsError
from pgen.store import ResultsStore

__all__ = ["ScoreRun", "load_run", "load_runs", "run_from_store", "measure_settings"]


def measure_settings(run_settings: dict, measure: str) -> dict:
    """The settings one measure's stored values depend on: the run's plus the measure's name
    (so each measure resumes on its own) and, once its definition has changed, its version
    (so values stored by an earlier definition are not reused), and a learned predictor's
    digest."""
    from pgen.measures import REGISTRY, _load_all

    _load_all()
    version = REGISTRY[measure].version if measure in REGISTRY else 1
    identity = REGISTRY[measure].identity if measure in REGISTRY else ""
    return {**run_settings, "measure": measure, **({"measure_version": version} if version > 1 else {}),
            **({"measure_identity": identity} if identity else {})}


@dataclass
class ScoreRun:
    """One scoring run: a zoo, its settings, and one row per model.

    Attributes
    ----------
    run_id : str
        The hash of ``settings`` (the zoo's content identity included).
    zoo : dict
        The zoo's description (format, name, identity, root, models) when it was scored.
    settings : dict
        What determines the values (zoo identity, split, samples, layer, centering, seed...).
    measures : list of str
        The registered measures of the run, in the order they were asked for.
    table : DataFrame
        One row per model: ``model_id``, ``hp.<name>``, the zoo's recorded metrics as
        ``zoo.<name>``, pgen's targets (``train_acc``, ``test_acc``, ``pseudo_test_acc``,
        losses), ``gap`` and ``test_error``, each measure with its extra values
        ``<measure>.<key>`` and ``seconds.<measure>``.
    errors : DataFrame
        ``model_id``, ``measure`` (empty when the whole model failed) and ``error``.
    hparam_grid : dict or None
        ``{hparam: possible values}`` when the zoo is a full grid.
    info : dict
        The pseudo-test policy, the number of samples used, the device.
    store_path : Path
    computed : int
        Models this call computed something for (0 for a run read back by ``pgen report``).
    """

    run_id: str
    zoo: dict
    settings: dict
    measures: list[str]
    table: pd.DataFrame
    errors: pd.DataFrame
    hparam_grid: dict | None
    info: dict
    store_path: Path
    computed: int = 0
    zoo_table: pd.DataFrame = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.zoo.get("name", "zoo"))

    @property
    def models_scored(self) -> int:
        """Models with every target (their measures may still have failed)."""
        return int(len(self.table))

    @property
    def models_failed(self) -> int:
        return int((self.errors["measure"] == "").sum()) if len(self.errors) else 0

    def __repr__(self) -> str:
        return (f"ScoreRun(zoo={self.name!r}, run_id={self.run_id!r}, models={self.models_scored}, "
                f"measures={self.measures}, failures={len(self.errors)})")


def _store_path(path: str | Path) -> Path:
    path = Path(path)
    db = path / "results.sqlite" if path.is_dir() else path
    if not db.is_file():
        raise ResultsError(f"{db} does not exist: run `pgen score` first")
    return db


def load_runs(path: str | Path) -> list[ScoreRun]:
    """Every run stored in a results folder (or ``results.sqlite``), oldest first."""
    db = _store_path(path)
    store = ResultsStore(db, read_only=True)
    try:
        runs = store.runs()
        if runs.empty:
            raise ResultsError(f"{db} holds no scoring runs")
        return [run_from_store(store, db, row.settings_hash) for row in runs.itertuples()]
    finally:
        store.close()


def load_run(path: str | Path, run_id: str | None = None) -> ScoreRun:
    """One run of a results folder: ``run_id``, or the only one there is."""
    db = _store_path(path)
    store = ResultsStore(db, read_only=True)
    try:
        ids = list(store.runs()["settings_hash"])
        if run_id is None:
            if len(ids) != 1:
                raise ResultsError(f"{db} holds {len(ids)} runs ({', '.join(ids) or 'none'}): say which")
            run_id = ids[0]
        elif run_id not in ids:
            raise ResultsError(f"{db} holds no run {run_id!r}; it holds {', '.join(ids) or 'none'}")
        return run_from_store(store, db, run_id)
    finally:
        store.close()


def run_from_store(store: ResultsStore, db: Path, run_id: str, computed: int = 0) -> ScoreRun:
    """The run ``run_id`` of an open store (``db`` is its path, kept in the run)."""
    zoo_name, settings, info = store.run(run_id)
    if "zoo_table" not in info:
        raise ResultsError(f"{db}: run {run_id} was written by an older pgen; score the zoo again")
    zoo_table = pd.DataFrame.from_records(info.pop("zoo_table"))
    zoo_table["model_id"] = zoo_table["model_id"].astype(str)
    measures = list(info.pop("measures", []))
    for m in measures:  # a measure's name becomes report text (file names pass safe_filename): pgen's are plain
        if not (isinstance(m, str) and m and all(ch.isascii() and (ch.isalnum() or ch in "_.-:") for ch in m)):
            raise ResultsError(f"{db}: run {run_id} names a measure {m!r}, which is not a measure name "
                               "(letters, digits, _ . - and : of learned:<name>); this store was not written by pgen")
    per_measure = {m: measure_settings(settings, m) for m in measures}
    targets = store.wide_frame(zoo_name, settings)
    extra = store.measure_frame(zoo_name, per_measure)
    table = _join(zoo_table, targets, extra)
    model_errors = store.errors(zoo_name)
    model_errors = model_errors[model_errors.settings_hash == run_id][["model_id", "error"]].assign(measure="")
    errors = pd.concat([model_errors[["model_id", "measure", "error"]],
                        store.measure_errors(zoo_name, per_measure)], ignore_index=True)
    return ScoreRun(run_id=run_id, zoo=info.pop("zoo", {"name": zoo_name}), settings=settings, measures=measures,
                    table=table, errors=errors, hparam_grid=info.pop("hparam_grid", None), info=info,
                    store_path=db, computed=computed, zoo_table=zoo_table)


def _join(zoo_table: pd.DataFrame, targets: pd.DataFrame, measures: pd.DataFrame) -> pd.DataFrame:
    """The per-model table: the zoo's hparams and recorded metrics joined with pgen's values."""
    wide = targets.merge(measures, on="model_id", how="left") if not measures.empty else targets
    meta = zoo_table[zoo_table["model_id"].isin(wide["model_id"])]
    recorded = [c for c in meta.columns if c != "model_id" and not c.startswith("hp.")]
    meta = meta.rename(columns={c: f"zoo.{c}" for c in recorded})
    table = meta.merge(wide, on="model_id", how="inner")
    # The gap uses the zoo's recorded metrics whenever it has both: a recorded train
    # accuracy is measured on the labels the model was trained on (a subset, possibly
    # noisy), pgen's on the whole clean split; and PGDL tasks ship no test data at all.
    if "test_acc" not in table.columns and "zoo.test_acc" in table.columns:
        table["test_acc"] = table["zoo.test_acc"]
    if {"zoo.train_acc", "zoo.test_acc"} <= set(table.columns):
        table["gap"] = table["zoo.train_acc"] - table["zoo.test_acc"]
    elif {"train_acc", "test_acc"} <= set(table.columns):
        table["gap"] = table["train_acc"] - table["test_acc"]
    if "test_acc" in table.columns:
        table["test_error"] = 1 - table["test_acc"]
    return table.reset_index(drop=True)
