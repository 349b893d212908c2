"""Cache URLs are checked strictly: a malformed one is a ConfigurationError that names the
problem and never shows a password."""

from __future__ import annotations

import pytest

import aiotoolcache as atc
from aiotoolcache.cli import main
from aiotoolcache.settings import parse_backend_url
from aiotoolcache.urls import mask_url, tls_verification_off

PW = "s3cr3t-pw"

MALFORMED = {
    f"redis:/:{PW}@127.0.0.1:6379/9": "'//'",  # one slash: used to mean localhost db 0
    f"redis:{PW}@127.0.0.1:6379": "'//'",
    f"redis://:{PW}@": "missing host",
    f"redis://:{PW}@:6379/0": "missing host",
    f"redis://:{PW}@localhost:0/0": "invalid port",
    f"redis://:{PW}@localhost:65536/0": "invalid port",
    f"redis://:{PW}@localhost:63x9/0": "invalid port",
    f"redis://:{PW}@localhost:6379/-1": "database number",
    f"redis://:{PW}@localhost:6379/abc": "database number",
    f"redis://:{PW}@localhost:6379/{2**31}": "database number",
    f"redis://:{PW}@localhost:6379/0/1": "one database number",
    f"redis://:{PW}@localhost:6379/0?db=x": "database number",
    f"redis://:{PW}@localhost:6379/0?ssl_cert_req=none": "unknown URL option",
    f"redis://:{PW}@localhost:6379/0?ssl_cert_reqs=none": "needs a TLS scheme",
    f"rediss://:{PW}@localhost:6379/0?ssl_cert_reqs=off": "ssl_cert_reqs must be",
    f"rediss://:{PW}@localhost:6379/0?ssl_check_hostname=maybe": "ssl_check_hostname",
    f"redis://:{PW}@localhost:6379/0?protocol=4": "protocol",
    f"redis://:{PW}@localhost:6379/0?socket_timeout=soon": "socket_timeout",
    f"redis://:{PW}@localhost:6379/0#frag": "fragment",
    f"redis://:{PW}@[::1:6379/0": "malformed",
    f"redis+cluster://:{PW}@a:7000,b:99999": "invalid port",
    f"redis+cluster://:{PW}@a:7000/3": "only database 0",
    f"redis+cluster://:{PW}@a:7000?foo=1": "unknown URL option",
    f"redis+sentinel://:{PW}@s1:26379": "names its service",
    f"redis+sentinel://:{PW}@s1:26379/mymaster/x": "database number",
    f"redis+sentinel://:{PW}@s1:26379,:1/mymaster": "missing host",
    f"redis+sentinel://u:{PW}@s1/mymaster?sentinel_password={PW}&x=1": "unknown URL option",
    f"unix://:{PW}@": "socket path",
    "file://host/dir": "file:///",
    f"http://:{PW}@localhost:6379": "unsupported cache URL scheme 'http'",
    f"user:{PW}@localhost:6379": "unsupported cache URL scheme 'user'",
    f"localhost:6379?password={PW}": "unsupported cache URL scheme 'localhost'",
    f"//:{PW}@localhost": "no scheme",
    "": "empty",
}


@pytest.mark.parametrize("url", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_url_is_refused_naming_the_problem_without_the_password(url: str) -> None:
    with pytest.raises(atc.ConfigurationError) as caught:
        parse_backend_url(url)
    message = str(caught.value)
    assert MALFORMED[url] in message
    assert PW not in message and "s3cr3t" not in message


@pytest.mark.parametrize("url", list(MALFORMED)[:6])
def test_a_tool_cache_refuses_a_malformed_url_at_construction(url: str) -> None:
    with pytest.raises(atc.ConfigurationError) as caught:
        atc.ToolCache(url)
    assert PW not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("memory://", "memory"),
        ("file:///tmp/cache-dir", "file"),
        ("redis://localhost", "redis"),
        ("redis://u:p@127.0.0.1:6379/9", "redis"),
        ("redis://[::1]:6379/0?db=3&client_name=w1&protocol=3", "redis"),
        (f"redis://localhost:6379/{2**31 - 1}", "redis"),
        ("rediss://h:6380/0?ssl_cert_reqs=none&ssl_check_hostname=false", "redis"),
        ("unix:///run/redis.sock?db=2", "redis"),
        ("redis+cluster://a:7000,b:7001", "cluster"),
        ("redis+sentinel://s1,s2:26380/mymaster/1?sentinel_password=x", "sentinel"),
        ("cassette://recordings/demo", "cassette"),
    ],
)
def test_well_formed_urls_are_accepted(url: str, kind: str) -> None:
    assert parse_backend_url(url)[0] == kind


@pytest.mark.parametrize(
    "url",
    [
        f"redis://user:{PW}@host:6379/0",
        f"redis:/user:{PW}@host:6379/0",
        f"user:{PW}@host",
        f"redis+sentinel://s1/m?sentinel_password={PW}&sentinel_username=u",
        f"rediss://h/0?password={PW}",
    ],
)
def test_mask_url_hides_every_password(url: str) -> None:
    masked = mask_url(url)
    assert PW not in masked and "***" in masked


@pytest.mark.parametrize("password", ["abc/def+g==", "p?ss", "p#ss", "p@ss/w", "a:b@c#d?e/f"])
def test_a_password_with_unencoded_delimiters_is_masked_in_every_message(
    password: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://:{password}@cache.internal:6379/0"
    assert mask_url(url) == "redis://:***@cache.internal:6379/0"
    both = mask_url(f"redis://app:{password}@h/0?password={password}")
    assert password not in both and both.startswith("redis://app:***")
    try:
        atc.ToolCache(url)
    except atc.ConfigurationError as exc:
        assert password not in str(exc) and "***" in str(exc)
    monkeypatch.setenv("AIOTOOLCACHE_URL", f"redis://:{password}@127.0.0.1:1/0")
    assert main(["doctor", "--json"]) == 1
    captured = capsys.readouterr()
    assert password not in captured.err + captured.out and "***" in captured.err


def test_a_url_cut_inside_its_password_says_to_percent_encode_it() -> None:
    with pytest.raises(atc.ConfigurationError, match="must be percent-encoded") as caught:
        parse_backend_url("redis://:abc/9@cache.internal:6379/0")
    assert "abc" not in str(caught.value) and "9@" not in str(caught.value)
    # An "@" in a query value is not a password: the URL is accepted (and masked generously).
    assert parse_backend_url("redis://h:6379/0?client_name=a@b")[0] == "redis"


def test_a_tls_opt_out_is_reported_only_when_written_out() -> None:
    assert tls_verification_off("rediss://h:6380/0") is None
    assert tls_verification_off("rediss://h/0?ssl_cert_reqs=required") is None
    assert tls_verification_off("rediss://h/0?ssl_cert_reqs=none") == "ssl_cert_reqs=none"
    off = tls_verification_off("rediss://h/0?ssl_cert_reqs=optional&ssl_check_hostname=false")
    assert off == "ssl_cert_reqs=optional, ssl_check_hostname=false"
