"""Policy files in TOML: what they declare, and errors that name the file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

import aiotoolcache as atc
from aiotoolcache.policy_file import FIELDS

GOOD = """\
# Policies of the retail server.
[tools."retail/get_*"]
cache = true
ttl = 300
key_args = ["user_id"]

[tools."retail/cancel_pending_order"]
cache = false
invalidates = ["*"]

[tools.'files/write_*']
invalidates = ["read_*", "list_dir"]   # a write that drops some reads
max_value_bytes = 2048

[tools."*"]
min_load_time = 0.5
client_directives = true
invalidates_partitions = "all"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policies.toml"
    path.write_text(text)
    return path


def test_a_file_declares_the_policies_of_its_tables(tmp_path: Path) -> None:
    policies = atc.ToolPolicies.from_file(write(tmp_path, GOOD))
    assert policies.resolve("retail", "get_user_details") == atc.ToolPolicy(
        cache=True, ttl=300, key_args=["user_id"]
    )
    assert policies.resolve("retail", "cancel_pending_order") == atc.ToolPolicy(
        cache=False, invalidates=["*"]
    )
    assert policies.resolve("files", "write_file") == atc.ToolPolicy(
        invalidates=["read_*", "list_dir"], max_value_bytes=2048
    )
    assert policies.resolve("weather", "forecast") == atc.ToolPolicy(
        min_load_time=0.5, client_directives=True, invalidates_partitions="all"
    )


def test_tool_cache_takes_a_path(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    for given in (path, str(path)):
        cache = atc.ToolCache(tool_policies=given)
        assert cache.tool_policy("retail", "get_order_details").ttl == 300


def test_an_empty_file_declares_nothing(tmp_path: Path) -> None:
    assert atc.ToolPolicies.from_file(write(tmp_path, "# nothing yet\n")).patterns == {}


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[tools."s/t"]\nttl = 5\ncahce = true\n', 3, ["unknown field 'cahce'", "cache"]),
        ('[tools."s/t"]\nttl = 0\n', 2, ["ttl", "above 0", "got 0"]),
        ('[tools."s/t"]\nttl = "5m"\n', 2, ["ttl", "'5m'"]),
        ('[tools."s/t"]\ncache = "yes"\n', 2, ["cache", "true or false"]),
        ('[tools."s/t"]\nmax_value_bytes = 1.5\n', 2, ["max_value_bytes", "whole number"]),
        ('[tools."s/t"]\nmax_value_bytes = true\n', 2, ["max_value_bytes"]),
        ('[tools."s/t"]\nkey_args = "city"\n', 2, ["key_args", "list"]),
        ('[tools."s/t"]\ninvalidates_partitions = "some"\n', 2, ['"own" or "all"']),
        ('[tools."s/t"]\n\n\ninvalidates = [\n  "read",\n  3,\n]\n', 4, ["invalidates"]),
        ('[tools."s/a"]\nttl = 1\n\n[tools."s/b"]\nttl = -1\n', 5, ['tools."s/b".ttl']),
        ('[tools."s/a"]\nttl = 1\n[tools."forecast"]\nttl = 2\n', 3, ["'<server_id>/<tool>'"]),
        ('ttl = 1\n[tools."s/a"]\n', 1, ["unknown table or key 'ttl'"]),
        ('[tool."s/a"]\nttl = 1\n', 1, ["'tool'"]),
        ('tools = { "s/a" = { cache = 1 } }\n', 1, ["cache"]),
    ],
)
def test_mistakes_name_the_file_the_line_and_the_field(
    tmp_path: Path, text: str, line: int, words: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(atc.ConfigurationError) as caught:
        atc.ToolPolicies.from_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    for word in words:
        assert word in message


def test_the_same_field_in_two_tables_is_found_in_its_own(tmp_path: Path) -> None:
    text = '[tools."s/a"]\nttl = 1\n\n[tools."s/b"]\nkey = 1\nttl = 0\n'
    with pytest.raises(atc.ConfigurationError, match=r":5: .*unknown field 'key'"):
        atc.ToolPolicies.from_file(write(tmp_path, text))


def test_a_file_that_is_not_toml_or_absent_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(atc.ConfigurationError, match=r"not a valid TOML file.*line 2"):
        atc.ToolPolicies.from_file(write(tmp_path, '[tools."s/a"]\nttl = = 1\n'))
    with pytest.raises(atc.ConfigurationError, match="cannot read the policy file"):
        atc.ToolPolicies.from_file(tmp_path / "missing.toml")
    with pytest.raises(atc.ConfigurationError, match="missing.toml"):
        atc.ToolCache(tool_policies=str(tmp_path / "missing.toml"))


def test_every_tool_policy_field_can_be_written() -> None:
    assert set(FIELDS) == set(atc.ToolPolicy.__dataclass_fields__)
