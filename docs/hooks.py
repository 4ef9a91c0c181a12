"""MkDocs hooks: the parts of the site that are generated, not typed.

* the API reference: one page per module of ``API_MODULES``, one entry per name of its
  ``__all__`` (rendered by mkdocstrings from the docstrings), added to the navigation;
* tables written into hand-written pages where they hold a marker ``<!-- pgen:NAME ARGS -->``:
  the measure registry (``measures``), and the committed findings (``demo``,
  ``benchmark DIR ZOO``, ``across-zoos DIR ZOO...``, ``csv PATH [COLUMNS]``,
  ``paper-claims``), so that no figure
  on the site is retyped from a report;
* the committed report figures the pages show (``reports/**/*.png``), copied into the site.

An unknown marker, a missing summary file or a module without ``__all__`` fails the build.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import shlex
from pathlib import Path

import pandas as pd
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent

# The public API, in the order the reference lists it: the package, its subpackages, and the
# modules the user guide sends readers to. A name documented on an earlier page is linked
# from later ones, not documented twice.
API_MODULES = [
    "pgen", "pgen.pvector", "pgen.features", "pgen.data", "pgen.zoo", "pgen.score", "pgen.measures",
    "pgen.stats", "pgen.report", "pgen.benchmark", "pgen.learned", "pgen.paper", "pgen.pgdl",
    "pgen.executors", "pgen.errors",
]
MARKER = re.compile(r"<!--\s*pgen:([a-z-]+)([^>]*?)-->")
# Sphinx's cross-reference roles in docstrings (:func:`x`, :class:`~a.b.C`): links in the API
# pages (griffe_roles.py), inline code where a summary is quoted into a page here
ROLE = re.compile(r":(?:func|class|meth|data|mod|attr|exc|obj):`(~?)([^`]+)`")


def module_summary(mod) -> str:
    """The first paragraph of a module's docstring, its roles as inline code."""
    text = (inspect.getdoc(mod) or "").split("\n\n")[0].replace("\n", " ")
    return ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)


def api_page(path: str) -> str:
    return f"api/{path}.md"


def public_names(module: str) -> list[tuple[str, object, str]]:
    """``(name, object, where mkdocstrings documents it)`` for each name of ``module.__all__``:
    a class or function of pgen's where it is defined, anything else under ``module``."""
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    if names is None:
        raise ValueError(f"{module} has no __all__: the API reference lists only declared public names")
    out = []
    for name in names:
        if name.startswith("__"):
            continue
        obj = getattr(mod, name)
        defined = (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", "").startswith("pgen")
        out.append((name, obj, f"{obj.__module__}.{obj.__qualname__}" if defined else f"{module}.{name}"))
    return out


def api_pages() -> dict[str, str]:
    """{page path: markdown} for the API reference."""
    pages, seen = {}, {}
    for module in API_MODULES:
        lines = [f"# `{module}`", "", module_summary(importlib.import_module(module)), ""]
        for name, _, target in public_names(module):
            if target in seen:
                lines += [f"## `{name}`", "", f"Documented as [`{target}`][{target}] on the "
                          f"[`{seen[target]}`]({Path(api_page(seen[target])).name}) page.", ""]
                continue
            seen[target] = module
            lines += [f"::: {target}", "    options:", "      show_root_full_path: false",
                      "      show_root_toc_entry: true", ""]
        pages[api_page(module)] = "\n".join(lines)
    return pages


def fmt(x, digits=2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:+.{digits}f}" if isinstance(x, float) else str(x)


def interval(row, col, digits=2) -> str:
    return f"{fmt(row[col], digits)} [{fmt(row[col + '_ci_low'], digits)}, {fmt(row[col + '_ci_high'], digits)}]"


def measures_table(_args) -> str:
    """The registry, with the median seconds per model from the committed benchmark."""
    from pgen.measures import REGISTRY

    seconds = {}
    for csv in sorted((ROOT / "reports/benchmark-example").glob("models_*.csv")):
        table = pd.read_csv(csv)
        zoo = csv.stem.removeprefix("models_")
        for col in table.columns:
            if col.startswith("seconds."):
                seconds.setdefault(col.removeprefix("seconds."), {})[zoo] = table[col].median()
    zoos = sorted({z for v in seconds.values() for z in v})
    head = ("| measure | family | sign | fidelity | reference | " + " | ".join(f"s/model {z}" for z in zoos)
            + " |\n|" + "---|" * (5 + len(zoos)))
    rows = []
    for name in sorted(REGISTRY):
        m = REGISTRY[name]
        if m.identity:  # a learned predictor registered in this process, not a built-in measure
            continue
        ref = m.reference.replace("|", "/").replace("\n", " ")
        cost = " | ".join(f"{seconds.get(name, {}).get(z, float('nan')):.3g}" if z in seconds.get(name, {}) else "-"
                          for z in zoos)
        rows.append(f"| `{name}` | {m.family} | {m.sign:+d} | {m.fidelity} | {ref} | {cost} |")
    return head + "\n" + "\n".join(rows)


def demo_table(_args) -> str:
    """The demo's angle against each target (reports/example/correlations.csv)."""
    table = pd.read_csv(ROOT / "reports/example/correlations.csv")
    table = table[table["measure"] == "pvector_angle"]
    names = {"test_acc": "test accuracy", "pseudo_test_acc": "pseudo-test accuracy", "gap": "generalization gap"}
    out = ["| target | Spearman | Kendall tau-b | 95% bootstrap CI (Kendall) | bootstrap unit |", "|---|---|---|---|---|"]
    for target, label in names.items():
        rows = table[table["target"] == target].set_index("method")
        k = rows.loc["kendall"]
        out.append(f"| {label} | {rows.loc['spearman', 'value']:.2f} | {k['value']:.2f} | "
                   f"[{k['ci_low']:.2f}, {k['ci_high']:.2f}] | {k['unit']} ({int(k['units'])}) |")
    return "\n".join(out) + "\n\n*From `reports/example/correlations.csv`.*"


def benchmark_table(args) -> str:
    """One zoo of a committed benchmark: tau with the gap and test accuracy, CIs and Holm verdicts."""
    folder, zoo = args
    path = ROOT / folder / f"summary_{zoo}.csv"
    table = pd.read_csv(path).sort_values("tau_gap", ascending=False)
    unit = f"{table['bootstrap_unit'].iloc[0]} ({int(table['bootstrap_units'].iloc[0])})"
    out = [f"*{int(table['models'].max())} models; bootstrap unit: {unit}; random rankings give tau 0 "
           f"+- {table['tau_null_sd'].iloc[0]:.3f} (1 sd). From `{folder}/summary_{zoo}.csv`.*", "",
           "| measure | family | tau with the gap [95% CI] | after Holm | tau with test acc [95% CI] | after Holm |",
           "|---|---|---|---|---|---|"]
    for _, row in table.iterrows():
        out.append(f"| `{row['measure']}` | {row['family']} | {interval(row, 'tau_gap')} | {row['tau_gap_holm']} | "
                   f"{interval(row, 'tau_test_acc')} | {row['tau_test_acc_holm']} |")
    return "\n".join(out)


def across_zoos_table(args) -> str:
    """tau with the gap of every measure on every zoo of a committed benchmark folder; marks
    from the Holm-corrected decision (intended, opposite)."""
    folder, zoos = args[0], args[1:]
    tables = {z: pd.read_csv(ROOT / folder / f"summary_{z}.csv").set_index("measure") for z in zoos}
    measures = sorted(set().union(*(t.index for t in tables.values())),
                      key=lambda m: -pd.Series([t.loc[m, "tau_gap"] for t in tables.values() if m in t.index]).mean())
    mark = {"intended": " ✓", "opposite": " ✗"}
    out = [f"*From `{folder}/summary_<zoo>.csv`.*", "",
           "| measure | " + " | ".join(f"{z} ({int(tables[z]['models'].max())})" for z in zoos) + " |",
           "|---|" + "---|" * len(zoos)]
    for m in measures:
        cells = []
        for z in zoos:
            t = tables[z]
            cells.append(interval(t.loc[m], "tau_gap") + mark.get(t.loc[m, "tau_gap_holm"], "")
                         if m in t.index and not math.isnan(t.loc[m, "tau_gap"]) else "n/a")
        out.append(f"| `{m}` | " + " | ".join(cells) + " |")
    return "\n".join(out)


def csv_table(args) -> str:
    """A committed CSV as it is (numbers to 3 decimals); optional column list after the path."""
    path, cols = args[0], args[1:]
    table = pd.read_csv(ROOT / path)
    cols = cols or list(table.columns)
    out = [f"*From `{path}`.*", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        out.append("| " + " | ".join(fmt(row[c], 3) if isinstance(row[c], float) else str(row[c]).replace("|", "/")
                                     for c in cols) + " |")
    return "\n".join(out)


def paper_claims_table(_args) -> str:
    table = pd.read_csv(ROOT / "reports/paper/claims.csv")
    out = ["*From `reports/paper/claims.csv`.*", "",
           "| claim | the paper | centered: measured | verdict | uncentered: measured | verdict |",
           "|---|---|---|---|---|---|"]
    for _, row in table.iterrows():
        cells = [row["claim"], row["paper"], row["centered_measured"], row["centered_verdict"],
                 row["uncentered_measured"], row["uncentered_verdict"]]
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(out)


def api_index(_args) -> str:
    rows = ["| module | what it holds | public names |", "|---|---|---|"]
    for module in API_MODULES:
        summary = module_summary(importlib.import_module(module))
        rows.append(f"| [`{module}`]({api_page(module)}) | {summary} | {len(public_names(module))} |")
    return "\n".join(rows)


GENERATORS = {
    "api-index": api_index,
    "measures": measures_table,
    "demo": demo_table,
    "benchmark": benchmark_table,
    "across-zoos": across_zoos_table,
    "csv": csv_table,
    "paper-claims": paper_claims_table,
}


def expand_markers(markdown: str, where: str) -> str:
    def replace(match):
        name, args = match.group(1), shlex.split(match.group(2))
        if name not in GENERATORS:
            raise ValueError(f"{where}: unknown marker pgen:{name} (known: {', '.join(GENERATORS)})")
        return GENERATORS[name](args)

    return MARKER.sub(replace, markdown)


# --- MkDocs events -------------------------------------------------------------------------------

def on_config(config):
    config["nav"].append({"API reference": [{"Overview": "api.md"}] + [{m: api_page(m)} for m in API_MODULES]})
    return config


def on_files(files, config):
    for path, text in api_pages().items():
        files.append(File.generated(config, path, content=text))
    for png in sorted((ROOT / "reports").glob("**/*.png")):
        rel = png.relative_to(ROOT).as_posix()
        files.append(File.generated(config, rel, abs_src_path=str(png)))
    return files


def on_page_markdown(markdown, page, config, files):
    return expand_markers(markdown, page.file.src_uri)

