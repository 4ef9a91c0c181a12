"""The documentation as a reader meets it: every code block in the README and in docs/ runs,
every command in the command tables parses, the site builds with warnings as errors, every
link in it resolves, and it renders in a real browser without console errors.

A fenced block runs as typed, in a fresh working directory per page (the blocks of one page
share it and one Python namespace, as a reader following the page would). An HTML comment
right before a block may adapt it to tiny data or say where it is covered instead:

    <!-- docs-test: setup NAME; replace "OLD" => "NEW"; file NAME.py; covered-by tests/x.py::test_y -->

``setup`` prepares the folder (SETUPS below), ``replace`` swaps text where the real command
takes long (a tiny zoo for ``digits``), ``file`` writes the block to a file instead of
running it, ``covered-by`` names the test that runs it (``make test`` cannot run itself; a
Ray cluster is started by tests/test_ray.py). ``text`` blocks are displays, not code.
"""

from __future__ import annotations

import functools
import glob
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
RUNNABLE = {"python", "bash"}
DISPLAY = {"text"}
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
DIRECTIVE = re.compile(r"<!--\s*docs-test:(.*?)-->")


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    code: str
    directives: list[tuple[str, str]] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse_directives(text: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(";"):
        part = part.strip()
        if part:
            key, _, value = part.partition(" ")
            out.append((key, value.strip()))
    return out


def code_blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i
        body = []
        i += 1
        while i < len(lines) and not re.match(rf"^{indent}```\s*$", lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        directives = []
        j = start - 1
        while j >= 0 and DIRECTIVE.search(lines[j]):
            directives = parse_directives(DIRECTIVE.search(lines[j]).group(1)) + directives
            j -= 1
        blocks.append(Block(path, start + 1, lang, "\n".join(body) + "\n", directives))
        i += 1
    return blocks


def shell_commands(code: str) -> list[list[str]]:
    joined = re.sub(r"\\\n\s*", " ", code)
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


# --- what a page's folder needs before its blocks run -----------------------------------------------

@pytest.fixture(scope="session")
def docs_zoo(tmp_path_factory):
    from pgen.zoo.builder import build_zoo

    return build_zoo(FIXTURES / "docs_zoo.toml", tmp_path_factory.mktemp("docs") / "docs-zoo", progress=False)


def setup_docs_zoo(folder: Path, docs_zoo: Path):
    shutil.copytree(docs_zoo, folder / "docs-zoo")


def setup_own_checkpoints(folder: Path, docs_zoo: Path):
    """Two ResNet-18 state dicts and their metrics, as the own-models page's reader has them."""
    import pandas as pd
    import torch

    from pgen.models import build_model

    (folder / "runs").mkdir()
    for i, name in enumerate(["a", "b"]):
        torch.manual_seed(i)
        net = build_model("torchvision:resnet18", input_shape=(1, 8, 8), num_classes=10, in_channels=1,
                          small_input=True)
        torch.save(net.state_dict(), folder / "runs" / f"{name}.pt")
    pd.DataFrame({"checkpoint": ["a.pt", "b.pt"], "test_acc": [0.5, 0.6]}).to_csv(folder / "metrics.csv", index=False)


def setup_own_factory(folder: Path, docs_zoo: Path):
    """my_nets.make and one checkpoint of it, for --arch my_nets:make --trust-code."""
    import pandas as pd
    import torch

    (folder / "my_nets.py").write_text(
        "import torch\n\n"
        "def make(width, num_classes=10):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, width), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(width, num_classes))\n")
    sys.path.insert(0, str(folder))
    try:
        import my_nets  # noqa: F401  (the reader's module, on PYTHONPATH)

        torch.save(sys.modules["my_nets"].make(5).state_dict(), folder / "own.pt")
    finally:
        sys.modules.pop("my_nets", None)
        sys.path.remove(str(folder))
    pd.DataFrame({"checkpoint": ["own.pt"], "test_acc": [0.5]}).to_csv(folder / "metrics.csv", index=False)


def setup_tiny_suite(folder: Path, docs_zoo: Path):
    shutil.copytree(docs_zoo, folder / "zoos" / "docs-zoo")
    (folder / "tiny-suite.toml").write_text('name = "tiny"\nversion = 1\nzoos = ["zoos/docs-zoo"]\n'
                                            '[settings]\nsamples = 100\nbootstrap = 500\n')


SETUPS = {"docs-zoo": setup_docs_zoo, "own-checkpoints": setup_own_checkpoints, "own-factory": setup_own_factory,
          "tiny-suite": setup_tiny_suite}


def run_block(block: Block, namespace: dict, folder: Path, docs_zoo_path):
    code = block.code
    for key, value in block.directives:
        if key == "setup":
            SETUPS[value](folder, docs_zoo_path())
        elif key == "replace":
            old, _, new = value.partition("=>")
            old, new = json.loads(old.strip()), json.loads(new.strip())
            assert old in code, f"{block.where}: replace {old!r}: not in the block"
            code = code.replace(old, new)
        elif key == "file":
            (folder / value).write_text(code)
            return
        elif key == "covered-by":
            test_file, _, test_name = value.split()[0].partition("::")
            assert (ROOT / test_file).is_file(), f"{block.where}: covered-by {test_file}: no such file"
            assert not test_name or f"def {test_name}(" in (ROOT / test_file).read_text(), \
                f"{block.where}: covered-by: no test {test_name} in {test_file}"
            return
        else:
            raise AssertionError(f"{block.where}: unknown docs-test directive {key!r}")
    if block.lang == "python":
        exec(compile(code, block.where, "exec"), namespace)
        return
    from pgen.cli import main

    for argv in shell_commands(code):
        argv = [hit for arg in argv for hit in (sorted(glob.glob(arg)) if "*" in arg else [arg])]
        if argv[0] == "pgen":
            assert main(argv[1:]) == 0, f"{block.where}: `{shlex.join(argv)}` failed"
        elif argv[0] == "python":
            subprocess.run([sys.executable, *argv[1:]], check=True, timeout=600)
        else:
            raise AssertionError(f"{block.where}: `{argv[0]}` is not run by the docs test; name the test "
                                 "that covers it with covered-by")


@functools.cache
def docs_hooks():
    """docs/hooks.py, the site's generators (API_MODULES, public_names, the tables)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pgen_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAGES = [p for p in DOC_FILES if any(b.lang not in DISPLAY for b in code_blocks(p))]


def test_every_block_says_what_it_is():
    """A block is code that runs (python, bash) or a display (text): never unlabelled."""
    bad = [b.where for p in DOC_FILES for b in code_blocks(p) if b.lang not in RUNNABLE | DISPLAY]
    assert not bad, f"blocks without a runnable language or `text`: {bad}"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_code_blocks_run_as_typed(page, tmp_path, monkeypatch, request):
    from pgen.measures import PLUGINS, REGISTRY, list_measures

    list_measures()  # every built-in registered first, so that only what a page adds is removed after
    registry, plugins = dict(REGISTRY), dict(PLUGINS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # a reader's own modules (my_nets.py) beside them
    namespace = {"__name__": "__docs__"}
    modules = set(sys.modules)
    try:
        for block in code_blocks(page):
            if block.lang in RUNNABLE:
                run_block(block, namespace, tmp_path, lambda: request.getfixturevalue("docs_zoo"))
    finally:
        REGISTRY.clear()
        REGISTRY.update(registry)  # a page that registers a measure leaves the registry as it was
        PLUGINS.clear()
        PLUGINS.update(plugins)
        for name in set(sys.modules) - modules:  # the reader's own modules (my_nets) leave with the page
            if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(tmp_path)):
                del sys.modules[name]


# --- the command tables and the README -------------------------------------------------------------

def table_commands(path: Path) -> list[str]:
    return re.findall(r"^\| `(pgen [^`]+)` \|", path.read_text(), flags=re.M)


def test_every_command_in_the_tables_parses():
    """The options a table shows exist: each row goes through pgen's own argument parser."""
    from pgen.cli import build_parser

    parser = build_parser()
    rows = table_commands(ROOT / "README.md") + table_commands(ROOT / "docs/guide/score-and-report.md")
    assert len(rows) >= 25
    for row in rows:
        try:
            parser.parse_args(shlex.split(row)[1:])
        except SystemExit:
            pytest.fail(f"the documented command `{row}` does not parse")


def test_the_readme_fits_on_a_screen_and_says_nothing_the_site_does_not():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    site_commands = set(table_commands(ROOT / "docs/guide/score-and-report.md"))
    assert set(table_commands(ROOT / "README.md")) <= site_commands
    demo = docs_hooks().demo_table(None).split("\n\n")[0]
    assert demo in readme, "the README's demo table must equal the one generated from reports/example"
    intro = readme[readme.index("**Predict"):readme.index("## Documentation")]
    assert intro in (ROOT / "docs/index.md").read_text()


# --- the site as a reader sees it ------------------------------------------------------------------

@pytest.fixture(scope="session")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ,
                                                                          "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-4000:]}"
    return out


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key) and tag in ("a", "img", "link", "script"):
                self.links.append(attrs[key])


def test_every_internal_link_of_the_site_resolves(site):
    assert (site / "api/pgen.stats/index.html").is_file() and (site / "statistics/index.html").is_file()
    parsed = {}
    for html in site.glob("**/*.html"):
        p = Links()
        p.feed(html.read_text())
        parsed[html] = p
    broken = []
    for html, p in parsed.items():
        for link in p.links:
            url = urlparse(link)
            if url.scheme or link.startswith("//") or link.startswith("mailto:"):
                continue
            path, frag = urldefrag(link)
            base = site if path.startswith("/") else html.parent  # 404.html links from the root
            target = (base / unquote(path).lstrip("/")).resolve() if path else html
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{html.relative_to(site)} -> {link}")
            elif frag and target.suffix == ".html" and target in parsed and unquote(frag) not in parsed[target].ids:
                broken.append(f"{html.relative_to(site)} -> {link} (no such anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken[:30])


def test_the_api_reference_lists_every_public_name(site):
    hooks = docs_hooks()
    for module in hooks.API_MODULES:
        html = (site / "api" / module / "index.html").read_text()
        for name, _, _ in hooks.public_names(module):
            assert re.search(rf'id="[^"]*\b{re.escape(name)}"', html, flags=re.I), f"{module}.{name} missing from its API page"


def test_no_sphinx_role_is_left_in_the_site(site):
    """The docstrings' :func:`x` roles become links or code (docs/griffe_roles.py), never text."""
    left = [f"{html.relative_to(site)}: {m.group(0)}" for html in site.glob("**/*.html")
            for m in re.finditer(r":(?:func|class|meth|data|mod|attr|exc|obj):(?:<code>|`)", html.read_text())]
    assert not left, "\n".join(left[:20])
    stats = (site / "api" / "pgen.stats" / "index.html").read_text()
    assert 'href="#pgen.stats.resampling.resampling_unit"' in stats  # a role resolved to its entry


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def served_site(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_site_renders_in_headless_chromium(served_site):
    """The index and one API page in a real browser: their text is there and no console error
    or failed request happens (the site must read offline: no fonts or scripts from elsewhere)."""
    if CHROMIUM is None:
        if os.environ.get("PGEN_REQUIRE_BROWSER"):
            pytest.fail("PGEN_REQUIRE_BROWSER is set but no chromium is installed (make test installs it)")
        pytest.skip("no chromium (Debian's package `chromium`; make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            errors = []
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            for path, expected in [("/", ["Predict which models of a zoo generalize", "Where to go"]),
                                   ("/api/pgen.stats/", ["measure_statistics", "kendall_null_sd", "Parameters"])]:
                page.goto(served_site + path, wait_until="networkidle")
                text = page.inner_text("body")
                for phrase in expected:
                    assert phrase in text, f"{path}: {phrase!r} not on the rendered page"
            assert not errors, "\n".join(errors)
        finally:
            browser.close()


# --- the docstring convention (numpydoc), checked by numpydoc's own validator -----------------------

# The main entry points: every parameter, the return value and a short example documented;
# the examples run here (those marked +SKIP score whole zoos and run on the user guide's pages).
ENTRY_POINTS = ["pgen.load_zoo", "pgen.score_models", "pgen.p_vector", "pgen.p_vector_spectrum", "pgen.angle",
                "pgen.model_p_vectors", "pgen.data_p_vector", "pgen.score.score_zoo", "pgen.stats.measure_statistics",
                "pgen.report.write_report", "pgen.benchmark.run_benchmark", "pgen.learned.cross_validate",
                "pgen.learned.fit", "pgen.measures.compute_measure"]
# For every public class and function: a docstring with a one-line summary, numpydoc's section
# names in its order, every parameter documented (private ``_keywords`` aside), none that does
# not exist, in the signature's order, well formed, and a Returns section where it returns.
STRUCTURE = {"GL08", "SS01", "GL06", "GL07", "PR01", "PR02", "PR03", "PR06", "PR10", "RT01", "RT02"}
ENTRY = STRUCTURE | {"EX01"}


def resolve(dotted: str):
    import importlib

    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def public_callables():
    import inspect

    hooks = docs_hooks()
    seen = {}
    for module in hooks.API_MODULES:
        for _, obj, target in hooks.public_names(module):
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__.startswith("pgen"):
                seen.setdefault(target, obj)
    return seen


def numpydoc_errors(obj, codes) -> list[str]:
    from numpydoc.validate import validate

    result = validate(f"{obj.__module__}.{obj.__qualname__}")
    out = []
    for code, message in result["errors"]:
        names = re.findall(r"'([^']+)'", message) if code == "PR01" else []
        if code in codes and not (names and all(n.startswith("_") for n in names)):  # private keywords stay private
            out.append(f"{obj.__module__}.{obj.__qualname__}: {code} {message}")
    return out


def test_public_docstrings_follow_numpydoc_with_parameters_and_returns():
    callables = public_callables()
    assert len(callables) >= 100
    errors = [e for obj in callables.values() for e in numpydoc_errors(obj, STRUCTURE)]
    assert not errors, "\n".join(errors)


def test_main_entry_points_document_parameters_returns_and_an_example():
    errors = [e for name in ENTRY_POINTS for e in numpydoc_errors(resolve(name), ENTRY)]
    assert not errors, "\n".join(errors)
    for name in ENTRY_POINTS:
        assert "Raises\n" in resolve(name).__doc__ or name in ("pgen.data_p_vector", "pgen.report.write_report"), \
            f"{name}: no Raises section"


def test_the_entry_points_examples_run(tmp_path, monkeypatch):
    import doctest

    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    ran = 0
    for name in ENTRY_POINTS:
        obj = resolve(name)
        globs = dict(vars(sys.modules[obj.__module__]))
        for test in doctest.DocTestFinder(recurse=False).find(obj, name, globs=globs):
            ran += sum(1 for ex in test.examples if not ex.options.get(doctest.SKIP))
            runner.run(test)
    assert runner.failures == 0, f"{runner.failures} docstring example(s) failed (output above)"
    assert ran >= 20


# --- examples/ -------------------------------------------------------------------------------------

def test_score_own_models_example_runs(tmp_path):
    """examples/score_own_models.py as the own-models page says to run it (about 45 s)."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "score_own_models.py"), str(tmp_path / "work")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "0 failure(s)" in done.stdout


def test_every_example_script_runs_in_the_suite():
    """Each script in examples/ is run by a test (this file or the one named in its docstring)."""
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for script in sorted((ROOT / "examples").glob("**/*.py")):
        assert script.name in tests, f"examples/{script.relative_to(ROOT / 'examples')} is run by no test"
