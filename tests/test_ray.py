"""The Ray executor on a local multi-node cluster (``ray.cluster_utils.Cluster``).

One cluster serves the module (start-up costs seconds): a head node without CPUs and two
worker nodes of one CPU and one logical GPU each, so that fractional GPU scheduling is
tested on a CPU machine. Tests that end worker processes (Ctrl-C and the time budget kill
them; the GPU probe's many small tasks make Ray stop idle ones) come late, so that the others
find warm workers (a worker's start, importing torch, costs seconds); the node removal is last.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import threading
import time

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from pgen.cli import main  # noqa: E402
from pgen.errors import InputError  # noqa: E402
from pgen.executors import RayExecutor, make_executor  # noqa: E402
from pgen.score import ScoreSettings, score_zoo  # noqa: E402

from conftest import FIXTURES  # noqa: E402

COLUMNS = ["train_acc", "test_acc", "pseudo_test_acc", "sum_squared_weights", "inverse_margin", "pvector_angle",
           "distance_from_init"]
SETTINGS = ScoreSettings(n_samples=200, measures=("sum_squared_weights", "inverse_margin", "pvector_angle",
                                                  "distance_from_init"))


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    ray.init(address=c.address, logging_level="WARNING")
    c.wait_for_nodes()
    # the probe functions below live in this test module, which Ray's workers cannot import
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield c, nodes
    ray.shutdown()
    c.shutdown()


def _ray(**options):
    """Scoring tasks here take a whole node (one CPU), so each node keeps one warm worker
    process between tests: Ray stops idle workers beyond a node's CPU count, and does not
    reuse a GPU task's worker for a CPU task (fractional GPUs: the probe test below)."""
    return RayExecutor(**options)


def _table(run):
    return run.table.set_index("model_id").sort_index()


def test_ray_scores_value_for_value_as_the_local_executor(cluster, tiny_zoo, tmp_path):
    local = _table(score_zoo(tiny_zoo, tmp_path / "local", settings=SETTINGS, workers=2, progress=False))
    ex = _ray()
    run = score_zoo(tiny_zoo, tmp_path / "ray", settings=SETTINGS, progress=False, executor=ex)
    assert run.computed == 12 and run.errors.empty
    # both run torch on one thread per model: the same numbers, bit for bit
    pd.testing.assert_frame_equal(_table(run)[COLUMNS], local[COLUMNS], check_exact=True)
    env = run.info["environments"][-1]  # the run says where it was computed
    assert env["executor"] == "ray" and env["cpus_per_model"] == 1 and env["nodes"] == 3
    again = score_zoo(tiny_zoo, tmp_path / "ray", settings=SETTINGS, progress=False, executor=ex)
    assert again.computed == 0  # a rerun computes nothing twice


def test_a_model_that_fails_is_recorded_with_its_error(cluster, tiny_zoo, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    (zoo / "checkpoints" / "tiny-0001.safetensors").write_bytes(b"not a checkpoint")
    run = score_zoo(zoo, tmp_path / "out", settings=SETTINGS, progress=False, executor=_ray())
    assert list(run.errors["model_id"]) == ["tiny-0001"] and "tiny-0001" in run.errors["error"].iloc[0]
    assert len(run.table) == 11 and run.table[COLUMNS].notna().all().all()  # the others finished


def test_cli_score_on_ray(cluster, tiny_zoo, tmp_path, capsys):
    assert main(["score", str(tiny_zoo), "--out", str(tmp_path), "--executor", "ray", "--measures",
                 "sum_squared_weights", "--samples", "100", "--no-report", "--cpus-per-model", "1"]) == 0
    assert "computed 12 model(s)" in capsys.readouterr().out


def test_cli_pgdl_predict_and_benchmark_on_ray(cluster, tiny_zoo, tmp_path, capsys):
    task = FIXTURES / "pgdl" / "kit_toy"
    assert main(["pgdl", "predict", str(task), "--measure", "num_params", "--out", str(tmp_path / "p"),
                 "--executor", "ray", "--time-budget", "60"]) == 0
    assert "18 of 18 models scored" in capsys.readouterr().out
    assert main(["benchmark", str(tiny_zoo), "--measures", "sum_squared_weights", "--samples", "100",
                 "--bootstrap", "20", "--out", str(tmp_path / "b"), "--executor", "ray"]) == 0
    assert (tmp_path / "b" / "benchmark.md").is_file()


def test_a_sampled_zoo_built_on_ray_equals_the_local_build(cluster, tmp_path):
    """pgen zoo build --executor ray: the same checkpoints, byte for byte, as local processes
    (the stacks are fixed by the recipe and every task trains on one thread)."""
    import hashlib

    from test_sampled_zoo import TINY

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY.replace("runs = 6", "runs = 4"))
    assert main(["zoo", "build", str(recipe), "--out", str(tmp_path / "ray"), "--executor", "ray"]) in (0, None)
    assert main(["zoo", "build", str(recipe), "--out", str(tmp_path / "local")]) in (0, None)

    def digests(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / "checkpoints").iterdir()}

    assert len(digests(tmp_path / "ray")) == 16
    assert digests(tmp_path / "ray") == digests(tmp_path / "local")


def test_pgdl_predict_on_ray_equals_the_local_run(cluster, tmp_path):
    from pgen.pgdl import predict_task

    task = FIXTURES / "pgdl" / "kit_toy"
    local = predict_task(task, "sum_squared_weights", tmp_path / "local", progress=False).set_index("model_id")
    on_ray = predict_task(task, "sum_squared_weights", tmp_path / "ray", progress=False,
                          executor=_ray()).set_index("model_id")
    assert on_ray["error"].isna().all() and len(on_ray) == 18
    pd.testing.assert_series_equal(on_ray.loc[local.index, "value"], local["value"], rtol=1e-12)


# ----------------------------------------------------------------- the executor alone

def _probe_init(log=None):
    """Notes in ``log`` (a file) which worker process prepared itself."""
    import os

    if log is not None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")


def _probe(i, seconds, fail=False, die=False):
    import os

    start = time.time()
    if fail:
        raise ValueError(f"job {i} fails on purpose")
    if die:  # as an out-of-memory kill or a crash in native code would
        os._exit(1)
    time.sleep(seconds)
    return {"i": i, "gpus": ray.get_gpu_ids(), "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "start": start, "end": time.time()}


def test_a_job_that_raises_is_recorded_and_the_others_finish(cluster):
    results, failures = [], []
    RayExecutor().run([(i, 0.0, i == 2) for i in range(5)], initializer=_probe_init, initargs=(), work=_probe,
                      record=results.append, failed=lambda job, msg: failures.append((job, msg)))
    assert sorted(r["i"] for r in results) == [0, 1, 3, 4]
    assert failures == [((2, 0.0, True), "ValueError: job 2 fails on purpose")]


def test_a_request_no_node_can_meet_is_refused_at_once(cluster):
    with pytest.raises(InputError, match="no node of the Ray cluster can run a task needing 1 CPUs and 2 GPUs"):
        RayExecutor(gpus_per_model=2).run([(0, 0)], initializer=_probe_init, initargs=(), work=_probe,
                                          record=print, failed=print)


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does when Ray is missing
    with pytest.raises(InputError, match=r"pip install 'pgen-pvector\[ray\]'"):
        make_executor("ray")


def test_cuda_on_ray_is_checked_for_the_cluster_not_this_machine(capsys):
    from pgen.devices import check_device

    check_device("cuda", here=False)  # the driver may have no GPU; the cluster's nodes do
    with pytest.raises(InputError, match="unknown device"):
        check_device("nonsense", here=False)
    assert make_executor("ray", device="cuda").gpus_per_model == 1.0
    assert make_executor("ray", device="cuda", gpus_per_model=0.25).gpus_per_model == 0.25
    assert main(["score", "digits", "--executor", "ray", "--device", "cuda", "--gpus-per-model", "0"]) == 2
    assert "needs --gpus-per-model above 0" in capsys.readouterr().err


def test_cli_refuses_options_of_the_other_executor(capsys):
    assert main(["score", "digits", "--address", "auto"]) == 2
    assert "apply to --executor ray only" in capsys.readouterr().err
    assert main(["score", "digits", "--executor", "ray", "--workers", "2"]) == 2
    assert "--workers applies to the local executor" in capsys.readouterr().err


def test_ctrl_c_leaves_the_store_consistent_and_the_rerun_finishes(cluster, tiny_zoo, tmp_path, monkeypatch):
    from pgen.store import ResultsStore

    real, calls = ResultsStore.put_measure, []

    def interrupted(self, *args, **kwargs):  # Ctrl-C arrives while the driver records the 3rd model
        calls.append(args)
        if len(calls) == 3 * 4:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ResultsStore, "put_measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        score_zoo(tiny_zoo, tmp_path / "out", settings=SETTINGS, progress=False, executor=_ray())
    monkeypatch.undo()
    names = SETTINGS.measures
    with sqlite3.connect(tmp_path / "out" / "results.sqlite") as db:
        rows = db.execute(f"select model_id, measure from results where measure in ({','.join('?' * len(names))})",
                          names).fetchall()
    assert len(rows) == len(calls) - 1  # every value recorded before the interrupt is kept
    complete = sum(1 for m in {r[0] for r in rows} if sum(r[0] == m for r in rows) == len(names))
    again = score_zoo(tiny_zoo, tmp_path / "out", settings=SETTINGS, progress=False, executor=_ray())
    assert again.errors.empty and again.table["pvector_angle"].notna().all() and len(again.table) == 12
    assert again.computed == 12 - complete  # the rerun computes only what is missing


def test_pgdl_time_budget_on_ray_counts_from_the_start_of_each_task(cluster, tmp_path):
    from pgen.pgdl import predict_task

    task = tmp_path / "toy"
    (task / "dataset_1").mkdir(parents=True)
    shutil.copytree(FIXTURES / "pgdl" / "kit_toy" / "dataset_1" / "train", task / "dataset_1" / "train")
    for m in ("model_0", "model_16"):
        shutil.copytree(FIXTURES / "pgdl" / "kit_toy" / m, task / m)
    slow = predict_task(task, "kit_sharpness", tmp_path / "b", time_budget=0.01, progress=False,
                        executor=_ray())
    assert list(slow["error"]) == ["timed out after the 0.01 s budget"] * 2
    # a worker's preparation (reading the task and its data, seconds) is not charged to the model
    fast = predict_task(task, "num_params", tmp_path / "a", time_budget=1.0, progress=False, executor=_ray())
    assert fast["error"].isna().all() and len(fast) == 2


def test_a_job_whose_worker_keeps_dying_is_recorded_after_its_retries(cluster):
    results, failures = [], []
    RayExecutor(max_retries=1).run([(i, 0.0, False, i == 1) for i in range(3)], initializer=_probe_init,
                                   initargs=(), work=_probe, record=results.append,
                                   failed=lambda job, msg: failures.append((job, msg)))
    assert sorted(r["i"] for r in results) == [0, 2]
    assert len(failures) == 1 and failures[0][0][0] == 1
    assert "its Ray worker or node died 2 time(s)" in failures[0][1]


def test_fractional_gpus_share_a_gpu_within_its_capacity(cluster, tmp_path):
    results, failures = [], []
    RayExecutor(cpus_per_model=0.25, gpus_per_model=0.5).run(
        [(i, 0.4) for i in range(8)], initializer=_probe_init, initargs=(tmp_path / "prepared",), work=_probe,
        record=results.append, failed=lambda job, msg: failures.append((job, msg)))
    assert not failures and sorted(r["i"] for r in results) == list(range(8))
    assert all(len(r["gpus"]) == 1 for r in results)  # each task was given a GPU
    for node in {r["node"] for r in results}:  # at most 1 / 0.5 = 2 tasks at once on a node's one GPU
        spans = [(r["start"], r["end"]) for r in results if r["node"] == node]
        assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) <= 2
    # each worker process prepared itself once, however many tasks it ran
    prepared = (tmp_path / "prepared").read_text().split()
    assert sorted(prepared) == sorted({str(r["pid"]) for r in results})
    assert len(prepared) < len(results)  # fewer preparations than tasks: workers were reused


def test_a_node_removed_mid_run_loses_nothing(cluster, tiny_zoo, tmp_path):
    """Runs last: it removes one of the module's two worker nodes."""
    from ray._private.state import available_resources_per_node

    c, nodes = cluster
    victim = nodes[1]
    removed = []

    def remove_when_busy():  # when the victim runs a task and the store holds a model
        deadline = time.time() + 120
        while time.time() < deadline:
            busy = available_resources_per_node().get(victim.node_id, {}).get("CPU", 0) < 1  # a busy CPU is left out
            try:
                with sqlite3.connect(tmp_path / "out" / "results.sqlite", timeout=1) as db:
                    stored = db.execute("select count(*) from results where measure = 'sharpness'").fetchone()[0]
            except sqlite3.Error:
                stored = 0
            if busy and stored:
                c.remove_node(victim, allow_graceful=False)
                removed.append(stored)
                return
            time.sleep(0.02)

    s = ScoreSettings(n_samples=1000, measures=("sharpness",))  # ~0.5 s per model: a run that lasts
    remover = threading.Thread(target=remove_when_busy)
    remover.start()
    run = score_zoo(tiny_zoo, tmp_path / "out", settings=s, progress=False, executor=_ray(max_retries=3))
    remover.join()
    assert removed and removed[0] < 12, "the node was not removed while the run was going"
    assert run.errors.empty and len(run.table) == 12 and run.table["sharpness"].notna().all()
    again = score_zoo(tiny_zoo, tmp_path / "out", settings=s, progress=False, executor=_ray())
    assert again.computed == 0
