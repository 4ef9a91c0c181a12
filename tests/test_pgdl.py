"""PGDL task folders: TFRecord reader, Keras port, loader, predict/score, bad input.

References: the Keras 2 logits and the input order stored with the fixtures (written by
real Keras), the kit toy's recorded accuracies, the competition's published CMI values,
and numpy re-implementations of TensorFlow's padding rules.
"""

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pgen.cli import main
from pgen.zoo import ZooError, load_zoo
from pgen.zoo.keras import KerasPortError, build_keras_model, load_keras_weights
from pgen.zoo.pgdl import PGDLZoo, read_tfrecord_dataset
from pgen.zoo.tfrecord import (TFRecordError, _crc32c_python, crc32c, frame_record, index_records, iter_records,
                               parse_example, parse_tensor, write_pgdl_shard)

PGDL = Path(__file__).parent / "fixtures" / "pgdl"
KERAS_TASKS = ["task_vgg_like", "task_nin", "task_fullconv_bn"]
KIT_CMI = {"sum_squared_weights": 0.10070132390915873, "distance_from_init": 0.11900511812160217}


# --------------------------------------------------------------------- a tiny protobuf writer (test-only)

def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _tensor_proto(dtype: int, shape, *, content: bytes | None = None, float_val=None, int_val=None) -> bytes:
    dims = b"".join(_field(2, _varint(1 << 3 | 0) + _varint(s)) for s in shape)
    out = _varint(1 << 3 | 0) + _varint(dtype) + _field(2, dims)
    if content is not None:
        out += _field(4, content)
    if float_val is not None:
        out += _field(5, np.asarray(float_val, "<f4").tobytes())
    if int_val is not None:
        out += _field(7, b"".join(_varint(v & (2**64 - 1)) for v in int_val))
    return out


def _example(features: dict[str, bytes]) -> bytes:
    entries = b"".join(_field(1, _field(1, k.encode()) + _field(2, _field(1, _field(1, v))))
                       for k, v in features.items())
    return _field(1, entries)


# --------------------------------------------------------------------- TFRecord

def test_crc32c_known_value_and_fallback():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    data = np.random.default_rng(0).bytes(3000)
    assert _crc32c_python(data) == crc32c(data)


@pytest.mark.parametrize("task", KERAS_TASKS)
def test_shards_read_in_reference_order(task):
    ds = read_tfrecord_dataset(PGDL / task / "dataset_1" / "train")
    x, y = ds.tensors
    ref_x = np.load(PGDL / task / "reference_inputs_in_shard_order.npy")
    ref_y = np.load(PGDL / task / "reference_labels_in_shard_order.npy")
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    np.testing.assert_array_equal(x.permute(0, 2, 3, 1).numpy(), ref_x)  # NCHW out, same values
    np.testing.assert_array_equal(y.numpy(), ref_y)


@pytest.mark.parametrize("task", KERAS_TASKS)
def test_writer_reproduces_tensorflow_shards_byte_for_byte(task, tmp_path):
    x = np.load(PGDL / task / "reference_inputs_in_shard_order.npy")
    y = np.load(PGDL / task / "reference_labels_in_shard_order.npy")
    for k in range(3):  # 32 records per shard
        path = tmp_path / f"shard_{k}.tfrecord"
        write_pgdl_shard(path, x[32 * k:32 * (k + 1)], y[32 * k:32 * (k + 1)])
        assert path.read_bytes() == (PGDL / task / "dataset_1" / "train" / f"shard_{k}.tfrecord").read_bytes()


def test_tensor_proto_value_fields_and_example_roundtrip():
    vals = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    assert np.array_equal(parse_tensor(_tensor_proto(1, [2, 3], float_val=vals.ravel())), vals)
    assert np.array_equal(parse_tensor(_tensor_proto(1, [2, 3], content=vals.tobytes())), vals)
    assert parse_tensor(_tensor_proto(3, [], int_val=[-4])) == -4  # sign-extended varint
    np.testing.assert_array_equal(parse_tensor(_tensor_proto(1, [4], float_val=[2.5])), [2.5] * 4)  # splat
    ex = parse_example(_example({"inputs": b"abc", "output": b"\x01"}))
    assert ex == {"inputs": [b"abc"], "output": [b"\x01"]}
    with pytest.raises(TFRecordError, match="needs"):
        parse_tensor(_tensor_proto(1, [2, 3], content=b"\x00" * 5))
    with pytest.raises(TFRecordError, match="dtype"):
        parse_tensor(_tensor_proto(7, [1], content=b"x"))
    with pytest.raises(TFRecordError, match="does not fit in 64 bits"):  # once read as a dimension of 0
        parse_tensor(_tensor_proto(1, [2**64], content=b""))


def test_corrupted_and_truncated_shards_name_the_file(tmp_path):
    src = PGDL / "task_nin" / "dataset_1" / "train" / "shard_1.tfrecord"
    data = bytearray(src.read_bytes())
    bad = tmp_path / "flip" / "shard_0.tfrecord"
    bad.parent.mkdir()
    data[5000] ^= 0x10
    bad.write_bytes(bytes(data))
    with pytest.raises(ZooError, match=r"shard_0\.tfrecord.*bad data CRC in record 1"):
        read_tfrecord_dataset(bad.parent)
    assert len(index_records(src)) == 32
    with pytest.raises(TFRecordError, match="bad data CRC in record 1"):
        index_records(bad)
    assert len(index_records(bad, check_payload=False)) == 32  # framing intact, payload not checked
    cut = tmp_path / "cut" / "shard_0.tfrecord"
    cut.parent.mkdir()
    cut.write_bytes(src.read_bytes()[:-100])
    with pytest.raises(ZooError, match=r"shard_0\.tfrecord.*truncated"):
        read_tfrecord_dataset(cut.parent)
    with pytest.raises(ZooError, match="no .tfrecord shards"):
        read_tfrecord_dataset(tmp_path / "nothing")


def test_fuzz_reader_only_raises_its_own_error(tmp_path):
    """Random bytes, truncations and bit flips: TFRecordError or a result, never a hang or another error."""
    rng = np.random.default_rng(1234)
    good = (PGDL / "kit_toy" / "dataset_1" / "train" / "shard_0.tfrecord").read_bytes()
    payload = next(iter_records(PGDL / "kit_toy" / "dataset_1" / "train" / "shard_0.tfrecord"))
    path = tmp_path / "f.tfrecord"
    cases = [rng.bytes(int(rng.integers(0, 200))) for _ in range(150)]
    cases += [good[: int(rng.integers(0, len(good)))] for _ in range(100)]
    for _ in range(150):
        b = bytearray(good[:600])
        b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        cases.append(bytes(b))
    outcomes = {"error": 0, "ok": 0}
    for case in cases:
        path.write_bytes(case)
        try:
            for rec in iter_records(path):
                parse_example(rec)
            outcomes["ok"] += 1
        except TFRecordError:
            outcomes["error"] += 1
    # Records with valid framing but garbage payloads reach the protobuf parser.
    for i in range(300):
        if i % 2:
            body = bytearray(payload)
            for _ in range(int(rng.integers(1, 4))):
                body[int(rng.integers(0, len(body)))] = int(rng.integers(0, 256))
            body = bytes(body[: int(rng.integers(1, len(body) + 1))])
        else:
            body = rng.bytes(int(rng.integers(1, 120)))
        path.write_bytes(frame_record(body))
        try:
            for rec in iter_records(path):
                ex = parse_example(rec)
                for v in ex.values():
                    if isinstance(v, list) and v:
                        parse_tensor(v[0])
            outcomes["ok"] += 1
        except TFRecordError:
            outcomes["error"] += 1
    assert outcomes["error"] > 300 and outcomes["ok"] > 0, outcomes  # both paths were exercised


# --------------------------------------------------------------------- Keras port

@pytest.mark.parametrize("task", KERAS_TASKS)
def test_ported_logits_match_keras(task):
    zoo = load_zoo(PGDL / task)
    assert isinstance(zoo, PGDLZoo)
    x, _ = zoo.dataset("train").tensors
    for entry in zoo:
        ref = np.load(PGDL / task / entry.id / "reference_logits.npy")
        with torch.inference_mode():
            out = entry.load_model()(x).numpy()
        scale = np.abs(ref).max()
        assert np.abs(out - ref).max() <= 1e-4 * scale, entry.id


def test_kit_toy_models_reproduce_recorded_accuracies():
    zoo = load_zoo(PGDL / "kit_toy")
    assert [e.id for e in zoo][:4] == ["model_0", "model_1", "model_10", "model_11"]  # sorted as strings
    assert zoo.hparam_grid() == {"num_units": [64, 128, 256], "num_layers": [1, 2, 3],
                                 "activation_function": ["relu", "tanh"]}
    splits = {s: zoo.dataset(s).tensors for s in ("train", "test")}
    for entry in zoo:
        model = entry.load_model()
        for split, metric in (("train", "train_acc"), ("test", "test_acc")):
            x, y = splits[split]
            with torch.inference_mode():
                acc = (model(x).argmax(1) == y).double().mean().item()
            assert acc == pytest.approx(entry.metrics[metric], abs=1e-9), (entry.id, split)


def test_initial_weights_load_and_differ():
    entry = load_zoo(PGDL / "task_nin")["model_0"]
    final, init = entry.load_model(), entry.load_model(initial=True)
    with h5py.File(PGDL / "task_nin" / "model_0" / "weights_init.hdf5") as fh:
        name = fh.attrs["layer_names"][0]
        name = name.decode() if isinstance(name, bytes) else name
        kernel = fh[name][f"{name}/kernel:0"][()]
    np.testing.assert_array_equal(init.conv2d.conv.weight.detach().numpy(), kernel.transpose(3, 2, 0, 1))
    assert not torch.equal(final.conv2d.conv.weight, init.conv2d.conv.weight)


def _tf_same_pool_reference(x, k, s, mode):
    """numpy TensorFlow pooling with 'same' padding: extra pad after; average over valid cells."""
    n, c, h, w = x.shape
    oh, ow = -(-h // s), -(-w // s)
    pad_h = max((oh - 1) * s + k - h, 0)
    pad_w = max((ow - 1) * s + k - w, 0)
    top, left = pad_h // 2, pad_w // 2
    out = np.zeros((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s - top, j * s - left
            win = x[:, :, max(r0, 0):min(r0 + k, h), max(c0, 0):min(c0 + k, w)]
            out[:, :, i, j] = win.max(axis=(2, 3)) if mode == "max" else win.mean(axis=(2, 3))
    return out


@pytest.mark.parametrize("layer", ["MaxPooling2D", "AveragePooling2D"])
@pytest.mark.parametrize("size,k,s", [(7, 2, 2), (8, 3, 2), (6, 3, 3)])
def test_same_pooling_matches_tensorflow_rule(layer, size, k, s):
    model = build_keras_model({"model_config": [{"layer_name": layer, "pool_size": k, "strides": s,
                                                 "padding": "same"}], "input_shape": [size, size, 2]})
    x = torch.randn(3, 2, size, size)
    ref = _tf_same_pool_reference(x.double().numpy(), k, s, "max" if layer == "MaxPooling2D" else "avg")
    np.testing.assert_allclose(model(x).numpy(), ref, rtol=1e-6, atol=1e-6)


def test_same_conv_pads_bottom_right_and_flatten_is_nhwc():
    cfg = {"model_config": [{"layer_name": "Conv2D", "filters": 2, "kernel_size": [2, 2], "strides": 2,
                             "padding": "same", "use_bias": False}, {"layer_name": "Flatten"}],
           "input_shape": [5, 5, 1]}
    model = build_keras_model(cfg)
    kernel = np.random.default_rng(0).standard_normal((2, 2, 1, 2)).astype(np.float32)
    model.conv2d.set_keras_weights([kernel])
    x = np.random.default_rng(1).standard_normal((1, 5, 5, 1)).astype(np.float32)
    # TF: output 3x3, pad total 1 -> 0 before, 1 after (bottom/right)
    xp = np.zeros((1, 6, 6, 1), np.float32)
    xp[:, :5, :5] = x
    ref = np.zeros((1, 3, 3, 2))
    for i in range(3):
        for j in range(3):
            ref[0, i, j] = np.einsum("hwc,hwco->o", xp[0, 2 * i:2 * i + 2, 2 * j:2 * j + 2], kernel)
    out = model(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy()
    np.testing.assert_allclose(out, ref.reshape(1, -1), rtol=1e-5, atol=1e-6)  # (H, W, C) order


def test_batchnorm_center_scale_relu_kwargs_and_activations():
    cfg = {"model_config": [{"layer_name": "BatchNormalization", "center": False, "epsilon": 0.01},
                            {"layer_name": "ReLU", "max_value": 1.5, "negative_slope": 0.1, "threshold": 0.2},
                            {"layer_name": "Activation", "activation": "elu"}],
           "input_shape": [6]}
    model = build_keras_model(cfg)
    assert [s for s, _ in model.batch_normalization.weight_shapes()] == ["gamma", "moving_mean", "moving_variance"]
    gamma, mean, var = np.array([2.0] * 6, np.float32), np.arange(6, dtype=np.float32), np.full(6, 3.0, np.float32)
    model.batch_normalization.set_keras_weights([gamma, mean, var])
    x = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32) * 3
    z = (x - mean) / np.sqrt(var + 0.01) * gamma
    r = np.where(z >= 0.2, z, 0.1 * (z - 0.2))
    r = np.minimum(r, 1.5)
    ref = np.where(r > 0, r, np.expm1(r))
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec,match", [
    ({"layer_name": "LSTM", "units": 3}, "unsupported layer 'LSTM'"),
    ({"layer_name": "Dense", "units": 3, "kernel_size": 2}, r"layer 0 \(Dense\).*unsupported argument"),
    ({"layer_name": "Dense", "units": 3, "activation": "mish"}, "unsupported activation 'mish'"),
    ({"layer_name": "Conv2D", "filters": 3, "kernel_size": 3, "padding": "causal"}, "padding='causal'"),
])
def test_unsupported_config_is_a_clear_error(spec, match):
    shape = [8, 8, 3] if spec["layer_name"] == "Conv2D" else [4]
    with pytest.raises(KerasPortError, match=match):
        build_keras_model({"model_config": [spec], "input_shape": shape}, where="cfg.json")


def test_hdf5_that_does_not_match_config_names_file_and_model(tmp_path):
    task = tmp_path / "task"
    shutil.copytree(PGDL / "task_nin", task)
    shutil.copy(PGDL / "task_vgg_like" / "model_0" / "weights.hdf5", task / "model_1" / "weights.hdf5")
    zoo = load_zoo(task)
    with pytest.raises(ZooError, match=r"model model_1.*weights\.hdf5.*config"):
        zoo["model_1"].load_model()
    cfg = json.loads((task / "model_2" / "config.json").read_text())
    cfg["model_config"].insert(0, {"layer_name": "SpatialDropout2D", "rate": 0.1})
    (task / "model_2" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ZooError, match=r"model_2.*unsupported layer 'SpatialDropout2D'"):
        zoo["model_2"].load_model()
    with pytest.raises(KerasPortError, match="not a Keras weights file"):
        h5py.File(tmp_path / "empty.h5", "w").close()
        nin = json.loads((PGDL / "task_nin" / "model_0" / "config.json").read_text())
        load_keras_weights(build_keras_model(nin), tmp_path / "empty.h5")


def test_model_folder_linked_out_of_the_task_is_refused(tmp_path):
    task = tmp_path / "task"
    shutil.copytree(PGDL / "task_nin", task)
    shutil.move(task / "model_3", tmp_path / "outside")
    (task / "model_3").symlink_to(tmp_path / "outside")
    with pytest.raises(ZooError, match="escapes the zoo folder"):
        load_zoo(task).entries


def test_input_data_reference_data_layout(tmp_path):
    root = tmp_path / "public_data"
    shutil.copytree(PGDL / "task_nin", root / "input_data" / "task_nin",
                    ignore=shutil.ignore_patterns("model_configs.json", "*.npy"))
    configs = json.loads((PGDL / "task_nin" / "model_configs.json").read_text())
    (root / "reference_data" / "task_nin").mkdir(parents=True)
    # keys may carry the model_ prefix
    (root / "reference_data" / "task_nin" / "model_configs.json").write_text(
        json.dumps({f"model_{k}": v for k, v in configs.items()}))
    zoo = load_zoo(root / "input_data" / "task_nin")
    assert zoo.model_configs_path == root / "reference_data" / "task_nin" / "model_configs.json"
    assert zoo["model_2"].hparams == {"depth": 2, "width": 8}
    assert zoo["model_2"].metrics["test_acc"] == configs["2"]["metrics"]["test_acc"]


# --------------------------------------------------------------------- predict and score

@pytest.mark.parametrize("measure", sorted(KIT_CMI))
def test_predict_then_score_reproduces_competition_values(measure, tmp_path, capsys):
    assert main(["pgdl", "predict", str(PGDL / "kit_toy"), "--measure", measure, "--out", str(tmp_path)]) == 0
    preds = json.loads((tmp_path / "kit_toy.predict").read_text())
    assert sorted(preds) == sorted(f"model_{i}" for i in range(18))
    capsys.readouterr()
    assert main(["pgdl", "score", str(tmp_path / "kit_toy.predict"), str(PGDL / "kit_toy" / "model_configs.json"),
                 "--verbose"]) == 0
    out = capsys.readouterr().out
    cmi = float(out.strip().splitlines()[-1].split(":")[1])
    assert cmi == pytest.approx(KIT_CMI[measure], abs=1e-9)
    assert "num_layers" in out and "kendall tau" in out


def test_a_task_named_by_a_relative_path(tmp_path, monkeypatch, capsys):
    """`pgen pgdl predict tests/fixtures/pgdl/kit_toy` once looked for the task's
    model_configs.json under tests/fixtures/pgdl/kit_toy/tests/fixtures/pgdl/kit_toy."""
    monkeypatch.chdir(PGDL.parent)
    assert main(["pgdl", "predict", "pgdl/kit_toy", "--measure", "num_params", "--out", str(tmp_path)]) == 0
    assert len(json.loads((tmp_path / "kit_toy.predict").read_text())) == 18
    assert load_zoo("pgdl/kit_toy")["model_3"].metrics


def test_predict_time_budget_records_timeouts_and_goes_on(tmp_path):
    task = tmp_path / "toy"
    (task / "dataset_1").mkdir(parents=True)
    shutil.copytree(PGDL / "kit_toy" / "dataset_1" / "train", task / "dataset_1" / "train")
    for m in ("model_0", "model_16"):
        shutil.copytree(PGDL / "kit_toy" / m, task / m)
    shutil.copy(PGDL / "kit_toy" / "model_configs.json", task)
    from pgen.pgdl import predict_task

    fast = predict_task(task, "sum_squared_weights", tmp_path / "a", time_budget=120, progress=False)
    assert fast["error"].isna().all() and len(fast) == 2
    slow = predict_task(task, "kit_sharpness", tmp_path / "b", time_budget=0.01, progress=False)
    assert list(slow["error"]) == ["timed out after the 0.01 s budget"] * 2
    assert json.loads((tmp_path / "b" / "toy.predict").read_text()) == {}


def test_score_rejects_incomplete_predictions(tmp_path):
    configs = PGDL / "kit_toy" / "model_configs.json"
    (tmp_path / "p.json").write_text(json.dumps({"model_0": 1.0, "model_1": 2.0}))
    assert main(["pgdl", "score", str(tmp_path / "p.json"), str(configs)]) == 2


def test_pgen_score_on_a_task_without_test_data(tmp_path):
    """PGDL tasks ship train data only: the gap comes from model_configs.json."""
    import pandas as pd

    out = tmp_path / "score"
    assert main(["score", str(PGDL / "task_nin"), "--out", str(out), "--samples", "64"]) == 0
    models = pd.read_csv(out / "models.csv")
    assert len(models) == 4 and models["pvector_angle"].between(0, 90).all()
    configs = json.loads((PGDL / "task_nin" / "model_configs.json").read_text())
    for row in models.itertuples():
        m = configs[row.model_id.removeprefix("model_")]["metrics"]
        assert row.gap == pytest.approx(m["train_acc"] - m["test_acc"])
        assert row.test_acc == pytest.approx(m["test_acc"])
    assert "PGDL CMI against the gap" in (out / "report.md").read_text()
