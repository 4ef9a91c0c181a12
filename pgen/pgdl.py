"""Predict and score like the PGDL competition.

``predict_task`` computes one registered measure on every model of a PGDL task folder and
writes ``<task>.predict`` (JSON, model id -> value) as the competition's ingestion did;
``score_predictions`` applies the official conditional-mutual-information score to such a
file and the task's ``model_configs.json``.

With a per-model time budget each model runs in a worker process that is killed when the
budget runs out (the competition allowed 300 s per model); the model is recorded as timed
out and the run goes on with a fresh worker.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import time
from pathlib import Path

import pandas as pd

from pgen.measures import MeasureData, MeasureSettings, compute_for_entry, get_measure
from pgen.errors import PgenError
from pgen.results import measure_settings
from pgen.store import settings_hash
from pgen.stats import conditional_mutual_information, granulated_kendall, kendall_tau
from pgen.text import printable
from pgen.zoo import Zoo, ZooError, load_zoo
from pgen.paths import output_path, replace_link, safe_filename

__all__ = ["predict_task", "score_predictions", "measure_data_for"]


def measure_data_for(zoo: Zoo, n_samples: int | None = 1000, split: str = "train") -> MeasureData:
    """The first ``n_samples`` samples of the zoo's split, as every measure sees them. Every
    model of a PGDL task trained on the whole training set: that is its ``train_size``.

    Parameters
    ----------
    zoo : Zoo
        A zoo (a PGDL task).
    n_samples : int or None, default=1000
        How many samples (None: all).
    split : str, default="train"
        The split.

    Returns
    -------
    MeasureData
        The samples, with ``train_size`` set.
    """
    from pgen.data import dataset_arrays

    x, y = dataset_arrays(zoo.dataset(split))
    n = len(x) if n_samples is None else min(n_samples, len(x))
    return MeasureData(x[:n], y[:n], train_size=len(x))


def _measure_one(zoo: Zoo, model_id: str, measure: str, data: MeasureData, settings: MeasureSettings):
    """``(model_id, value, seconds, error)``: a failure is the model's, recorded, not raised."""
    t = time.perf_counter()
    try:
        value = compute_for_entry(measure, zoo[model_id], data, settings)
    except Exception as exc:
        return model_id, None, None, f"{type(exc).__name__}: {exc}"
    return model_id, value, time.perf_counter() - t, None


def _load_plugins(plugins) -> None:
    from pgen.measures import load_plugin

    for spec in plugins:  # the parent loaded them under --trust-code; a spawned worker loads them again
        load_plugin(spec, trust_code=True)


def _worker(conn, task_dir, measure, n_samples, settings, plugins=()):
    import torch

    _load_plugins(plugins)
    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    zoo = load_zoo(task_dir, build=False, progress=False)
    data = measure_data_for(zoo, n_samples)
    conn.send("ready")
    while True:
        model_id = conn.recv()
        if model_id is None:
            return
        conn.send(_measure_one(zoo, model_id, measure, data, settings))  # the parent records it


_WORKER: dict = {}


def _ray_worker_init(task_dir, measure, n_samples, settings, threads, plugins=()):
    import torch

    _load_plugins(plugins)
    torch.set_num_threads(threads)
    zoo = load_zoo(task_dir, build=False, progress=False)
    _WORKER.update(zoo=zoo, measure=measure, settings=settings, data=measure_data_for(zoo, n_samples))


def _ray_worker_measure(model_id):
    return _measure_one(_WORKER["zoo"], model_id, _WORKER["measure"], _WORKER["data"], _WORKER["settings"])


class _BudgetedRunner:
    """One worker process at a time; a model over budget kills it and the next model starts a new one."""

    def __init__(self, task_dir, measure, n_samples, settings, budget):
        from pgen.measures import PLUGINS

        self.args = (str(task_dir), measure, n_samples, settings, tuple(PLUGINS))
        self.budget = budget
        self.proc = self.conn = None

    def _start(self):
        ctx = mp.get_context("spawn")  # never fork a process that holds torch threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, *self.args), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(600) or self.conn.recv() != "ready":
            raise PgenError("the measure worker did not start within 600 s")

    def run(self, model_id):
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send(model_id)
        if self.conn.poll(self.budget):
            try:
                return self.conn.recv()
            except EOFError:
                self.close()
                return model_id, None, None, "the worker process died (out of memory?)"
        self.close()
        return model_id, None, None, f"timed out after the {self.budget:g} s budget"

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
        self.proc = self.conn = None


def _write_atomic(path: Path, text: str) -> None:
    tmp = replace_link(path.with_suffix(path.suffix + ".tmp"))
    tmp.write_text(text)
    os.replace(tmp, path)  # replaces a link at path; never writes through it


def predict_task(task_dir: str | Path, measure: str, out: str | Path, *, n_samples: int | None = 1000,
                 time_budget: float | None = None, settings: MeasureSettings | None = None,
                 progress: bool = True, executor: str | object = "local") -> pd.DataFrame:
    """Compute ``measure`` on every model of a PGDL task; write ``<task>.predict`` and ``<task>.csv``.

    The ``.predict`` file maps model id to ``sign * value`` (see :mod:`pgen.measures`),
    so larger always means "predicted to generalize worse"; the CSV keeps the raw value,
    seconds and any error per model. Both are rewritten after every model, so a crash
    loses nothing finished; a rerun skips models already in the CSV.

    Parameters
    ----------
    task_dir : str or Path
        A PGDL task folder (or any zoo folder).
    measure : str
        A registered measure name (``pgen measures`` lists them).
    out : str or Path
        The output folder.
    n_samples : int or None, default=1000
        The first n training samples every model sees (None: all).
    time_budget : float, optional
        Seconds per model (None: no limit, run in this process).
    settings : MeasureSettings, optional
        Device, batch size, seed.
    progress : bool, default=True
        Show a progress bar.
    executor : str or executor object, default="local"
        ``"local"`` (this process; with a budget, one worker process at a time),
        ``"ray"`` (a Ray instance on this machine) or a :class:`pgen.executors.RayExecutor`
        for a running cluster: one task per model, the budget counted from when its task
        starts; only this process writes the output files.

    Returns
    -------
    pandas.DataFrame
        One row per model: raw value, seconds, error.
    """
    from pgen.executors import RayExecutor, open_executor

    m = get_measure(measure)
    settings = settings or MeasureSettings()
    zoo = load_zoo(task_dir, build=False, progress=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_filename(zoo.name)  # the task's name comes from its files: never a path
    csv_path, pred_path = output_path(out, f"{stem}.csv"), output_path(out, f"{stem}.predict")
    # A value is reused only when everything it depends on is the same (device and TF32 aside).
    identity = measure_settings({"zoo": zoo.identity(), "n_samples": n_samples, "split": "train",
                                 "seed": settings.seed, "layer": settings.layer, "center": settings.center,
                                 "batch_size": settings.batch_size}, measure)  # its version too, once changed
    run_hash = settings_hash(identity)
    rows: dict[str, dict] = {}
    if csv_path.is_file():
        old = pd.read_csv(csv_path, dtype={"model_id": str, "settings_hash": str})
        if "settings_hash" in old:
            rows = {r["model_id"]: r for r in old.to_dict("records")
                    if pd.notna(r.get("value")) and r["settings_hash"] == run_hash}
    todo = [e.id for e in zoo if e.id not in rows]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"{measure} on {printable(zoo.name)}", unit="model")

    def record(model_id, value, seconds, error):
        rows[model_id] = {"model_id": model_id, "measure": measure, "value": value,
                          "predicted_badness": None if value is None else m.sign * value,
                          "seconds": seconds, "error": error, "settings_hash": run_hash}
        table = pd.DataFrame(list(rows.values()))
        _write_atomic(csv_path, table.to_csv(index=False))
        preds = {r["model_id"]: r["predicted_badness"] for r in rows.values()
                 if r["predicted_badness"] is not None and math.isfinite(r["predicted_badness"])}
        _write_atomic(pred_path, json.dumps(preds, indent=1, sort_keys=True))
        if bar is not None:
            if error:
                bar.write(f"{zoo.name}/{model_id}: {error}")
            bar.update(1)

    runner = None
    try:
        with open_executor(executor, device=settings.device) as executor:
            if isinstance(executor, RayExecutor) and todo:
                from pgen.measures import PLUGINS

                initargs = (str(zoo.root), measure, n_samples, settings, executor.threads_per_job, tuple(PLUGINS))
                executor.run([(mid,) for mid in todo], initializer=_ray_worker_init, initargs=initargs,
                             work=_ray_worker_measure, record=lambda r: record(*r),
                             failed=lambda job, message: record(job[0], None, None, message), budget=time_budget)
            elif time_budget is not None:
                runner = _BudgetedRunner(zoo.root, measure, n_samples, settings, time_budget)
                for mid in todo:
                    record(*runner.run(mid))
            else:
                data = measure_data_for(zoo, n_samples) if todo else None
                for mid in todo:
                    record(*_measure_one(zoo, mid, measure, data, settings))  # a failure is recorded; the run goes on
    finally:
        if runner is not None:
            runner.close()
        if bar is not None:
            bar.close()
    table = pd.DataFrame([rows[e.id] for e in zoo if e.id in rows])
    table.attrs["files"] = [pred_path, csv_path]  # where they went (the name is made safe)
    return table


def score_predictions(predictions: str | Path | dict, model_configs: str | Path | dict) -> dict:
    """The official PGDL score of a predictions file, plus Kendall's tau and Psi against the gap.

    Returns ``{"cmi": float, "table": DataFrame (per hparam pair), "kendall_tau": float,
    "psi": float, "psi_per_hparam": dict}``.

    Parameters
    ----------
    predictions : str, Path or dict
        A ``.predict`` file or its dict (model id to sign x value).
    model_configs : str, Path or dict
        The task's ``model_configs.json`` or its dict.

    Returns
    -------
    dict
        ``{"cmi", "table", "kendall_tau", "psi", "psi_per_hparam"}``.

    Raises
    ------
    ZooError
        When a prediction is not a finite number (the models are named).
    """
    preds = _read_json(predictions, "predictions")
    configs = _read_json(model_configs, "model configs")
    # One NaN once moved the CMI from 0.214 to 0.342 and all-NaN predictions scored 0.0: refuse them.
    bad = sorted(str(k) for k, v in preds.items()
                 if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v))
    if bad:
        where = predictions if not isinstance(predictions, dict) else "the predictions"
        raise ZooError(f"{where}: {len(bad)} prediction(s) are not finite numbers ({', '.join(bad[:10])}"
                       f"{' ...' if len(bad) > 10 else ''}); every model needs a finite value to be scored")
    cmi, table = conditional_mutual_information(preds, configs, details=True)
    ids, gaps, hparams = [], {}, {}
    for key, cfg in configs.items():
        mid = next((k for k in (key, f"model_{key}", key.removeprefix("model_")) if k in preds), None)
        metrics = cfg.get("metrics", {})
        if mid is None or "train_acc" not in metrics or "test_acc" not in metrics:
            continue
        ids.append(mid)
        gaps[mid] = metrics["train_acc"] - metrics["test_acc"]
        hparams[mid] = {k: v.get("current_value") if isinstance(v, dict) else v for k, v in cfg.get("hparams", {}).items()}
    scores = {m: preds[m] for m in ids}
    psi = granulated_kendall(scores, hparams, gaps)
    return {"cmi": cmi, "table": table, "kendall_tau": kendall_tau([scores[m] for m in ids], [gaps[m] for m in ids]),
            "psi": psi["psi"], "psi_per_hparam": psi["per_hparam"]}


def _read_json(src, what: str) -> dict:
    if isinstance(src, dict):
        return src
    from pgen.zoo.base import read_json

    return read_json(Path(src), what, expect=dict)
