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
        return Path(path)
    env = os.environ.get("PGEN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pgen"
