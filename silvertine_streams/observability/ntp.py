"""Asking an NTP server for the time, and judging its reply (SNTP, RFC 4330).

:func:`ntp_query` does the network round trip (with ``ntplib``); the rest is pure:
:func:`parse_server` reads a configured server, :func:`reply_problem` says why
a reply must not set the clock offset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import ntplib

NTP_PORT = 123
NTP_VERSION = 3

_SERVER_MODE = 4
_LEAP_ALARM = 3  # leap indicator 3: the server's own clock is not synchronised
_STRATUM_UNSYNCHRONISED = 16


@dataclass(frozen=True, slots=True)
class NtpReply:
    """The parts of an NTP server reply that clock sync uses.

    Attributes:
        offset_s: server time minus local time, seconds.
        delay_s: round-trip delay, seconds.
        stratum: the server's stratum (0 = kiss-o'-death, 16 = unsynchronised).
        leap: leap indicator (3 = the server's clock is not synchronised).
        mode: NTP mode of the packet (4 = server).
    """

    offset_s: float
    delay_s: float
    stratum: int
    leap: int
    mode: int = _SERVER_MODE


Query = Callable[[str, int, float], NtpReply]
"""``query(host, port, timeout_s)``: ask one server; raise on no or bad answer."""


def parse_server(text: str) -> tuple[str, int]:
    """Split ``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` into host and port.

    A bare IPv6 address (two or more colons, no brackets) takes the NTP port.

    Raises:
        ValueError: the text is empty or the port is not in 1..65535.
    """
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"NTP server {text!r}: expected [address] or [address]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"NTP server {text!r}: no host")
    if not port_text:
        return host, NTP_PORT
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"NTP server {text!r}: port must be 1..65535")
    return host, int(port_text)


def reply_problem(reply: NtpReply) -> str | None:
    """Say why a reply must not be used to set the offset, or return ``None``."""
    if reply.mode != _SERVER_MODE:
        return f"not a server reply (mode {reply.mode})"
    if reply.leap == _LEAP_ALARM:
        return "server clock is not synchronised (leap indicator 3)"
    if reply.stratum == 0:
        return "server refused the request (kiss-o'-death, stratum 0)"
    if reply.stratum >= _STRATUM_UNSYNCHRONISED:
        return f"server is unsynchronised (stratum {reply.stratum})"
    if not (math.isfinite(reply.offset_s) and math.isfinite(reply.delay_s)):
        return "offset or delay is not a finite number"
    if reply.delay_s < 0:
        return f"negative round-trip delay ({reply.delay_s:.6f} s)"
    return None


def ntp_query(host: str, port: int, timeout_s: float) -> NtpReply:
    """Ask one NTP server (version 3) for the time.

    Raises:
        ntplib.NTPException: no reply within ``timeout_s``, or a malformed one.
        OSError: the name does not resolve, or the network is unreachable. (A
            closed port is not reported: ntplib's socket is unconnected, so the
            kernel's "port unreachable" never reaches it and the query times out.)
    """
    stats = ntplib.NTPClient().request(host, port=port, version=NTP_VERSION, timeout=timeout_s)
    return NtpReply(
        offset_s=float(stats.offset),
        delay_s=float(stats.delay),
        stratum=int(stats.stratum),
        leap=int(stats.leap),
        mode=int(stats.mode),
    )
