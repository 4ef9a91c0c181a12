"""Fixtures shared by the test modules."""

from pathlib import Path

import pytest

from pgen.zoo.builder import build_zoo

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    """The 4-run tiny recipe, built once per test session. Tests that change it copy it first."""
    return build_zoo(FIXTURES / "tiny.toml", tmp_path_factory.mktemp("zoo") / "tiny", progress=False)
