"""A learned predictor fit once and applied to new models: fit, save, load, score.

A saved predictor is a folder of two files: ``weights.safetensors`` (the NFN's parameters,
or the StatNN trees as arrays) and ``predictor.json`` (what it predicts, the weight-space
layout it reads, its settings, and where its training models came from). Loading runs no
code from the files (no pickle). :meth:`LearnedPredictor.register` makes it the measure
``learned:<name>``, which ``pgen score --predictor FOLDER`` scores like any other.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pgen.errors import InputError
from pgen.learned.weightspace import LayerSpec, layout_mismatch, weight_layout, weight_space

__all__ = ["PREDICTORS", "TARGETS", "LearnedPredictor", "fit", "load", "fit_on_models", "target_table",
           "loaded_predictors"]

#: predictor name -> (kind, NFN mode)
PREDICTORS = {"statnn": ("statnn", None), "nfn": ("nfn", "HNP"), "nfn_np": ("nfn", "NP")}
#: what a predictor may learn, and the measure sign of its prediction (pgen.measures' convention)
TARGETS = {"test_acc": -1, "gap": 1}
FORMAT = "pgen-learned-predictor"
REFERENCES = {
    "statnn": "Unterthiner et al. 2020, Predicting Neural Network Accuracy from Weights (arXiv:2002.11448), StatNN",
    "nfn": "Zhou et al., NeurIPS 2023, Permutation Equivariant Neural Functionals (arXiv:2302.14040), NFN-HNP; "
           "github.com/AllanYangZhou/nfn experiments/predict_gen.py",
    "nfn_np": "Zhou et al., NeurIPS 2023, Permutation Equivariant Neural Functionals (arXiv:2302.14040), NFN-NP; "
              "github.com/AllanYangZhou/nfn experiments/predict_gen.py",
}


def _check_name(name: str) -> str:
    """A predictor's name becomes the measure learned:<name>: plain characters only."""
    if not (isinstance(name, str) and name and len(name) <= 80
            and all(ch.isascii() and (ch.isalnum() or ch in "_.-") for ch in name)):
        raise InputError(f"a predictor's name is letters, digits, _ . - (up to 80); got {name!r}")
    return name


def _check_choice(predictor: str, target: str) -> None:
    if predictor not in PREDICTORS:
        raise InputError(f"unknown learned predictor {predictor!r}; known: {', '.join(PREDICTORS)}")
    if target not in TARGETS:
        raise InputError(f"a learned predictor learns one of {', '.join(TARGETS)}; got {target!r}")


def target_table(zoo, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The models to learn from: ``table`` (e.g. a scored run's, with ``model_id``,
    ``hp.*`` and target columns) or the zoo's own records (``zoo.to_frame()``), with the
    gap (train minus test accuracy) added where it is missing.

    Parameters
    ----------
    zoo : Zoo
        The zoo whose records are used without ``table``.
    table : pandas.DataFrame, optional
        A per-model table with ``model_id`` and the target columns.

    Returns
    -------
    pandas.DataFrame
        One row per model, with ``gap`` where it could be computed.
    """
    t = (zoo.to_frame() if table is None else table).copy()
    if "gap" not in t and {"train_acc", "test_acc"} <= set(t.columns):
        t["gap"] = t["train_acc"].astype(float) - t["test_acc"].astype(float)
    return t


def models_to_learn(zoo, table: pd.DataFrame | None, predictor: str, target: str, *, progress: bool = True):
    """The opened zoo and the rows of :func:`target_table` with a finite ``target``: what
    :func:`fit` and the out-of-fold protocol both learn from."""
    from pgen.zoo import Zoo, load_zoo

    _check_choice(predictor, target)
    if not isinstance(zoo, Zoo):
        zoo = load_zoo(zoo, progress=progress)
    t = target_table(zoo, table)
    if target not in t:
        raise InputError(f"zoo {zoo.name}: no {target} values to learn from (its records have "
                         f"{', '.join(c for c in t.columns if not c.startswith('hp.'))}); pass a scored table")
    return zoo, t[np.isfinite(t[target].to_numpy(float))].reset_index(drop=True)


def nfn_settings(settings: dict) -> dict:
    """The NFN's training settings: the authors' (NFN_DEFAULTS) with the given ones over them."""
    from pgen.learned.nfn import NFN_DEFAULTS

    return {**{k: v for k, v in NFN_DEFAULTS.items() if k not in ("hchannels", "head_hidden")},
            **{k: v for k, v in settings.items() if v is not None}}


def _inputs(kind: str, models, layout):
    if kind == "statnn":
        from pgen.learned.statnn import statnn_features

        return np.stack([statnn_features(m) for m in models])
    return weight_space(models, layout)


def _subset(kind: str, inputs, idx):
    if kind == "statnn":
        return inputs[idx]
    weights, biases = inputs
    idx = torch.as_tensor(np.asarray(idx))
    return [w[idx] for w in weights], [b[idx] for b in biases]


def _scale_for(y: np.ndarray, kind: str):
    """The NFN's sigmoid output covers [0, 1]: targets outside it are mapped by their range."""
    if kind != "nfn" or (y.min() >= 0 and y.max() <= 1):
        return None
    lo, hi = float(y.min()), float(y.max())
    return (lo, hi if hi > lo else lo + 1.0)


def _train(kind: str, mode, inputs, y: np.ndarray, groups, *, seed: int, settings: dict, device: str,
           progress: bool = False):
    """The fitted state and a record of the fit."""
    if kind == "statnn":
        from pgen.learned.statnn import fit_trees, trees_to_arrays

        return trees_to_arrays(fit_trees(inputs, y, seed=seed)), {"seed": int(seed), "regressor":
                                                                   "sklearn GradientBoostingRegressor defaults"}
    from pgen.learned.nfn import train_nfn

    scale = _scale_for(y, kind)
    yy = y if scale is None else (y - scale[0]) / (scale[1] - scale[0])
    net, record = train_nfn(*inputs, yy, mode=mode, seed=seed, device=device, groups=groups, progress=progress,
                            **{k: settings[k] for k in ("epochs", "batch_size", "lr", "validation_fraction")
                               if k in settings})
    return (net.cpu(), scale), record


def _predict(kind: str, state, inputs, device: str = "cpu") -> np.ndarray:
    if kind == "statnn":
        from pgen.learned.statnn import predict_trees

        return predict_trees(*state, inputs)
    from pgen.learned.nfn import predict_nfn

    net, scale = state
    p = predict_nfn(net.to(device), *inputs, device=device)
    return p if scale is None else scale[0] + p * (scale[1] - scale[0])


@dataclass
class LearnedPredictor:
    """A fitted predictor: :meth:`predict` a list of models, :meth:`save` it, :meth:`register`
    it as the measure ``learned:<name>``.

    Parameters
    ----------
    name : str
        Its name; it is scored as the measure ``learned:<name>``.
    predictor : {"statnn", "nfn", "nfn_np"}
        The kind of predictor.
    target : str
        What it predicts (``test_acc``, ``gap``, ...).
    layout : tuple of LayerSpec or None
        The weight-space layout it reads (None for StatNN, which reads any layout).
    state : object
        The fitted parameters (the NFN's module, or StatNN's trees as arrays).
    settings : dict
        The training settings used.
    training : dict
        What it was fit on: the zoo's name and identity, a hash of the model ids.
    source : str, optional
        The folder it was loaded from.
    """

    name: str
    predictor: str  # a key of PREDICTORS
    target: str
    layout: tuple[LayerSpec, ...] | None  # the NFN's; None for StatNN (its features fit any layers)
    state: object = field(repr=False)
    settings: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    source: str | None = None  # the folder it was loaded from

    @property
    def kind(self) -> str:
        return PREDICTORS[self.predictor][0]

    @property
    def measure_name(self) -> str:
        return f"learned:{self.name}"

    def predict(self, models, *, where: str = "model", device: str = "cpu") -> np.ndarray:
        """Predicted ``target`` of each model; :class:`InputError` naming the first layer of a
        model whose weight-space layout does not fit the one it was fit on."""
        models = list(models)
        if self.layout is not None:
            for i, m in enumerate(models):
                label = where if len(models) == 1 else f"{where} {i}"
                problem = layout_mismatch(self.layout, weight_layout(m, where=label))
                if problem:
                    raise InputError(f"{label} does not fit predictor {self.name}: {problem}")
        return _predict(self.kind, self.state, _inputs(self.kind, models, self.layout), device)

    # ---------------------------------------------------------------- files
    def _tensors(self) -> dict[str, torch.Tensor]:
        if self.kind == "statnn":
            return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.state[0].items()}
        return {k: v.detach().cpu().contiguous() for k, v in self.state[0].state_dict().items()}

    def description(self) -> dict:
        meta = {"format": FORMAT, "version": 1, "name": self.name, "predictor": self.predictor,
                "target": self.target, "sign": TARGETS[self.target], "reference": REFERENCES[self.predictor],
                "layout": None if self.layout is None else [s.to_json() for s in self.layout],
                "settings": self.settings, "training": self.training}
        if self.kind == "statnn":
            meta["trees"] = self.state[1]
        else:
            meta["target_scale"] = None if self.state[1] is None else list(self.state[1])
        return meta

    def save(self, folder: str | Path) -> Path:
        """Write ``weights.safetensors`` and ``predictor.json`` into ``folder``; returns it."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(self._tensors(), str(folder / "weights.safetensors"))
        digest = hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()
        meta = {**self.description(), "weights_sha256": digest}
        (folder / "predictor.json").write_text(json.dumps(meta, indent=1, default=_json_default) + "\n")
        return folder

    def identity(self) -> str:
        """A digest of the fitted parameters and description: results stores keep values of
        different predictors that share a name apart."""
        h = hashlib.sha256(json.dumps(self.description(), sort_keys=True, default=_json_default).encode())
        for k, v in sorted(self._tensors().items()):
            h.update(k.encode())
            h.update(v.numpy().tobytes())
        return h.hexdigest()[:16]

    def register(self) -> str:
        """Register as the measure ``learned:<name>`` (once per process); returns that name."""
        from pgen.measures import REGISTRY, register

        name, ident = self.measure_name, self.identity()
        if name in REGISTRY:
            if REGISTRY[name].identity != ident:
                raise InputError(f"two different predictors are named {self.name!r}; rename one "
                                 "(`pgen learned fit ... --name`)")
            return name
        predictor = self

        def learned(model, init_model, data, settings):
            return float(predictor.predict([model], device=settings.device)[0])

        zoo = self.training.get("zoo", "?")
        register(name, description=f"{self.predictor} fit on {zoo} ({self.training.get('models', '?')} models) "
                                   f"to predict {self.target}",
                 sign=TARGETS[self.target], reference=REFERENCES[self.predictor], family="learned",
                 sign_reason=f"it predicts {self.target}" + (": higher predicted accuracy, better generalization"
                                                              if self.target == "test_acc" else ""),
                 fidelity="faithful", samples="none", identity=ident)(learned)
        _LOADED[name] = self.source
        return name


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON: {type(o).__name__}")


_LOADED: dict[str, str | None] = {}  # measure name -> the folder its predictor came from (None: in memory)


def loaded_predictors() -> tuple[str, ...]:
    """Folders of the predictors registered in this process (worker processes load them again).

    Returns
    -------
    tuple of str
        The folders.
    """
    return tuple(p for p in _LOADED.values() if p)


def check_one_layout(models, labels) -> tuple[LayerSpec, ...]:
    """The layout all ``models`` share; :class:`InputError` naming the first model (by its
    label) and layer that differ from the first model's."""
    layout = weight_layout(models[0], where=labels[0])
    for label, m in zip(labels[1:], models[1:]):
        problem = layout_mismatch(layout, weight_layout(m, where=label), reference=f"{labels[0]} has")
        if problem:
            raise InputError(f"{label} has another weight-space layout than {labels[0]}: {problem}; an NFN reads "
                             "one layout (fit one per architecture)")
    return layout


def fit_on_models(models, y, *, predictor: str = "nfn", target: str = "test_acc", name: str | None = None,
                  groups=None, seed: int = 0, device: str = "cpu", training: dict | None = None,
                  labels=None, progress: bool = False, **settings) -> LearnedPredictor:
    """Fit a predictor on a list of models and their ``target`` values (``y``); ``labels``
    name the models in errors (default "model 0", "model 1", ...).

    Parameters
    ----------
    models : sequence of nn.Module
        The models to learn from (one weight-space layout for an NFN).
    y : array-like
        Their ``target`` values.
    predictor : {"nfn", "nfn_np", "statnn"}, default="nfn"
        The learned predictor.
    target : str, default="test_acc"
        What ``y`` is.
    name : str, optional
        The predictor's name (default ``<predictor>-<target>``).
    groups : array-like, optional
        Resampling unit per model: the NFN's validation part takes whole units.
    seed : int, default=0
        Seed of the fit.
    device : str, default="cpu"
        Where the NFN trains.
    training : dict, optional
        Provenance stored with the predictor (zoo name and identity, a hash of the ids).
    labels : sequence of str, optional
        Names of the models in errors.
    progress : bool, default=False
        Show a progress bar.
    **settings
        Override the NFN's training settings.

    Returns
    -------
    LearnedPredictor
        The fitted predictor.

    Raises
    ------
    InputError
        When the models have more than one weight-space layout (an NFN).
    """
    _check_choice(predictor, target)
    kind, mode = PREDICTORS[predictor]
    models = list(models)
    y = np.asarray(y, dtype=float)
    if len(models) != len(y):
        raise InputError(f"{len(models)} models but {len(y)} target values")
    if len(models) < 4:
        raise InputError(f"a learned predictor needs at least 4 models; got {len(models)}")
    if not np.isfinite(y).all():
        raise InputError(f"{int((~np.isfinite(y)).sum())} of the {target} values are not finite")
    layout = None
    if kind == "nfn":
        settings = {**nfn_settings(settings), "mode": mode}
        layout = check_one_layout(models, list(labels) if labels is not None
                                  else [f"model {i}" for i in range(len(models))])
    t0 = time.perf_counter()
    inputs = _inputs(kind, models, layout)
    state, record = _train(kind, mode, inputs, y, groups, seed=seed, settings=settings, device=device,
                           progress=progress)
    training = {**(training or {}), "models": len(models), "seed": int(seed), "fit": record,
                "target_range": [float(y.min()), float(y.max())], "fit_seconds": time.perf_counter() - t0,
                "device": str(device), "torch": torch.__version__}
    return LearnedPredictor(_check_name(name or f"{predictor}-{target}"), predictor, target, layout, state,
                            settings if kind == "nfn" else {}, training)


def fit(zoo, *, predictor: str = "nfn", target: str = "test_acc", table: pd.DataFrame | None = None,
        name: str | None = None, seed: int = 0, device: str = "cpu", progress: bool = True,
        **settings) -> LearnedPredictor:
    """Fit a learned predictor on every model of ``zoo``.

    Parameters
    ----------
    zoo : str, Path or Zoo
        A Zoo, folder or name; every model must have the same weight-space layout.
    predictor : {"nfn", "nfn_np", "statnn"}, default="nfn"
        The learned predictor.
    target : str, default="test_acc"
        The column predicted.
    table : pandas.DataFrame, optional
        Targets per ``model_id`` (e.g. ``pgen.score_zoo(...).table``); default: the
        zoo's records.
    name : str, optional
        The predictor's name (default ``<predictor>-<target>``); it is scored as the
        measure ``learned:<name>``.
    seed : int, default=0
        Seed of the fit.
    device : str, default="cpu"
        Where the NFN trains.
    progress : bool, default=True
        Show a progress bar.
    **settings
        Override the NFN's training settings (``epochs``, ``batch_size``, ``lr``,
        ``validation_fraction``); the rest are the authors'
        (:data:`pgen.learned.nfn.NFN_DEFAULTS`).

    Returns
    -------
    LearnedPredictor
        ``.predict(models)``, ``.save(folder)`` (safetensors + JSON, no pickle),
        ``.register()``.

    Raises
    ------
    InputError
        When the models have more than one weight-space layout, or a target is missing.

    Examples
    --------
    The Python API page of the user guide runs this on a tiny zoo:

    >>> pred = fit("model_zoos/digits", predictor="statnn", target="gap")      # doctest: +SKIP
    >>> pred.save("predictors/statnn-gap")                                    # doctest: +SKIP
    """
    from pgen.stats import resampling_unit

    zoo, t = models_to_learn(zoo, table, predictor, target, progress=progress)
    models = _load_models(zoo, t["model_id"], progress)
    ids = "\n".join(map(str, t["model_id"]))
    training = {"zoo": zoo.name, "zoo_identity": _zoo_identity(zoo),
                "model_ids_sha256": hashlib.sha256(ids.encode()).hexdigest()}
    return fit_on_models(models, t[target].to_numpy(float), predictor=predictor, target=target, name=name,
                         groups=resampling_unit(t).groups, seed=seed, device=device, training=training,
                         labels=[f"zoo {zoo.name}, model {mid}" for mid in t["model_id"]], progress=progress,
                         **settings)


def _zoo_identity(zoo):
    try:
        return zoo.identity()
    except Exception:
        return None


def _load_models(zoo, ids, progress: bool):
    ids = list(ids)
    it = ids
    if progress and len(ids) > 50:
        from tqdm.auto import tqdm

        it = tqdm(ids, desc=f"loading {zoo.name}", unit="model")
    out = []
    for mid in it:
        try:
            out.append(zoo[mid].load_model())
        except Exception as exc:
            raise InputError(f"zoo {zoo.name}, model {mid}: cannot be loaded: {exc}") from None
    return out


def load(folder: str | Path) -> LearnedPredictor:
    """A predictor saved by :meth:`LearnedPredictor.save` (``pgen learned fit``).

    Parameters
    ----------
    folder : str or Path
        A folder written by :meth:`LearnedPredictor.save`.

    Returns
    -------
    LearnedPredictor
        The predictor, ready to predict or register.

    Raises
    ------
    InputError
        When the folder is not a saved predictor or its files are damaged.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, weights_path = folder / "predictor.json", folder / "weights.safetensors"
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise InputError(f"{folder}: no {p.name}; a saved predictor is the folder `pgen learned fit --out` wrote")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{meta_path}: not JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{meta_path}: not a pgen learned predictor (format {meta.get('format')!r})"
                         if isinstance(meta, dict) else f"{meta_path}: not a pgen learned predictor")
    try:
        predictor, target, name = meta["predictor"], meta["target"], _check_name(meta["name"])
        _check_choice(predictor, target)
        layout = None if meta.get("layout") is None else tuple(LayerSpec.from_json(d) for d in meta["layout"])
        tensors = load_file(str(weights_path))
    except InputError as exc:
        raise InputError(f"{meta_path}: {exc}") from None
    except (KeyError, TypeError, ValueError, SafetensorError) as exc:
        raise InputError(f"{folder}: a damaged predictor: {type(exc).__name__}: {exc}") from None
    kind, mode = PREDICTORS[predictor]
    try:
        if kind == "statnn":
            state = ({k: v.numpy() for k, v in tensors.items()}, meta["trees"])
        else:
            if layout is None:
                raise ValueError("an NFN predictor needs its layout")
            from pgen.learned.nfn import InvariantNFN, network_spec

            zeros = ([torch.zeros(1, 1, *s.shape) for s in layout], [torch.zeros(1, 1, s.shape[0]) for s in layout])
            net = InvariantNFN(network_spec(*zeros), mode=mode)
            for key, value in tensors.items():  # NP's normalization statistics: one per weight position
                if key.startswith(("mean_", "std_")) and hasattr(net, key):
                    setattr(net, key, torch.empty_like(value))
            net.load_state_dict(tensors, strict=True)
            net.eval()
            scale = meta.get("target_scale")
            state = (net, None if scale is None else (float(scale[0]), float(scale[1])))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{folder}: a damaged predictor: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    return LearnedPredictor(name, predictor, target, layout, state, meta.get("settings", {}),
                            meta.get("training", {}), source=str(folder.resolve()))
