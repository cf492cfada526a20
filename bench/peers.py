"""Peers' environments: Quix Streams 3 in a venv of its own (``make bench-peers``).

Installing ``quixstreams`` into the project's venv downgrades pydantic,
pydantic-settings and confluent-kafka (its pins), which the product depends on,
so the ``single`` scenario runs :mod:`bench.quix_consumer` with the interpreter of
``bench/.venv-quix`` (gitignored), built here on first use with a pinned version.

    python -m bench.peers [--venv bench/.venv-quix]   # build it now (make bench-peers)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench.harness import REPO_ROOT, BenchError

QUIX_VERSION = "3.28.1"
QUIX_VENV = REPO_ROOT / "bench" / ".venv-quix"
PACKAGES = (f"quixstreams=={QUIX_VERSION}", "redis[hiredis]")


def quix_python(venv: Path = QUIX_VENV, *, say: object = print) -> Path:
    """The interpreter of the Quix venv, built (``python -m venv`` + pip) if it is missing.

    Raises:
        BenchError: the venv could not be built (no registry, a failed install),
            with pip's last lines.
    """
    python = venv / "bin" / "python"
    if _has_quix(python):
        return python
    if callable(say):
        say(f"bench: building {venv} with quixstreams=={QUIX_VERSION} (once)")
    steps = ([sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "--quiet", *PACKAGES])
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise BenchError(f"could not build {venv} ({' '.join(argv[:4])}…): {tail}")
    if not _has_quix(python):
        raise BenchError(f"{venv} was built but does not import quixstreams=={QUIX_VERSION}")
    return python


def _has_quix(python: Path) -> bool:
    if not python.exists():
        return False
    done = subprocess.run(
        [str(python), "-c", "import quixstreams, redis; print(quixstreams.__version__)"],
        capture_output=True, text=True, timeout=120)
    return done.returncode == 0 and done.stdout.strip() == QUIX_VERSION


def quix_version(python: Path) -> str:
    """``quixstreams x.y.z, confluent-kafka a.b.c (librdkafka v)`` of that interpreter."""
    done = subprocess.run(
        [str(python), "-c", "import quixstreams, confluent_kafka as c; "
         "from importlib.metadata import version; "
         "print(quixstreams.__version__, version('confluent-kafka'), c.libversion()[0])"],
        capture_output=True, text=True, timeout=120)
    quix, client, lib = (done.stdout.split() + ["?", "?", "?"])[:3]
    return f"quixstreams {quix}, confluent-kafka {client} (librdkafka {lib})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=QUIX_VENV)
    args = parser.parse_args(argv)
    python = quix_python(args.venv.resolve())
    print(f"bench: {python}: {quix_version(python)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
