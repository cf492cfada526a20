"""Unit tests for silvertine_streams.observability.ntp: reading a configured server and
judging a reply (pure; the round trip to a real NTP server is in
tests/integration/test_clock_ntp.py)."""

from __future__ import annotations

import pytest

from silvertine_streams.observability.ntp import NTP_PORT, NtpReply, parse_server, reply_problem


def good(offset_s: float = 0.001, delay_s: float = 0.002) -> NtpReply:
    return NtpReply(offset_s=offset_s, delay_s=delay_s, stratum=2, leap=0)


# --- parse_server ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pool.ntp.org", ("pool.ntp.org", NTP_PORT)),
        ("127.0.0.1:11123", ("127.0.0.1", 11123)),
        (" time.local:123 ", ("time.local", 123)),
        ("::1", ("::1", NTP_PORT)),
        ("[::1]", ("::1", NTP_PORT)),
        ("[fe80::1]:4123", ("fe80::1", 4123)),
    ],
)
def test_parse_server_accepts_host_and_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize("text", ["", ":123", "host:0", "host:65536", "host:ntp", "[::1", "[::1]x"])
def test_parse_server_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="NTP server"):
        parse_server(text)


# --- reply_problem --------------------------------------------------------------


def test_reply_problem_accepts_a_normal_reply() -> None:
    assert reply_problem(good()) is None


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (NtpReply(0.0, 0.001, stratum=2, leap=0, mode=3), "not a server reply"),
        (NtpReply(0.0, 0.001, stratum=2, leap=3), "not synchronised"),
        (NtpReply(0.0, 0.001, stratum=0, leap=0), "kiss-o'-death"),
        (NtpReply(0.0, 0.001, stratum=16, leap=0), "unsynchronised"),
        (NtpReply(float("nan"), 0.001, stratum=2, leap=0), "finite"),
        (NtpReply(0.0, float("inf"), stratum=2, leap=0), "finite"),
        (NtpReply(0.0, -0.5, stratum=2, leap=0), "negative round-trip"),
    ],
)
def test_reply_problem_names_what_makes_a_reply_unusable(reply: NtpReply, words: str) -> None:
    problem = reply_problem(reply)
    assert problem is not None and words in problem
