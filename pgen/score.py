"""Score every model of a zoo: P-vector angle, train / test / pseudo-test accuracy.

The same samples, in the same order, go through every model. Each model's results are
written to the results store as soon as it finishes; models already scored with the same
settings are skipped, and a model that fails is recorded with its error while the run
goes on.
"""

from __future__ import annotations

import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from pgen.augment import policy_for, pseudo_test_set
from pgen.data import dataset_arrays
from pgen.features import data_p_vector, model_p_vectors
from pgen.measures import MeasureData, MeasureSettings, compute_for_entry, get_measure
from pgen.pvector import angle, angle_matrix
from pgen.store import ResultsStore
from pgen.train import evaluate
from pgen.zoo import Zoo, load_zoo

__all__ = ["ScoreSettings", "score_zoo"]


@dataclass(frozen=True)
class ScoreSettings:
    """Everything that determines a model's scores (stored with every result)."""

    split: str = "train"
    n_samples: int | None = 1000  # first n samples of the split (None: all)
    layer: str = "penultimate"
    center: bool = True
    seed: int = 0  # pseudo-test augmentation seed
    pseudo_copies: int = 1
    batch_size: int = 256
    measures: tuple[str, ...] = ()  # extra registered measures (pgen.measures), stored per measure

    def core(self) -> dict:
        """The settings that determine the core scores (angle, accuracies)."""
        d = asdict(self)
        d.pop("measures")
        return d

    @staticmethod
    def measure_settings(core: dict, measure: str) -> dict:
        """The settings a registered measure's stored value depends on (so each resumes on its own)."""
        return {**core, "measure": measure}


def _kind_of(zoo: Zoo) -> str:
    from pgen.data import DATASETS

    if getattr(zoo, "data_kind", None):
        return zoo.data_kind
    name = getattr(zoo, "dataset_name", None)
    return DATASETS[name].kind if name in DATASETS else "color"


class _Context:
    """Data prepared once per run and shared by every model."""

    def __init__(self, zoo: Zoo, s: ScoreSettings):
        train = zoo.dataset(s.split)
        x, y = dataset_arrays(train)
        n = len(x) if s.n_samples is None else min(s.n_samples, len(x))
        self.x, self.y = x[:n], y[:n]
        self.data_pv = data_p_vector((self.x, self.y), center=s.center)
        self.x_train, self.y_train = x, y
        try:
            self.x_test, self.y_test = dataset_arrays(zoo.dataset("test"))
        except Exception:
            self.x_test = self.y_test = None
        self.policy = policy_for(_kind_of(zoo))
        self.x_pseudo, self.y_pseudo = pseudo_test_set(self.x, self.y, self.policy, seed=s.seed, copies=s.pseudo_copies)
        self.measure_data = MeasureData(self.x, self.y, num_classes=int(y.max()) + 1)


def _score_one(zoo: Zoo, entry_id: str, ctx: _Context, s: ScoreSettings, device: str, keep_vector: bool,
               core: bool = True, measures: tuple[str, ...] = ()):
    """Core scores (when ``core``) and the given registered measures of one model.

    Returns ``(values, seconds, vector, measure_results)`` with ``measure_results`` a
    dict ``{name: (value, seconds, error)}``: a failing measure does not fail the model.
    """
    entry = zoo[entry_id]
    model = entry.load_model()
    measure_results = {}
    for name in measures:
        t = time.perf_counter()
        try:
            value = compute_for_entry(name, entry, ctx.measure_data,
                                      MeasureSettings(device=device, batch_size=s.batch_size, seed=s.seed,
                                                      layer=s.layer), model=model)
            measure_results[name] = (value, time.perf_counter() - t, None)
        except Exception as exc:  # recorded with the measure; the model's other scores stand
            measure_results[name] = (None, time.perf_counter() - t, f"{type(exc).__name__}: {exc}")
    if not core:
        return None, None, None, measure_results
    t0 = time.perf_counter()
    model = model.to(device)
    seconds, values = {}, {}
    t = time.perf_counter()
    pv = model_p_vectors(model, (ctx.x, ctx.y), layers=s.layer, center=s.center, batch_size=s.batch_size,
                         device=device)[s.layer]
    values["pvector_angle"] = angle(pv.vector, ctx.data_pv.vector)
    values["pvector_gap"] = pv.gap
    values["pvector_explained_variance"] = float(pv.explained_variance_ratio[0])
    seconds["pvector_angle"] = time.perf_counter() - t
    model_cpu = model.to("cpu")
    t = time.perf_counter()
    values["train_acc"], values["train_loss"] = evaluate(model_cpu, ctx.x_train, ctx.y_train)
    if ctx.x_test is not None:
        values["test_acc"], values["test_loss"] = evaluate(model_cpu, ctx.x_test, ctx.y_test)
    values["pseudo_test_acc"], _ = evaluate(model_cpu, ctx.x_pseudo, ctx.y_pseudo)
    seconds["accuracy"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    return values, seconds, (pv.vector if keep_vector else None), measure_results


_WORKER: dict = {}


def _worker_init(zoo_root, settings, ctx):
    torch.set_num_threads(1)
    _WORKER.update(zoo=load_zoo(zoo_root, build=False), settings=settings, ctx=ctx)


def _worker_score(entry_id, core, measures):
    try:
        values, seconds, _, mres = _score_one(_WORKER["zoo"], entry_id, _WORKER["ctx"], _WORKER["settings"], "cpu",
                                              False, core, measures)
        return entry_id, values, seconds, None, mres
    except Exception as exc:  # recorded, the run goes on
        return entry_id, None, None, f"{type(exc).__name__}: {exc}", {}


def score_zoo(zoo: str | Path | Zoo, out: str | Path, *, settings: ScoreSettings | None = None, device: str = "cpu",
              workers: int = 1, angle_matrix_out: bool = False, progress: bool = True,
              limit: int | None = None) -> pd.DataFrame:
    """Score every model; return the per-model table (also in ``out/results.sqlite``).

    Parameters
    ----------
    zoo : zoo folder, embedded zoo name, or Zoo
    out : output folder for ``results.sqlite`` (and ``angle_matrix.csv``)
    settings : ScoreSettings
    device : "cpu" or "cuda"
    workers : CPU worker processes (models scored in parallel)
    angle_matrix_out : also write the model-to-model angle matrix (single process)
    limit : score at most this many not-yet-scored models (for smoke runs)
    """
    s = settings or ScoreSettings()
    if not isinstance(zoo, Zoo):
        zoo = load_zoo(zoo, progress=progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(out / "results.sqlite")
    sdict = {"zoo_root": str(Path(zoo.root).resolve()), **s.core()}
    for name in s.measures:
        get_measure(name)  # an unknown name fails before any work
    msdicts = {name: s.measure_settings(sdict, name) for name in s.measures}
    ctx = _Context(zoo, s)
    store.register_run(zoo.name, sdict, {"zoo": zoo.describe(), "pseudo_test_policy": ctx.policy.describe(),
                                         "n_samples_used": len(ctx.x), "device": device})
    core_done = store.done(zoo.name, sdict)
    measure_done = {name: store.measure_done(zoo.name, ms, name) for name, ms in msdicts.items()}
    jobs = []  # (model id, needs core, measures still to compute)
    for e in zoo:
        missing = tuple(n for n in s.measures if e.id not in measure_done[n])
        if e.id not in core_done or missing:
            jobs.append((e.id, e.id not in core_done, missing))
    if limit is not None:
        jobs = jobs[:limit]
    bar = None
    if progress and jobs:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"scoring {zoo.name}", unit="model")
    vectors = {}

    def record(entry_id, values, seconds, error, measure_results):
        for name, (value, secs, merr) in measure_results.items():
            store.put_measure(zoo.name, entry_id, msdicts[name], name, value, secs, merr)
            if merr is not None and bar is not None:
                bar.write(f"model {entry_id}: measure {name} failed: {merr}")
        if error is None and values is not None:
            store.put_model(zoo.name, entry_id, sdict, values, seconds)
        elif error is not None:
            store.put_model(zoo.name, entry_id, sdict, {}, error=error)
            if bar is not None:
                bar.write(f"model {entry_id} failed: {error}")
        if bar is not None:
            bar.update(1)

    try:
        if workers > 1 and device == "cpu" and not angle_matrix_out:
            with ProcessPoolExecutor(workers, initializer=_worker_init, initargs=(zoo.root, s, ctx)) as pool:
                futures = [pool.submit(_worker_score, *job) for job in jobs]
                for fut in as_completed(futures):
                    record(*fut.result())
        else:
            for mid, core, missing in jobs:
                try:
                    values, seconds, vec, mres = _score_one(zoo, mid, ctx, s, device, angle_matrix_out, core, missing)
                    vectors[mid] = vec
                    record(mid, values, seconds, None, mres)
                except Exception as exc:
                    if os.environ.get("PGEN_DEBUG"):
                        traceback.print_exc()
                    record(mid, None, None, f"{type(exc).__name__}: {exc}", {})
    finally:
        if bar is not None:
            bar.close()
    vectors = {k: v for k, v in vectors.items() if v is not None}
    if angle_matrix_out and vectors:
        names = sorted(vectors)
        mat = angle_matrix([vectors[n] for n in names])
        pd.DataFrame(mat, index=names, columns=names).to_csv(out / "angle_matrix.csv")
    table = results_table(store, zoo, sdict)
    store.close()
    return table


def results_table(store: ResultsStore, zoo: Zoo, sdict: dict) -> pd.DataFrame:
    """The per-model table: zoo hparams and recorded metrics joined with pgen's measures.

    Registered measures computed under the same core settings (by any run) become one
    column each, with their seconds in ``seconds.<name>``.
    """
    from pgen.measures import list_measures

    wide = store.wide_frame(zoo.name, sdict)
    names = list(list_measures()["name"])
    extra = store.measure_frame(zoo.name, {n: ScoreSettings.measure_settings(sdict, n) for n in names})
    if not extra.empty:
        wide = wide.merge(extra, on="model_id", how="left")
    meta = zoo.to_frame()
    wide = wide[wide["model_id"].isin(meta["model_id"])]  # a view (e.g. final models only) shows only its models
    recorded = [c for c in meta.columns if c not in ("model_id",) and not c.startswith("hp.")]
    meta = meta.rename(columns={c: f"zoo.{c}" for c in recorded})
    table = meta.merge(wide, on="model_id", how="right")
    # The gap uses the zoo's recorded metrics whenever it has both: a recorded train
    # accuracy is measured on the labels the model was trained on (a subset, possibly
    # noisy), pgen's on the whole clean split; and PGDL tasks ship no test data at all.
    if "test_acc" not in table.columns and "zoo.test_acc" in table.columns:
        table["test_acc"] = table["zoo.test_acc"]
    if {"zoo.train_acc", "zoo.test_acc"} <= set(table.columns):
        table["gap"] = table["zoo.train_acc"] - table["zoo.test_acc"]
    elif {"train_acc", "test_acc"} <= set(table.columns):
        table["gap"] = table["train_acc"] - table["test_acc"]
    if {"test_acc"} <= set(table.columns):
        table["test_error"] = 1 - table["test_acc"]
    return table
