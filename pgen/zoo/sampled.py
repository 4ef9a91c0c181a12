"""Zoos whose runs draw their own hyperparameters: the Small CNN Zoo's protocol.

Unterthiner et al. (2020, "Predicting Neural Network Accuracy from Weights") train 30,000
Small CNNs per dataset, each with hyperparameters drawn at random, and keep each run's
checkpoints at several epochs. A sampled recipe says the same in TOML::

    name = "smallcnn-mnist5k"
    dataset = "mnist5k"
    runs = 2000                       # how many runs
    seed = 0                          # run i draws from numpy's default_rng([seed, i])
    [train]
    arch = "smallcnn"                 # the one architecture a sampled recipe trains
    epochs = 18
    batch_size = 32
    stack = 16                        # runs trained together (pgen.stacked)
    [transform]                       # the inputs the models see: (x - mean) / std
    mean = [0.5]
    std = [0.5]
    [sample]                          # in this order, per run
    optimizer = ["sgd", "adam", "rmsprop"]                 # a list: uniform choice
    learning_rate = {log_uniform = [5e-4, 5e-2]}
    dropout = {uniform = [0.0, 0.7], step = 0.00390625}    # rounded to multiples of step
    [checkpoints]
    epochs = [0, 1, 2, 3, 6, 12, 18]  # 0: the initial weights

A run's draws depend only on the seed and its index, so the first 100 runs of a
2000-run recipe are the 100 runs of the same recipe with ``runs = 100``. Runs are trained
in stacks (:func:`pgen.stacked.train_stack`) of runs that share optimizer, activation and
train fraction; each stack's members are fixed by the recipe (runs of one group, in index
order, cut into pieces of ``stack``), because stacked training is equal to training alone
only to float tolerance: a rebuild makes the same stacks and so the same bits.

The zoo is pgen's own format: one manifest row per checkpoint (``<run>@step<N>``; the last
is ``<run>`` with ``final: true``), metrics ``train_acc``, ``test_acc``, ``train_loss``,
``test_loss`` (cross-entropy), ``l2_penalty`` and ``diverged``. Finished stacks append their
rows, so a killed build resumes at the stacks it had not finished; ``limit`` builds whole
stacks, in the recipe's order, until at least ``limit`` runs are new.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from pgen.data import dataset_arrays, dataset_from_spec, dataset_info
from pgen.errors import InputError, PgenNotice
from pgen.models import SmallCNN
from pgen.paths import replace_link, safe_filename
from pgen.stacked import OPTIMIZERS, W_INITS, RunSpec, load_into, train_stack
from pgen.text import printable
from pgen.zoo.base import ZooError
from pgen.zoo.native import FORMAT, save_state_dict

__all__ = ["SampledRecipe", "build_sampled_zoo", "is_sampled"]

_SHARED = ("optimizer", "activation", "train_fraction")  # what the runs of one stack have in common
_PER_RUN = ("learning_rate", "l2reg", "dropout", "w_init", "init_std")
_CONSTANTS = {"l2reg": 0.0, "dropout": 0.0, "w_init": "he_normal", "init_std": 0.05, "activation": "relu",
              "train_fraction": 1.0, "optimizer": "sgd", "learning_rate": 0.01}


def is_sampled(data: dict) -> bool:
    return "sample" in data


class SampledRecipe:
    """A parsed, validated sampled recipe (see the module docstring)."""

    def __init__(self, data: dict, source: str = "<recipe>"):
        self.source, self.raw = source, data
        try:
            self.name = str(data["name"])
            self.dataset = str(data["dataset"])
            self.n_runs = data["runs"]
            self.sample = dict(data["sample"])
        except KeyError as exc:
            raise ZooError(f"recipe {source} lacks {exc.args[0]!r}") from None
        if safe_filename(self.name) != self.name:
            raise ZooError(f"recipe {source}: name {self.name!r} must be a plain file name")
        if not isinstance(self.n_runs, int) or isinstance(self.n_runs, bool) or self.n_runs < 1:
            raise ZooError(f"recipe {source}: runs must be a whole number of at least 1, got {self.n_runs!r}")
        self.seed = int(data.get("seed", 0))
        self.description = data.get("description", "")
        self.train = dict(data.get("train", {}))
        if self.train.get("arch", "smallcnn") != "smallcnn":
            raise ZooError(f"recipe {source}: sampled recipes train arch 'smallcnn' only")
        self.epochs = int(self.train.get("epochs", 18))
        self.batch_size = int(self.train.get("batch_size", 32))
        self.stack = int(self.train.get("stack", 16))
        self.filters = int(self.train.get("filters", 16))
        self.layers = int(self.train.get("layers", 3))
        if min(self.epochs, self.batch_size, self.stack, self.filters, self.layers) < 1:
            raise ZooError(f"recipe {source}: epochs, batch_size, stack, filters and layers must be at least 1")
        self.transform = dict(data.get("transform", {}))
        ck = data.get("checkpoints", {})
        self.checkpoint_epochs = sorted(set(ck.get("epochs", [0])) | {self.epochs})
        if any(not isinstance(e, int) or not 0 <= e <= self.epochs for e in self.checkpoint_epochs):
            raise ZooError(f"recipe {source}: checkpoint epochs must be whole numbers from 0 to {self.epochs}")
        if 0 not in self.checkpoint_epochs:  # the initial weights are every row's initial_checkpoint
            raise ZooError(f"recipe {source}: checkpoints.epochs must include 0 (the initial weights)")
        self.info = dataset_info(self.dataset)
        for key, spec in self.sample.items():
            self._check_spec(key, spec)
        unknown = set(self.sample) - set(_SHARED) - set(_PER_RUN)
        if unknown:
            raise ZooError(f"recipe {source}: [sample] keys {sorted(unknown)} are not known; known: "
                           f"{sorted(_SHARED + _PER_RUN)}")

    def _check_spec(self, key, spec):
        where = f"recipe {self.source}: [sample] {key}"
        if isinstance(spec, list):
            if not spec:
                raise ZooError(f"{where} is an empty list")
            allowed = {"optimizer": OPTIMIZERS, "w_init": W_INITS}.get(key)
            bad = [v for v in spec if allowed is not None and v not in allowed]
            if bad:
                raise ZooError(f"{where}: {bad} not among {list(allowed)}")
            return
        if not isinstance(spec, dict) or len(set(spec) & {"uniform", "log_uniform"}) != 1:
            raise ZooError(f"{where} must be a list of values or {{uniform = [lo, hi]}} / {{log_uniform = [lo, hi]}}")
        step = spec.get("step")
        if key == "dropout" and not (step and (step * 256) % 1 == 0):
            raise ZooError(f"{where}: needs step = k/256 (0.00390625 or a multiple): pgen.stacked draws dropout "
                           "masks from random bytes")
        kind = "uniform" if "uniform" in spec else "log_uniform"
        lo, hi = spec[kind]
        if not lo <= hi or (kind == "log_uniform" and lo <= 0):
            raise ZooError(f"{where}: bad range {spec[kind]}")

    def _draw(self, rng: np.random.Generator, spec):
        if isinstance(spec, list):
            return spec[int(rng.integers(len(spec)))]
        if "uniform" in spec:
            lo, hi = spec["uniform"]
            value = float(rng.uniform(lo, hi))
        else:
            lo, hi = spec["log_uniform"]
            value = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        step = spec.get("step")
        if step:
            value = min(round(value / step) * step, math.floor(hi / step) * step)
        return value

    def run(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i])
        hp = {k: self._draw(rng, spec) for k, spec in self.sample.items()}
        hp = {**{k: v for k, v in _CONSTANTS.items() if k not in hp}, **hp}
        seed = int(rng.integers(2 ** 31))
        return {"id": f"{self.name}-{i:05d}", "index": i, "seed": seed, "hparams": {**hp, "seed": seed}}

    def runs(self) -> list[dict]:
        return [self.run(i) for i in range(self.n_runs)]

    def stacks(self) -> list[list[dict]]:
        """The runs cut into stacks: grouped by optimizer, activation and train fraction,
        each group in index order cut into pieces of ``stack``; ordered by first index."""
        groups: dict[tuple, list[dict]] = {}
        for run in self.runs():
            groups.setdefault(tuple(run["hparams"][k] for k in _SHARED), []).append(run)
        out = [g[s:s + self.stack] for g in groups.values() for s in range(0, len(g), self.stack)]
        return sorted(out, key=lambda st: st[0]["index"])


def _meta(recipe: SampledRecipe) -> dict:
    return {
        "format": FORMAT, "version": 1, "name": recipe.name, "description": recipe.description,
        "dataset": {"name": recipe.dataset, "spec": recipe.dataset, "transform": recipe.transform},
        "input_shape": list(recipe.info.input_shape), "num_classes": recipe.info.num_classes,
        "recipe": recipe.raw,
    }


def build_sampled_zoo(recipe: SampledRecipe, out: Path, *, progress: bool = True, limit: int | None = None,
                      workers: int = 1, executor="local", address: str | None = None) -> Path:
    """Train a sampled recipe's runs into ``out`` (resuming), stacks in parallel workers
    (``executor`` "local": processes; "ray": Ray tasks, one CPU each)."""
    from pgen.executors import open_executor
    from pgen.zoo.builder import _finished_ids, drop_torn_tail

    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "zoo.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("recipe") != recipe.raw:
            raise ZooError(f"{out} holds a zoo built from a different recipe; choose another --out")
    replace_link(meta_path).write_text(json.dumps(_meta(recipe), indent=1))
    manifest = out / "manifest.jsonl"
    if manifest.is_symlink():
        raise ZooError(f"{manifest} is a symlink; pgen does not write through links: move it aside")
    drop_torn_tail(manifest)
    done = _finished_ids(manifest)  # a torn last line's stack is redone
    todo = [st for st in recipe.stacks() if not all(r["id"] in done for r in st)]
    if limit is not None:
        picked, new = [], 0
        for st in todo:
            if new >= limit:
                break
            picked.append(st)
            new += sum(r["id"] not in done for r in st)
        todo = picked
    if not todo:
        return out
    # longest stacks first (steps grow with the train fraction): the workers end together
    todo.sort(key=lambda st: (-st[0]["hparams"]["train_fraction"] * len(st), st[0]["index"]))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(st) for st in todo), desc=f"building zoo {printable(recipe.name)}", unit="run")
    failures = []

    def record(rows):
        with manifest.open("a") as fh:
            for row in rows:
                if row["run"] not in done:
                    fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if bar is not None:
            bar.update(sum(1 for r in rows if r.get("final")))

    def failed(job, error):
        failures.append((job[0][0]["id"], error))
        with (out / "build-failures.jsonl").open("a") as fh:
            fh.write(json.dumps({"runs": [r["id"] for r in job[0]], "error": error}) + "\n")
        warnings.warn(f"stack of runs {job[0][0]['id']}.. failed and was left out: {error}", PgenNotice, stacklevel=2)

    jobs = [(st,) for st in todo]
    try:
        with open_executor(executor, workers=workers, address=address) as ex:
            if ex is None:
                _init(recipe.raw, recipe.source, str(out))
                for job in jobs:
                    try:
                        record(_train(*job))
                    except (InputError, ZooError, RuntimeError, ValueError) as exc:
                        failed(job, f"{type(exc).__name__}: {exc}")
            else:
                ex.run(jobs, initializer=_init, initargs=(recipe.raw, recipe.source, str(out)), work=_train,
                       record=record, failed=failed)
    finally:
        if bar is not None:
            bar.close()
    if failures:
        raise ZooError(f"{len(failures)} stack(s) failed (listed in {out / 'build-failures.jsonl'}); the rest of "
                       f"the zoo is built; run the build again to retry them")
    return out


_STATE: dict = {}


def _init(raw: dict, source: str, out: str) -> None:
    recipe = SampledRecipe(raw, source)
    train = dataset_from_spec(recipe.dataset, "train", transform=recipe.transform)
    test = dataset_from_spec(recipe.dataset, "test", transform=recipe.transform)
    _STATE.update(recipe=recipe, out=Path(out), train=dataset_arrays(train), test=dataset_arrays(test))


def _train(stack: list[dict]) -> list[dict]:
    """Train one stack; write its checkpoints; return its manifest rows (each run's final last)."""
    from pgen.zoo.builder import _save_training_data
    recipe: SampledRecipe = _STATE["recipe"]
    out: Path = _STATE["out"]
    (train_x, train_y), (test_x, test_y) = _STATE["train"], _STATE["test"]
    torch.set_num_threads(1)  # one thread: the same bits whatever the number of workers
    shared = {k: stack[0]["hparams"][k] for k in _SHARED}
    specs = [RunSpec(r["seed"], **{k: r["hparams"][k] for k in _PER_RUN}) for r in stack]
    train_size = int(len(train_y) * shared["train_fraction"])
    modules = [SmallCNN(recipe.info.input_shape, recipe.info.num_classes, recipe.filters, recipe.layers,
                        shared["activation"], r["hparams"]["dropout"]) for r in stack]
    rows: list[list[dict]] = [[] for _ in stack]

    def model_kwargs(r):
        return {"filters": recipe.filters, "layers": recipe.layers, "activation": shared["activation"],
                "dropout": r["hparams"]["dropout"]}

    def on_checkpoint(epoch, step, i, weights, metrics):
        run = stack[i]
        final = epoch == recipe.epochs
        ident = run["id"] if final else f"{run['id']}@step{step}"
        rel = f"checkpoints/{run['id']}-init.safetensors" if epoch == 0 else f"checkpoints/{ident}.safetensors"
        save_state_dict(load_into(modules[i], weights), out / rel)
        rows[i].append({"id": ident, "run": run["id"], "checkpoint": rel,
                        "initial_checkpoint": f"checkpoints/{run['id']}-init.safetensors", "arch": "smallcnn",
                        "model_kwargs": model_kwargs(run), "hparams": run["hparams"], "epoch": epoch, "step": step,
                        "metrics": metrics, "final": final, "train_data": f"checkpoints/{run['id']}-train.npz"})

    result = train_stack(specs, optimizer=shared["optimizer"], activation=shared["activation"],
                         train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, train_size=train_size,
                         epochs=recipe.epochs, checkpoint_epochs=recipe.checkpoint_epochs,
                         batch_size=recipe.batch_size, on_checkpoint=on_checkpoint, filters=recipe.filters,
                         layers=recipe.layers, num_classes=recipe.info.num_classes)
    for run, idx in zip(stack, result["indices"]):
        _save_training_data(out / f"checkpoints/{run['id']}-train.npz", idx, train_y[idx])
    return [row for run_rows in rows for row in run_rows]

