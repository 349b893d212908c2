"""tests/upstream.py: sdist names, the cache, skip-or-fail, and reading an upstream run's report."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests import upstream


def test_sdist_file_names_follow_the_normalised_project_name() -> None:
    assert upstream._sdist_name("mcp", "2.3.0") == "mcp-2.3.0.tar.gz"
    assert upstream._sdist_name("Py.Key-Value_aio", "0.4.6") == "py_key_value_aio-0.4.6.tar.gz"


def test_a_cached_sdist_is_used_without_pip(tmp_path: Path) -> None:
    archive = tmp_path / "fastmcp-9.9.9.tar.gz"
    archive.write_bytes(b"cached")
    assert upstream.fetch_sdist("fastmcp", "9.9.9", directory=tmp_path) == archive


def test_a_failed_download_names_pip_and_the_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no index and no links: pip fails at once, offline
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(upstream.UpstreamUnavailable, match=r"pip download mcp==0\.0\.1 failed"):
        upstream.fetch_sdist("mcp", "0.0.1", directory=tmp_path)


def test_unavailable_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no network here"):
        upstream.unavailable("no network here")


def test_unavailable_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI: no network here"):
        upstream.unavailable("no network here")


def _add(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_extract_returns_the_root_and_checks_the_files(tmp_path: Path) -> None:
    archive = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "pkg-1.0/pyproject.toml", "[project]\n")
        _add(tar, "pkg-1.0/tests/test_a.py", "def test_a(): pass\n")
    root = upstream.extract_sdist(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "pkg-1.0"
    upstream.require_files(root, ["tests/test_a.py"])
    with pytest.raises(upstream.UpstreamUnavailable, match="does not ship tests/test_b.py"):
        upstream.require_files(root, ["tests/test_a.py", "tests/test_b.py"])


def test_outcomes_are_read_per_test_from_the_junit_report(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    report.write_text(
        "<testsuites><testsuite>"
        '<testcase classname="tests.test_x" name="test_a[toolcache-embedded]"/>'
        '<testcase classname="tests.test_x" name="test_a[toolcache-redis]">'
        '<failure message="boom"/></testcase>'
        '<testcase classname="tests.test_x.TestY" name="test_b[toolcache-redis]">'
        '<error message="teardown"/></testcase>'
        '<testcase classname="tests.test_x" name="test_c[toolcache-redis]">'
        '<skipped message="no"/></testcase>'
        "</testsuite></testsuites>",
        encoding="utf-8",
    )
    result = upstream.SuiteResult(upstream._outcomes(report), 1, "")
    assert result.counts("toolcache-embedded") == {"passed": 1}
    assert result.counts("toolcache-redis") == {"failed": 1, "error": 1, "skipped": 1}
    assert result.ids("error") == ["tests.test_x.TestY::test_b[toolcache-redis]"]
    assert "FAILED   tests.test_x::test_a[toolcache-redis]" in result.report().splitlines()
