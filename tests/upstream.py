"""Upstream test suites, run from the sdists of the versions installed here.

An upstream project's own tests are worth running against our adapters, but
they stay in the package they are published in: ``fetch_sdist`` downloads the
sdist of the installed version with ``pip download --no-deps --no-binary
:all:`` into a cache directory (reused between runs; ``AIOTOOLCACHE_UPSTREAM_CACHE``
overrides ``~/.cache/aiotoolcache-upstream``), ``extract_sdist`` unpacks it into
a temporary directory, and ``run_suite`` runs some of its test files in a pytest
subprocess with one of the plugins in ``tests/upstream_plugins`` loaded, which
plugs our store in from outside. Nothing upstream is edited or kept in this
repository.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PLUGINS_DIR = Path(__file__).resolve().parent / "upstream_plugins"
CACHE_VARIABLE = "AIOTOOLCACHE_UPSTREAM_CACHE"
UNUSED_PLUGINS = (
    "benchmark",
    "codspeed",
    "hypothesispytest",
    "langsmith_plugin",
    "pytest_logfire",
    "recording",
    "socket",
    "syrupy",
)
"""Installed pytest plugins no upstream suite here uses: not loading them halves start-up."""
DOWNLOAD_TIMEOUT = 300.0
"""Seconds one ``pip download`` may take (it prepares the sdist's metadata once)."""


class UpstreamUnavailable(Exception):
    """Raised when an upstream sdist cannot be fetched or lacks the expected tests."""


def cache_dir() -> Path:
    """The directory downloaded sdists are kept in between runs."""
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "aiotoolcache-upstream"


def installed_version(distribution: str) -> str:
    """The installed version of ``distribution`` (the sdist fetched is exactly this one)."""
    return metadata.version(distribution)


def _sdist_name(distribution: str, version: str) -> str:
    # PEP 625 file names: the normalised project name with underscores.
    return f"{re.sub(r'[-_.]+', '_', distribution).lower()}-{version}.tar.gz"


def fetch_sdist(distribution: str, version: str, *, directory: Path | None = None) -> Path:
    """Path of the sdist of ``distribution==version``, downloaded once into the cache directory."""
    target = directory or cache_dir()
    archive = target / _sdist_name(distribution, version)
    if archive.exists():
        return archive
    target.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "--dest",
        str(target),
        f"{distribution}=={version}",
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise UpstreamUnavailable(
            f"pip download {distribution}=={version} took over {DOWNLOAD_TIMEOUT:.0f} s"
        ) from exc
    if done.returncode != 0 or not archive.exists():
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise UpstreamUnavailable(
            f"pip download {distribution}=={version} failed (exit {done.returncode}): "
            + " | ".join(detail)
        )
    return archive


def extract_sdist(archive: Path, destination: Path) -> Path:
    """Unpack ``archive`` under ``destination``; return the sdist's root directory."""
    with tarfile.open(archive) as tar:
        roots = {Path(name).parts[0] for name in tar.getnames() if name}
        if len(roots) != 1:
            raise UpstreamUnavailable(f"{archive.name} has {len(roots)} top-level entries")
        tar.extractall(destination, filter="data")
    return destination / roots.pop()


def require_files(root: Path, files: Iterable[str]) -> None:
    """Raise UpstreamUnavailable naming every one of ``files`` the sdist does not ship."""
    missing = [name for name in files if not (root / name).is_file()]
    if missing:
        raise UpstreamUnavailable(f"{root.name} does not ship {', '.join(missing)}")


def unavailable(reason: str) -> None:
    """Skip with ``reason``; with the ``CI`` environment variable set, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"upstream suite must run in CI: {reason}", pytrace=False)
    pytest.skip(f"upstream suite not run: {reason}")


@dataclass(frozen=True)
class SuiteResult:
    """SuiteResult is the outcome of every test an upstream run reported, by test id."""

    outcomes: Mapping[str, str]
    returncode: int
    output: str

    def ids(self, outcome: str, part: str = "") -> list[str]:
        """The ids containing ``part`` that ended in ``outcome``: passed, failed, error, skipped."""
        return sorted(
            test for test, got in self.outcomes.items() if got == outcome and part in test
        )

    def counts(self, part: str = "") -> Counter[str]:
        """How many tests ended in each outcome, among the ids containing ``part``."""
        return Counter(got for test, got in self.outcomes.items() if part in test)

    def report(self) -> str:
        """One line per test, ``OUTCOME id``, sorted by id."""
        return "\n".join(f"{got.upper():8} {test}" for test, got in sorted(self.outcomes.items()))


def _outcomes(junit_xml: Path) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                # A teardown error after a pass is still an error.
                outcome = "failed" if child.tag == "failure" else child.tag
                break
        outcomes[f"{classname}::{name}"] = outcome
    return outcomes


def run_suite(
    root: Path,
    files: Sequence[str],
    *,
    plugin: str,
    env: Mapping[str, str],
    options: Sequence[str] = (),
    timeout: float = 240.0,
) -> SuiteResult:
    """Run ``files`` of the unpacked sdist at ``root`` in pytest with ``plugin`` loaded.

    The subprocess uses this interpreter, the sdist's own pytest configuration
    and conftests, ``-p no:cacheprovider`` (nothing written into the copy but
    the report), and our project root and plugins on ``PYTHONPATH``.
    """
    junit_xml = root / "aiotoolcache-upstream-report.xml"
    python_path = [str(PROJECT_ROOT), str(PLUGINS_DIR)]
    if os.environ.get("PYTHONPATH"):
        python_path.append(os.environ["PYTHONPATH"])
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        plugin,
        *(option for name in UNUSED_PLUGINS for option in ("-p", f"no:{name}")),
        "-rA",
        "--color=no",
        f"--junitxml={junit_xml}",
        *options,
        *files,
    ]
    done = subprocess.run(
        command,
        cwd=root,
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join(python_path)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    if not junit_xml.exists():
        raise AssertionError(
            f"the upstream run wrote no report (exit {done.returncode}):\n{output}"
        )
    return SuiteResult(_outcomes(junit_xml), done.returncode, output)
