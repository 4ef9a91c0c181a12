"""`make demo` as written: it scores the committed digits zoo (model_zoos/digits), whose
checksums hold, and reproduces the committed reports/example/ from the repository root with
relative paths, as a user types it."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pgen.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_digits_zoo_matches_its_checksums():
    zoo = ROOT / "model_zoos" / "digits"
    lines = (zoo / "SHA256SUMS").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, name = line.split(maxsplit=1)
        listed[name.removeprefix("./")] = digest
    present = {str(p.relative_to(zoo)) for p in zoo.rglob("*") if p.is_file() and p.name != "SHA256SUMS"}
    assert set(listed) == present and len(present) == 98  # zoo.json, manifest.jsonl, 32 x 3 checkpoint files
    for name, digest in listed.items():
        assert hashlib.sha256((zoo / name).read_bytes()).hexdigest() == digest, name


def test_the_demo_reproduces_the_committed_example(tmp_path, monkeypatch):
    makefile = (ROOT / "Makefile").read_text()
    command = next(line.strip() for line in makefile.splitlines() if "pgen score model_zoos/digits" in line)
    args = command.split("pgen ", 1)[1].split()  # score model_zoos/digits --out reports/digits --color-by arch
    assert args[:2] == ["score", "model_zoos/digits"]
    out = tmp_path / "digits"
    args[args.index("--out") + 1] = str(out)
    monkeypatch.chdir(ROOT)  # relative to the repository, as `make demo` runs it
    assert main(args) == 0
    mine = pd.read_csv(out / "models.csv").set_index("model_id").sort_index()
    committed = pd.read_csv(ROOT / "reports" / "example" / "models.csv").set_index("model_id").sort_index()
    assert list(mine.index) == list(committed.index)
    for col in ("train_acc", "test_acc", "pseudo_test_acc", "gap", "zoo.test_acc"):
        np.testing.assert_array_equal(mine[col].to_numpy(), committed[col].to_numpy(), err_msg=col)
    np.testing.assert_allclose(mine["pvector_angle"], committed["pvector_angle"], atol=1e-4)  # degrees
    corr = pd.read_csv(out / "correlations.csv")
    ref = pd.read_csv(ROOT / "reports" / "example" / "correlations.csv")
    pd.testing.assert_frame_equal(corr[["target", "method", "value", "ci_low", "ci_high"]],
                                  ref[["target", "method", "value", "ci_low", "ci_high"]], atol=1e-9)
