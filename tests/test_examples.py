"""Every script in examples/ names the extra it needs, and runs to completion on it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
_NAMED = re.compile(r'pip install "aiotoolcache\[([a-z\-]+)\]"')
# The module each framework example imports first (what goes missing without its extra).
FIRST_IMPORT = {
    "fastmcp": "fastmcp",
    "mcp": "mcp",
    "langchain": "langchain",
    "pydantic-ai": "pydantic_ai",
    "openai-agents": "agents",
    "test": "pytest",
}


def extra_of(script: Path) -> str | None:
    """The extra an example names at its top (None: the core install is enough)."""
    head = script.read_text().split('"""')[1]
    found = _NAMED.search(head)
    if found is None:
        assert "pip install aiotoolcache" in head, f"{script.name} names no install line"
        return None
    return found.group(1)


def _installed(requirement: str) -> bool:
    name = re.split(r"[<>=!\[;]", requirement, maxsplit=1)[0].strip()
    try:
        version(name)
    except PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_on_the_extra_it_names(script: Path, redis_url: str) -> None:
    extra = extra_of(script)
    if extra is not None:
        assert extra in EXTRAS, f"{script.name} names an extra pyproject.toml does not define"
        missing = [req for req in EXTRAS[extra] if not _installed(req)]
        if missing:
            pytest.skip(f"the {extra} extra is not installed here: {missing}")
    env = {**os.environ, "AIOTOOLCACHE_URL": redis_url, "PYTHONWARNINGS": "error"}
    if script.name not in ("caching_deep_dive.py", "policies_agent.py"):
        env.pop("AIOTOOLCACHE_URL")  # the others run on the embedded default
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    # The output explains itself: at least one full sentence, not bare values.
    assert any(len(line.split()) >= 8 and line.rstrip().endswith(".") for line in lines), lines


BLOCK = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.parametrize(
    "script", [s for s in EXAMPLES if extra_of(s) is not None], ids=lambda p: p.name
)
def test_a_missing_extra_is_named_in_the_error(script: Path) -> None:
    extra = extra_of(script)
    assert extra is not None
    code = BLOCK.format(module=FIRST_IMPORT[extra], script=str(script))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError:"), last
    assert f'pip install "aiotoolcache[{extra}]"' in last
