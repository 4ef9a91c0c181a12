"""Generalization measures: one small module per measure, one signature, one registry.

Every measure is a function ``fn(model, init_model, data, settings)`` returning a float,
or a :class:`MeasureValue` (the value plus extra named values stored beside it, e.g. the
P-vector's spectral gap):

* ``model``: the trained ``nn.Module``, already in eval mode on ``settings.device``;
* ``init_model``: the same architecture with its initial weights (eval, same device), or
  ``None`` when the zoo records none (measures that need it declare ``needs_init``);
* ``data``: :class:`MeasureData`, samples in one fixed order, on the CPU (move batches to
  the model's device, :func:`model_device`). Which samples depends on what the measure
  declares (``samples``): "own" (the default) gets the model's own training samples with
  the labels it was trained on, where the zoo records them (pgen's recipes do; otherwise
  the shared samples), as the PGDL competition and Jiang et al. evaluate measures on the
  training set; "shared" gets one sample set for every model of the zoo (the P-vector and
  CKA measures: a data P-vector is only comparable across models on the same samples);
* ``settings``: :class:`MeasureSettings`.

The contract is enforced in one place, :func:`evaluate_measure`: it checks what the
measure declares (initial weights, image inputs, an optional package), places both models
on the device in eval mode, runs the measure, and in ``finally`` restores each model's
device, training flag and weights; a non-finite value is an error. Measures therefore
never call ``.to()`` on a model themselves, and a model shared by several measures comes
back exactly as it went in, whatever the order.

Sign convention (stated once, here): a measure's ``sign`` is +1 when a LARGER value
predicts WORSE generalization (a larger generalization gap, a lower test accuracy), and
-1 when a larger value predicts better generalization. ``sign * value`` is therefore
always "predicted badness"; the benchmark and ``pgen pgdl predict`` use it, so Kendall's
tau against the gap is positive when a measure works the way its authors meant.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from pgen import DISTRIBUTION
from pgen.devices import model_device, tf32_mode
from pgen.errors import MeasureError, UnknownNameError

__all__ = ["FIDELITY", "Measure", "MeasureData", "MeasureSettings", "MeasureValue", "MeasureResult", "MeasureError",
           "REGISTRY", "register", "get_measure", "list_measures", "compute_measure", "evaluate_measure",
           "compute_for_entry", "load_plugin", "model_device", "tf32_mode"]


@dataclass
class MeasureData:
    """The samples shared by every model of a zoo (inputs in the models' layout).

    Parameters
    ----------
    x : torch.Tensor
        Inputs in the models' layout.
    y : torch.Tensor
        Integer labels.
    num_classes : int, optional
        Classes (default: ``y.max() + 1``).
    cache : dict
        Per-zoo results shared by the models (the data P-vector).
    train_size : int, optional
        Samples the model was trained on (a bound's m); None: unknown.
    x_test : torch.Tensor, optional
        The first inputs of the test split (no labels), where the zoo has one.
    x_pseudo : torch.Tensor, optional
        Pseudo-test copies of the shared samples, where a policy makes them.
    own : bool, default=False
        ``x``, ``y`` are the model's own training samples, not the zoo's shared ones.
    model_pvectors : tuple, optional
        ``(model, {(layer, center): PVectorResult})`` from scoring's accuracy pass over these
        samples, so the P-vector measures of that model need no second pass.

    Raises
    ------
    MeasureError
        When inputs and labels differ in number, or there are fewer than two samples.
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int | None = None
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)  # per-zoo results, e.g. the data P-vector
    train_size: int | None = None  # samples the model was trained on (bounds' m); None: unknown
    x_test: torch.Tensor | None = None  # the first inputs of the test split (no labels), where the zoo has one
    x_pseudo: torch.Tensor | None = None  # pseudo-test copies of the shared samples, where a policy makes them
    own: bool = False  # x, y are the model's own training samples (not the zoo's shared ones)
    # (model, {(layer, center): PVectorResult}) from scoring's accuracy pass over these samples, so
    # that the P-vector measures of that model need no second pass; ignored for any other model
    model_pvectors: tuple[Any, dict] | None = field(default=None, repr=False)

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise MeasureError(f"data has {len(self.x)} inputs but {len(self.y)} labels")
        if len(self.x) < 2:
            raise MeasureError("a measure needs at least 2 samples")
        if self.num_classes is None:
            self.num_classes = int(self.y.max()) + 1


@dataclass(frozen=True)
class MeasureSettings:
    """Options shared by all measures (each measure reads the ones it needs).

    Parameters
    ----------
    device : str, default="cpu"
        Where models and data are placed.
    batch_size : int, default=256
        Forward-pass batch size.
    seed : int, default=0
        Seed of the stochastic measures.
    layer : str, default="penultimate"
        The P-vector measures' feature layer.
    center : bool, default=True
        The P-vector angle on centered features (docs/findings/centering.md).
    allow_tf32 : bool, default=False
        CUDA only: TF32 matmuls (faster; move P-vectors by about 0.1 degree).
    dataset_size_term : bool, default=False
        Apply Dziugaite et al.'s dataset-size term to the bound measures.
    """

    device: str = "cpu"
    batch_size: int = 256
    seed: int = 0
    layer: str = "penultimate"  # the P-vector measures' feature layer
    center: bool = True  # the P-vector angle on centered features (pgen's default; docs/findings/centering.md)
    allow_tf32: bool = False  # CUDA only: TF32 matmuls are faster but move P-vectors by ~0.1 degree
    dataset_size_term: bool = False  # Dziugaite et al.'s sqrt(v / m) or (v - log m) / 2 for bound measures


@dataclass(frozen=True)
class MeasureValue:
    """What a measure may return instead of a float: its value and extra named values
    (stored beside it as ``<measure>.<key>``; NaN is stored as missing, infinity as is).

    Parameters
    ----------
    value : float
        The measure's value.
    extra : dict of str to float
        Extra named values, stored as ``<measure>.<key>``.
    """

    value: float
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MeasureResult:
    """One measure on one model: value, extra values and wall-clock seconds.

    Parameters
    ----------
    name : str
        The measure.
    value : float
        Its value.
    extra : dict of str to float
        Its extra values.
    seconds : float
        Wall-clock seconds it took.
    """

    name: str
    value: float
    extra: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class Measure:
    """A registered measure and what it declares about itself.

    Parameters
    ----------
    name : str
        The registered name.
    fn : callable
        ``fn(model, init_model, data, settings) -> float | MeasureValue``.
    description : str
        One line on what it computes.
    sign : {1, -1}
        +1: a larger value predicts worse generalization; -1: better.
    needs_init : bool, default=False
        It needs the model's initial weights.
    family : str, default=""
        Its family in tables (``spectral``, ``flatness``, ...).
    reference : str
        The paper (and code) whose definition it computes.
    needs_images : bool, default=False
        Its inputs must be (N, C, H, W).
    stochastic : bool, default=False
        It draws random numbers (seeded by ``settings.seed``).
    requires : str, default=""
        An optional package it imports (``weightwatcher``).
    fidelity : str, default="faithful"
        To ``reference``: one of :data:`FIDELITY`.
    sign_reason : str
        Why the sign is what it is, with its source.
    size_term : {"", "sqrt", "log"}, default=""
        Dziugaite et al.'s dataset-size term for bound measures.
    version : int, default=1
        Raised when the definition changes, so stored values of an earlier one are recomputed.
    samples : {"own", "shared", "none"}, default="own"
        Which samples it sees: the model's own training samples, one set for the zoo, or
        none (the weights alone).
    inputs_from : tuple of str, default=()
        Other input sets it reads: ``"test"`` (``data.x_test``), ``"pseudo-test"``
        (``data.x_pseudo``).
    identity : str, default=""
        A digest of what it computes beyond its code (a learned predictor's parameters).
    """

    name: str
    fn: Callable[[nn.Module, nn.Module | None, MeasureData, MeasureSettings], float | MeasureValue]
    description: str
    sign: int  # +1: larger predicts worse generalization; -1: larger predicts better
    needs_init: bool = False  # needs the model's initial weights
    family: str = ""
    reference: str = ""  # the paper (and code) whose definition it computes
    needs_images: bool = False  # inputs must be (N, C, H, W)
    stochastic: bool = False  # draws random numbers (seeded by settings.seed)
    requires: str = ""  # an optional package it imports, e.g. "weightwatcher"
    fidelity: str = "faithful"  # to ``reference``: one of FIDELITY
    sign_reason: str = ""  # why the sign is what it is, with its source
    size_term: str = ""  # Dziugaite et al.'s dataset-size term: "sqrt", "log" or "" (none)
    version: int = 1  # raised when the definition changes: values stored by an earlier one are not reused
    samples: str = "own"  # "own": the model's own training samples and labels; "shared": one set for the zoo
    inputs_from: tuple[str, ...] = ()  # other input sets it reads: "test" (data.x_test), "pseudo-test" (x_pseudo)
    identity: str = ""  # a digest of what it computes beyond its code (a learned predictor's parameters)

    def __call__(self, model, init_model, data, settings=None) -> float:
        return compute_measure(self.name, model, init_model, data, settings)


REGISTRY: dict[str, Measure] = {}

#: How a measure relates to its ``reference``: "faithful" (computes the paper's definition or
#: the authors' code; any adaptation to pgen's models is stated in its docstring), "inspired
#: by" (a reading of a paper without public code, or a knowing deviation), "pgen's own".
FIDELITY = ("faithful", "inspired by", "pgen's own")


def register(name: str, *, description: str, sign: int, reference: str, sign_reason: str, needs_init: bool = False,
             family: str = "", needs_images: bool = False, stochastic: bool = False, requires: str = "",
             fidelity: str = "faithful", size_term: str = "", version: int = 1, samples: str = "own",
             inputs_from: tuple[str, ...] = (), identity: str = ""):
    """Decorator: register ``fn(model, init_model, data, settings) -> float | MeasureValue`` under ``name``.

    ``reference`` names the paper and code whose definition it computes, ``fidelity`` how
    closely (one of :data:`FIDELITY`), ``sign_reason`` why the sign is what it is.
    ``version`` goes up whenever the definition changes, so that result stores do not
    reuse values computed by an earlier one. ``samples`` says which samples the measure
    sees (module docstring): "own", "shared", or "none" for measures of the weights alone;
    ``inputs_from`` the other input sets it reads ("test": ``data.x_test``, "pseudo-test":
    ``data.x_pseudo``), refused where a zoo has none. ``identity`` (a learned predictor's
    digest) is stored with its values, so that another predictor of that name recomputes them.

    Parameters
    ----------
    name : str
        The registered name.
    description : str
        One line on what it computes.
    sign : {1, -1}
        +1: a larger value predicts worse generalization; -1: better.
    reference : str
        The paper (and code) whose definition it computes.
    sign_reason : str
        Why the sign is what it is, with its source.
    needs_init : bool, default=False
        It needs the model's initial weights.
    family : str, default=""
        Its family in tables (``spectral``, ``flatness``, ...).
    needs_images : bool, default=False
        Its inputs must be (N, C, H, W).
    stochastic : bool, default=False
        It draws random numbers (seeded by ``settings.seed``).
    requires : str, default=""
        An optional package it imports (``weightwatcher``).
    fidelity : str, default="faithful"
        To ``reference``: one of :data:`FIDELITY`.
    size_term : {"", "sqrt", "log"}, default=""
        Dziugaite et al.'s dataset-size term for bound measures.
    version : int, default=1
        Raised when the definition changes, so stored values of an earlier one are recomputed.
    samples : {"own", "shared", "none"}, default="own"
        Which samples it sees: the model's own training samples, one set for the zoo, or
        none (the weights alone).
    inputs_from : tuple of str, default=()
        Other input sets it reads: ``"test"`` (``data.x_test``), ``"pseudo-test"``
        (``data.x_pseudo``).
    identity : str, default=""
        A digest of what it computes beyond its code (a learned predictor's parameters).

    Returns
    -------
    callable
        The decorator; it returns the function unchanged.

    Raises
    ------
    ValueError
        When a declaration is invalid (sign, missing reference or sign reason, unknown
        fidelity, samples or inputs) or the name is registered twice.
    """
    if sign not in (1, -1):
        raise ValueError(f"measure {name}: sign must be +1 or -1")
    if not reference:
        raise ValueError(f"measure {name}: say which paper or code it follows (reference=...)")
    if not sign_reason:
        raise ValueError(f"measure {name}: say why its sign is {sign:+d} (sign_reason=...)")
    if fidelity not in FIDELITY:
        raise ValueError(f"measure {name}: fidelity must be one of {FIDELITY}")
    if size_term not in ("", "sqrt", "log"):
        raise ValueError(f"measure {name}: size_term must be 'sqrt', 'log' or ''")
    if samples not in ("own", "shared", "none"):
        raise ValueError(f"measure {name}: samples must be 'own', 'shared' or 'none'")
    if not set(inputs_from) <= {"test", "pseudo-test"}:
        raise ValueError(f"measure {name}: inputs_from may name 'test' and 'pseudo-test'")

    def deco(fn):
        if name in REGISTRY:
            raise ValueError(f"measure {name!r} is registered twice")
        REGISTRY[name] = Measure(name, fn, description, sign, needs_init, family, reference, needs_images,
                                 stochastic, requires, fidelity, sign_reason, size_term, version, samples,
                                 tuple(inputs_from), identity)
        return fn

    return deco


def _load_all():
    # Importing a measure's module registers it: every public module of this package.
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


ENTRY_POINT_GROUP = "pgen.measures"  # installed packages expose measures here; each is loaded only when named
PLUGINS: dict[str, list[str]] = {}  # plugins loaded in this process (absolute path or module name) -> their measures


def load_plugin(spec: str, *, trust_code: bool = False) -> list[str]:
    """Import a user's measures: ``spec`` is a ``.py`` file or an importable module name
    whose ``@register(...)`` calls add measures to the registry. Importing runs the user's
    code, so it needs ``trust_code`` (``--trust-code`` on the command line). Loading the
    same plugin again imports nothing. Returns the names it registered.

    Parameters
    ----------
    spec : str
        A ``.py`` file or an importable module name.
    trust_code : bool, default=False
        Allow importing it (it runs the user's code).

    Returns
    -------
    list of str
        The measures it registered.

    Raises
    ------
    InputError
        Without ``trust_code``, when the file is missing or cannot be imported, or it
        registers no measure.
    """
    import importlib
    from pathlib import Path

    from pgen.errors import InputError

    if not trust_code:
        raise InputError(f"plugin {spec!r} is your own code: importing it runs it. If you trust it, pass "
                         "--trust-code (Python: trust_code=True)")
    _load_all()
    path = Path(spec)
    key = str(path.resolve()) if spec.endswith(".py") else spec
    if key in PLUGINS:
        return list(PLUGINS[key])
    before = set(REGISTRY)
    try:
        if spec.endswith(".py"):
            if not path.is_file():
                raise InputError(f"plugin {spec}: no such file")
            import hashlib
            import sys

            # a name derived from the path, the same in every process (workers load it again)
            module_name = f"pgen_plugin_{hashlib.sha256(key.encode()).hexdigest()[:12]}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
        else:
            importlib.import_module(spec)
    except InputError:
        raise
    except ValueError as exc:  # register()'s own refusals: a duplicate name, a missing reference
        raise InputError(f"plugin {spec}: {exc}") from None
    except ImportError as exc:
        raise InputError(f"plugin {spec}: cannot import it: {exc}") from None
    added = sorted(set(REGISTRY) - before)
    if not added:
        raise InputError(f"plugin {spec} registered no measure (decorate its functions with "
                         "@pgen.measures.register(...))")
    PLUGINS[key] = added
    return list(added)


def _from_entry_point(name: str) -> bool:
    """Load the installed package's measure ``name`` from the ``pgen.measures`` entry points."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            ep.load()  # importing the module registers the measure
            return name in REGISTRY
    return False


def get_measure(name: str) -> Measure:
    """The registered measure ``name`` (loading an installed package's ``pgen.measures``
    entry point of that name if needed); an :class:`~pgen.errors.UnknownNameError` lists
    the known ones.

    Parameters
    ----------
    name : str
        A registered name, or an installed package's entry point.

    Returns
    -------
    Measure
        Its registry entry.

    Raises
    ------
    UnknownNameError
        Listing the known measures.
    """
    _load_all()
    if name not in REGISTRY and not _from_entry_point(name):
        raise UnknownNameError(f"unknown measure {name!r}; known: {', '.join(sorted(REGISTRY))} (your own: "
                               "--plugin FILE.py --trust-code)")
    return REGISTRY[name]


def list_measures() -> pd.DataFrame:
    """One row per measure: name, family, sign, what it needs, and its description and reference.

    Returns
    -------
    pandas.DataFrame
        The registry, one row per measure.

    Examples
    --------
    >>> "pvector_angle" in set(list_measures()["name"])
    True
    """
    _load_all()
    return pd.DataFrame([{"name": m.name, "family": m.family, "sign": f"{m.sign:+d}", "needs_init": m.needs_init,
                          "needs_images": m.needs_images, "stochastic": m.stochastic, "requires": m.requires,
                          "description": m.description, "reference": m.reference, "fidelity": m.fidelity,
                          "sign_reason": m.sign_reason, "size_term": m.size_term,
                          "samples": m.samples}
                         for m in sorted(REGISTRY.values(), key=lambda m: m.name)])


@contextlib.contextmanager
def _placed(model: nn.Module | None, device: torch.device) -> Iterator[None]:
    """``model`` on ``device`` in eval mode; afterwards its device, mode and weights as before."""
    if model is None:
        yield
        return
    home, was_training = model_device(model), model.training
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.to(device).eval()
    try:
        yield
    finally:
        model.load_state_dict(saved)  # a measure that perturbs weights in place cannot leak them
        model.to(home)
        model.train(was_training)


def evaluate_measure(name: str, model: nn.Module, init_model: nn.Module | None, data: MeasureData,
                     settings: MeasureSettings | None = None) -> MeasureResult:
    """Run one measure under the measure contract (see the module docstring).

    Raises :class:`~pgen.errors.MeasureError` when the measure cannot run here (missing
    initial weights, non-image inputs, a missing optional package) or returns a
    non-finite value.

    Parameters
    ----------
    name : str
        A registered measure.
    model : nn.Module
        The trained model; it comes back on its device, in its mode, with its weights.
    init_model : nn.Module or None
        The model at its initial weights, for measures that need it.
    data : MeasureData
        The samples.
    settings : MeasureSettings, optional
        Device, batch size, seed, layer, centering.

    Returns
    -------
    MeasureResult
        Value, extra values and seconds.

    Raises
    ------
    MeasureError
        When the measure cannot run here or returns a non-finite value.
    UnknownNameError
        When ``name`` is not registered.
    """
    m = get_measure(name)
    settings = settings or MeasureSettings()
    if m.needs_init and init_model is None:
        raise MeasureError(f"measure {name} needs the model's initial weights, which this zoo does not record")
    if m.needs_images and data.x.dim() != 4:
        raise MeasureError(f"measure {name} needs image inputs (N, C, H, W); got shape {tuple(data.x.shape)}")
    for which, inputs in (("test", data.x_test), ("pseudo-test", data.x_pseudo)):
        if which in m.inputs_from and inputs is None:
            raise MeasureError(f"measure {name} reads {which} inputs, which this zoo (or its data kind) does not have")
    if m.requires and importlib.util.find_spec(m.requires) is None:
        raise MeasureError(f"measure {name} needs the optional package {m.requires!r}: "
                           f"pip install '{DISTRIBUTION}[{m.requires}]'")
    device = torch.device(settings.device)
    start = time.perf_counter()
    with _placed(model, device), _placed(init_model, device), tf32_mode(device, settings.allow_tf32):
        out = m.fn(model, init_model, data, settings)
    seconds = time.perf_counter() - start
    value, extra = (out.value, out.extra) if isinstance(out, MeasureValue) else (out, {})
    value = float(value)
    if not math.isfinite(value):
        raise MeasureError(f"measure {name} returned {value} for this model")
    if settings.dataset_size_term and m.size_term:
        value, extra = _with_size_term(m, value, data), {**extra, "without_size_term": value}
    extra = {k: (None if v is None or math.isnan(float(v)) else float(v)) for k, v in extra.items()}
    return MeasureResult(name, value, extra, seconds)


def _with_size_term(m: Measure, value: float, data: MeasureData) -> float:
    """Dziugaite et al. (NeurIPS 2020, "In search of robust measures of generalization", and
    their code: robust-generalization-measures, measures.py ``adjust_measure``): a measure
    ``v`` of a model trained on ``m`` samples becomes ``sqrt(v / m)``, a log measure
    ``(v - log m) / 2``, so that zoos that vary the training-set size compare like bounds."""
    if not data.train_size:
        raise MeasureError(f"measure {m.name}: the dataset-size term needs the model's training-set size, "
                           "which this zoo does not record")
    if m.size_term == "log":
        return 0.5 * (value - math.log(data.train_size))
    if value < 0:
        raise MeasureError(f"measure {m.name}: sqrt(v / m) is undefined for v = {value}")
    return math.sqrt(value / data.train_size)


def compute_measure(name: str, model: nn.Module, init_model: nn.Module | None, data: MeasureData,
                    settings: MeasureSettings | None = None) -> float:
    """The value of one measure (:func:`evaluate_measure` without the extras and timing).

    Parameters
    ----------
    name : str
        A registered measure (``pgen measures`` lists them).
    model : nn.Module
        The trained model; it comes back on its device, in its mode, with its weights.
    init_model : nn.Module or None
        The same architecture at its initial weights, for measures that need it.
    data : MeasureData
        The samples the measure reads.
    settings : MeasureSettings, optional
        Device, batch size, seed, layer, centering.

    Returns
    -------
    float
        The measure's value (finite).

    Raises
    ------
    UnknownNameError
        When ``name`` is not registered.
    MeasureError
        When the measure's declarations are not met (initial weights, image inputs, an
        optional package) or it returns a non-finite value.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> data = MeasureData(torch.randn(20, 4), torch.arange(20) % 3)
    >>> compute_measure("num_params", net, None, data)
    15.0
    """
    return evaluate_measure(name, model, init_model, data, settings).value


def compute_for_entry(name: str, entry, data: MeasureData, settings: MeasureSettings | None = None,
                      model: nn.Module | None = None) -> float:
    """A measure of one zoo entry: loads its model (unless given) and, only when the
    measure needs them, its initial weights.

    Parameters
    ----------
    name : str
        A registered measure.
    entry : ZooEntry
        The zoo entry.
    data : MeasureData
        The samples.
    settings : MeasureSettings, optional
        Device, batch size, seed, layer, centering.
    model : nn.Module, optional
        The entry's model, if already loaded.

    Returns
    -------
    float
        The measure's value.
    """
    model = entry.load_model() if model is None else model
    init = entry.load_model(initial=True) if get_measure(name).needs_init else None
    return compute_measure(name, model, init, data, settings)

