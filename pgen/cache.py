"""Where pgen keeps what it builds or downloads: one function owns it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(path: str | Path | None = None) -> Path:
    """pgen's cache folder: ``path`` when given, else ``$PGEN_CACHE``, else ``~/.cache/pgen``.

    Built zoos go to ``cache_dir()/zoos/<name>``, datasets to ``cache_dir()/data``.

    >>> cache_dir("/tmp/x")
    PosixPath('/tmp/x')
    """
    if path is not None:
        return _folder(Path(path), "the cache folder")
    env = os.environ.get("PGEN_CACHE")
    return _folder(Path(env), "PGEN_CACHE") if env else Path.home() / ".cache" / "pgen"


def _folder(path: Path, what: str) -> Path:
    """``path`` if it is a folder or does not exist yet (pgen makes it); something else there
    (a file, a FIFO) is an InputError that names it, not a raw errno later."""
    from pgen.errors import InputError

    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is not a folder; point it at a folder (or a path that does not exist yet)")
    return path
