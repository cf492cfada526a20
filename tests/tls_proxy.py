"""A TLS terminator in front of a plaintext server: ``python -m tests.tls_proxy``.

The Tansu we ship (v0.6.0) cannot serve TLS: its ``--cert`` and ``--key``
options are in one clap group, so giving both is refused, and its listener
never uses the TLS acceptor it builds. To run Kafka clients over real TLS
against it, the tests put this in front (Tansu advertises the proxy's address,
so every connection a client opens goes through it). Python's ``ssl`` does the
TLS, with client certificates required when ``--client-ca`` is given.

Usage::

    python -m tests.tls_proxy --listen 127.0.0.1:9093 --target 127.0.0.1:9092 \\
        --cert server.pem --key server.key [--client-ca ca.pem]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


async def _serve(args: argparse.Namespace) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    if args.client_ca:
        context.load_verify_locations(args.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    target_host, _, target_port = args.target.rpartition(":")

    async def relay(client_reader: asyncio.StreamReader,
                    client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(
                target_host, int(target_port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pump(client_reader, server_writer),
                             _pump(server_reader, client_writer))

    host, _, port = args.listen.rpartition(":")
    server = await asyncio.start_server(relay, host, int(port), ssl=context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    """Parse the arguments and relay until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="host:port to accept TLS on")
    parser.add_argument("--target", required=True, help="host:port of the plaintext server")
    parser.add_argument("--cert", required=True, help="server certificate chain (PEM)")
    parser.add_argument("--key", required=True, help="server key (PEM)")
    parser.add_argument("--client-ca", help="require client certificates issued by this CA")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
