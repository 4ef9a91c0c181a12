"""One test case for every zoo format (as torchvision's DatasetTestCase does for datasets):
each format writes a small fake zoo of its own, and the shared checks run on it: detection,
length, unique ids, a stable content identity, the per-model table, an eval-mode model that
accepts the zoo's own inputs, and a corrupt model file that is a ZooError naming the file."""

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pgen.data import dataset_arrays
from pgen.zoo import ZooError, load_zoo
from test_zoo import write_model_zoos, write_small_cnn_zoo

PGDL = Path(__file__).parent / "fixtures" / "pgdl"


class ZooFormatCase:
    """Subclasses set ``format`` and ``models`` and implement ``write_fake`` and ``corrupt``."""

    format: str
    models: int
    num_classes: int = 10

    def write_fake(self, folder: Path, request) -> Path:
        raise NotImplementedError

    def corrupt(self, zoo) -> tuple[str, str]:
        """Break one model's file; return (model id, the file name the error must name)."""
        raise NotImplementedError

    def zoo(self, tmp_path, request):
        return load_zoo(self.write_fake(tmp_path / "zoo", request), build=False, progress=False)

    def test_detect_length_ids_identity_table(self, tmp_path, request):
        zoo = self.zoo(tmp_path, request)
        assert zoo.format == self.format
        assert len(zoo) == self.models
        ids = [e.id for e in zoo]
        assert len(set(ids)) == len(ids) and all(isinstance(i, str) for i in ids)
        assert zoo.identity() == load_zoo(zoo.root, build=False).identity()
        frame = zoo.to_frame()
        assert list(frame["model_id"]) == ids
        assert any(c.startswith("hp.") for c in frame.columns)
        assert zoo.describe()["models"] == self.models

    def test_model_is_in_eval_mode_and_takes_the_zoo_inputs(self, tmp_path, request):
        zoo = self.zoo(tmp_path, request)
        x, y = dataset_arrays(zoo.dataset("train"))
        for entry in list(zoo)[:2]:
            model = entry.load_model()
            assert not model.training
            with torch.no_grad():
                out = model(x[:4].float())
            assert out.shape == (4, self.num_classes) and torch.isfinite(out).all()

    def test_corrupt_model_file_is_a_zoo_error(self, tmp_path, request):
        zoo = self.zoo(tmp_path, request)
        model_id, filename = self.corrupt(zoo)
        fresh = load_zoo(zoo.root, build=False)
        with pytest.raises(ZooError, match=filename):
            fresh[model_id].load_model()


class TestNativeZoo(ZooFormatCase):
    format, models = "pgen-zoo", 12

    def write_fake(self, folder, request):
        shutil.copytree(request.getfixturevalue("tiny_zoo"), folder)
        return folder

    def corrupt(self, zoo):
        (zoo.root / "checkpoints" / "tiny-0001.safetensors").write_bytes(b"not a safetensors file")
        return "tiny-0001", "tiny-0001.safetensors"


class TestPGDLZoo(ZooFormatCase):
    format, models = "pgdl", 4

    def write_fake(self, folder, request):
        shutil.copytree(PGDL / "task_nin", folder)
        return folder

    def corrupt(self, zoo):
        (zoo.root / "model_2" / "weights.hdf5").write_bytes(b"\x89HDF garbage")
        return "model_2", "weights.hdf5"


def _write_idx_mnist(root: Path, n: int = 12):
    """MNIST in torchvision's raw layout (IDX files), a few random digits."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())


class TestSmallCNNZoo(ZooFormatCase):
    format, models = "small-cnn-zoo", 3  # one of the 4 rows is non-finite and skipped

    def zoo(self, tmp_path, request):
        from pgen.zoo.smallcnn import SmallCNNZoo

        _write_idx_mnist(tmp_path / "data")
        return SmallCNNZoo(self.write_fake(tmp_path / "zoo", request), data_root=tmp_path / "data")

    def write_fake(self, folder, request):
        write_small_cnn_zoo(folder)
        return folder

    def test_corrupt_model_file_is_a_zoo_error(self, tmp_path, request):
        folder = self.write_fake(tmp_path / "zoo", request)
        np.save(folder / "weights.npy", np.zeros((4, 10), dtype=np.float32))  # rows of the wrong width
        with pytest.raises(ZooError, match="weights.npy"):
            load_zoo(folder)[0].load_model()


class TestModelZoos(ZooFormatCase):
    format, models = "model-zoos", 4

    def write_fake(self, folder, request):
        write_model_zoos(folder)
        return folder

    def corrupt(self, zoo):
        entry = zoo[1]
        path = next(p for p in zoo.root.rglob("checkpoints") if p.parent.name.endswith(entry.id.split("@")[1])
                    and p.parent.parent.name == entry.id.split("@")[0])
        path.write_bytes(b"garbage")
        return entry.id, "checkpoints"
