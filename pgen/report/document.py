"""One document model, two renderings: Markdown and self-contained HTML.

Every report pgen writes (the zoo report, the benchmark, the study) is built as a
:class:`Document` of blocks and rendered by the same code, so the two files always say
the same thing. Text is untrusted (zoo names, model ids, error messages come from
files): the HTML escapes every string, the Markdown escapes the characters that would
become markup or raw HTML. Paragraphs may use `code` and **bold**, nothing else.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pgen.paths import output_path
from pgen.text import printable

__all__ = ["Document", "fmt"]

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;"
          "line-height:1.45}table{border-collapse:collapse;font-size:13px;margin:.5em 0}"
          "td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}th{background:#f3f3f3}"
          "img{max-width:48%;margin:4px;vertical-align:top}code{background:#f3f3f3;padding:0 3px}"
          ".answer{background:#f6f9ff;border-left:4px solid #4a7fd4;padding:.4em 1em}")


def fmt(v, digits: int = 4) -> str:
    """A cell as text: floats to ``digits`` significant digits, missing as ``n/a``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _md_text(s: str) -> str:
    # Untrusted text in Markdown: no raw HTML, no table breaks (a line break or a control
    # character is written as its escape).
    return printable(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _html_text(s) -> str:
    return html.escape(printable(s))


_UNTRUSTED = re.compile("\x02(.*?)\x03", re.S)


def _html_inline(s: str) -> str:
    """Trusted prose with `code` and **bold**; spans from :meth:`Document.text` escaped only."""
    out, pos = [], 0
    for m in _UNTRUSTED.finditer(s):
        out.append(_html_markup(s[pos:m.start()]))
        out.append(_html_text(m.group(1)))
        pos = m.end()
    out.append(_html_markup(s[pos:]))
    return "".join(out)


def _html_markup(s: str) -> str:
    s = html.escape(s)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


def _md_inline(s: str) -> str:
    """Trusted prose as is; spans from :meth:`Document.text` with markup characters escaped."""
    return _UNTRUSTED.sub(lambda m: _md_text(re.sub(r"([`*_\\])", r"\\\1", m.group(1))), s)


@dataclass
class Document:
    """A report as a list of blocks; :meth:`write` renders ``<stem>.md`` and ``<stem>.html``."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> Document:
        self.blocks.append(("heading", text, level))
        return self

    def paragraph(self, text: str, *, answer: bool = False) -> Document:
        """Trusted prose written by pgen (may use `code` and **bold**); untrusted parts must
        be passed through :meth:`text`."""
        self.blocks.append(("paragraph", text, answer))
        return self

    @staticmethod
    def text(s) -> str:
        """Mark untrusted text inside a paragraph or bullet: each rendering escapes it (no
        markup, no HTML) instead of interpreting it."""
        return "\x02" + str(s).replace("\x02", "").replace("\x03", "") + "\x03"

    def bullets(self, items: list[str]) -> Document:
        self.blocks.append(("bullets", list(items)))
        return self

    def table(self, df: pd.DataFrame, digits: int = 4) -> Document:
        self.blocks.append(("table", df, digits))
        return self

    def key_values(self, mapping: dict) -> Document:
        """A two-column table of settings-like pairs (nested values as compact text)."""
        rows = [{"key": k, "value": v if not isinstance(v, (dict, list)) else _compact(v)} for k, v in mapping.items()]
        return self.table(pd.DataFrame(rows, columns=["key", "value"]))

    def images(self, images: list[tuple[str, Path]]) -> Document:
        self.blocks.append(("images", list(images)))
        return self

    def to_markdown(self) -> str:
        out = [f"# {_md_text(self.title)}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out += ["#" * block[2] + " " + _md_text(block[1]), ""]
            elif kind == "paragraph":
                out += [("> " if block[2] else "") + _md_inline(block[1]), ""]
            elif kind == "bullets":
                out += [f"- {_md_inline(item)}" for item in block[1]] + [""]
            elif kind == "table":
                df, digits = block[1], block[2]
                if df.empty:
                    out += ["(none)", ""]
                    continue
                out.append("| " + " | ".join(_md_text(c) for c in df.columns) + " |")
                out.append("|" + "---|" * len(df.columns))
                out += ["| " + " | ".join(_md_text(fmt(v, digits)) for v in row) + " |"
                        for row in df.itertuples(index=False)]
                out.append("")
            elif kind == "images":
                out += [f"![{_md_text(alt)}]({path.name})" for alt, path in block[1]] + [""]
        return "\n".join(out)

    def to_html(self) -> str:
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_html_text(self.title)}</title>"
               f"<style>{_STYLE}</style></head><body>", f"<h1>{_html_text(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out.append(f"<h{block[2]}>{_html_text(block[1])}</h{block[2]}>")
            elif kind == "paragraph":
                cls = " class='answer'" if block[2] else ""
                out.append(f"<p{cls}>{_html_inline(block[1])}</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                df, digits = block[1], block[2]
                if df.empty:
                    out.append("<p>(none)</p>")
                    continue
                head = "".join(f"<th>{_html_text(c)}</th>" for c in df.columns)
                body = "".join("<tr>" + "".join(f"<td>{_html_text(fmt(v, digits))}</td>" for v in row) + "</tr>"
                               for row in df.itertuples(index=False))
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "images":
                out.append("<div>" + "".join(
                    f'<img alt="{_html_text(alt)}" title="{_html_text(alt)}" '
                    f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'
                    for alt, path in block[1]) + "</div>")
        out.append("</body></html>")
        return "\n".join(out)

    def write(self, folder: str | Path, stem: str) -> list[Path]:
        """Write ``<stem>.html`` (images inlined) and ``<stem>.md`` (images beside it)."""
        folder = Path(folder)
        html_path, md_path = output_path(folder, f"{stem}.html"), output_path(folder, f"{stem}.md")
        html_path.write_text(self.to_html())
        md_path.write_text(self.to_markdown())
        return [html_path, md_path]


def _compact(v) -> str:
    import json

    return json.dumps(v, default=str, separators=(", ", ": "))
