"""``--json`` has one shape for every command, on success and on failure; humans get rich
tables on a terminal and plain text elsewhere; ``--help`` shows an example of each command."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from aiotoolcache.cli import COMMAND_MODULES, build_parser
from aiotoolcache.cli.output import Screen
from tests.servers import free_port
from tests.test_cli import run_cli

COMMANDS = ("demo", "stats", "invalidate", "doctor", "inspect")


def _json(result: Any) -> dict[str, Any]:
    assert result.stdout.startswith("{\n  "), result.stdout[:200]  # indented, not one line
    document: dict[str, Any] = json.loads(result.stdout)
    assert document["exit_code"] == result.returncode
    return document


def _success_args(command: str, url: str) -> tuple[str, ...]:
    return {
        "demo": ("demo", "--requests", "5", "--speed", "1000"),
        "stats": ("stats", "--url", url, "--namespace", "j"),
        "invalidate": ("invalidate", "--url", url, "--namespace", "j", "--all"),
        "doctor": ("doctor", "--url", url),
        "inspect": ("inspect", "--url", url, "--namespace", "j", "list_tools", "srv"),
    }[command]


@pytest.mark.parametrize("command", COMMANDS)
def test_json_on_success(command: str, redis_url: str) -> None:
    result = run_cli(*_success_args(command, redis_url), "--json")
    document = _json(result)
    assert document["ok"] is True and "error" not in document
    assert result.returncode in (0, 1, 3)  # doctor: the test Redis's noeviction is a warning
    if command == "inspect":
        assert result.returncode == 3 and document["exists"] is False


@pytest.mark.parametrize("command", COMMANDS[1:])
def test_json_on_error_when_redis_is_down(command: str) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = run_cli(*_success_args(command, url), "--json")
    assert result.returncode == 1
    document = _json(result)
    assert document["ok"] is False
    assert set(document["error"]) == {"type", "message"}
    assert "cannot reach" in document["error"]["message"]
    assert "hunter2" not in result.stdout + result.stderr
    assert result.stderr.startswith("aiotoolcache: error: ")


@pytest.mark.parametrize("command", COMMANDS)
def test_json_on_a_usage_error(command: str) -> None:
    result = run_cli(command, "--no-such-option", "--json")
    assert result.returncode == 2
    document = _json(result)
    assert document["ok"] is False and document["error"]["type"] == "UsageError"


def test_json_on_a_bad_url_names_the_problem_without_the_password() -> None:
    result = run_cli("stats", "--url", "redis:/:hunter2@127.0.0.1:6379/9", "--json")
    document = _json(result)
    assert document["error"]["type"] == "ConfigurationError"
    assert "'//'" in document["error"]["message"]
    assert "hunter2" not in result.stdout + result.stderr


def test_sentinel_passwords_in_the_query_are_never_printed() -> None:
    url = f"redis+sentinel://127.0.0.1:{free_port()}/mymaster?sentinel_password=hunter2"
    result = run_cli("doctor", "--url", url, "--json")
    assert result.returncode == 1
    assert "hunter2" not in result.stdout + result.stderr


def test_help_shows_an_example_for_every_command() -> None:
    parser = build_parser()
    subparsers = next(
        action for action in parser._actions if action.__class__.__name__ == "_SubParsersAction"
    )
    names = set(subparsers.choices)  # type: ignore[attr-defined]
    assert names == {"demo", "stats", "invalidate", "doctor", "inspect", "cassette", "policy"}
    assert len(COMMAND_MODULES) == 6
    for name in names:
        text = run_cli(name, "--help").stdout
        assert "example:" in text and f"aiotoolcache {name}" in text, name
    assert "examples:" in run_cli("--help").stdout


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_rich_tables_and_anything_else_plain_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("rich")
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = _Terminal()
    screen = Screen(terminal)
    assert screen.rich
    screen.table(["status", "check"], [["ok", "round trip"]], status_column=0)
    assert "━" in terminal.getvalue() or "─" in terminal.getvalue()

    plain = io.StringIO()
    Screen(plain).table(["status", "check"], [["ok", "round trip"]])
    assert plain.getvalue().splitlines()[1].startswith("------")

    monkeypatch.setenv("NO_COLOR", "1")
    assert not Screen(_Terminal()).rich


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://:hunter2@127.0.0.1:99999/0", "invalid port"),
        ("http://:hunter2@127.0.0.1:6379/0", "unsupported cache URL scheme"),
        ("redis://:hunter2@127.0.0.1:6379/0?sentinel_password=hunter2", "unknown URL option"),
    ],
)
@pytest.mark.parametrize("command", ("stats", "doctor"))
def test_a_malformed_url_never_prints_its_secrets(command: str, url: str, problem: str) -> None:
    result = run_cli(command, "--url", url, "--json")
    document = _json(result)
    assert problem in document["error"]["message"]
    assert "hunter2" not in result.stdout + result.stderr
