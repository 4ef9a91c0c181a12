"""Named, versioned benchmark suites: the zoos and settings a leaderboard is made on.

A suite is a TOML file (``model_zoos/suites/<name>.toml``, shipped in the package, or a
path): a ``name``, a ``version``, ``zoos`` (embedded zoo names, or folders relative to the
suite file) and ``[settings]`` (``samples``, ``seed``, ``bootstrap``, ``converged_only``).
``pgen benchmark --suite NAME`` runs it like any benchmark (values already in the output
folder's ``results.sqlite`` are reused, so adding one measure to a suite whose baselines
exist computes only that measure) and adds a leaderboard: ``leaderboard.csv``, one row per
zoo and measure (tau with the gap and with test accuracy, CIs, Holm's decisions, the CMI
with its null, seconds per model), and ``leaderboard.json`` with what makes two
leaderboards comparable: the suite's name and version, pgen's version, every zoo's content
identity and the settings hash.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from pgen.errors import InputError, UnknownNameError

__all__ = ["Suite", "load_suite", "embedded_suites", "run_suite", "leaderboard"]

SETTINGS = {"samples": 1000, "seed": 0, "bootstrap": 10_000, "converged_only": True}
COLUMNS = ["zoo", "measure", "sign", "models", "tau_gap", "tau_gap_ci_low", "tau_gap_ci_high", "tau_gap_holm",
           "tau_test_acc", "tau_test_acc_ci_low", "tau_test_acc_ci_high", "tau_test_acc_holm", "cmi_gap",
           "cmi_null_q95", "cmi_null_holm", "bootstrap_unit", "bootstrap_units", "median_seconds"]


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    zoos: tuple[str, ...]
    settings: dict = field(default_factory=dict)
    description: str = ""
    source: str = ""


def embedded_suites() -> dict[str, Path]:
    """The suites shipped with pgen (``model_zoos/suites``), by name."""
    folder = resources.files("pgen") / "suites"
    return {p.name[:-5]: p for p in folder.iterdir() if p.name.endswith(".toml")} if folder.is_dir() else {}


def load_suite(name_or_path: str | Path) -> Suite:
    """A suite by its embedded name or from a TOML file; the file's errors name it."""
    path = Path(name_or_path)
    suites = embedded_suites()
    if str(name_or_path) in suites:
        path, base = suites[str(name_or_path)], None
    elif path.suffix == ".toml" and path.is_file():
        base = path.resolve().parent
    else:
        raise UnknownNameError(f"no suite {str(name_or_path)!r}: not a .toml file, and the embedded suites are "
                               f"{sorted(suites)}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"suite {path}: not a TOML file: {exc}") from None
    unknown = sorted(set(raw) - {"name", "version", "zoos", "settings", "description"})
    if unknown:
        raise InputError(f"suite {path}: unknown field(s) {', '.join(unknown)}")
    name, version, zoos = raw.get("name"), raw.get("version"), raw.get("zoos")
    if not isinstance(name, str) or not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"suite {path}: needs a string 'name' and a whole-number 'version'")
    if not isinstance(zoos, list) or not zoos or not all(isinstance(z, str) for z in zoos):
        raise InputError(f"suite {path}: 'zoos' must be a non-empty list of zoo names or folders")
    settings = dict(raw.get("settings", {}))
    bad = sorted(set(settings) - set(SETTINGS))
    if bad:
        raise InputError(f"suite {path}: unknown setting(s) {', '.join(bad)}; known: {', '.join(SETTINGS)}")
    # a folder is relative to the suite file; a name is an embedded zoo
    resolved = tuple(str(base / z) if base is not None and (base / z).is_dir() else z for z in zoos)
    return Suite(name, version, resolved, {**SETTINGS, **settings}, raw.get("description", ""), str(path))


def run_suite(suite: Suite, out: str | Path, *, measures: list[str] | None = None, **kwargs) -> dict:
    """:func:`pgen.benchmark.run_benchmark` on the suite's zoos with its settings, then its
    leaderboard (``leaderboard.csv``, ``leaderboard.json``). ``kwargs`` go to the benchmark
    (workers, executor, progress, ...); the suite's settings are not overridable."""
    from pgen.benchmark import run_benchmark
    from pgen.score import ScoreSettings

    s = suite.settings
    settings = ScoreSettings(n_samples=s["samples"], seed=s["seed"])
    result = run_benchmark(list(suite.zoos), out, measures=measures, settings=settings, n_boot=s["bootstrap"],
                           converged_only=s["converged_only"], **kwargs)
    result["files"] += write_leaderboard(result, suite, settings, Path(out))
    return result


def leaderboard(summaries: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per zoo and measure, the leaderboard's columns, best tau against the gap first."""
    rows = []
    for zoo, s in summaries.items():
        s = s[s["models"] > 0]
        rows.append(s.reindex(columns=COLUMNS[1:]).assign(zoo=zoo))
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)
    return table[COLUMNS].sort_values(["zoo", "tau_gap"], ascending=[True, False], na_position="last")


def write_leaderboard(result: dict, suite: Suite, settings, out: Path) -> list[Path]:
    from pgen import __version__
    from pgen.paths import output_path
    from pgen.store import settings_hash

    table = leaderboard(result["summaries"])
    csv = output_path(out, "leaderboard.csv")
    table.to_csv(csv, index=False)
    zoos = {name: run.zoo.get("identity") for name, run in result.get("runs", {}).items()}
    record = {"suite": suite.name, "suite_version": suite.version, "pgen": __version__,
              "settings": suite.settings, "settings_hash": settings_hash({**settings.identity(), **suite.settings}),
              "zoos": zoos, "measures": sorted(set(table["measure"])), "created": dt.datetime.now().isoformat(
                  timespec="seconds")}
    meta = output_path(out, "leaderboard.json")
    meta.write_text(json.dumps(record, indent=1))
    return [csv, meta]
