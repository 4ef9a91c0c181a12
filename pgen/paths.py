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
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pgen.errors import InputError

__all__ = ["safe_filename", "output_path", "replace_link", "plain_file", "link_or_copy", "staged"]

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


def plain_file(path: str | Path, *, what: str, directory: bool = False, error: type = InputError) -> Path:
    """``path`` resolved, checked to be a regular file (a folder with ``directory=True``)
    before anything reads it: a FIFO (which would block a read forever), a device such as
    ``/dev/zero`` (which never ends) or a socket is refused with ``error`` naming the file."""

    full = Path(path)
    resolved = Path(os.path.realpath(full))
    try:
        mode = os.stat(resolved).st_mode
    except FileNotFoundError:
        raise error(f"{what}: {full} is missing") from None
    except OSError as exc:
        raise error(f"{what}: cannot read {full}: {exc.strerror or exc}") from None
    wanted, ok = ("a folder", stat.S_ISDIR(mode)) if directory else ("a regular file", stat.S_ISREG(mode))
    if not ok:
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "a file")
        raise error(f"{what}: {full} is {kind}, not {wanted}; refused")
    return resolved


def link_or_copy(source: str | Path, target: str | Path) -> Path:
    """Place ``source`` (a regular file, or a folder of them) at ``target``: hard links where
    the file system allows (no space used; a later in-place change of the original shows
    through), copies otherwise. Symlinks inside a folder are refused, not followed."""
    import shutil

    source, target = Path(source), Path(target)
    if source.is_dir():
        for sub in sorted(source.rglob("*")):
            if sub.is_symlink():
                raise InputError(f"{sub} is a symlink; pgen copies only plain files into a zoo")
            if sub.is_file():
                link_or_copy(plain_file(sub, what="data file"), target / sub.relative_to(source))
        return target
    plain_file(source, what="file to place in the zoo")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)
    return target


_STAGING = ".pgen-partial-"


@contextmanager
def staged(folder: str | Path) -> Iterator[Path]:
    """Write a set of files as one: yields a hidden staging folder inside ``folder``; when
    the block ends normally every file in it is moved into ``folder`` (each move atomic),
    and when it raises (an error, Ctrl-C, a full disk) the staging folder is removed, so
    ``folder`` never holds half of a new report next to the old one. A staging folder left
    by a killed process is removed by the next call."""
    import shutil
    import tempfile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(folder)
    stage = Path(tempfile.mkdtemp(prefix=f"{_STAGING}{os.getpid()}-", dir=folder))
    try:
        yield stage
        for path in sorted(p for p in stage.rglob("*") if p.is_file()):
            target = folder / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, replace_link(target))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _remove_stale_staging(folder: Path) -> None:
    import shutil

    for stage in folder.glob(f"{_STAGING}*"):
        try:
            pid = int(stage.name[len(_STAGING):].split("-", 1)[0])
            os.kill(pid, 0)  # still running: another report in progress
        except (ValueError, ProcessLookupError):
            shutil.rmtree(stage, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass

