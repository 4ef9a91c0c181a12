"""Where pgen writes: every output path is built here from names pgen made safe.

Zoo names, model ids, recipe names, run ids and measure names often come from someone
else's file. Before one becomes part of a path it goes through :func:`safe_filename`
(one plain component: no separator, no ``..``, no leading dot); :func:`output_path` joins
it to the output folder, checks that the result stays inside, and prepares the file for
writing: a symlink found there is removed (replaced, never written through) and any other
non-regular file (a folder, a FIFO, a device) is refused.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from pgen.errors import InputError

__all__ = ["safe_filename", "output_path", "replace_link"]

_ALLOWED = set("-_.+=@")
_MAX_LEN = 120


def safe_filename(text: object, *, fallback: str = "unnamed") -> str:
    """``text`` as one safe file-name component.

    Characters other than letters, digits and ``-_.+=@`` become ``_``; leading dots are
    dropped (no ``..``, no hidden files). When anything had to change, a short hash of the
    original is appended, so two different names never share a file (``a/b`` and ``a_b``).

    >>> safe_filename("digits")
    'digits'
    >>> safe_filename("../../ESCAPED")
    'ESCAPED-667db170'
    """
    original = str(text)
    cleaned = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in _ALLOWED else "_" for ch in original)
    cleaned = cleaned.lstrip("._").rstrip("_") or fallback
    if cleaned != original or len(cleaned) > _MAX_LEN:
        digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        cleaned = f"{cleaned[:_MAX_LEN]}-{digest}"
    return cleaned


def replace_link(path: str | Path) -> Path:
    """Make ``path`` safe to (over)write: a symlink there is removed, so the write creates a
    new file instead of following it; a folder, FIFO, device or socket there is refused."""
    path = Path(path)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return path
    if stat.S_ISLNK(st.st_mode):
        path.unlink()
    elif not stat.S_ISREG(st.st_mode):
        raise InputError(f"cannot write {path}: it exists and is not a regular file; move it aside")
    return path


def output_path(folder: str | Path, *names: object, directory: bool = False) -> Path:
    """``folder / safe_filename(name) / ...``, inside ``folder`` and ready to be written.

    With ``directory=True`` the last component is a folder, created if missing (a symlink in
    its place is refused rather than followed); otherwise it is a file prepared by
    :func:`replace_link`. Every intermediate component is created as a real folder.
    """
    base = Path(folder)
    base.mkdir(parents=True, exist_ok=True)
    root = base.resolve()
    path = base
    parts = [safe_filename(n) for n in names]
    for i, part in enumerate(parts):
        path = path / part
        last = i == len(parts) - 1
        if last and not directory:
            break
        if path.is_symlink():
            raise InputError(f"cannot write into {path}: it is a symlink; pgen does not write through links")
        path.mkdir(exist_ok=True)
    if not (path.parent.resolve() / path.name).is_relative_to(root):  # belt and braces: names are single parts
        raise InputError(f"refusing to write {path}: it resolves outside {base}")
    return path if directory else replace_link(path)

