"""Hostile and broken inputs: every one a pgen error, bounded in time and memory.

The cases the issue lists (deeply nested JSON, a model_config of the wrong type, an infinite
or huge input_shape, a huge layer, a negative BatchNormalization epsilon), then seeded
property-based fuzzing of Keras configs and the native manifest with ``hypothesis``.
"""

import json
import math
import os

import numpy as np
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgen.errors import PgenError, ZooError
from pgen.zoo import load_zoo
from pgen.zoo.keras import MAX_PARAMETERS, KerasPortError, build_keras_model

FIXTURES = Path(__file__).parent / "fixtures"
PGDL = FIXTURES / "pgdl"
FUZZ_SCALE = int(os.environ.get("PGEN_FUZZ_SCALE", "1"))  # multiplies every fuzz budget; e.g. 20 for a long run
NIN = json.loads((PGDL / "task_nin" / "model_0" / "config.json").read_text())


def dense(units, **kw):
    return {"layer_name": "Dense", "units": units, **kw}


@pytest.mark.parametrize("config, complaint", [
    ({"model_config": 3, "input_shape": [4]}, "model_config must be a list"),
    ({"model_config": [dense(2)], "input_shape": [float("inf")]}, "input_shape must be a whole number"),
    ({"model_config": [dense(2)], "input_shape": [1e300]}, "input_shape must be between 1 and"),
    ({"model_config": [dense(2)], "input_shape": [1 << 40, 1, 1]}, "input_shape must be between"),
    ({"model_config": [dense(2)], "input_shape": [40000, 40000, 3]}, "has more than"),
    ({"model_config": [dense(1 << 19)], "input_shape": [1 << 19]}, "more than 200000000 parameters"),
    ({"model_config": [dense(2.5)], "input_shape": [4]}, "units must be a whole number"),
    ({"model_config": [dense(True)], "input_shape": [4]}, "units must be a whole number"),
    ({"model_config": [dense(0)], "input_shape": [4]}, "units must be between 1 and"),
    ({"model_config": [{"layer_name": "Conv2D", "filters": 4, "kernel_size": [3, -1]}], "input_shape": [8, 8, 1]},
     "kernel_size must be between 1 and"),
    ({"model_config": [{"layer_name": "BatchNormalization", "epsilon": -1e-3}], "input_shape": [4]},
     "epsilon must be positive"),
    ({"model_config": [{"layer_name": "BatchNormalization", "epsilon": float("nan")}], "input_shape": [4]},
     "epsilon must be a finite number"),
    ({"model_config": [{"layer_name": "Dropout", "rate": "0.5"}], "input_shape": [4]}, "rate must be a finite"),
    ({"model_config": [{"layer_name": "ReLU", "max_value": float("inf")}], "input_shape": [4]}, "max_value"),
])
def test_hostile_keras_configs_are_port_errors_before_allocating(config, complaint):
    with pytest.raises(KerasPortError, match=complaint):
        build_keras_model(config, where="config.json (model_9)")


def test_the_parameter_limit_can_be_raised(monkeypatch):
    config = {"model_config": [dense(4000)], "input_shape": [4000]}  # 16 million weights
    monkeypatch.setenv("PGEN_MAX_PARAMETERS", "1000000")
    with pytest.raises(KerasPortError, match="more than 1000000 parameters"):
        build_keras_model(config)
    monkeypatch.setenv("PGEN_MAX_PARAMETERS", str(MAX_PARAMETERS))
    assert sum(p.numel() for p in build_keras_model(config).parameters()) == 4000 * 4000 + 4000


@pytest.fixture
def task(tmp_path):
    folder = tmp_path / "task"
    shutil.copytree(PGDL / "task_nin", folder, ignore=shutil.ignore_patterns("*.npy"))
    return folder


@pytest.mark.parametrize("text, complaint", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("\xff\xfe", "cannot be read as JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"model_config": 7, "input_shape": [8, 8, 3]}', "model_config must be a list"),
])
def test_a_broken_config_json_is_that_models_zoo_error(task, text, complaint):
    (task / "model_1" / "config.json").write_bytes(text.encode("utf-8", "surrogateescape")
                                                   if isinstance(text, str) else text)
    zoo = load_zoo(task)
    with pytest.raises(ZooError, match=complaint) as exc:
        zoo["model_1"].load_model()
    assert "model_1" in str(exc.value)
    zoo["model_2"].load_model()  # the others load


def test_a_deeply_nested_manifest_row_or_zoo_json_is_a_zoo_error(tiny_zoo, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    manifest = zoo / "manifest.jsonl"
    manifest.write_text(manifest.read_text() + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ZooError, match="nested too deeply"):
        load_zoo(zoo).entries
    (zoo / "zoo.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ZooError, match="nested too deeply"):
        load_zoo(zoo)


def _one_row_zoo(tiny_zoo, folder, **changes):
    shutil.copytree(tiny_zoo, folder)
    row = json.loads((folder / "manifest.jsonl").read_text().splitlines()[-1])
    row.update(changes)
    (folder / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    return folder, row["id"]


@pytest.mark.parametrize("kwargs, complaint", [
    ({"width": 2**40}, "width=1099511627776 is not a valid value"),
    ({"width": 60000, "depth": 2}, "more than 200000000"),  # 6e10 weights: counted on the meta device
    ({"width": 2.5}, "width=2.5 is not a valid value"),
    ({"dropout": 7}, "dropout=7 is not a valid value"),
    ({"depth": 10**6, "width": 1}, "depth=1000000 is not a valid value .at most 256 layers"),  # was 37 s and 1.7 GB
])
def test_a_manifest_asking_for_a_huge_or_invalid_model_is_refused_before_allocating(tiny_zoo, tmp_path, kwargs,
                                                                                     complaint):
    zoo, model_id = _one_row_zoo(tiny_zoo, tmp_path / "zoo", model_kwargs=kwargs)
    with pytest.raises(PgenError, match=complaint) as exc:
        load_zoo(zoo)[model_id].load_model()
    assert f"model {model_id} of {zoo}" in str(exc.value)


def test_a_manifest_field_of_the_wrong_type_names_its_line(tiny_zoo, tmp_path):
    zoo, _ = _one_row_zoo(tiny_zoo, tmp_path / "zoo", hparams=[1, 2], checkpoint=None)
    with pytest.raises(ZooError, match=r"manifest.jsonl:1: model .*checkpoint is NoneType, hparams is list"):
        load_zoo(zoo).entries


@pytest.mark.parametrize("field, value, complaint", [
    ("dataset", "digits", "'dataset' must be an object with a 'name' or a 'spec' string"),
    ("hparam_grid", [1, 2], "'hparam_grid' must map each hyperparameter to a list"),
    ("input_shape", [1, -8, 8], "'input_shape' must be a list of 1 to 4 whole numbers"),
    ("num_classes", "ten", "'num_classes' must be a whole number"),
    ("checkpoint_root", ["."], "'checkpoint_root' must be a string"),
])
def test_a_zoo_json_field_of_the_wrong_type_is_named(tiny_zoo, tmp_path, field, value, complaint):
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    meta = json.loads((zoo / "zoo.json").read_text())
    meta[field] = value
    (zoo / "zoo.json").write_text(json.dumps(meta))
    with pytest.raises(ZooError, match=complaint):
        load_zoo(zoo)


@pytest.mark.parametrize("metrics, complaint", [
    ({"test_acc": "abc"}, "metric test_acc must be a finite number; got 'abc'"),
    ({"test_acc": float("nan")}, "metric test_acc must be a finite number"),
    ({"train_acc": 1e400}, "metric train_acc must be a finite number"),
    ({"test_acc": 97.5}, "metric test_acc must be an accuracy between 0 and 1"),
    ({"test_acc": True}, "metric test_acc must be a finite number"),
])
def test_a_metric_that_is_not_a_number_names_its_line(tiny_zoo, tmp_path, metrics, complaint):
    zoo, _ = _one_row_zoo(tiny_zoo, tmp_path / "zoo", metrics=metrics)
    with pytest.raises(ZooError, match=r"manifest.jsonl:1: model .*" + complaint):
        load_zoo(zoo).entries


def test_repeated_manifest_rows_are_one_model_with_a_note_and_conflicting_ones_an_error(tiny_zoo, tmp_path):
    from pgen.errors import PgenNotice

    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    lines = (zoo / "manifest.jsonl").read_text().splitlines()
    (zoo / "manifest.jsonl").write_text("\n".join(lines + [lines[0]] * 10_000) + "\n")
    with pytest.warns(PgenNotice, match="10000 repeated row"):
        assert len(load_zoo(zoo).entries) == len(lines)
    other = json.loads(lines[0])
    other["metrics"]["test_acc"] = 0.123
    (zoo / "manifest.jsonl").write_text("\n".join(lines + [json.dumps(other)]) + "\n")
    with pytest.raises(ZooError, match=rf"manifest.jsonl:{len(lines) + 1}: model .* appears again with other contents"):
        load_zoo(zoo).entries


def test_a_keras_layer_name_that_is_not_a_name(tmp_path):
    with pytest.raises(KerasPortError, match="layer 0: 'layer_name' must be a Keras layer class name, not list"):
        build_keras_model({"model_config": [{"layer_name": ["Dense"], "units": 2}], "input_shape": [4]},
                          where="config.json (model_3)")


@pytest.mark.parametrize("config, complaint", [
    ({"hparams": {}, "metrics": {"train_acc": "high", "test_acc": 0.5}}, "metric train_acc must be a finite number"),
    ({"hparams": [1], "metrics": {}}, "hparams must be a JSON object"),
])
def test_a_pgdl_config_with_a_metric_that_is_not_a_number(task, config, complaint):
    configs = json.loads((task / "model_configs.json").read_text())
    configs[next(iter(configs))] = config
    (task / "model_configs.json").write_text(json.dumps(configs))
    with pytest.raises(ZooError, match=complaint):
        load_zoo(task)


def test_the_official_score_of_configs_without_metrics_is_one_line(tmp_path, capsys):
    configs = {"model_0": {"hparams": {"a": {"current_value": 1, "possible_values": [1, 2]},
                                       "b": {"current_value": 1, "possible_values": [1]}}}}
    (tmp_path / "configs.json").write_text(json.dumps(configs))
    (tmp_path / "p.predict").write_text(json.dumps({"model_0": 0.3}))
    from pgen.cli import main

    assert main(["pgdl", "score", str(tmp_path / "p.predict"), str(tmp_path / "configs.json")]) == 2
    assert "model model_0: its config needs metrics with numeric train_acc and test_acc" in capsys.readouterr().err


@pytest.mark.parametrize("argv, complaint", [
    (["--seed", str(2**64)], "argument --seed: must be at most 4294967295"),
    (["--layer", ""], "layer must name a layer"),
    (["--measures", ""], "no measure named"),
    (["--measures", ","], "no measure named"),
])
def test_score_options_that_mean_nothing_are_refused(tiny_zoo, tmp_path, capsys, argv, complaint):
    from pgen.cli import main

    try:
        code = main(["score", str(tiny_zoo), "--out", str(tmp_path / "o")] + argv)
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code
    assert code == 2 and complaint in capsys.readouterr().err
    assert not (tmp_path / "o" / "results.sqlite").exists()


def test_too_many_workers_are_capped_with_a_note(tiny_zoo, tmp_path, capsys):
    from pgen.cli import main

    assert main(["score", str(tiny_zoo), "--out", str(tmp_path / "o"), "--samples", "100", "--workers", "1000",
                 "--no-report"]) == 0
    assert f"note: --workers 1000 is more than this machine's {os.cpu_count()} CPUs; using {os.cpu_count()}" in \
        capsys.readouterr().err


def test_a_cache_that_is_a_file_is_named(tmp_path, monkeypatch, capsys):
    from pgen.cli import main

    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("PGEN_CACHE", str(tmp_path / "cache"))
    assert main(["zoo", "info", "digits"]) == 2
    assert f"PGEN_CACHE {tmp_path / 'cache'} is not a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- fuzzing

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 70_000), st.integers(-(2**70), 2**70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
_KWARGS = ("units", "filters", "kernel_size", "strides", "padding", "activation", "pool_size", "epsilon",
           "rate", "axis", "use_bias", "max_value", "negative_slope", "dilation_rate", "center", "scale")
_LAYER = st.fixed_dictionaries(
    {"layer_name": st.sampled_from(["Conv2D", "Dense", "BatchNormalization", "MaxPooling2D", "AveragePooling2D",
                                    "GlobalAveragePooling2D", "Flatten", "Dropout", "Activation", "ReLU",
                                    "LSTM", 7])},
    optional={k: _VALUES for k in _KWARGS})
_CONFIG = st.fixed_dictionaries({"model_config": st.one_of(st.lists(_LAYER, max_size=5), _VALUES),
                                 "input_shape": st.one_of(st.lists(_SCALARS, max_size=4), _VALUES)})


@settings(max_examples=800 * FUZZ_SCALE, deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(_CONFIG)
def test_fuzzed_keras_configs_build_within_bounds_or_fail_as_port_errors(config):
    try:
        model = build_keras_model(config, where="fuzz")
    except KerasPortError:
        return
    assert sum(p.numel() for p in model.parameters()) <= MAX_PARAMETERS
    assert all(math.prod(layer.out_shape) >= 1 for layer in model.keras_layers())


_ROW_VALUES = st.one_of(_VALUES, st.dictionaries(st.text(max_size=4), _SCALARS, max_size=3))


@settings(max_examples=300 * FUZZ_SCALE, deadline=5000, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                   HealthCheck.function_scoped_fixture])
@given(row=st.one_of(_ROW_VALUES, st.fixed_dictionaries(
    {"id": _SCALARS, "checkpoint": st.one_of(_SCALARS, st.sampled_from(["../x", "/etc/passwd", "checkpoints"])),
     "arch": st.one_of(_SCALARS, st.sampled_from(["mlp", "cnn"])), "model_kwargs": _ROW_VALUES,
     "hparams": _ROW_VALUES, "metrics": _ROW_VALUES},
    optional={"final": _SCALARS, "train_data": _SCALARS, "initial_checkpoint": _SCALARS})))
def test_fuzzed_manifest_rows_are_pgen_errors_or_load(tiny_zoo, tmp_path_factory, row):
    zoo = tmp_path_factory.mktemp("fuzz") / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    (zoo / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    try:
        for entry in load_zoo(zoo):
            entry.load_model()
    except PgenError:
        pass


# ----------------------------------------------------------------------------- the results store

def test_a_full_disk_mid_run_is_one_line_and_keeps_every_finished_model(tiny_zoo, tmp_path, monkeypatch, capsys):
    import sqlite3

    from pgen.cli import main
    from pgen.store import ResultsStore

    real_init = ResultsStore.__init__

    def small_disk(self, path):  # SQLite's own "database or disk is full", a few pages after opening
        real_init(self, path)
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        self._conn.execute(f"PRAGMA max_page_count = {pages + 3}")

    out = tmp_path / "out"
    monkeypatch.setattr(ResultsStore, "__init__", small_disk)
    assert main(["score", str(tiny_zoo), "--out", str(out), "--samples", "50"]) == 2
    err = capsys.readouterr().err
    assert "database or disk is full" in err and "every result stored before this is kept" in err
    assert "Traceback" not in err
    with sqlite3.connect(out / "results.sqlite") as conn:
        kept = conn.execute("SELECT COUNT(*) FROM results WHERE measure='_complete'").fetchone()[0]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert 0 < kept < 12
    monkeypatch.undo()
    assert main(["score", str(tiny_zoo), "--out", str(out), "--samples", "50"]) == 0  # the rerun goes on
    assert f"computed {12 - kept} model(s) in this call; 12 of 12" in capsys.readouterr().out


def test_two_processes_scoring_one_folder_lose_nothing(tiny_zoo, tmp_path):
    """Concurrent writers: SQLite's WAL and a 60 s busy timeout serialize the writes, and
    every row is keyed by (zoo, model, measure, settings), so both runs finish and the store
    holds each model once."""
    import sqlite3
    import subprocess
    import sys

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pgen.cli", "score", str(tiny_zoo), "--out", str(out), "--samples", "100",
           "--measures", "pvector_angle,sum_squared_weights"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT model_id, COUNT(*) FROM results WHERE measure='sum_squared_weights' "
                            "GROUP BY model_id").fetchall()
    assert len(rows) == 12 and all(count == 1 for _, count in rows)


# ----------------------------------------------------------------------------- TFRecord shards

def _tensor(dtype: int, dims, *, content: bytes | None = None, float_val=None) -> bytes:
    from pgen.zoo.tfrecord import _encode_varint, _length_delimited

    shape = b"".join(_length_delimited(2, _encode_varint(1 << 3) + _encode_varint(d if d >= 0 else d % (1 << 64))) for d in dims)
    out = _encode_varint(1 << 3) + _encode_varint(dtype) + _length_delimited(2, shape)
    if content is not None:
        out += _length_delimited(4, content)
    if float_val is not None:
        out += _length_delimited(5, np.asarray(float_val, "<f4").tobytes())
    return out


def _shard_folder(folder: Path, records: list[bytes]) -> Path:
    from pgen.zoo.tfrecord import frame_record, serialize_example, serialize_tensor

    folder.mkdir(parents=True)
    label = serialize_tensor(np.asarray(1, dtype=np.int32))
    with (folder / "shard_0.tfrecord").open("wb") as fh:
        for inputs in records:
            fh.write(frame_record(serialize_example({"output": label, "inputs": inputs})))
    return folder


@pytest.mark.parametrize("name, inputs", [
    ("splat of 2^28 values", [_tensor(1, [1 << 14, 1 << 14], float_val=[1.0])]),  # once 19 s and 2.4 GB
    ("a dimension of 2^32 times 0", [_tensor(1, [1 << 32, 0], content=b"")]),
    ("40 dimensions", [_tensor(1, [1] * 40, float_val=[1.0])]),
    ("a dimension of 2^63", [_tensor(1, [1 << 63], float_val=[1.0])]),
    ("a dimension over 64 bits", [_tensor(1, [1 << 64 | 5], float_val=[1.0])]),
    ("many splats adding up", [_tensor(1, [1 << 10, 1 << 10], float_val=[1.0])] * 80),
])
def test_crafted_tensor_protos_are_zoo_errors_within_bounds(tmp_path, name, inputs):
    # The dataset ceiling is lowered from 2^28 values to 2^22 so the test allocates little.
    import time
    import tracemalloc

    from pgen.zoo.pgdl import read_tfrecord_dataset

    folder = _shard_folder(tmp_path / "train", inputs)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ZooError, match=r"shard_0\.tfrecord: record \d+"):
            read_tfrecord_dataset(folder, max_values=1 << 22)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 20 and peak < 256 << 20, (name, peak)


def test_a_shard_folder_without_records_is_a_zoo_error(tmp_path):
    from pgen.zoo.pgdl import read_tfrecord_dataset

    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "shard_0.tfrecord").write_bytes(b"")
    with pytest.raises(ZooError, match="hold no records"):  # once numpy's "need at least one array to stack"
        read_tfrecord_dataset(folder)


def test_fuzzed_shard_folders_are_zoo_errors_or_data(tmp_path):
    """Mutations of a real shard read through the whole reader (framing, protobuf, tensors,
    stacking): a ZooError or a dataset, never numpy's or Python's own exception."""
    from pgen.zoo.pgdl import read_tfrecord_dataset

    rng = np.random.default_rng(20261128)
    good = (PGDL / "task_nin" / "dataset_1" / "train" / "shard_1.tfrecord").read_bytes()
    outcomes = {"error": 0, "data": 0}
    for i in range(1200 * FUZZ_SCALE):
        data = bytearray(good)
        kind = i % 3
        if kind == 0:  # flip bits, then fix nothing: CRCs catch most
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # truncate
            data = data[: int(rng.integers(0, len(data)))]
        else:  # valid framing around a mutated payload: reaches the protobuf and tensor parsers
            from pgen.zoo.tfrecord import frame_record, iter_records

            payloads = list(iter_records(PGDL / "task_nin" / "dataset_1" / "train" / "shard_1.tfrecord"))[:3]
            body = bytearray(payloads[int(rng.integers(0, len(payloads)))])
            for _ in range(int(rng.integers(1, 6))):
                body[int(rng.integers(0, len(body)))] = int(rng.integers(0, 256))
            data = bytearray(frame_record(bytes(body)))
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        (folder / "shard_0.tfrecord").write_bytes(bytes(data))
        try:
            read_tfrecord_dataset(folder)
            outcomes["data"] += 1
        except ZooError:
            outcomes["error"] += 1
        shutil.rmtree(folder)
    assert outcomes["error"] > 300 and outcomes["data"] > 0, outcomes  # both paths exercised


# ----------------------------------------------------------------------------- pickles never run

class _Marker:
    """Unpickling this writes a file: it proves whether a loader ever unpickled it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_pt(path: Path, marker: Path) -> None:
    import torch

    torch.save({"weight": _Marker(marker)}, path)


def _evil_npz(path: Path, marker: Path, keys) -> None:
    np.savez(path, **{k: np.array([_Marker(marker)], dtype=object) for k in keys})


def test_no_loader_ever_unpickles(tiny_zoo, tmp_path):
    from test_public_zoos import write_published_model_zoo

    from pgen.data import dataset_from_spec

    marker = tmp_path / "MARKER"
    attempts = {}

    def attempt(name, fn):
        try:
            fn()
            attempts[name] = "loaded"
        except PgenError as exc:
            attempts[name] = type(exc).__name__

    # native zoo: a .pt checkpoint and a train_data file holding pickles
    zoo, model_id = _one_row_zoo(tiny_zoo, tmp_path / "native", checkpoint="checkpoints/evil.pt",
                                 train_data="checkpoints/evil.npz")
    _evil_pt(zoo / "checkpoints" / "evil.pt", marker)
    _evil_npz(zoo / "checkpoints" / "evil.npz", marker, ["indices", "labels"])
    native = load_zoo(zoo)
    attempt("native checkpoint", lambda: native[model_id].load_model())
    attempt("native train_data", lambda: native.training_data(native[model_id]))
    # Model Zoos: a checkpoint and dataset.pt holding pickles (params.pkl: tests/test_public_zoos.py)
    write_published_model_zoo(tmp_path / "mz")
    trial = sorted(p for p in (tmp_path / "mz").iterdir() if p.is_dir())[0]
    _evil_pt(trial / "checkpoint_000003" / "checkpoints", marker)
    attempt("Model Zoos checkpoint", lambda: load_zoo(tmp_path / "mz")[f"{trial.name}@3"].load_model())
    _evil_pt(tmp_path / "mz" / "dataset.pt", marker)
    attempt("Model Zoos dataset.pt", lambda: load_zoo(tmp_path / "mz").dataset("train"))
    # npz data given by the user, and a Small CNN Zoo's weights.npy, as object arrays
    _evil_npz(tmp_path / "data.npz", marker, ["x", "y"])
    attempt("npz data", lambda: dataset_from_spec(f"npz:{tmp_path / 'data.npz'}", "train"))
    from test_public_zoos import write_published_small_cnn_zoo

    write_published_small_cnn_zoo(tmp_path / "scnn")
    np.save(tmp_path / "scnn" / "weights.npy", np.array([[_Marker(marker)]], dtype=object), allow_pickle=True)
    attempt("Small CNN Zoo weights.npy", lambda: load_zoo(tmp_path / "scnn"))
    assert not marker.exists(), attempts
    assert all(v != "loaded" for v in attempts.values()), attempts
    assert len(attempts) == 6


# ----------------------------------------------------------------------------- byte-level fuzzing of the other formats

def _mutate(data: bytes, rng, head: int | None = None) -> bytes:
    """Bit flips, byte overwrites, truncation or an inserted run of bytes, mostly near the start
    (``head``) where formats keep their headers and lengths."""
    b = bytearray(data)
    span = min(len(b), head) if head else len(b)
    kind = int(rng.integers(0, 4))
    if kind == 0:
        for _ in range(int(rng.integers(1, 5))):
            b[int(rng.integers(0, span))] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:
        for _ in range(int(rng.integers(1, 5))):
            b[int(rng.integers(0, span))] = int(rng.integers(0, 256))
    elif kind == 2:
        b = b[: int(rng.integers(0, len(b)))]
    else:
        at = int(rng.integers(0, span))
        b[at:at] = rng.bytes(int(rng.integers(1, 16)))
    return bytes(b)


def _fuzz(cases: int, make, load, rng) -> dict:
    outcomes = {"error": 0, "ok": 0}
    for _ in range(cases * FUZZ_SCALE):
        path = make(rng)
        try:
            load(path)
            outcomes["ok"] += 1
        except PgenError:
            outcomes["error"] += 1
    return outcomes


def test_fuzzed_safetensors_checkpoints(tiny_zoo, tmp_path):
    from pgen.zoo.native import load_state_dict

    good = sorted((tiny_zoo / "checkpoints").glob("*.safetensors"))[-1].read_bytes()
    path = tmp_path / "c.safetensors"

    def make(rng):
        path.write_bytes(_mutate(good, rng, head=400))
        return path

    outcomes = _fuzz(600, make, load_state_dict, np.random.default_rng(1))
    assert outcomes["error"] > 100, outcomes


def test_fuzzed_keras_weight_files(tmp_path, monkeypatch):
    import pgen.zoo.keras
    from pgen.zoo.keras import build_keras_model, load_keras_weights

    monkeypatch.setattr(pgen.zoo.keras, "HDF5_READ_TIMEOUT", 5.0)
    good = (PGDL / "task_nin" / "model_0" / "weights.hdf5").read_bytes()
    path = tmp_path / "w.hdf5"

    def make(rng):
        path.write_bytes(_mutate(good, rng, head=4096))
        return path

    def load(p):
        load_keras_weights(build_keras_model(NIN), p)

    outcomes = _fuzz(600, make, load, np.random.default_rng(2))  # case 237 is the file below
    assert outcomes["error"] > 100 and outcomes["ok"] > 0, outcomes


def test_a_weights_file_on_which_hdf5_loops_forever_is_refused_in_bounded_time():
    """Found by the fuzzer (case 237 of seed 2): HDF5's C library never returns on it, and
    no thread or signal can interrupt it; pgen reads weights in a child it can kill."""
    import time

    from pgen.zoo.keras import keras_weight_arrays

    t0 = time.perf_counter()
    with pytest.raises(KerasPortError, match="took over 3 s"):
        keras_weight_arrays(FIXTURES / "hdf5_loops_forever.hdf5", timeout=3)
    assert time.perf_counter() - t0 < 10
    assert len(keras_weight_arrays(PGDL / "task_nin" / "model_0" / "weights.hdf5")) > 0  # a good file still reads


def test_the_weight_reader_holds_none_of_its_parents_descriptors():
    """A Ray worker that read PGDL weights and then died (killed, out of memory) kept its
    socket open through the forked reader: Ray never saw the death and the task hung. Here a
    process opens a pipe, reads weights (starting its reader) and exits; the pipe's read end
    must then see end-of-file, which it cannot while any process holds the write end."""
    import select

    from pgen.zoo.keras import keras_weight_arrays

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a worker that reads weights and dies
        code = 1
        try:
            os.close(r)
            code = 0 if keras_weight_arrays(PGDL / "task_nin" / "model_0" / "weights.hdf5") else 1
        finally:
            os._exit(code)
    os.close(w)
    assert os.waitpid(pid, 0)[1] == 0
    ready, _, _ = select.select([r], [], [], 20)
    try:
        assert ready and os.read(r, 1) == b"", "the weight reader kept its parent's pipe open"
    finally:
        os.close(r)


def test_fuzzed_small_cnn_zoo_csvs(tmp_path):
    import gzip

    from test_public_zoos import write_published_small_cnn_zoo

    write_published_small_cnn_zoo(tmp_path / "good")
    layout = (tmp_path / "good" / "layout.csv").read_bytes()
    metrics = gzip.decompress((tmp_path / "good" / "metrics.csv.gz").read_bytes())
    folder = tmp_path / "zoo"
    shutil.copytree(tmp_path / "good", folder)

    def make(rng):
        if rng.integers(0, 2):
            (folder / "layout.csv").write_bytes(_mutate(layout, rng))
            (folder / "metrics.csv.gz").write_bytes(gzip.compress(metrics))
        else:
            (folder / "layout.csv").write_bytes(layout)
            (folder / "metrics.csv.gz").write_bytes(gzip.compress(_mutate(metrics, rng)))
        return folder

    def load(p):
        for entry in load_zoo(p):
            entry.load_model()

    outcomes = _fuzz(400, make, load, np.random.default_rng(3))
    assert outcomes["error"] > 50 and outcomes["ok"] > 0, outcomes


@pytest.fixture(scope="module")
def model_zoo_template(tmp_path_factory):
    from test_public_zoos import write_published_model_zoo

    folder = tmp_path_factory.mktemp("mz-template") / "zoo"
    write_published_model_zoo(folder, trials=1)
    return folder


@settings(max_examples=240 * FUZZ_SCALE, deadline=5000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.sampled_from(["model::type", "model::nlin", "model::dropout", "model::channels_in",
                                               "model::o_dim", "model::init_type", "model::i_dim", "model::h_dim",
                                               "optim::lr", "seed"]), _VALUES, max_size=8),
       result=st.lists(st.one_of(st.dictionaries(st.sampled_from(["training_iteration", "epoch", "test_acc",
                                                                  "train_acc"]), _SCALARS, max_size=4), _VALUES),
                       max_size=3))
def test_fuzzed_model_zoos_json(model_zoo_template, tmp_path_factory, params, result):
    folder = tmp_path_factory.mktemp("mz") / "zoo"
    shutil.copytree(model_zoo_template, folder)
    trial = next(p for p in folder.iterdir() if p.is_dir())
    (trial / "params.json").write_text(json.dumps(params))
    (trial / "result.json").write_text("\n".join(json.dumps(r) for r in result))
    try:
        for entry in load_zoo(folder):
            entry.load_model()
    except PgenError:
        pass


@pytest.mark.parametrize("text", ["{", "[1, 2]", "[" * 100_000, '{"model_0": "x"}'])
def test_malformed_prediction_json_is_one_line_before_any_work(tmp_path, capsys, text):
    from pgen.cli import main

    (tmp_path / "p.predict").write_text(text)
    assert main(["pgdl", "score", str(tmp_path / "p.predict"), str(PGDL / "kit_toy" / "model_configs.json")]) == 2
    err = capsys.readouterr().err
    assert "p.predict" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_nan_inputs_given_as_tensors_are_refused_before_any_model_is_scored(tmp_path):
    import torch

    from pgen.errors import DatasetError
    from pgen.score import ScoreSettings, score_zoo
    from pgen.zoo import Zoo

    x, y = torch.rand(20, 64), torch.arange(20) % 10
    x[7, 3] = float("nan")
    zoo = Zoo.from_models({"a": torch.nn.Linear(64, 10)}, (x, y), test_data=(x.nan_to_num(), y), name="nan")
    with pytest.raises(DatasetError, match=r"nan's train data: sample 7 \(and 0 more\) holds a NaN"):
        score_zoo(zoo, tmp_path / "o", settings=ScoreSettings(n_samples=10), progress=False)
