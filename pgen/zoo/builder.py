"""Train a zoo from a recipe (TOML) into pgen's own zoo format.

A recipe::

    name = "digits"
    dataset = "digits"
    seeds = [0]                       # one run per grid point and seed
    [train]                           # TrainConfig defaults (any grid key overrides)
    epochs = 12
    batch_size = 32
    lr = 0.05
    [grid]                            # the full grid; arch plus architecture and
    arch = ["mlp", "cnn"]             # training hparams
    width = [16, 64]
    train_fraction = [0.15, 1.0]
    [checkpoints]
    epochs = [1, 4]                   # extra checkpoints (the final epoch is always kept)
    iterations = [1, 5, 10]           # optimizer steps, e.g. inside the first epoch
    initial = true                    # save the initial weights too

Training to a criterion (Jiang et al. 2019, PGDL): ``target_train_loss = 0.01`` in
``[train]`` stops each run at the first epoch whose training cross-entropy is at most
that, with ``epochs`` as the cap; the final row's metrics record ``converged``, the
``step`` and the loss reached. ``stop_at_chance_epochs = N`` also ends a run whose
training loss has sat at chance level for N epochs (metrics ``stalled``), instead of
training it to the cap.

What each model was trained on is recorded: ``checkpoints/<run>-train.npz`` holds the
indices into the training split and the labels used (after ``label_noise``), and the
manifest rows name it as ``train_data``; label-using measures score the model on them.

Each finished run appends its rows to ``manifest.jsonl`` after its checkpoints are on
disk, so an interrupted build resumes where it stopped (finished runs are not retrained;
the one in progress is retrained from its seed, which gives the same weights).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import torch

from pgen.cache import cache_dir
from pgen.data import dataset_arrays, dataset_info, load_dataset
from pgen.errors import InputError
from pgen.models import ARCHITECTURES, build_model
from pgen.text import printable
from pgen.train import TrainConfig, train_model, training_data
from pgen.zoo.base import ZooError
from pgen.zoo.native import FORMAT, save_state_dict
from pgen.paths import replace_link, safe_filename

__all__ = ["Recipe", "build_zoo", "default_cache_dir", "find_recipe", "embedded_recipes", "load_recipe"]

_TRAIN_KEYS = set(TrainConfig.__dataclass_fields__) - {"seed", "checkpoint_epochs", "checkpoint_iterations"}


def default_cache_dir() -> Path:
    """Where embedded zoos are built: :func:`pgen.cache.cache_dir`."""
    return cache_dir()


def embedded_recipes() -> dict[str, Traversable]:
    """The recipes shipped inside the package (``pgen/recipes/*.toml``), by name.

    Found through ``importlib.resources``, so they are there in any install, editable or
    not, whatever the working directory.
    """
    folder = resources.files("pgen") / "recipes"
    return {p.name[:-5]: p for p in sorted(folder.iterdir(), key=lambda p: p.name) if p.name.endswith(".toml")}


def load_recipe(name_or_path) -> "Recipe | SampledRecipe":
    """An embedded recipe by name, or a TOML file: a grid :class:`Recipe`, or a
    :class:`~pgen.zoo.sampled.SampledRecipe` when it has a ``[sample]`` table."""
    from pgen.zoo.sampled import SampledRecipe, is_sampled

    path = find_recipe(str(name_or_path)) if not isinstance(name_or_path, Traversable) else name_or_path
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ZooError(f"recipe {path} is not valid TOML: {exc}") from exc
    return SampledRecipe(data, str(path)) if is_sampled(data) else Recipe(data, str(path))


def find_recipe(name_or_path: str) -> Path | Traversable:
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.is_file():
        return p
    recipes = embedded_recipes()
    if name_or_path in recipes:
        return recipes[name_or_path]
    raise ZooError(f"no recipe {name_or_path!r}: not a .toml file, and embedded recipes are {sorted(recipes)}")


class Recipe:
    """A parsed, validated recipe."""

    def __init__(self, data: dict, source: str = "<recipe>"):
        self.source = source
        try:
            self.name = str(data["name"])
            self.dataset = str(data["dataset"])
            self.grid = {k: list(v) for k, v in data["grid"].items()}
        except KeyError as exc:
            raise ZooError(f"recipe {source} lacks {exc.args[0]!r}") from None
        if safe_filename(self.name) != self.name:  # the name becomes the zoo's folder and its models' file names
            raise ZooError(f"recipe {source}: name {self.name!r} must be a plain file name (letters, digits and "
                           f"-_.+=@, not starting with a dot), e.g. {safe_filename(self.name)!r}")
        self.seeds = list(data.get("seeds", [0]))
        self.train = dict(data.get("train", {}))
        ck = data.get("checkpoints", {})
        self.checkpoint_epochs = sorted(set(ck.get("epochs", [])))
        self.checkpoint_iterations = sorted(set(ck.get("iterations", [])))
        self.save_initial = bool(ck.get("initial", True))
        self.description = data.get("description", "")
        self.raw = data
        self.info = dataset_info(self.dataset)
        if "arch" not in self.grid and "arch" not in self.train:
            raise ZooError(f"recipe {source}: set 'arch' in [grid] or [train]")
        for arch in self.grid.get("arch", [self.train.get("arch")]):
            if arch not in ARCHITECTURES:
                raise ZooError(f"recipe {source}: unknown arch {arch!r}; known: {sorted(ARCHITECTURES)}")
        for k, values in self.grid.items():
            if not values:
                raise ZooError(f"recipe {source}: grid entry {k!r} is empty")

    @classmethod
    def load(cls, path: str | Path | Traversable) -> Recipe:
        path = path if isinstance(path, Traversable) else Path(path)
        try:
            return cls(tomllib.loads(path.read_text()), source=str(path))
        except tomllib.TOMLDecodeError as exc:
            raise ZooError(f"recipe {path} is not valid TOML: {exc}") from exc

    def hparam_grid(self) -> dict[str, list]:
        grid = dict(self.grid)
        if len(self.seeds) > 1:
            grid["seed"] = list(self.seeds)
        return grid

    def runs(self) -> list[dict]:
        """Every (grid point, seed) as a flat dict of hparams, in a fixed order."""
        keys = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            for seed in self.seeds:
                hp = dict(zip(keys, values))
                if len(self.seeds) > 1:
                    hp["seed"] = seed
                out.append({"hparams": hp, "seed": seed})
        for i, run in enumerate(out):
            run["id"] = f"{self.name}-{i:04d}"
        return out


def _train_config(recipe: Recipe, hp: dict, seed: int) -> TrainConfig:
    settings = {k: v for k, v in recipe.train.items() if k in _TRAIN_KEYS}
    settings.update({k: v for k, v in hp.items() if k in _TRAIN_KEYS})
    epochs = settings.get("epochs", TrainConfig.epochs)
    return TrainConfig(**settings, seed=seed,
                       checkpoint_epochs=sorted(set(recipe.checkpoint_epochs) | {epochs}),
                       checkpoint_iterations=recipe.checkpoint_iterations)


def drop_torn_tail(manifest: Path) -> None:
    """Cut a last line left without its newline by a crash mid-write, so that the rows
    appended next start on a line of their own (its run is redone)."""
    if not manifest.exists():
        return
    data = manifest.read_bytes()
    if data and not data.endswith(b"\n"):
        with manifest.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _finished_ids(manifest: Path) -> set[str]:
    done = set()
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a crash: that run is redone
            if row.get("final"):
                done.add(row["run"])
    return done


def build_zoo(recipe, out: str | Path | None = None, *, progress: bool = True,
              limit: int | None = None, workers: int = 1, executor: str = "local", address: str | None = None) -> Path:
    """Train every run of a recipe into a pgen zoo folder; resume if it exists.

    Every run trains on one CPU thread, so the same recipe and seed give bit-identical
    checkpoints on the same machine type whatever ``workers`` is (a multi-threaded
    reduction sums in an order that depends on the thread count). ``workers`` runs that
    many trainings in parallel processes; the manifest is still written in run order.

    Parameters
    ----------
    recipe : name of an embedded recipe, path to a TOML file, a Recipe or a SampledRecipe
        (:mod:`pgen.zoo.sampled`: runs that draw their own hyperparameters)
    out : folder (default: ``default_cache_dir()/zoos/<name>``)
    limit : train at most this many new runs (for smoke tests; a sampled recipe builds
        whole stacks until at least this many)
    workers : parallel training processes (default 1)
    executor : "local" (processes) or "ray" (sampled recipes; ``address`` of a cluster)

    Returns
    -------
    Path of the zoo folder.
    """
    if limit is not None and limit < 1:  # a negative limit would slice runs off the end
        raise InputError(f"limit must be at least 1 (or None for every run); got {limit}")
    if workers < 1:
        raise InputError(f"workers must be at least 1; got {workers}")
    from pgen.zoo.sampled import SampledRecipe, build_sampled_zoo

    if not isinstance(recipe, (Recipe, SampledRecipe)):
        recipe = load_recipe(recipe)
    out = Path(out) if out else default_cache_dir() / "zoos" / recipe.name
    if isinstance(recipe, SampledRecipe):
        return build_sampled_zoo(recipe, out, progress=progress, limit=limit, workers=workers, executor=executor,
                                 address=address)
    if executor != "local":
        raise InputError(f"--executor {executor} builds sampled recipes (a [sample] table) only; grid recipes "
                         "train in local processes (--workers)")
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "version": 1,
        "name": recipe.name,
        "description": recipe.description,
        "dataset": {"name": recipe.dataset},
        "input_shape": list(recipe.info.input_shape),
        "num_classes": recipe.info.num_classes,
        "hparam_grid": recipe.hparam_grid(),
        "recipe": recipe.raw,
    }
    meta_path = out / "zoo.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("recipe") != recipe.raw:
            raise ZooError(f"{out} holds a zoo built from a different recipe; choose another --out")
    replace_link(meta_path).write_text(json.dumps(meta, indent=1))

    manifest = out / "manifest.jsonl"
    if manifest.is_symlink():  # appending would write through it, outside the zoo folder
        raise ZooError(f"{manifest} is a symlink; pgen does not write through links: move it aside")
    drop_torn_tail(manifest)
    done = _finished_ids(manifest)
    todo = [r for r in recipe.runs() if r["id"] not in done]
    if limit is not None:
        todo = todo[:limit]
    if not todo:
        return out
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"building zoo {printable(recipe.name)}", unit="model")

    def write(rows):
        with manifest.open("a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if bar is not None:
            bar.update(1)

    try:
        if workers > 1 and len(todo) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: a child forked after torch's OpenMP pool has run can hang
            from pgen.executors import start_worker

            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=start_worker,
                                     initargs=(os.getpid(), _worker_init, (recipe.raw, recipe.source, str(out)))) \
                    as pool:
                futures = [pool.submit(_worker_train, run) for run in todo]
                for fut in futures:  # in run order: the manifest reads the same however it was built
                    write(fut.result())
        else:
            train_set = load_dataset(recipe.dataset, "train")
            test_set = load_dataset(recipe.dataset, "test")
            for run in todo:
                write(_train_run(recipe, run, out, train_set, test_set))
    finally:
        if bar is not None:
            bar.close()
    return out


_BUILD: dict = {}


def _worker_init(raw: dict, source: str, out: str) -> None:
    recipe = Recipe(raw, source)
    _BUILD.update(recipe=recipe, out=Path(out), train=load_dataset(recipe.dataset, "train"),
                  test=load_dataset(recipe.dataset, "test"))


def _worker_train(run: dict) -> list[dict]:
    return _train_run(_BUILD["recipe"], run, _BUILD["out"], _BUILD["train"], _BUILD["test"])


@contextlib.contextmanager
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_run(recipe: Recipe, run: dict, out: Path, train_set, test_set) -> list[dict]:
    hp = run["hparams"]
    arch = hp.get("arch", recipe.train.get("arch"))
    cfg = _train_config(recipe, hp, run["seed"])
    torch.manual_seed(run["seed"])
    model_kwargs = {k: v for k, v in {**recipe.train, **hp}.items() if k != "arch" and k not in _TRAIN_KEYS}
    model = build_model(arch, input_shape=recipe.info.input_shape, num_classes=recipe.info.num_classes,
                        **model_kwargs)
    initial_rel = None
    if recipe.save_initial:
        initial_rel = f"checkpoints/{run['id']}-init.safetensors"
        save_state_dict(copy.deepcopy(model), out / initial_rel)
    rows_by_step: dict[int, dict] = {}  # a step requested twice is saved once

    def on_checkpoint(info, m):
        ident = f"{run['id']}@step{info['step']}"
        rel = f"checkpoints/{ident}.safetensors"
        save_state_dict(m, out / rel)
        rows_by_step[info["step"]] = {
            "id": ident, "run": run["id"], "checkpoint": rel, "initial_checkpoint": initial_rel,
            "arch": arch, "model_kwargs": model_kwargs, "hparams": hp, "epoch": info["epoch"], "step": info["step"],
            "metrics": {k: v for k, v in info.items() if k not in ("epoch", "step")}, "final": False,
            "train_data": train_rel,
        }

    indices, labels = training_data(dataset_arrays(train_set)[1], cfg, recipe.info.num_classes)
    train_rel = f"checkpoints/{run['id']}-train.npz"
    _save_training_data(out / train_rel, indices, labels)
    with _one_thread():
        train_model(model, train_set, test_set, cfg, num_classes=recipe.info.num_classes,
                    on_checkpoint=on_checkpoint)
    # The checkpoint at the last step (the final epoch is always requested) is the trained
    # model itself: it gets the run's id, and its row goes last, marking the run as done.
    rows = [rows_by_step[s] for s in sorted(rows_by_step)]
    last = rows[-1]
    final_rel = f"checkpoints/{run['id']}.safetensors"
    (out / last["checkpoint"]).replace(out / final_rel)
    last.update(id=run["id"], checkpoint=final_rel, final=True)
    return rows


def _save_training_data(path: Path, indices: torch.Tensor, labels: torch.Tensor) -> None:
    """Indices into the training split and the labels a model was trained on (plain .npz)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = replace_link(path.with_name(path.name + ".tmp"))
    with tmp.open("wb") as fh:
        np.savez(fh, indices=indices.numpy().astype(np.int64), labels=labels.numpy().astype(np.int64))
    tmp.replace(path)
