"""The documentation runs: every ```python block of every page under docs/, and every API
reference directive names something that imports.

Each page's blocks run in order in one fresh namespace (what a reader typing them into one
session would get), in a temporary working directory, with matplotlib on its Agg backend,
``$LPM_GRAPH_DATA`` inside that directory (so dataset caches land there) and outbound
network connections refused. A failure names the page, the block's number and its first line.

Two markers, an HTML comment on the line before a block's opening fence, change what happens:

* ``<!-- skip: reason -->``: the block is not run; it is reported as a skipped test with its
  reason (e.g. ``needs CUDA``). A reason is required.
* ``<!-- script: name.py -->``: the block is a whole script: it is written to ``name.py`` in
  the working directory and run as ``python name.py`` in a fresh process (for code that must
  be importable by the processes it starts, such as a ``launch`` party function). It does
  not share the page's namespace.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>skip|script)\s*:\s*(?P<value>.*?)\s*-->\s*$")
DIRECTIVE = re.compile(r"^:::[ \t]+(?P<target>\S+)[ \t]*$")
SCRIPT_TIMEOUT = 300


@dataclass(frozen=True)
class Block:
    """One fenced ```python block of a page."""

    page: Path
    number: int  # 1-based, counting the page's python blocks only
    line: int  # line of the first code line, 1-based
    code: str
    skip: str | None = None  # the reason of a skip marker
    script: str | None = None  # the file name of a script marker

    @property
    def label(self) -> str:
        first = next((s for s in self.code.splitlines() if s.strip()), "")
        where = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{where}, block {self.number} (line {self.line}: {first!r})"


def python_blocks(page: Path) -> list[Block]:
    """The ```python blocks of a page, in order, with their markers."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    k = 0
    while k < len(lines):
        opening = FENCE.match(lines[k])
        if opening is None:
            k += 1
            continue
        fence, indent = opening["fence"], opening["indent"]
        language = opening["info"].strip().split(" ")[0].lower()
        end = k + 1
        while end < len(lines) and not re.match(
            rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[end]
        ):
            end += 1
        if end == len(lines):
            raise ValueError(f"{page}: the code fence opened on line {k + 1} is never closed.")
        if language in ("python", "py"):
            marker = _marker(lines, k, page)
            body = [line[len(indent) :] if line.startswith(indent) else line
                    for line in lines[k + 1 : end]]  # fmt: skip
            blocks.append(
                Block(
                    page,
                    len(blocks) + 1,
                    k + 2,
                    "\n".join(body) + "\n",
                    skip=marker[1] if marker and marker[0] == "skip" else None,
                    script=marker[1] if marker and marker[0] == "script" else None,
                )
            )
        k = end + 1
    return blocks


def _marker(lines: list[str], fence_line: int, page: Path) -> tuple[str, str] | None:
    """The marker comment on the line before a fence (blank lines between are not allowed:
    a marker belongs to the block right under it)."""
    if fence_line == 0:
        return None
    found = MARKER.match(lines[fence_line - 1])
    if found is None:
        return None
    kind, value = found["kind"], found["value"]
    if not value:
        raise ValueError(f"{page}:{fence_line}: a {kind} marker needs a value.")
    if kind == "script" and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\.py", value):
        raise ValueError(f"{page}:{fence_line}: script marker {value!r} is not a module file name.")
    return kind, value


def _page_id(page: Path) -> str:
    return str(page.relative_to(DOCS))


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A temporary working directory, dataset caches inside it, Agg plots, no network."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as in a session started there: modules a
    # page writes (script blocks) import by name, in the page and in the processes it starts
    monkeypatch.setenv("LPM_GRAPH_DATA", str(tmp_path / "lpm_graph_data"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        pass

    connect = socket.socket.connect

    def local_only(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"the docs must not reach the network (tried {address!r})")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    # One intra-op thread: the examples are small, and on a busy machine two OpenMP threads
    # waiting for each other cost ~15 ms per sparse product (30x the product itself).
    dtype, seed_state, threads = (
        torch.get_default_dtype(),
        torch.random.get_rng_state(),
        torch.get_num_threads(),
    )
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield tmp_path
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.random.set_rng_state(seed_state)
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def _run_script(block: Block, workdir: Path) -> None:
    path = workdir / block.script
    path.write_text(block.code, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(workdir)]),
        "OMP_NUM_THREADS": "1",  # as in the sandbox, for the script and the processes it starts
    }
    done = subprocess.run(
        [sys.executable, str(path)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
    )
    if done.returncode != 0:
        pytest.fail(
            f"{block.label}: `python {block.script}` exited with {done.returncode}\n"
            f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}",
            pytrace=False,
        )


CODE_PAGES = [page for page in PAGES if python_blocks(page)]


README = ROOT / "README.md"


def test_the_readme_example_runs(sandbox):
    """The front page's example runs as written (its ```python blocks, in order)."""
    assert python_blocks(README), "README.md has no python example"
    run_page(README, sandbox)


def test_the_readme_links_resolve():
    """Every relative link of the front page names a file or folder of the repository, and
    none points outside it."""
    targets = re.findall(r"\]\((?P<target>[^)\s#]+)(?:#[^)]*)?\)", README.read_text("utf-8"))
    local = [t for t in targets if "://" not in t]
    assert local, "README.md links to nothing in the repository"
    for target in local:
        path = (ROOT / target).resolve()
        assert path.is_relative_to(ROOT), f"README.md links outside the repository: {target}"
        assert path.exists(), f"README.md links to a missing {target}"


def test_the_pages_have_code():
    names = {_page_id(page) for page in CODE_PAGES}
    assert {"getting-started.md", "tutorials/calibrate.md", "tutorials/pyg.md"} <= names


def run_page(page: Path, workdir: Path) -> None:
    """Run a page's blocks in order in one fresh namespace; fail naming the page and block."""
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for block in python_blocks(page):
        if block.skip is not None:
            continue
        if block.script is not None:
            _run_script(block, workdir)
            continue
        try:
            code = compile(block.code, f"<{block.page.name} block {block.number}>", "exec")
            exec(code, namespace)
        except Exception:
            pytest.fail(f"{block.label} raised:\n{traceback.format_exc()}", pytrace=False)


@pytest.mark.parametrize("page", CODE_PAGES, ids=_page_id)
def test_page_runs(page, sandbox):
    if all(b.skip is not None for b in python_blocks(page)):
        pytest.skip(f"{_page_id(page)}: every python block is marked skip")
    run_page(page, sandbox)


RUNNER_PAGE = """# A page

```bash
echo not python
```

```python
x = 1
```

<!-- skip: needs CUDA -->
```python
raise RuntimeError("never run")
```

- a list item with code inside:

    ```python
    y = x + 1
    ```

<!-- script: tiny.py -->
```python
print("from a script")
```

````markdown
```python
inside a markdown example: not a block of this page
```
````

```python
assert y == 3, "y is 2"
```
"""


def test_the_runner_reads_blocks_and_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(RUNNER_PAGE)
    blocks = python_blocks(page)
    assert [b.code for b in blocks] == [
        "x = 1\n",
        'raise RuntimeError("never run")\n',
        "y = x + 1\n",
        'print("from a script")\n',
        'assert y == 3, "y is 2"\n',
    ]
    assert [b.skip for b in blocks] == [None, "needs CUDA", None, None, None]
    assert [b.script for b in blocks] == [None, None, None, "tiny.py", None]
    assert [b.line for b in blocks] == [8, 13, 19, 24, 34]


def test_the_runner_names_the_failing_page_and_block(tmp_path):
    page = tmp_path / "runner-check.md"
    page.write_text(RUNNER_PAGE)
    with pytest.raises(pytest.fail.Exception) as failure:
        run_page(page, tmp_path)
    message = str(failure.value)
    assert "runner-check.md, block 5 (line 34" in message and "y is 2" in message
    assert (tmp_path / "tiny.py").exists()  # the script block ran before the failure


SKIPPED = [b for page in PAGES for b in python_blocks(page) if b.skip is not None]


@pytest.mark.parametrize("block", SKIPPED, ids=[f"{_page_id(b.page)}#{b.number}" for b in SKIPPED])
def test_marked_block_is_reported_skipped(block):
    pytest.skip(f"{block.label}: {block.skip}")


LINK = re.compile(r"\]\((?P<target>[^)\s#]+\.md)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_links_between_pages_resolve(page):
    broken = [
        m["target"]
        for m in LINK.finditer(page.read_text(encoding="utf-8"))
        if "://" not in m["target"] and not (page.parent / m["target"]).resolve().is_file()
    ]
    assert not broken, f"{_page_id(page)} links to missing pages {broken}"


def test_every_page_is_in_the_navigation():
    """mkdocs.yml lists every page (read without a YAML parser: the .md paths it names)."""
    named = set(re.findall(r"[\w./-]+\.md", (ROOT / "mkdocs.yml").read_text()))
    assert named == {_page_id(page) for page in PAGES}


# ------------------------------------------------------------------------ API reference


def reference_directives() -> list[tuple[Path, int, str]]:
    """Every ``::: target`` line of the reference pages: (page, line, target)."""
    found = []
    for page in sorted((DOCS / "reference").rglob("*.md")):
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
            match = DIRECTIVE.match(line)
            if match:
                found.append((page, n, match["target"]))
    return found


def resolve(target: str) -> object:
    """Import the longest module prefix of a dotted path, then look the rest up on it."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as err:
            if err.name is not None and not ".".join(parts[:cut]).startswith(err.name):
                raise  # the module exists but imports something missing: a real error
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(f"no module in {target!r} imports")


DIRECTIVES = reference_directives()


def test_the_reference_has_directives():
    assert len(DIRECTIVES) > 20


@pytest.mark.parametrize(
    ("page", "line", "target"),
    DIRECTIVES,
    ids=[f"{p.relative_to(DOCS)}:{n}:{t}" for p, n, t in DIRECTIVES],
)
def test_reference_directive_imports(page, line, target):
    assert target.startswith("lpm_graph"), f"{page}:{line}: {target} is not in lpm_graph"
    try:
        resolve(target)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"{page.relative_to(ROOT)}:{line}: `::: {target}` does not resolve: {err}")


PACKAGES = (
    "lpm_graph",
    "lpm_graph.graph",
    "lpm_graph.ops",
    "lpm_graph.layers",
    "lpm_graph.protocols",
    "lpm_graph.datasets",
    "lpm_graph.train",
    "lpm_graph.secure",
    "lpm_graph.policies",
    "lpm_graph.distributed",
    "lpm_graph.ensemble",
    "lpm_graph.plot",
)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_in_the_reference(package):
    """Each name of a subpackage's ``__all__`` has a directive: its public path, or the path
    of the module that defines it (for names the package imports lazily)."""
    module = importlib.import_module(package)
    paths = {t for _, _, t in DIRECTIVES}
    documented = {id(resolve(t)) for t in paths}
    missing = []
    for name in module.__all__:
        if name == "__version__" or f"{package}.{name}" in paths:
            continue
        value = getattr(module, name)
        if isinstance(value, (int, float, str)) or id(value) not in documented:
            missing.append(name)
    assert not missing, f"{package}: {missing} have no `:::` directive under docs/reference"


def test_security_md_states_the_threat_model_and_the_policy_defaults():
    """Finding 7 of the security review: nothing told a user the threat model. SECURITY.md
    must name every role, the collusion bound, the transport's limit, and the leakage
    policy's defaults as the code has them."""
    from lpm_graph.secure import LeakagePolicy

    text = (ROOT / "SECURITY.md").read_text()
    for phrase in ("Data owners", "Compute parties", "Dealer", "Output receiver",
                   "Up to `K - 1` may collude", "colluding with no party", "plain TCP",
                   "mutually authenticated TLS", "Semi-honest"):  # fmt: skip
        assert phrase.lower() in text.lower(), phrase
    policy = LeakagePolicy()
    assert f"default {policy.min_group})" in text
    assert f"`gradient_openings` per session (default {policy.gradient_openings})" in text
    assert "not secure yet" not in text
