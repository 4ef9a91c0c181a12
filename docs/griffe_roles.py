"""A griffe extension: pgen's docstrings cross-reference in Sphinx's roles
(:func:`p_vector`, :class:`~pgen.zoo.Zoo`), which mkdocstrings would print as they are.
Each role becomes a link where its target has a page in the API reference (autorefs'
``[text][identifier]``), and inline code otherwise; ``~`` keeps only the last name, as
in Sphinx.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import griffe

@cache
def hooks():
    spec = importlib.util.spec_from_file_location("pgen_docs_hooks", Path(__file__).with_name("hooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def documented() -> frozenset[str]:
    """Identifiers with an entry in the API reference: each documented name and its public
    members (methods, properties)."""
    import inspect

    out = set()  # modules have pages, not autorefs anchors: a :mod: role stays code
    for module in hooks().API_MODULES:
        for _, obj, target in hooks().public_names(module):
            out.add(target)
            if inspect.isclass(obj):
                out.update(f"{target}.{m}" for m in vars(obj) if not m.startswith("_"))
    return frozenset(out)


def resolve(target: str, where: str) -> str | None:
    """The documented identifier ``target`` names, seen from the object ``where``."""
    known = documented()
    parts = where.split(".")
    candidates = [target] + [".".join(parts[:i] + [target]) for i in range(len(parts), 0, -1)]
    return next((c for c in candidates if c in known), None)


def convert(text: str, where: str) -> str:
    def replace(match):
        tilde, target = match.groups()
        target = target.lstrip(".")
        label = target.rsplit(".", 1)[-1] if tilde else target
        identifier = resolve(target, where)
        return f"[`{label}`][{identifier}]" if identifier else f"`{label}`"

    return hooks().ROLE.sub(replace, text)


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, node, obj, agent, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value, obj.path)
