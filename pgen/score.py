"""Score every model of a zoo: targets (train / test / pseudo-test accuracy), then measures.

Scoring is two steps per model, the same for every zoo format:

1. **targets**: train, test and pseudo-test accuracy (and losses) through
   :func:`pgen.train.evaluate`, the one accuracy function training also uses;
2. **measures**: every requested registered measure through
   :func:`pgen.measures.evaluate_measure`, which enforces the measure contract. The
   P-vector angle is one of them (``ScoreSettings.measures`` defaults to it).

The same samples, in the same order, go through every model. Each model's results are
written to the results store as soon as they are known; what is already stored under the
same settings is not recomputed (each measure resumes on its own), and a model or measure
that fails is recorded with its error while the run goes on. :func:`score_zoo` returns a
:class:`~pgen.results.ScoreRun`, which :func:`pgen.report.write_report` consumes.
"""

from __future__ import annotations

import os
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from pgen.augment import policy_for, pseudo_test_set
from pgen.data import dataset_arrays, finite_inputs
from pgen.devices import check_device
from pgen.errors import DatasetError, InputError, PgenNotice, UnknownNameError, ZooError
from pgen.features import evaluate_with_p_vectors
from pgen.executors import ProcessPool, RayExecutor, open_executor
from pgen.measures import MeasureData, MeasureSettings, evaluate_measure, get_measure
from pgen.measures.pvector_angle import feature_reads
from pgen.measures._util import channels_last_on_cpu
from pgen.models import check_model_fits
from pgen.results import ScoreRun, run_from_store, measure_settings
from pgen.store import ResultsStore
from pgen.text import printable
from pgen.train import evaluate
from pgen.paths import output_path
from pgen.zoo import Zoo, load_zoo

__all__ = ["ScoreSettings", "score_zoo"]


MAX_SEED = 2**32 - 1  # every generator pgen seeds (torch, numpy) takes it


@dataclass(frozen=True)
class ScoreSettings:
    """Everything that determines a model's scores (stored with every result).

    ``measures`` are registered measure names (``pgen measures``); the others are the
    run's identity together with the zoo's content identity.

    Parameters
    ----------
    split : str, default="train"
        The split whose first samples the P-vectors are over.
    n_samples : int or None, default=1000
        First n samples of the split (None: all).
    layer : str, default="penultimate"
        The P-vector measures' feature layer.
    center : bool, default=True
        Center the features (docs/findings/centering.md).
    seed : int, default=0
        The pseudo-test augmentation seed and the seed of stochastic measures.
    pseudo_copies : int, default=1
        Augmented copies per sample for pseudo-test accuracy.
    batch_size : int, default=256
        Forward-pass batch size.
    allow_tf32 : bool, default=False
        CUDA only; off so that CUDA and CPU P-vectors agree.
    dataset_size_term : bool, default=False
        Dziugaite et al.'s dataset-size term on the bound measures.
    own_training_data : bool, default=True
        Label-using measures and train accuracy on each model's own training samples and
        labels where the zoo records them; False: the shared samples for all.
    measures : tuple of str, default=("pvector_angle",)
        Registered measure names.
    data_kind : str, optional
        The pseudo-test policy's data kind (:data:`pgen.augment.POLICIES`); None: the
        zoo's, else ``unknown``.
    """

    split: str = "train"
    n_samples: int | None = 1000  # first n samples of the split (None: all)
    layer: str = "penultimate"
    center: bool = True
    seed: int = 0  # pseudo-test augmentation seed, and the seed of stochastic measures
    pseudo_copies: int = 1
    batch_size: int = 256
    allow_tf32: bool = False  # CUDA only; off so that CUDA and CPU P-vectors agree
    dataset_size_term: bool = False  # Dziugaite et al.'s sqrt(v / m) / (v - log m) / 2 on bound measures
    # Label-using measures and train accuracy on each model's own training samples and
    # labels where the zoo records them (pgen's recipes); False: the shared samples for all.
    own_training_data: bool = True
    measures: tuple[str, ...] = field(default=("pvector_angle",))
    # The pseudo-test policy's data kind (pgen.augment.POLICIES); None: the zoo's, else "unknown".
    data_kind: str | None = None

    def __post_init__(self):
        names = tuple(self.measures) if not isinstance(self.measures, str) else (self.measures,)
        object.__setattr__(self, "measures", tuple(dict.fromkeys(names)))  # each measure once, in order
        if not self.measures:
            raise InputError("no measure named: give at least one (`pgen measures` lists them)")
        for name in self.measures:
            get_measure(name)  # an unknown name fails here, before any zoo is built or scored
        if self.n_samples is not None and self.n_samples < 2:
            raise InputError(f"n_samples must be at least 2 (or None for all); got {self.n_samples}")
        if not isinstance(self.layer, str) or not self.layer.strip():
            raise InputError("layer must name a layer ('penultimate', 'logits', 'input' or a module name); got "
                             f"{self.layer!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"seed must be a whole number from 0 to {MAX_SEED}; got {self.seed!r}")
        if self.data_kind is not None:
            policy_for(self.data_kind)  # an unknown kind fails here, naming the known ones

    def identity(self) -> dict:
        """The settings that determine stored values (the measures list excluded)."""
        d = asdict(self)
        d.pop("measures")
        for key in ("dataset_size_term", "data_kind"):  # the defaults leave earlier runs' identities as they were
            if not d[key]:
                d.pop(key)
        return d

    def measure_settings(self, device: str = "cpu") -> MeasureSettings:
        return MeasureSettings(device=device, batch_size=self.batch_size, seed=self.seed, layer=self.layer,
                               center=self.center, allow_tf32=self.allow_tf32,
                               dataset_size_term=self.dataset_size_term)


def train_size(entry, n_train: int) -> int:
    """The number of samples a model was trained on: what the zoo records (``train_size``),
    else ``train_fraction`` of the ``n_train`` training samples rounded as :mod:`pgen.train`
    draws them, else all ``n_train``."""
    recorded = entry.metrics.get("train_size") or entry.extra.get("train_size")
    if recorded:
        return int(recorded)
    fraction = entry.hparams.get("train_fraction")
    if fraction is not None:
        return max(1, int(round(float(fraction) * n_train)))
    return n_train


def _kind_of(zoo: Zoo, s: ScoreSettings) -> str:
    """The pseudo-test policy's data kind: the user's (``--data-kind``), the zoo's, the
    dataset's, else ``unknown`` (no flips: a flip changes the class of oriented data)."""
    from pgen.data import DATASETS

    if s.data_kind:
        return s.data_kind
    if getattr(zoo, "data_kind", None):
        return zoo.data_kind
    name = getattr(zoo, "dataset_name", None)
    return DATASETS[name].kind if name in DATASETS else "unknown"


class _Context:
    """Data prepared once per run and shared by every model."""

    def __init__(self, zoo: Zoo, s: ScoreSettings):
        x, y = dataset_arrays(zoo.dataset(s.split))
        where = f"{printable(zoo.name)}'s {s.split} data"
        if len(x) == 0:
            raise DatasetError(f"{where} hold no samples")
        finite_inputs(x, where)  # accuracies would still come out of NaN inputs
        if len(torch.unique(y)) < 2:
            raise DatasetError(f"{where} hold a single class ({int(y[0])}): accuracies and every label-using "
                               "measure need at least two; score the models on data of their task")
        n = len(x) if s.n_samples is None else min(s.n_samples, len(x))
        self.x, self.y = x[:n], y[:n]
        self.x_train, self.y_train = x, y
        try:
            self.x_test, self.y_test = dataset_arrays(zoo.dataset("test"))
        except Exception:  # PGDL tasks ship no test data; the zoo's recorded accuracy stands in
            self.x_test = self.y_test = None
        if self.x_test is not None:
            finite_inputs(self.x_test, f"{printable(zoo.name)}'s test data")
        self.policy = policy_for(_kind_of(zoo, s))
        self.x_pseudo = self.y_pseudo = None  # images and 1-D signals have a policy; other inputs get none
        if self.x.dim() == 4 or (self.x.dim() == 3 and self.policy.name == "signal-1d"):
            self.x_pseudo, self.y_pseudo = pseudo_test_set(self.x, self.y, self.policy, seed=s.seed,
                                                           copies=s.pseudo_copies)
        self.measure_data = MeasureData(self.x, self.y, num_classes=int(y.max()) + 1,
                                        x_test=None if self.x_test is None else self.x_test[:n],
                                        x_pseudo=None if self.x_pseudo is None else self.x_pseudo[:n])


@dataclass
class _Outcome:
    """What scoring one model produced (plain data, so that worker processes can return it)."""

    model_id: str
    targets: dict | None = None
    target_seconds: float | None = None
    measures: dict = field(default_factory=dict)  # name -> (value, extra, seconds, error)
    error: str | None = None
    vector: object = None


def _error_text(exc: BaseException) -> str:
    if os.environ.get("PGEN_DEBUG"):
        traceback.print_exc()
    return f"{type(exc).__name__}: {exc}"


def _score_one(zoo: Zoo, entry_id: str, ctx: _Context, s: ScoreSettings, device: str, need_targets: bool,
               measures: tuple[str, ...], keep_vector: bool = False) -> _Outcome:
    """Targets (when ``need_targets``) and the given measures of one model.

    A failing measure does not fail the model; a model that cannot be loaded or evaluated does.
    """
    out = _Outcome(entry_id)
    pvectors: dict = {}  # (inputs, layer, center) -> PVectorResult of the shared samples' passes
    own_pvectors: dict = {}  # the same for the model's own training samples
    try:
        entry = zoo[entry_id]
        model = entry.load_model()
        check_model_fits(model, ctx.x, ctx.y, where=f"model {entry.id}")
        model = model.to(device)
        own = _own_training_data(entry, ctx, s)
        reads = _pass_reads(measures, s, device, own is not None)
        # the passes over the splits only run forwards: channels-last there (the same function,
        # faster on a CPU); the measures that take gradients get the stored layout back. A model
        # scored for measures alone runs no such pass and keeps its layout untouched.
        passes = need_targets or keep_vector
        stored_layout = channels_last_on_cpu(model, ctx.x[:2]) if passes else (lambda: None)
        try:
            if need_targets:
                t = time.perf_counter()
                v = {}
                # the training accuracy on what the model was trained on (labels as trained) where recorded
                train = (ctx.x_train[own[0]], own[1]) if own is not None else (ctx.x_train, ctx.y_train)
                for split, (x, y), (acc_name, loss_name) in (
                        ("train", train, ("train_acc", "train_loss")),
                        ("test", (ctx.x_test, ctx.y_test), ("test_acc", "test_loss")),
                        ("pseudo", (ctx.x_pseudo, ctx.y_pseudo), ("pseudo_test_acc", None))):
                    if x is None:
                        continue
                    owned = split == "train" and own is not None
                    v[acc_name], loss, found = _split_pass(model, x, y, reads["own" if owned else split], len(ctx.x),
                                                           s, device)
                    if loss_name:
                        v[loss_name] = loss
                    (own_pvectors if owned else pvectors).update({(split, *key): pv for key, pv in found.items()})
                if own is not None:
                    v["train_samples"] = len(own[0])
                out.targets, out.target_seconds = v, time.perf_counter() - t
            if keep_vector:
                from pgen.features import model_p_vectors

                pv = pvectors.get(("train", s.layer, s.center)) or model_p_vectors(
                    model, (ctx.x, ctx.y), layers=s.layer, center=s.center, batch_size=s.batch_size, device=device)[s.layer]
                out.vector = pv.vector
        finally:  # the same tensors back, also for a model the caller holds (score_models)
            stored_layout()
    except Exception as exc:  # recorded with the model; the run goes on
        out.error = _error_text(exc)
        return out
    init = None
    settings = s.measure_settings(device)
    m_train = len(own[0]) if own is not None else train_size(entry, len(ctx.x_train))
    shared = replace(ctx.measure_data, train_size=m_train,  # shares the zoo's cache
                     model_pvectors=(model, pvectors) if pvectors else None)
    own_data = shared
    if own is not None:  # the first n of the model's own training samples, with its labels
        n = len(ctx.x)
        own_data = MeasureData(ctx.x_train[own[0][:n]], own[1][:n], num_classes=ctx.measure_data.num_classes,
                               train_size=m_train, own=True,
                               model_pvectors=(model, own_pvectors) if own_pvectors else None)
    for name in measures:
        try:
            m = get_measure(name)
            if m.needs_init and init is None:
                init = entry.load_model(initial=True)
            data = shared if m.samples == "shared" else own_data
            r = evaluate_measure(name, model, init, data, settings)
            out.measures[name] = (r.value, r.extra, r.seconds, None)
        except Exception as exc:  # recorded with the measure; the model's other scores stand
            out.measures[name] = (None, {}, None, _error_text(exc))
    return out


def _pass_reads(measures, s: ScoreSettings, device: str, own: bool) -> dict[str, list[bool]]:
    """The centerings of P-vectors (at ``s.layer``) that the measures read from each split's
    first n samples: ``train`` (the zoo's shared samples), ``own`` (the model's own training
    samples, where the zoo records them), ``test`` and ``pseudo``. Measures given the shared
    samples read the training split's pass only when the model has no own samples (the
    shared samples then are that pass's first n)."""
    wanted: dict[str, list[bool]] = {"train": [], "own": [], "test": [], "pseudo": []}
    for name, reads in feature_reads(measures, s.measure_settings(device)).items():
        for inputs, center in reads:
            if inputs == "train" and own:
                if get_measure(name).samples != "own":
                    continue  # the shared samples are not the first n of this model's training pass
                inputs = "own"
            if center not in wanted[inputs]:
                wanted[inputs].append(center)
    return wanted


def _split_pass(model, x, y, centers: list[bool], n: int, s: ScoreSettings, device: str):
    """Accuracy and loss over one split and, in the same forward pass, the P-vectors of its
    first ``n`` samples for each centering in ``centers``: ``(acc, loss, {(layer, center):
    PVectorResult})``. A layer that does not run for this model leaves the P-vectors to the
    measures (each then fails alone, as before), not the model."""
    if centers:
        try:
            acc, loss, found = evaluate_with_p_vectors(model, x, y, n=n, layer=s.layer, centers=centers,
                                                       batch_size=s.batch_size, device=device,
                                                       allow_tf32=s.allow_tf32)
            return acc, loss, {(s.layer, c): pv for c, pv in found.items()}
        except (InputError, UnknownNameError):
            pass
    acc, loss = evaluate(model, x, y, batch_size=s.batch_size)
    return acc, loss, {}


def _own_training_data(entry, ctx: _Context, s: ScoreSettings):
    """``(indices, labels)`` of the model's own training samples when scoring the training
    split of a zoo that records them (and ``s.own_training_data``); else None."""
    if not s.own_training_data or s.split != "train":
        return None
    recorded = entry.training_data()
    if recorded is None:
        return None
    indices, labels = recorded
    n = len(ctx.x_train)
    if len(indices) == 0 or int(indices.min()) < 0 or int(indices.max()) >= n:
        raise ZooError(f"model {entry.id}: its training data index samples outside the {n} training samples")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= ctx.measure_data.num_classes):
        raise ZooError(f"model {entry.id}: its training labels fall outside 0..{ctx.measure_data.num_classes - 1}")
    return indices, labels


def _writable_folder(out: Path) -> Path:
    """Before any model: the output folder exists and takes files (not after an hour of scoring)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".pgen-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write to the output folder {out}: {exc.strerror or exc}") from None
    return out


def _check_layer(zoo: Zoo, model_id: str, ctx: _Context, s: ScoreSettings) -> None:
    """Before the loop: the feature layer exists in the first model to score. A model that
    does not load is left to the loop (it is that model's failure, recorded with it)."""
    uses_layer = {"pvector_angle", "pvector_angle_uncentered", "cka_to_data", "cka_to_init"} & set(s.measures)
    if not uses_layer:
        return
    try:
        model = zoo[model_id].load_model()
        check_model_fits(model, ctx.x, ctx.y, where=f"model {model_id}")
    except Exception:  # a model that does not load or run is that model's recorded failure
        return
    from pgen.features import resolve_layers

    try:
        resolve_layers(model, s.layer, example=ctx.x[:2].float())
    except UnknownNameError as exc:
        raise UnknownNameError(f"layer {s.layer!r} (for {', '.join(sorted(uses_layer))}) on model {model_id} "
                               f"of {zoo.name}: {exc}") from None


def scoring_environment(device: str, workers: int) -> dict:
    """What produced a call's numbers beyond its settings: versions, threads, device. Kept
    with the run (every distinct one), so a report says which software scored its models."""
    import os
    import platform

    import numpy as np

    from pgen import __version__

    return {"pgen": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "device": str(device),
            # worker processes train and score on one thread each (see _worker_init)
            "threads_per_model": 1 if workers > 1 else torch.get_num_threads(),
            "workers": int(workers), "cpus": os.cpu_count()}


_WORKER: dict = {}


def _worker_init(zoo_root, data_root, trust_code, identity, settings, ctx, device="cpu", threads=1, plugins=(),
                 predictors=()):
    """Prepares a worker process (a local pool's or a Ray node's) once: it loads the user's
    measure plugins and the learned predictors the caller loaded, reopens the zoo from its
    folder and keeps the run's shared samples."""
    from pgen.measures import load_plugin

    # First: a forked worker whose parent ran multithreaded torch (fit a predictor, say) hangs
    # in its first parallel region unless the thread count is set before any torch work.
    torch.set_num_threads(threads)
    for spec in plugins:  # the caller trusted them (--trust-code) before loading them itself
        load_plugin(spec, trust_code=True)
    if predictors:
        from pgen.learned import load

        for folder in predictors:  # data, not code: safetensors and JSON
            load(folder).register()
    zoo = load_zoo(zoo_root, build=False, progress=False, data_root=data_root, trust_code=trust_code)
    zoo._identity = identity  # a view (e.g. final models) keeps its identity
    _WORKER.update(zoo=zoo, settings=settings, ctx=ctx, device=device)


def _worker_score(entry_id, need_targets, measures):
    out = _score_one(_WORKER["zoo"], entry_id, _WORKER["ctx"], _WORKER["settings"], _WORKER["device"],
                     need_targets, measures)
    if str(_WORKER["device"]).startswith("cuda"):
        torch.cuda.empty_cache()  # a long-lived worker shares its GPU with other tasks
    return out


def score_zoo(zoo: str | Path | Zoo, out: str | Path, *, settings: ScoreSettings | None = None, device: str = "cpu",
              workers: int = 1, angle_matrix_out: bool = False, progress: bool = True,
              limit: int | None = None, executor: str | object = "local") -> ScoreRun:
    """Score every model of a zoo; return the run (also stored in ``out/results.sqlite``).

    Results are written as each model finishes: a rerun resumes, a value already stored
    under the same settings is not recomputed, and a model or measure that fails is recorded
    with its error while the others are scored.

    Parameters
    ----------
    zoo : str, Path or Zoo
        A zoo folder, an embedded zoo name (built if not cached) or a :class:`~pgen.zoo.Zoo`.
    out : str or Path
        Output folder for ``results.sqlite`` (and ``angle_matrix.csv``).
    settings : ScoreSettings, optional
        What is scored (default: the P-vector angle on the first 1000 training samples).
    device : str, default="cpu"
        ``"cpu"`` or ``"cuda"``.
    workers : int, default=1
        CPU worker processes of the local executor (models scored in parallel).
    angle_matrix_out : bool, default=False
        Also write the model-to-model P-vector angle matrix (single process).
    progress : bool, default=True
        Show a progress bar.
    limit : int, optional
        Score at most this many models that still miss something (smoke runs).
    executor : str or executor object, default="local"
        ``"local"`` (this process, or ``workers`` processes), ``"ray"`` (a Ray instance on
        this machine) or an executor object, e.g.
        ``pgen.executors.RayExecutor("auto", gpus_per_model=0.25)`` for a running cluster.
        The results do not depend on it; only this process writes the results store.

    Returns
    -------
    ScoreRun
        ``run.table`` is the per-model DataFrame, ``run.errors`` the failures.

    Raises
    ------
    ZooError
        When the zoo cannot be opened.
    InputError
        When ``out`` holds a results store that is not pgen's, or the settings are invalid.

    Examples
    --------
    The Python API page of the user guide runs this on a tiny zoo; on the committed one:

    >>> run = score_zoo("model_zoos/digits", "reports/digits")          # doctest: +SKIP
    >>> run.table[["model_id", "pvector_angle", "test_acc"]].head()      # doctest: +SKIP
    """
    s = settings or ScoreSettings()
    if limit is not None and limit < 1:  # a negative limit would slice models off the end
        raise InputError(f"limit must be at least 1 (or None for every model); got {limit}")
    if workers < 1:
        raise InputError(f"workers must be at least 1; got {workers}")
    with open_executor(executor, workers=workers, device=device) as executor:
        check_device(device, here=not isinstance(executor, RayExecutor))  # a cluster's GPUs may be elsewhere
        return _score_zoo(zoo, out, s, device, workers, angle_matrix_out, progress, limit, executor)


def _score_zoo(zoo, out, s, device, workers, angle_matrix_out, progress, limit, executor) -> ScoreRun:
    if not isinstance(zoo, Zoo):
        zoo = load_zoo(zoo, progress=progress)
    if isinstance(executor, ProcessPool) and (device != "cpu" or angle_matrix_out
                                              or not getattr(zoo, "reopenable", True)):
        executor = None  # as before: CUDA, the angle matrix and in-memory zoos score in this process
    if isinstance(executor, RayExecutor):
        if angle_matrix_out:
            raise InputError("the angle matrix (--angle-matrix) is computed in one process: use the local executor")
        if not getattr(zoo, "reopenable", True):
            raise InputError(f"zoo {zoo.name} lives in this process's memory; Ray workers need a zoo folder "
                             "(score it with the local executor)")
    out = _writable_folder(Path(out))
    store = ResultsStore(out / "results.sqlite")
    try:
        run_settings = {"zoo": zoo.identity(), **s.identity()}
        if _kind_of(zoo, s) == "unknown" and not s.data_kind:  # was "color" before 2026-12-07: values differ
            run_settings["data_kind"] = "unknown"
        per_measure = {name: measure_settings(run_settings, name) for name in s.measures}
        ctx = _Context(zoo, s)
        info = {"zoo": zoo.describe(), "zoo_table": zoo.to_frame().to_dict("records"),
                "hparam_grid": zoo.hparam_grid(), "pseudo_test_policy": ctx.policy.describe(),
                "n_samples_used": len(ctx.x), "split": s.split, "device": device}
        run_id = store.register_run(zoo.name, run_settings, info, s.measures)
        targets_done = store.done(zoo.name, run_settings)
        measure_done = {name: store.measure_done(zoo.name, ms, name) for name, ms in per_measure.items()}
        jobs = []  # (model id, needs targets, measures still to compute)
        for e in zoo:
            missing = tuple(n for n in s.measures if e.id not in measure_done[n])
            if e.id not in targets_done or missing or angle_matrix_out:
                jobs.append((e.id, e.id not in targets_done, missing))
        if limit is not None:
            jobs = jobs[:limit]
        if jobs:
            _check_layer(zoo, jobs[0][0], ctx, s)
            env = scoring_environment(device, workers if isinstance(executor, ProcessPool) else 1)
            if isinstance(executor, RayExecutor):
                executor.connect()
                env.update(executor.describe(), threads_per_model=executor.threads_per_job)
            store.add_environment(run_id, env)  # only calls that compute
        _run_jobs(zoo, store, jobs, ctx, s, device, executor, run_settings, per_measure, angle_matrix_out, out,
                  progress)
        return run_from_store(store, out / "results.sqlite", run_id, computed=len(jobs))
    finally:
        store.close()


def _by_family(jobs):
    """One job per (model, measure family) for a cluster, so that a slow family (sharpness,
    PAC-Bayes) is its own task; the model's targets go with its first."""
    out = []
    for mid, need_targets, missing in jobs:
        groups: dict[str, list[str]] = {}
        for name in missing:
            groups.setdefault(get_measure(name).family, []).append(name)
        for i, names in enumerate(list(groups.values()) or [[]]):
            out.append((mid, need_targets and i == 0, tuple(names)))
    return out


def _run_jobs(zoo, store, jobs, ctx, s, device, executor, run_settings, per_measure, angle_matrix_out, out,
              progress):
    bar = None
    if progress and jobs:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"scoring {printable(zoo.name)}", unit="model")
    vectors = {}
    if isinstance(executor, RayExecutor):
        jobs = _by_family(jobs)
    parts_left = Counter(mid for mid, _, _ in jobs)  # a model is done when all its jobs are

    def record(o: _Outcome):
        if o.error is not None:
            store.put_model(zoo.name, o.model_id, run_settings, {}, error=o.error)
            if bar is not None:
                bar.write(f"model {o.model_id} failed: {o.error}")
        elif o.targets is not None:
            store.put_model(zoo.name, o.model_id, run_settings, o.targets, {"targets": o.target_seconds})
        for name, (value, extra, secs, err) in o.measures.items():
            store.put_measure(zoo.name, o.model_id, per_measure[name], name, value, secs, err, extra)
            if err is not None and bar is not None:
                bar.write(f"model {o.model_id}: measure {name} failed: {err}")
        if o.vector is not None:
            vectors[o.model_id] = o.vector
        parts_left[o.model_id] -= 1
        if bar is not None and parts_left[o.model_id] == 0:
            bar.update(1)

    try:
        if executor is None:
            for mid, need_targets, missing in jobs:
                record(_score_one(zoo, mid, ctx, s, device, need_targets, missing, angle_matrix_out))
        else:  # worker processes reopen the zoo from its folder
            from pgen.learned.predictor import loaded_predictors
            from pgen.measures import PLUGINS

            initargs = (str(zoo.root), getattr(zoo, "data_root", None),  # absolute: the path every node sees
                        getattr(zoo, "trust_code", False), zoo.identity(), s, ctx, device, executor.threads_per_job,
                        tuple(PLUGINS), loaded_predictors())
            executor.run(jobs, initializer=_worker_init, initargs=initargs, work=_worker_score, record=record,
                         failed=lambda job, message: record(_Outcome(job[0], error=message)))
    finally:
        if bar is not None:
            bar.close()
    if angle_matrix_out and vectors:
        from pgen.pvector import angle_matrix

        names = sorted(vectors)
        mat = angle_matrix([vectors[n] for n in names])
        pd.DataFrame(mat, index=names, columns=names).to_csv(output_path(out, "angle_matrix.csv"))


def score_models(models, data, *, metrics=None, hparams=None, test_data=None, initial_models=None,
                 measures=("pvector_angle",), out=None, n_samples: int | None = 1000, seed: int = 0,
                 device: str = "cpu", batch_size: int = 256, name: str = "models", data_kind: str | None = None,
                 progress: bool = False) -> ScoreRun:
    """Score models held in Python, as :func:`score_zoo` scores a zoo.

    Parameters
    ----------
    models : Mapping[str, nn.Module or Callable[[], nn.Module]]
        Model ids to modules, or to callables returning one (so that a large zoo is never
        held in memory at once).
    data : Dataset, (x, y) pair of tensors or arrays, or str
        The training samples (a dataset spec such as ``"digits"`` or ``"npz:PATH"`` works
        too); the first ``n_samples`` are scored.
    metrics : Mapping[str, dict], optional
        Recorded metrics per id, e.g. ``{"a": {"test_acc": 0.91}}``.
    hparams : Mapping[str, dict], optional
        Hyperparameters per id (Psi and the CMI need them).
    test_data : optional
        A test split, as ``data``: pgen then measures test accuracy itself.
    initial_models : Mapping, optional
        Initial weights per id, as ``models``, for the measures that need them.
    measures : sequence of str, default=("pvector_angle",)
        Registered measure names.
    out : str or Path, optional
        Store the results in ``out/results.sqlite`` (a rerun resumes); without it, a
        temporary folder removed when the call returns or raises.
    n_samples : int or None, default=1000
        How many training samples are scored (None: all).
    seed : int, default=0
        Seed of the stochastic measures and the pseudo-test augmentation.
    device : str, default="cpu"
        ``"cpu"`` or ``"cuda"``.
    batch_size : int, default=256
        Forward-pass batch size.
    name : str, default="models"
        The zoo name the results are stored under.
    data_kind : str, optional
        The pseudo-test policy (:data:`pgen.augment.POLICIES`); default: the dataset's,
        else one without geometric flips.
    progress : bool, default=False
        Show a progress bar.

    Returns
    -------
    ScoreRun
        ``.table``: one row per model (``model_id``, ``train_acc``, ``pseudo_test_acc``,
        ``test_acc``, ``gap``, each measure and its extra values); ``.errors``: the models
        and measures that failed, which never stop the others.

    Raises
    ------
    InputError
        When the data are empty or of one class, or ``models`` is empty.

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> nets = {f"m{i}": torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)) for i in range(3)}
    >>> run = score_models(nets, "digits", n_samples=200)
    >>> run.table["model_id"].tolist(), bool(run.table["pvector_angle"].between(0, 90).all())
    (['m0', 'm1', 'm2'], True)
    """
    import tempfile
    import warnings

    from pgen.zoo.memory import ModelsZoo

    zoo = ModelsZoo(models, data, metrics=metrics, hparams=hparams, test_data=test_data,
                    initial_models=initial_models, name=name)
    settings = ScoreSettings(measures=tuple(measures), n_samples=n_samples, seed=seed, batch_size=batch_size,
                             data_kind=data_kind)
    if out is not None:
        run = score_zoo(zoo, out, settings=settings, device=device, progress=progress)
    else:
        with tempfile.TemporaryDirectory(prefix="pgen-score-models-") as folder:
            run = score_zoo(zoo, folder, settings=settings, device=device, progress=progress)
    if len(run.errors):
        first = run.errors.iloc[0]
        what = f"measure {first['measure']} of model {first['model_id']}" if first["measure"] else \
            f"model {first['model_id']}"
        warnings.warn(f"{len(run.errors)} failure(s) among {len(zoo)} models, in .errors; the first, {what}: "
                      f"{first['error']}", PgenNotice, stacklevel=2)
    return run