"""Cache URLs checked strictly before anything connects, and shown only with secrets masked.

A URL that does not say exactly where the data goes is refused with a
:class:`~aiotoolcache.errors.ConfigurationError` naming the problem, instead of
being read some other way (``redis:/127.0.0.1:6379/9``, with one slash, used
to mean localhost db 0). The rules:

- the scheme is one of ``memory``, ``file``, ``redis``, ``rediss``, ``unix``,
  ``redis+cluster``, ``rediss+cluster``, ``redis+sentinel``,
  ``rediss+sentinel`` or ``cassette`` (whose location its own module reads);
- network schemes are followed by ``//`` and a host; a port, when given, is
  1-65535 (omitted: 6379, or 26379 for sentinels, as redis-py does);
- the database number, in the path or ``?db=``, is a non-negative integer up
  to 2**31-1, the largest value Redis's ``databases`` setting accepts (Redis
  itself refuses numbers beyond its own ``databases`` count at connect time);
- query options are limited to those listed in :data:`QUERY_OPTIONS`; an
  unknown one (usually a typo such as ``ssl_cert_req``) is refused, because
  redis-py would ignore it or fail later, at the first command;
- TLS options need a TLS scheme (``rediss``); ``ssl_cert_reqs`` is one of
  ``required``, ``optional`` or ``none``. Turning verification off is honoured
  because it is written out, and :func:`tls_verification_off` reports it so
  that ``aiotoolcache doctor`` can warn.

Every message shows the URL through :func:`mask_url`: never a password.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

from aiotoolcache.errors import ConfigurationError

__all__ = [
    "KNOWN_SCHEMES",
    "MAX_DB",
    "QUERY_OPTIONS",
    "check_url",
    "mask_url",
    "tls_verification_off",
]

MAX_DB = 2**31 - 1
KNOWN_SCHEMES: dict[str, str] = {
    "memory": "memory",
    "file": "file",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "redis+cluster": "cluster",
    "rediss+cluster": "cluster",
    "redis+sentinel": "sentinel",
    "rediss+sentinel": "sentinel",
    "cassette": "cassette",
}
_TLS_QUERY = frozenset(
    {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}
)
# Query options a URL may carry, per kind (the connection's own; pool sizes and
# timeouts that the cache derives from its budget are set through ToolCache).
QUERY_OPTIONS: dict[str, frozenset[str]] = {
    "redis": frozenset(
        {
            "db",
            "protocol",
            "client_name",
            "username",
            "password",
            "socket_timeout",
            "socket_connect_timeout",
            "health_check_interval",
        }
    )
    | _TLS_QUERY,
    "cluster": _TLS_QUERY,
    "sentinel": frozenset({"sentinel_username", "sentinel_password"}) | _TLS_QUERY,
}
_SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:password|secret|token)[^=&#]*=)[^&]*", re.IGNORECASE)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_CERT_REQS = ("required", "optional", "none")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def mask_url(url: str) -> str:
    """Return ``url`` with its password and any ``*password*``/``*secret*`` query value as ``***``.

    Works on malformed URLs too (one slash, no scheme, a bad port): masking
    never depends on the URL being valid.
    """
    head, rest = "", url
    if "://" in url:
        index = url.index("://") + 3
        head, rest = url[:index], url[index:]
    else:
        scheme = _SCHEME.match(url)
        if scheme is not None and url[scheme.end() :].startswith("/"):
            head, rest = url[: scheme.end() + 1], url[scheme.end() + 1 :]
        slashes = len(rest) - len(rest.lstrip("/"))
        head, rest = head + rest[:slashes], rest[slashes:]
    hidden = [False] * len(rest)
    # A password pasted without percent-encoding may hold '/', '?', '#' or '@', so
    # the user information ends at the LAST '@': cutting the authority at the first
    # '/' first would show such a password in clear. (An '@' in a query value is
    # hidden along with it: showing too little is the safe mistake.)
    at = rest.rfind("@")
    colon = rest.find(":", 0, at) if at >= 0 else -1
    if colon >= 0:
        hidden[colon + 1 : at] = [True] * (at - colon - 1)
    # A secret query value runs to the next '&': an unencoded '#' does not end it.
    for match in _SECRET_QUERY.finditer(rest):
        hidden[match.end(1) : match.end()] = [True] * (match.end() - match.end(1))
    out, previous = [head], False
    for char, secret in zip(rest, hidden, strict=True):
        if not secret:
            out.append(char)
        elif not previous:
            out.append("***")
        previous = secret
    return "".join(out)


def _ambiguous_userinfo(url: str) -> bool:
    """Return True when an '@' follows the first '/', '?' or '#' after the scheme's '//'.

    Such a URL most likely holds a password with an unencoded '/', '?' or '#'.
    Parsers cut it at that character, so a message quoting a parsed part (a
    port, a database number) would quote a piece of the password.
    """
    rest = url.partition("://")[2]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    return "@" in rest[end:]


def _fail(problem: str, url: str, hint: str = "") -> ConfigurationError:
    if _ambiguous_userinfo(url):  # the problem may quote a piece of the password
        return ConfigurationError(
            f"malformed cache URL {mask_url(url)!r}: a '/', '?' or '#' in the user name "
            "or password must be percent-encoded (%2F, %3F, %23)"
        )
    return ConfigurationError(f"{problem} in cache URL {mask_url(url)!r}{hint}")


def _port(text: str, url: str) -> None:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _fail(f"invalid port {text!r} (expected 1-65535)", url)


def _hosts(netloc: str, url: str, several: bool) -> None:
    hostlist = netloc.rpartition("@")[2]
    items = hostlist.split(",") if several else [hostlist]
    for item in items:
        item = item.strip()
        if item.startswith("["):  # [IPv6]:port
            host, closed, rest = item[1:].partition("]")
            if not closed or (rest and not rest.startswith(":")):
                raise _fail(f"malformed IPv6 host {item!r}", url)
            port = rest[1:] if rest else None
        else:
            host, colon, port_text = item.partition(":")
            port = port_text if colon else None
        if not host:
            raise _fail("missing host", url)
        if port is not None:
            _port(port, url)


def _db(text: str, url: str) -> None:
    if not text.isdigit() or int(text) > MAX_DB:
        raise _fail(f"invalid database number {text!r} (expected 0-{MAX_DB})", url)


def _query(kind: str, tls: bool, query: list[tuple[str, str]], url: str) -> None:
    allowed = QUERY_OPTIONS[kind]
    unknown = sorted({name for name, _ in query} - allowed)
    if unknown:
        raise _fail(
            f"unknown URL option(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))}; "
            "other connection options go through redis_options=)",
            url,
        )
    for name, value in query:
        if name in _TLS_QUERY and not tls:
            raise _fail(f"{name} needs a TLS scheme (rediss://…)", url)
        if name == "db":
            _db(value, url)
        elif name == "ssl_cert_reqs" and value.lower() not in _CERT_REQS:
            raise _fail(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}", url)
        elif name == "ssl_check_hostname" and value.lower() not in _BOOLEANS:
            raise _fail("ssl_check_hostname must be true or false", url)
        elif name == "protocol" and value not in ("2", "3"):
            raise _fail("protocol must be 2 or 3", url)
        elif name in ("socket_timeout", "socket_connect_timeout", "health_check_interval"):
            try:
                number = float(value)
            except ValueError:
                number = -1.0
            if not number >= 0:
                raise _fail(f"{name} must be a non-negative number of seconds", url)


def check_url(url: str) -> tuple[str, str]:
    """Return ``(kind, location)`` of a cache URL, or raise ConfigurationError naming the problem.

    ``kind`` is memory, file, redis, cluster, sentinel or cassette; ``location``
    is the directory of a file URL, empty for memory, and the URL itself otherwise
    (a cassette URL is only recognised here; the cassette store reads it).
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("the cache URL is empty")
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    kind = KNOWN_SCHEMES.get(scheme)
    if kind is None:
        raise ConfigurationError(
            (f"unsupported cache URL scheme {scheme!r}" if scheme else "no scheme")
            + f" in cache URL {mask_url(url)!r}: use memory://, file:///path, "
            "redis://host:port/db, rediss://, unix:///path.sock, redis+cluster:// "
            "or redis+sentinel://"
        )
    if kind == "memory":
        return kind, ""
    if kind == "cassette":  # its own module reads the rest
        return kind, url
    if not url[len(scheme) + 1 :].startswith("//"):
        raise _fail(f"{scheme}: must be followed by '//' (e.g. {scheme}://…)", url)
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        raise _fail("malformed URL", url) from None
    if parts.fragment:
        raise _fail("unexpected '#' fragment", url)
    if kind == "file":
        path = unquote(parts.path)
        if parts.netloc or not path:
            raise _fail("a file URL is file:///absolute/directory", url)
        return "file", path
    tls = scheme.startswith("rediss")
    if scheme == "unix":
        if not parts.path or parts.path == "/":
            raise _fail("a unix URL needs a socket path (unix:///path/to/redis.sock)", url)
    else:
        _hosts(parts.netloc, url, several=kind != "redis")
        segments = [segment for segment in parts.path.split("/") if segment]
        if kind == "redis":
            if len(segments) > 1:
                raise _fail("the path is one database number (redis://host:port/db)", url)
            if segments:
                _db(segments[0], url)
        elif kind == "cluster" and segments not in ([], ["0"]):
            raise _fail("Redis Cluster has only database 0", url)
        elif kind == "sentinel":
            if not 1 <= len(segments) <= 2:
                raise _fail("a Sentinel URL names its service: …/service[/db]", url)
            if len(segments) == 2:
                _db(segments[1], url)
    _query(kind, tls, query, url)
    return kind, url


def tls_verification_off(url: str) -> str | None:
    """Return what a TLS URL turns off (``ssl_cert_reqs=none`` …), or None when it verifies."""
    try:
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    except ValueError:
        return None
    opted_out = []
    reqs = query.get("ssl_cert_reqs", "required").lower()
    if reqs != "required":
        opted_out.append(f"ssl_cert_reqs={reqs}")
    if _BOOLEANS.get(query.get("ssl_check_hostname", "true").lower(), True) is False:
        opted_out.append("ssl_check_hostname=false")
    return ", ".join(opted_out) or None
