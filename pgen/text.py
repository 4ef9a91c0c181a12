"""Text from someone else's files (zoo, model and measure names, error messages quoting
them) made safe to show: control characters escaped, so a name cannot move the terminal's
cursor (``\\r`` over pgen's own progress and summary lines), colour it (``\\x1b[...m``),
end a Markdown table row (``\\n``) or hide text (bidirectional overrides)."""

from __future__ import annotations

__all__ = ["printable", "EscapingWriter"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    code = ord(ch)
    return _NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                              else f"\\U{code:08x}")


def printable(text: object, *, keep: str = "") -> str:
    """``text`` with every non-printable character (controls, format characters such as
    bidirectional overrides; the space stays) written as its escape, except those in ``keep``.

    >>> printable("a\\rb\\x1b[31m")
    'a\\\\rb\\\\x1b[31m'
    """
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() or ch in keep else _escape(ch) for ch in s)


class EscapingWriter:
    """A text stream that writes what it is given with control characters escaped, line
    breaks kept: what a command prints to standard output (progress bars, which redraw with
    ``\\r``, go to standard error)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(printable(text, keep="\n"))
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)
