"""MkDocs hook: keep one of two blocks of a page depending on whether a file exists.

A page may hold::

    <!-- if-exists: benchmarks/results.md -->
    --8<-- "benchmarks/results.md"
    <!-- else -->
    How to generate the file.
    <!-- end-if -->

The path is relative to the directory of mkdocs.yml. The first block is kept
when the file exists at build time, the second otherwise; the markers go.
This lets a page include generated output (through the snippets extension,
which fails a strict build on a missing file) without making it mandatory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_BLOCK = re.compile(
    r"^<!-- if-exists: (?P<path>[^\n]+?) -->\n"
    r"(?P<then>.*?)"
    r"(?:^<!-- else -->\n(?P<otherwise>.*?))?"
    r"^<!-- end-if -->\n?",
    re.MULTILINE | re.DOTALL,
)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    root = Path(config["config_file_path"]).resolve().parent

    def choose(match: re.Match[str]) -> str:
        if (root / match["path"].strip()).is_file():
            return match["then"]
        return match["otherwise"] or ""

    return _BLOCK.sub(choose, markdown)
