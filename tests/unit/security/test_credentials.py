"""Redis URLs with any password, masking them, and secret files: pure, no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from silvertine_streams.security import parse_redis_url, read_secret_file, redact_url

AWKWARD = "p@ss/w:rd%2F"
"""A password holding every character a URL parser trips on."""


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6379/0", (False, "127.0.0.1", 6379, 0, None, None)),
    ("rediss://cache.internal/3", (True, "cache.internal", 6379, 3, None, None)),
    ("redis://[::1]:6380", (False, "::1", 6380, 0, None, None)),
    ("redis://app:s3cret@r:1/2", (False, "r", 1, 2, "app", "s3cret")),
    ("redis://:s3cret@r:1/2", (False, "r", 1, 2, None, "s3cret")),
    ("redis://nopass-user@r:1/2", (False, "r", 1, 2, "nopass-user", None)),
    # Raw "@", "/" and ":" in the password: the host starts after the last "@".
    ("redis://app:a/b@c:d@r:1/0", (False, "r", 1, 0, "app", "a/b@c:d")),
    # Percent-encoding is decoded, as redis-py does.
    ("redis://app:p%40ss%2Fw%3Ard@r:1/0", (False, "r", 1, 0, "app", "p@ss/w:rd")),
])
def test_a_redis_url_splits_into_address_and_credentials(
        url: str, expected: tuple[object, ...]) -> None:
    address = parse_redis_url(url)
    assert (address.tls, address.host, address.port, address.db, address.username,
            address.password) == expected


def test_the_password_is_not_in_the_repr_of_an_address() -> None:
    address = parse_redis_url(f"redis://app:{AWKWARD}@r:1/0")
    assert AWKWARD not in repr(address)
    assert address.where == "r:1"
    assert parse_redis_url("redis://[::1]:6380").where == "[::1]:6380"


@pytest.mark.parametrize("url", [
    "http://r:1/0", "redis:///0", "redis://r:99999/0", "redis://r:1/0?ssl_ca_certs=x",
    "redis://app:with space@r:1/0", "redis://r:1/x",
])
def test_a_bad_redis_url_is_refused_without_repeating_it(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_redis_url(url)
    assert url not in str(caught.value)
    assert "SILVERTINE_REDIS_PASSWORD" in str(caught.value)  # where any password fits


@pytest.mark.parametrize(("url", "shown"), [
    (f"redis://app:{AWKWARD}@r:1/0", "redis://app:***@r:1/0"),
    (f"rediss://:{AWKWARD}@r:1/0", "rediss://:***@r:1/0"),
    ("redis://onlyone@r:1/0", "redis://***@r:1/0"),
    ("redis://r:1/0", "redis://r:1/0"),
    ("kafka://k:9092", "kafka://k:9092"),
    ("not a url", "not a url"),
])
def test_redact_url_masks_any_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(("content", "secret"), [
    ("s3cret\n", "s3cret"), ("s3cret\r\n", "s3cret"), ("s3cret", "s3cret"),
    (" spaced out \n\n", " spaced out \n"), (f"{AWKWARD}\n", AWKWARD),
])
def test_a_secret_file_loses_only_its_final_newline(
        tmp_path: Path, content: str, secret: str) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content.encode())
    assert read_secret_file(path) == secret


def test_an_unreadable_secret_file_is_named_but_never_quoted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read .*missing"):
        read_secret_file(tmp_path / "missing")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfeS3CRET")
    with pytest.raises(ValueError) as caught:
        read_secret_file(binary)
    assert "not UTF-8" in str(caught.value) and "S3CRET" not in str(caught.value)
