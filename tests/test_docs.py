"""Every runnable snippet in the documentation runs, so the docs cannot drift from the code.

A fenced ``python`` block is runnable when the line before its fence is an
HTML comment (invisible in the rendered site)::

    <!-- test -->           runs on the embedded default (no AIOTOOLCACHE_URL)
    <!-- test: redis -->    runs with AIOTOOLCACHE_URL set to a real redis-server

A block may use top-level ``await`` (as in ``python -m asyncio``) or call
``asyncio.run`` itself; each runs in a fresh namespace named ``__main__``,
in a temporary working directory, with warnings as errors. Blocks without a
marker are not run; in the pages listed in ``FULLY_TESTED`` every python
block must carry either the marker or ``<!-- not-run: reason -->``.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Pages whose every python block is either run or explicitly marked as not run.
FULLY_TESTED = (
    "docs/index.md",
    "docs/concepts.md",
    "docs/freshness.md",
    "docs/consistency.md",
    "docs/failures.md",
    "docs/performance.md",
)
OPTIONS = frozenset({"redis"})

_MARKER = re.compile(r"^\s*<!--\s*test(?::\s*(?P<options>[\w ,-]*?))?\s*-->\s*$")
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run:.*-->\s*$")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")


@dataclass(frozen=True)
class Snippet:
    """Snippet is one fenced code block of a Markdown file and how it is marked."""

    path: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    marker: str | None  # the comment line before the fence, if any
    options: frozenset[str]

    @property
    def runnable(self) -> bool:
        return self.marker is not None and _MARKER.match(self.marker) is not None

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def markdown_files() -> list[Path]:
    files = sorted(DOCS.rglob("*.md"))
    readme = ROOT / "README.md"
    if readme.is_file():
        files.append(readme)
    return files


def extract(path: Path) -> list[Snippet]:
    """Return the fenced blocks of ``path`` (nested fences inside a block are its content)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    relative = path.relative_to(ROOT).as_posix()
    snippets: list[Snippet] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (
                closing is not None
                and closing["fence"].startswith(fence)
                and not closing["info"]
                and len(closing["indent"]) <= len(indent)
            ):
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        previous = lines[i - 1] if i > 0 and lines[i - 1].strip() else None
        options: frozenset[str] = frozenset()
        if previous is not None and (marker := _MARKER.match(previous)) is not None:
            options = frozenset(
                word for word in re.split(r"[\s,]+", marker["options"] or "") if word
            )
        snippets.append(
            Snippet(
                path=relative,
                line=i + 1,
                language=opening["info"].lower(),
                code="\n".join(body) + "\n",
                marker=previous.strip() if previous is not None else None,
                options=options,
            )
        )
        i = j + 1
    return snippets


def all_snippets() -> list[Snippet]:
    return [snippet for path in markdown_files() for snippet in extract(path)]


RUNNABLE = [snippet for snippet in all_snippets() if snippet.runnable]


def run_snippet(snippet: Snippet) -> None:
    """Run ``snippet`` like a script; top-level ``await`` runs it on a fresh event loop."""
    source = "\n" * (snippet.line) + snippet.code  # tracebacks point at the Markdown line
    code = compile(source, snippet.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace = {"__name__": "__main__", "__file__": str(ROOT / snippet.path)}
    result = eval(code, namespace)
    if inspect.iscoroutine(result):
        asyncio.run(result)


@pytest.mark.parametrize("snippet", RUNNABLE, ids=[snippet.id for snippet in RUNNABLE])
def test_snippet_runs(
    snippet: Snippet,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name in ("AIOTOOLCACHE_URL", "AIOTOOLCACHE_NAMESPACE", "AIOTOOLCACHE_SECRET"):
        monkeypatch.delenv(name, raising=False)
    if "redis" in snippet.options:
        monkeypatch.setenv("AIOTOOLCACHE_URL", request.getfixturevalue("redis_url"))
    monkeypatch.chdir(tmp_path)
    run_snippet(snippet)


def test_docs_have_runnable_snippets() -> None:
    pages = {snippet.path for snippet in RUNNABLE}
    assert set(FULLY_TESTED) - {"docs/performance.md"} <= pages


@pytest.mark.parametrize("page", FULLY_TESTED)
def test_every_python_block_is_run_or_says_why_not(page: str) -> None:
    path = ROOT / page
    assert path.is_file(), f"{page} is listed in FULLY_TESTED but does not exist"
    unmarked = [
        snippet.id
        for snippet in extract(path)
        if snippet.language in ("python", "py")
        and not snippet.runnable
        and not (snippet.marker and _NOT_RUN.match(snippet.marker))
    ]
    assert not unmarked, f"python blocks neither run nor marked <!-- not-run: ... -->: {unmarked}"


def test_markers_sit_on_python_blocks() -> None:
    """A marker before anything but a python fence (a typo, a moved block) would never run."""
    misplaced: list[str] = []
    for path in markdown_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        starts = {snippet.line - 1: snippet for snippet in extract(path)}
        for number, line in enumerate(lines):
            if _MARKER.match(line) is None:
                continue
            snippet = starts.get(number + 1)
            where = f"{path.relative_to(ROOT).as_posix()}:{number + 1}"
            if snippet is None or snippet.language not in ("python", "py"):
                misplaced.append(f"{where}: not followed by a ```python fence")
            elif not snippet.options <= OPTIONS:
                misplaced.append(f"{where}: unknown options {sorted(snippet.options - OPTIONS)}")
    assert not misplaced, "\n".join(misplaced)


def test_every_public_name_is_on_the_reference_site() -> None:
    """Each name in ``aiotoolcache.__all__`` has a ``:::`` directive of its own, or its module's."""
    import aiotoolcache

    pages = "\n".join(p.read_text() for p in (ROOT / "docs" / "reference").rglob("*.md"))
    documented = set(re.findall(r"^::: aiotoolcache\.([\w.]+)", pages, flags=re.MULTILINE))
    missing = [
        name
        for name in aiotoolcache.__all__
        if name not in documented
        and getattr(getattr(aiotoolcache, name), "__module__", "").removeprefix("aiotoolcache.")
        not in documented
        and not name.startswith("__")
    ]
    assert missing == []
