"""Redis URLs with any password, masking a URL's password, reading a secret file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

MASK = "***"

_REDIS_URL = re.compile(
    r"^(?P<scheme>rediss?)://"
    # Up to the *last* "@": a password may itself hold "@", "/" and ":".
    r"(?:(?P<userinfo>\S*)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)"
    r"(?::(?P<port>\d{1,5}))?"
    r"(?:/(?P<db>\d{1,5}))?$"
)
REDIS_URL_SHAPE = ("redis://[user:password@]host[:port][/db] or rediss://... for TLS "
                   "(no spaces; any password: SILVERTINE_REDIS_PASSWORD)")
DEFAULT_REDIS_PORT = 6379


@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis URL points, and the credentials it carries.

    Attributes:
        tls: ``rediss://``.
        host: host name or address (IPv6 without brackets).
        port: TCP port.
        db: database number.
        username: the ACL user, ``None`` for the default user.
        password: the password, ``None`` when the URL has none (never in ``repr``).
    """

    tls: bool
    host: str
    port: int
    db: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        """``host:port``, as error lines name the server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_redis_url(url: str) -> RedisAddress:
    """Split a Redis URL into address and credentials.

    The user and password are percent-decoded (``%40`` is ``@``), as redis-py
    does; they may also hold ``@``, ``/`` and ``:`` as they are: the host starts
    after the last ``@``, and the password after the first ``:``.

    Raises:
        ValueError: the URL is not shaped like :data:`REDIS_URL_SHAPE`; the
            message never repeats the URL.
    """
    match = _REDIS_URL.match(url)
    if match is None:
        raise ValueError(REDIS_URL_SHAPE)
    port = int(match["port"]) if match["port"] else DEFAULT_REDIS_PORT
    if not 0 < port <= 65535:
        raise ValueError(f"{REDIS_URL_SHAPE}; the port is 1..65535")
    username = password = None
    if match["userinfo"] is not None:
        user, sep, secret = match["userinfo"].partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    return RedisAddress(
        tls=match["scheme"] == "rediss",
        host=match["host"].strip("[]"),
        port=port,
        db=int(match["db"]) if match["db"] else 0,
        username=username,
        password=password,
    )


def redact_url(url: str) -> str:
    """Return ``url`` with its password masked: ``redis://user:***@host:6379/0``.

    Works for any password (the host starts after the last ``@``); text that is
    not a URL with credentials comes back unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:{MASK}" if colon else MASK
    return f"{scheme}://{shown}@{host}"


def read_secret_file(path: Path) -> str:
    """Read a secret from a file (a container secret), without its final newline.

    Raises:
        ValueError: the file cannot be read or is not UTF-8; never quotes its content.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text") from exc
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")
