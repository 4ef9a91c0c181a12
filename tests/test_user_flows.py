"""The documented user flows as a user types them: in a fresh working directory, with relative
paths (and `..` ones from a sibling folder), every command one after the other."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

import pgen
from pgen.cli import main
from pgen.models import build_model

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(FIXTURES / "tiny.toml", work / "tiny.toml")
    monkeypatch.chdir(work)
    return work


def run(*argv):
    code = main(list(argv))
    assert code == 0, f"pgen {' '.join(argv)} exited {code}"


def test_build_score_report_benchmark_with_relative_paths(workdir, monkeypatch, capsys):
    run("zoo", "build", "tiny.toml", "--out", "z")
    run("zoo", "info", "z", "--csv", "z-models.csv")
    assert len(pd.read_csv("z-models.csv")) == 12
    run("score", "z", "--out", "r", "--samples", "100")
    assert Path("r/report.md").is_file() and Path("r/results.sqlite").is_file()
    run("report", "r", "--out", "r2")
    assert Path("r2/report.html").is_file()
    run("benchmark", "z", "--out", "b", "--measures", "pvector_angle,sum_squared_weights", "--samples", "100",
        "--bootstrap", "200")
    assert Path("b/summary_tiny.csv").is_file()
    assert len(pgen.load_zoo("z")) == 12
    # the same zoo and results from a sibling folder, through ..
    other = workdir.parent / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    run("score", "../work/z", "--out", "../work/r", "--samples", "100", "--no-report")
    run("report", "../work/r", "--out", "rep")
    assert Path("rep/report.md").is_file()
    out = capsys.readouterr().out
    assert "computed 0 model(s) in this call" in out  # the store was found: nothing scored twice


def test_pgdl_predict_and_score_with_relative_paths(workdir):
    shutil.copytree(FIXTURES / "pgdl" / "kit_toy", "kit")
    run("pgdl", "predict", "kit", "--measure", "sum_squared_weights", "--out", "pred")
    assert Path("pred/kit.predict").is_file()
    run("pgdl", "score", "pred/kit.predict", "kit/model_configs.json")


def test_own_checkpoints_import_and_score_as_the_readme_says(workdir):
    Path("runs").mkdir()
    rows = []
    for i in range(3):
        torch.manual_seed(i)
        net = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, width=4, depth=1)
        torch.save({"state_dict": net.state_dict()}, f"runs/r{i}.pt")
        rows.append({"checkpoint": f"r{i}.pt", "test_acc": 0.1 * (i + 1), "hp.lr": [0.1, 0.01, 0.1][i]})
    pd.DataFrame(rows).to_csv("metrics.csv", index=False)
    run("zoo", "import", "runs/r0.pt", "runs/r1.pt", "runs/r2.pt", "--arch", "cnn", "--model-kwargs",
        json.dumps({"width": 4, "depth": 1}), "--dataset", "digits", "--metrics", "metrics.csv", "--out", "my-zoo")
    run("score", "my-zoo", "--out", "my-report", "--samples", "100")
    table = pd.read_csv("my-report/models.csv")
    assert sorted(table["model_id"]) == ["r0", "r1", "r2"] and table["pvector_angle"].between(0, 90).all()
