"""Models + data -> feature batches (forward hooks) -> streaming P-vectors.

Layer names
-----------
``"penultimate"`` (the default)
    The input of the model's last ``nn.Linear`` (the penultimate features); for a model
    without a Linear layer, the input of the last leaf module to run.
``"logits"``
    The model's output.
``"input"``
    The raw inputs (the data P-vector).
any module name from ``model.named_modules()``, e.g. ``"layer4"`` or ``"features.3"``
    That module's output. Conv maps are flattened to ``(batch, C*H*W)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pgen.devices import model_device, tf32_mode
from pgen.errors import InputError, UnknownNameError
from pgen.pvector import DEFAULT_MIN_GAP, PVectorResult, StreamingPVector
from pgen.train import batch_outcome

__all__ = [
    "as_loader",
    "data_p_vector",
    "evaluate_with_p_vectors",
    "extract_features",
    "iter_feature_batches",
    "model_p_vectors",
    "resolve_layers",
]

PENULTIMATE = "penultimate"
LOGITS = "logits"
INPUT = "input"


def as_loader(data, *, batch_size: int = 256, num_workers: int = 0) -> DataLoader:
    """A DataLoader over ``data`` in dataset order (never shuffled).

    ``data`` may be a DataLoader (used as is: it must not shuffle), a torch Dataset whose
    items are ``(input, label)`` or ``input``, a tensor or array of inputs, or an
    ``(inputs, labels)`` pair of tensors/arrays.

    Parameters
    ----------
    data : DataLoader, Dataset, tensor, array or (inputs, labels) pair
        The samples.
    batch_size : int, default=256
        Batch size of a DataLoader pgen makes.
    num_workers : int, default=0
        Its workers.

    Returns
    -------
    torch.utils.data.DataLoader
        Batches in dataset order.
    """
    if isinstance(data, DataLoader):
        from torch.utils.data import SequentialSampler

        sampler = data.batch_sampler.sampler if data.batch_sampler is not None else data.sampler
        if not isinstance(sampler, SequentialSampler):
            raise InputError("the DataLoader must iterate in dataset order (shuffle=False)")
        return data
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data, Dataset):
        data = TensorDataset(_as_tensor(data[0]), _as_tensor(data[1]))
    elif isinstance(data, (np.ndarray, torch.Tensor)):
        data = TensorDataset(_as_tensor(data))
    if not isinstance(data, Dataset) and not hasattr(data, "__getitem__"):
        raise InputError(f"cannot make batches from {type(data).__name__}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1; got {batch_size}")
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def _as_tensor(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return t.float() if t.is_floating_point() else t


def _inputs_of(batch):
    if isinstance(batch, (list, tuple)):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("input", "inputs", "image", "x"):
            if key in batch:
                return batch[key]
        raise InputError(f"batch dict has no input key among {sorted(batch)}")
    return batch


def _snapshot(value):
    """A copy of what a hook sees: the model may change a layer's output in place after the
    layer ran (``out += identity``, ``ReLU(inplace=True)``), and a kept reference would then
    hold the changed values, not the layer's output. Tuples keep their first tensor."""
    if isinstance(value, (tuple, list)):
        value = value[0]
    return value.clone() if isinstance(value, torch.Tensor) else value


def _leaf_modules(model: nn.Module):
    return [(name, m) for name, m in model.named_modules() if not list(m.children())]


def _execution_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    order: list[str] = []
    handles = [
        m.register_forward_hook(lambda mod, inp, out, name=name: order.append(name))
        for name, m in _leaf_modules(model)
    ]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return order


def resolve_layers(model: nn.Module, layers: str | Sequence[str] | None, example: torch.Tensor | None = None):
    """Map layer names to ``(hook_module_name, "input" | "output")`` pairs.

    Parameters
    ----------
    model : nn.Module
        The network.
    layers : str or sequence of str or None
        ``"penultimate"`` (default), ``"logits"``, ``"input"`` or module names.
    example : torch.Tensor, optional
        A batch to run when the model has no ``nn.Linear`` to find its last layer by.

    Returns
    -------
    dict
        ``{layer name: (hook module name, "input" or "output")}``.

    Raises
    ------
    UnknownNameError
        For a module name that the model does not have (the message lists a few that
        it does have).
    InputError
        When the penultimate layer cannot be found.
    """
    if layers is None:
        layers = [PENULTIMATE]
    elif isinstance(layers, str):
        layers = [layers]
    modules = dict(model.named_modules())
    out = {}
    for layer in layers:
        if layer == INPUT:
            out[layer] = (None, "input")
        elif layer == LOGITS:
            out[layer] = ("", "output")
        elif layer == PENULTIMATE:
            linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
            if linears:
                if example is not None:
                    order = _execution_order(model, example)
                    ran = [name for name in order if name in linears]
                    linears = ran or linears
                out[layer] = (linears[-1], "input")
            else:
                if example is None:
                    raise InputError("the model has no nn.Linear; pass an example batch to find its last layer")
                order = _execution_order(model, example)
                if not order:
                    raise InputError("the model ran no leaf module; name a layer explicitly")
                out[layer] = (order[-1], "input")
        elif layer in modules:
            out[layer] = (layer, "output")
        else:
            names = [n for n in modules if n][:12]
            raise UnknownNameError(
                f"model {type(model).__name__} has no module named {layer!r}; "
                f"known names start with {names} (or use 'penultimate', 'logits', 'input')"
            )
    return out


def iter_feature_batches(
    model: nn.Module | None,
    data,
    *,
    layers: str | Sequence[str] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "features",
    allow_tf32: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield ``{layer: (batch, n_features) tensor}`` per batch, in dataset order.

    The model runs in eval mode under ``torch.inference_mode`` on ``device``; its
    device and training flag are restored afterwards. Tensors stay on ``device`` (so that
    GPU features are accumulated on the GPU). With ``model=None`` only ``"input"`` is
    available. On CUDA, TF32 matmuls are off unless ``allow_tf32`` (they are faster, but
    move a ResNet-18 P-vector by ~0.17 degrees from the CPU's).

    Parameters
    ----------
    model : nn.Module or None
        The network (None: only ``"input"``).
    data : Dataset, DataLoader or (x, y) pair
        The samples.
    layers : str or sequence of str, optional
        As for :func:`model_p_vectors`.
    batch_size : int, default=256
        Forward-pass batch size.
    device : str or torch.device, default="cpu"
        Where the model runs and the tensors stay.
    num_workers : int, default=0
        DataLoader workers.
    progress : bool, default=False
        Show a progress bar.
    desc : str, default="features"
        The progress bar's label.
    allow_tf32 : bool, default=False
        Allow TF32 matmuls on CUDA.
    """
    loader = as_loader(data, batch_size=batch_size, num_workers=num_workers)
    device = torch.device(device)
    spec = None  # resolved on the first batch, which the hooks need as an example
    if model is None:
        layer_names = [INPUT] if layers is None else ([layers] if isinstance(layers, str) else list(layers))
        if layer_names != [INPUT]:
            raise InputError("without a model only the 'input' layer exists")
        spec = {INPUT: (None, "input")}
    was_training = model.training if model is not None else False
    home = model_device(model) if model is not None else None
    if model is not None:
        model.to(device).eval()
    tf32 = tf32_mode(device, allow_tf32)
    tf32.__enter__()
    captured: dict[str, torch.Tensor] = {}
    handles = []
    try:
        iterator: Iterable = loader
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(loader, desc=desc, unit="batch", leave=False)
        for batch in iterator:
            x = _inputs_of(batch).to(device, non_blocking=True)
            if not x.is_floating_point():
                x = x.float()
            if spec is None:
                with torch.inference_mode():
                    spec = resolve_layers(model, layers, example=x[:2])
                modules = dict(model.named_modules())
                for layer, (name, where) in spec.items():
                    if name is None or name == "":
                        continue
                    if where == "input":
                        hook = lambda mod, inp, layer=layer: captured.__setitem__(layer, _snapshot(inp[0]))
                        handles.append(modules[name].register_forward_pre_hook(hook))
                    else:
                        hook = lambda mod, inp, out, layer=layer: captured.__setitem__(layer, _snapshot(out))
                        handles.append(modules[name].register_forward_hook(hook))
            captured.clear()
            out = None
            if model is not None:
                if INPUT in spec:
                    captured[INPUT] = x.clone()  # a model may modify its input in place
                with torch.inference_mode():
                    out = model(x)
            feats = {}
            for layer, (name, where) in spec.items():
                if name is None:
                    t = captured.get(INPUT, x)
                elif name == "":
                    t = out
                else:
                    t = captured.get(layer)
                    if t is None:
                        raise InputError(f"layer {layer!r} (module {name!r}) did not run in the forward pass")
                if isinstance(t, (tuple, list)):
                    t = t[0]
                feats[layer] = t.reshape(t.shape[0], -1)
            yield feats
    finally:
        tf32.__exit__(None, None, None)
        for h in handles:
            h.remove()
        if model is not None:
            model.to(home)
            model.train(was_training)


def extract_features(model, data, *, layers=None, batch_size=256, device="cpu", num_workers=0, progress=False,
                     allow_tf32: bool = False) -> dict[str, np.ndarray]:
    """All features of ``layers`` as float32 numpy arrays of shape (n_samples, n_features).

    Holds the whole matrix in memory; for P-vectors prefer :func:`model_p_vectors`,
    which streams.

    Parameters
    ----------
    model : nn.Module
        The network.
    data : Dataset, DataLoader or (x, y) pair
        The samples, in a fixed order.
    layers : str or sequence of str, optional
        As for :func:`model_p_vectors` (default ``"penultimate"``).
    batch_size : int, default=256
        Forward-pass batch size.
    device : str, default="cpu"
        Where the model runs.
    num_workers : int, default=0
        DataLoader workers.
    progress : bool, default=False
        Show a progress bar.
    allow_tf32 : bool, default=False
        Allow TF32 matmuls on CUDA.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{layer: (n_samples, n_features) float32 array}``.
    """
    chunks: dict[str, list[np.ndarray]] = {}
    for feats in iter_feature_batches(model, data, layers=layers, batch_size=batch_size,
                                      device=device, num_workers=num_workers, progress=progress,
                                      allow_tf32=allow_tf32):
        for layer, t in feats.items():
            chunks.setdefault(layer, []).append(t.float().cpu().numpy())
    return {layer: np.concatenate(parts) for layer, parts in chunks.items()}


def model_p_vectors(
    model: nn.Module,
    data,
    *,
    layers: str | Sequence[str] | None = None,
    center: bool = True,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    k: int = 5,
    min_gap: float = DEFAULT_MIN_GAP,
    spill_dir: str | None = None,
    progress: bool = False,
    allow_tf32: bool = False,
) -> dict[str, PVectorResult]:
    """P-vectors of a model's layers over ``data``, streamed batch by batch.

    Features flow from forward hooks straight into one
    :class:`~pgen.pvector.StreamingPVector` per layer (on ``device``), so the full feature
    matrix never needs to fit in memory. What a hook sees is copied, so a model that changes
    a layer's output in place afterwards (``ReLU(inplace=True)``, ``out += identity``) does
    not change the features.

    Parameters
    ----------
    model : nn.Module
        The network; it is run in eval mode and left as it was.
    data : Dataset, DataLoader or (x, y) pair
        The samples, in a fixed order (the P-vector is indexed by them).
    layers : str or sequence of str, optional
        ``"penultimate"`` (default: the input of the last ``nn.Linear``), ``"logits"``,
        ``"input"``, or module names (their outputs; conv maps flattened in C*H*W order).
    center : bool, default=True
        Subtract the features' column means first.
    batch_size : int, default=256
        Forward-pass batch size.
    device : str or torch.device, default="cpu"
        Where the model and the accumulation run.
    num_workers : int, default=0
        DataLoader workers.
    k : int, default=5
        Top singular values reported per layer.
    min_gap : float, default=1e-3
        Relative spectral gap below which a P-vector is flagged unstable.
    spill_dir : str, optional
        Where features are spilled for the second pass (default: a temporary folder).
    progress : bool, default=False
        Show a progress bar.
    allow_tf32 : bool, default=False
        Allow TF32 matmuls on CUDA (faster; moves P-vectors by about 0.1 degree).

    Returns
    -------
    dict[str, PVectorResult]
        ``{layer name: PVectorResult}``.

    Raises
    ------
    UnknownNameError
        When a layer name is not a module of the model.

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    >>> x, y = torch.randn(100, 8), torch.arange(100) % 3
    >>> pvs = model_p_vectors(net, (x, y), layers=["penultimate", "logits"])
    >>> sorted(pvs), pvs["penultimate"].vector.shape
    (['logits', 'penultimate'], (100,))
    """
    accumulators: dict[str, StreamingPVector] = {}
    rows = len(data[0]) if isinstance(data, (tuple, list)) else (len(data) if hasattr(data, "__len__") else None)
    try:
        for feats in iter_feature_batches(model, data, layers=layers, batch_size=batch_size, device=device,
                                          num_workers=num_workers, progress=progress, desc="P-vector",
                                          allow_tf32=allow_tf32):
            for layer, t in feats.items():
                acc = accumulators.get(layer)
                if acc is None:
                    acc = accumulators[layer] = StreamingPVector(center=center, k=k, min_gap=min_gap,
                                                                 spill_dir=spill_dir, expected_rows=rows)
                acc.update(t)
        if not accumulators:
            raise InputError("the data yielded no samples")
        return {layer: acc.result() for layer, acc in accumulators.items()}
    finally:
        for acc in accumulators.values():
            acc.close()


def evaluate_with_p_vectors(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    n: int,
    layer: str = PENULTIMATE,
    centers: Sequence[bool] = (True,),
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    k: int = 5,
    min_gap: float = DEFAULT_MIN_GAP,
    allow_tf32: bool = False,
) -> tuple[float, float, dict[bool, PVectorResult]]:
    """One forward pass for a model's accuracy and its P-vectors.

    Returns the accuracy and mean cross-entropy over all of ``inputs`` (as
    :func:`pgen.train.evaluate` computes them) and the P-vectors of ``layer`` over the first
    ``n`` inputs, one per centering in ``centers`` (as :func:`model_p_vectors` computes them).
    Scoring reads the training split for the accuracy and its first ``n`` samples for the
    features; one pass instead of two costs the forward pass once.

    Parameters
    ----------
    model : nn.Module
        The network.
    inputs : torch.Tensor
        The split's inputs.
    labels : torch.Tensor
        Their labels.
    n : int
        The P-vectors are over the first ``n`` inputs.
    layer : str, default="penultimate"
        The feature layer.
    centers : sequence of bool, default=(True,)
        The centerings wanted.
    batch_size : int, default=256
        Forward-pass batch size.
    device : str or torch.device, default="cpu"
        Where the model runs.
    k : int, default=5
        Top singular values reported.
    min_gap : float, default=1e-3
        Relative spectral gap below which a P-vector is flagged unstable.
    allow_tf32 : bool, default=False
        Allow TF32 matmuls on CUDA.

    Returns
    -------
    tuple
        ``(accuracy, mean cross-entropy, {center: PVectorResult})``.
    """
    n = min(n, len(inputs))
    accumulators = {c: StreamingPVector(center=c, k=k, min_gap=min_gap) for c in dict.fromkeys(centers)}
    correct, loss_sum, seen = 0, 0.0, 0
    try:
        for feats in iter_feature_batches(model, (inputs, labels), layers=[layer, LOGITS], batch_size=batch_size,
                                          device=device, allow_tf32=allow_tf32):
            logits = feats[LOGITS].float()
            c, loss = batch_outcome(logits, labels[seen:seen + len(logits)].to(logits.device))
            correct, loss_sum = correct + c, loss_sum + loss
            if seen < n:
                rows = feats[layer][: n - seen]
                for acc in accumulators.values():
                    acc.update(rows)
            seen += len(logits)
        if seen == 0:
            raise InputError("the data yielded no samples")
        return correct / seen, loss_sum / seen, {c: acc.result() for c, acc in accumulators.items()}
    finally:
        for acc in accumulators.values():
            acc.close()


def data_p_vector(data, *, center: bool = True, batch_size: int = 1024, k: int = 5,
                  min_gap: float = DEFAULT_MIN_GAP, spill_dir: str | None = None) -> PVectorResult:
    """The data P-vector: top left singular vector of the flattened raw inputs.

    Parameters
    ----------
    data : Dataset, DataLoader or (x, y) pair
        The samples, in the order the models' P-vectors use.
    center : bool, default=True
        Subtract the inputs' column means first.
    batch_size : int, default=1024
        Batch size of the pass over the inputs.
    k : int, default=5
        Top singular values reported.
    min_gap : float, default=1e-3
        Relative spectral gap below which the P-vector is flagged unstable.
    spill_dir : str, optional
        Where inputs are spilled for the second pass.

    Returns
    -------
    PVectorResult
        ``.vector`` is the data P-vector, of length ``len(data)``.

    Examples
    --------
    >>> import torch
    >>> x, y = torch.randn(50, 4) * torch.tensor([5.0, 1.0, 1.0, 1.0]), torch.zeros(50, dtype=torch.long)
    >>> data_p_vector((x, y)).vector.shape
    (50,)
    """
    with StreamingPVector(center=center, k=k, min_gap=min_gap, spill_dir=spill_dir) as acc:
        for feats in iter_feature_batches(None, data, layers=INPUT, batch_size=batch_size):
            acc.update(feats[INPUT])
        return acc.result()
