"""``[database] dsn``: a PostgreSQL URL with one host or several, checked at load time.

asyncpg reads the same URLs (``postgresql://u@h1:5432,h2:5432/db?target_session_attrs=
read-write``: it tries the hosts in order and keeps the first that matches the session
attribute). What it would refuse only when the first connection is made, or accept and then
send writes to a standby, is refused here with the reason.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

SCHEMES = ("postgres", "postgresql")
WRITABLE = ("read-write", "primary")
"""The ``target_session_attrs`` that find the server taking writes; the bot writes."""
SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
"""What asyncpg accepts for ``target_session_attrs``."""
_IPV6 = re.compile(r"\[([^\]]+)\](?::(.*))?")


def check_dsn(dsn: str) -> None:
    """Raise ``ValueError`` saying what is wrong with ``dsn``; never quote it whole (it may
    hold a password)."""
    try:
        parts = urlsplit(dsn)
    except ValueError:  # an unclosed [ of an IPv6 host
        raise ValueError("has a malformed host (an IPv6 address is written [address])") from None
    if parts.scheme not in SCHEMES or not dsn.startswith(f"{parts.scheme}://"):
        raise ValueError("must be a postgresql://user:password@host:port/database URL")
    query = _query(parts.query)
    hosts = _hosts(parts.netloc.rpartition("@")[2], query)
    attrs = query.get("target_session_attrs", "any")
    if attrs not in SESSION_ATTRS:
        raise ValueError(f"target_session_attrs must be one of {', '.join(SESSION_ATTRS)}")
    if attrs not in WRITABLE and attrs != "any":
        raise ValueError(
            f"target_session_attrs={attrs} sends the bot to a server that refuses its writes;"
            " use read-write"
        )
    if len(hosts) > 1 and attrs not in WRITABLE:
        raise ValueError(
            f"lists {len(hosts)} hosts without target_session_attrs=read-write: the bot could"
            " land on a standby, which refuses writes; add ?target_session_attrs=read-write"
        )


def _query(text: str) -> dict[str, str]:
    try:
        parsed = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        raise ValueError("has a malformed query string (after ?)") from None
    repeated = sorted(key for key, values in parsed.items() if len(values) > 1)
    if repeated:
        raise ValueError(f"repeats query parameters: {', '.join(repeated)}")
    return {key: values[0] for key, values in parsed.items()}


def _hosts(netloc_hosts: str, query: dict[str, str]) -> list[str]:
    """The hosts, from the URL's authority or else from ``?host=``, each with a valid port."""
    in_url = netloc_hosts.split(",") if netloc_hosts else []
    if in_url and "host" in query:
        raise ValueError("names hosts twice: in the URL and in ?host=")
    if in_url:
        if any(not spec for spec in in_url):
            raise ValueError("has an empty host in its host list")
        if "port" in query:
            raise ValueError("names ports twice: after the hosts and in ?port=")
        return [_host(spec) for spec in in_url]
    hosts = query.get("host", "")
    listed = [unquote(h) for h in hosts.split(",")] if hosts else []
    if any(not host for host in listed):
        raise ValueError("has an empty host in ?host=")
    port_text = query.get("port", "")
    ports = port_text.split(",") if port_text else []
    for port in ports:
        _port(port)
    if len(ports) > 1 and len(ports) != max(len(listed), 1):
        raise ValueError(f"gives {len(ports)} ports for {max(len(listed), 1)} hosts")
    return listed or ["default"]


def _host(spec: str) -> str:
    """The host of ``host[:port]`` or ``[ipv6][:port]``, its port checked."""
    if spec.startswith("["):
        match = _IPV6.fullmatch(spec)
        if match is None:
            raise ValueError("has a malformed IPv6 host (write it as [address]:port)")
        host, port = match.group(1), match.group(2) or ""
    else:
        host, _, port = spec.partition(":")
        if not host:
            raise ValueError("has a port without a host in its host list")
    if port:
        _port(port)
    return host


def _port(text: str) -> None:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError("has a malformed port (a number from 1 to 65535 after each host)")
