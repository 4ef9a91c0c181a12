"""Results store: SQLite, one row per model x measure x settings, written as each model finishes.

Every row keeps the full settings that produced it (JSON) and their hash, so a rerun with
the same settings skips what is done and a rerun with other settings adds new rows. A
model that failed is recorded with its error. SQLite commits each model's rows in one
transaction: a crash or Ctrl-C loses at most the model in progress.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from pathlib import Path

import pandas as pd

from pgen.errors import ResultsError

__all__ = ["ResultsStore", "settings_hash"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    zoo TEXT NOT NULL,
    model_id TEXT NOT NULL,
    measure TEXT NOT NULL,
    settings_hash TEXT NOT NULL,
    value REAL,
    error TEXT,
    seconds REAL,
    settings TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (zoo, model_id, measure, settings_hash)
);
CREATE TABLE IF NOT EXISTS runs (
    settings_hash TEXT PRIMARY KEY,
    zoo TEXT NOT NULL,
    settings TEXT NOT NULL,
    info TEXT
);
"""


_OWN_TABLES = {"results": {"zoo", "model_id", "measure", "settings_hash", "value", "error", "seconds", "settings",
                            "created"},
               "runs": {"settings_hash", "zoo", "settings", "info"}}


def _foreign_tables(conn: sqlite3.Connection) -> list[str]:
    """Tables that are not pgen's (or pgen's names with other columns): a database of
    someone else's that pgen must not add its tables to."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    out = []
    for name in names:
        if name.startswith("sqlite_"):
            continue
        columns = {r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')}
        if _OWN_TABLES.get(name) != columns:
            out.append(name)
    return out


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK)


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ResultsStore:
    """A results database (``results.sqlite``) in an output folder."""

    def __init__(self, path: str | Path, *, read_only: bool = False):
        """Open (or, unless ``read_only``, create) the store. ``read_only`` opens it without
        writing anything, so a store in a folder one may not write to can still be reported."""
        self.path = Path(path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"), Path(f"{self.path}-journal")):
            if p.is_symlink():  # sqlite would write through it, outside the output folder
                raise ResultsError(f"{p} is a symlink; pgen does not write through links: move it aside")
        if self.path.exists() and not self.path.is_file():
            raise ResultsError(f"{self.path} is not a regular file: move it aside")
        if not read_only and not _writable(self.path):
            raise ResultsError(f"{self.path} (or its folder) is read-only: pgen writes its results there as it "
                               "goes; make it writable, or choose another --out (reading it, `pgen report`, works)")
        try:
            self._conn = self._connect(read_only)
            foreign = _foreign_tables(self._conn)
            if foreign:
                raise ResultsError(f"{self.path} is an SQLite database of something else (it holds "
                                   f"{', '.join(sorted(foreign)[:5])}); pgen keeps its results in a store of its own: "
                                   "choose another --out")
            if not read_only:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ResultsError(f"{self.path} cannot be used as a results store ({exc}); move it aside and "
                               "run again to start a new one (pgen never deletes results)") from None

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        if not read_only:
            return sqlite3.connect(self.path, timeout=60)
        uri = self.path.resolve().as_uri()
        try:  # a WAL store reads read-only when its -shm file can be made; in a read-only folder, as immutable
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=60)

    @contextlib.contextmanager
    def _writing(self):
        """One transaction; a failed write (disk full, I/O error, a lock held past the
        timeout) is a one-line :class:`ResultsError`. Every earlier transaction is kept."""
        try:
            with self._conn:
                yield self._conn
        except sqlite3.DatabaseError as exc:
            raise ResultsError(f"cannot write to {self.path} ({exc}); every result stored before this is kept: "
                               "free space (or wait for the other process), then run again to go on") from None

    def register_run(self, zoo: str, settings: dict, info: dict | None = None, measures: tuple[str, ...] = ()) -> str:
        """Record a run (its settings and ``info``); ``measures`` are added to those the run
        already had, so scoring the same zoo again with another measure extends the run."""
        h = settings_hash(settings)
        old = self.run_info(h)
        known = list(old.get("measures", [])) if old else []
        info = {**(info or {}), "measures": known + [m for m in measures if m not in known]}
        if old and old.get("environments"):
            info["environments"] = old["environments"]
        with self._writing():
            self._conn.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?)",
                               (h, zoo, json.dumps(settings, sort_keys=True, default=str),
                                json.dumps(info, default=str)))
        return h

    def add_environment(self, run_id: str, environment: dict) -> None:
        """Keep ``environment`` (versions, threads, device) with the run unless it is there
        already: the run then lists every distinct environment that computed its values."""
        zoo, settings, info = self.run(run_id)
        environments = list(info.get("environments", []))
        if environment not in environments:
            info["environments"] = environments + [environment]
            with self._writing():
                self._conn.execute("UPDATE runs SET info=? WHERE settings_hash=?",
                                   (json.dumps(info, default=str), run_id))

    def run(self, run_id: str) -> tuple[str, dict, dict]:
        """``(zoo name, settings, info)`` of a registered run."""
        row = self._conn.execute("SELECT zoo, settings, info FROM runs WHERE settings_hash=?", (run_id,)).fetchone()
        if row is None:
            raise ResultsError(f"{self.path} holds no run {run_id!r}")
        return row[0], json.loads(row[1]), json.loads(row[2] or "{}")

    def run_info(self, run_id: str) -> dict | None:
        row = self._conn.execute("SELECT info FROM runs WHERE settings_hash=?", (run_id,)).fetchone()
        return None if row is None else json.loads(row[0] or "{}")

    def done(self, zoo: str, settings: dict) -> set[str]:
        """Model ids with a complete result (no error) under these settings."""
        h = settings_hash(settings)
        rows = self._conn.execute(
            "SELECT model_id FROM results WHERE zoo=? AND settings_hash=? AND measure='_complete'", (zoo, h))
        return {r[0] for r in rows}

    def put_model(self, zoo: str, model_id: str, settings: dict, values: dict[str, float],
                  seconds: dict[str, float] | None = None, error: str | None = None) -> None:
        """Write one model's results in one transaction (with a completion marker)."""
        h = settings_hash(settings)
        js = json.dumps(settings, sort_keys=True, default=str)
        now = time.time()
        seconds = seconds or {}
        with self._writing():
            for measure, value in values.items():
                self._conn.execute("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?)",
                                   (zoo, model_id, measure, h, None if value is None else float(value), None,
                                    seconds.get(measure), js, now))
            if error is None:
                self._conn.execute("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?)",
                                   (zoo, model_id, "_complete", h, 1.0, None, sum(seconds.values()), js, now))
                self._conn.execute("DELETE FROM results WHERE zoo=? AND model_id=? AND settings_hash=? AND measure='_error'",
                                   (zoo, model_id, h))
            else:
                self._conn.execute("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?)",
                                   (zoo, model_id, "_error", h, None, error, None, js, now))

    def put_measure(self, zoo: str, model_id: str, settings: dict, measure: str, value: float | None,
                    seconds: float | None, error: str | None = None, extra: dict[str, float | None] | None = None) -> None:
        """One registered measure's value (or its error) for one model, with its extra values
        (rows ``<measure>.<key>``), in one transaction."""
        h, js, now = settings_hash(settings), json.dumps(settings, sort_keys=True, default=str), time.time()
        with self._writing():
            self._conn.execute("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?)",
                               (zoo, model_id, measure, h, None if value is None else float(value),
                                error, seconds, js, now))
            for key, v in (extra or {}).items():
                self._conn.execute("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?)",
                                   (zoo, model_id, f"{measure}.{key}", h, v, None, None, js, now))

    def measure_done(self, zoo: str, settings: dict, measure: str) -> set[str]:
        """Model ids with a stored value (no error) of ``measure`` under these settings."""
        rows = self._conn.execute("SELECT model_id FROM results WHERE zoo=? AND settings_hash=? AND measure=? "
                                  "AND error IS NULL", (zoo, settings_hash(settings), measure))
        return {r[0] for r in rows}

    def measure_frame(self, zoo: str, settings_by_measure: dict[str, dict]) -> pd.DataFrame:
        """``model_id``, one column per measure, its extra values ``<measure>.<key>`` and
        ``seconds.<measure>``, for the given settings (stored values only, no errors)."""
        frames = []
        for measure, settings in settings_by_measure.items():
            h = settings_hash(settings)
            df = pd.read_sql_query("SELECT model_id, value, seconds FROM results WHERE zoo=? AND settings_hash=? "
                                   "AND measure=? AND error IS NULL", self._conn, params=(zoo, h, measure))
            if df.empty:
                continue
            frames.append(df.rename(columns={"value": measure, "seconds": f"seconds.{measure}"}).set_index("model_id"))
            extra = pd.read_sql_query("SELECT model_id, measure, value FROM results WHERE zoo=? AND settings_hash=? "
                                      "AND measure LIKE ? ESCAPE '\\'", self._conn,
                                      params=(zoo, h, measure.replace("_", "\\_") + ".%"))
            if not extra.empty:
                wide = extra.pivot_table(index="model_id", columns="measure", values="value", aggfunc="first",
                                         dropna=False)
                frames.append(wide.reindex(frames[-1].index))
        if not frames:
            return pd.DataFrame(columns=["model_id"])
        return pd.concat(frames, axis=1).rename_axis("model_id").reset_index()

    def measure_errors(self, zoo: str, settings_by_measure: dict[str, dict]) -> pd.DataFrame:
        """Failures of the given measures under their settings: model_id, measure, error."""
        frames = [pd.read_sql_query("SELECT model_id, measure, error FROM results WHERE zoo=? AND settings_hash=? "
                                    "AND measure=? AND error IS NOT NULL", self._conn,
                                    params=(zoo, settings_hash(s), m)) for m, s in settings_by_measure.items()]
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model_id", "measure", "error"])

    def long_frame(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM results", self._conn)

    def errors(self, zoo: str | None = None) -> pd.DataFrame:
        q = "SELECT zoo, model_id, error, settings_hash FROM results WHERE measure='_error'"
        df = pd.read_sql_query(q, self._conn)
        return df if zoo is None else df[df.zoo == zoo]

    def wide_frame(self, zoo: str, settings: dict) -> pd.DataFrame:
        """One row per model, one column per value stored under ``settings`` (complete models only)."""
        df = pd.read_sql_query("SELECT * FROM results WHERE zoo=? AND settings_hash=?", self._conn,
                               params=(zoo, settings_hash(settings)))
        complete = set(df.loc[df.measure == "_complete", "model_id"])
        df = df[df.model_id.isin(complete) & ~df.measure.str.startswith("_")]
        if df.empty:
            return pd.DataFrame(columns=["model_id"])
        wide = df.pivot_table(index="model_id", columns="measure", values="value", aggfunc="first")
        return wide.reset_index()

    def runs(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM runs", self._conn)

    def close(self):
        self._conn.close()
