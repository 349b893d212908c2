"""Every script in examples/ runs to completion (embedded default, or a spawned Redis)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))
# Examples that need a framework extra name the module they import first.
NEEDS = {
    "fastmcp_server.py": "fastmcp",
    "mcp_client.py": "mcp",
    "langchain_agent.py": "langchain",
    "pydantic_ai_agent.py": "pydantic_ai",
    "openai_agents_tool.py": "agents",
}


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, redis_url: str) -> None:
    if script.name in NEEDS:
        pytest.importorskip(NEEDS[script.name])
    env = {**os.environ, "AIOTOOLCACHE_URL": redis_url, "PYTHONWARNINGS": "error"}
    if script.name not in ("caching_deep_dive.py", "policies_agent.py"):
        env.pop("AIOTOOLCACHE_URL")  # the others run on the embedded default
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()
