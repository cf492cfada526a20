"""Which addresses a process tree listens on, from Linux ``/proc`` (no ``ss``/``lsof`` needed)."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"


@dataclass(frozen=True)
class Listener:
    """One listening (TCP) or bound, unconnected (UDP) socket."""

    proto: str
    address: str
    port: int
    inode: int

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach it (127.0.0.0/8, ::1, ::ffff:127.x)."""
        ip = ipaddress.ip_address(self.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback


def decode_address(hex_address: str) -> tuple[str, int]:
    """Decode ``/proc/net/tcp{,6}``'s ``0100007F:1F90`` (host byte order words) to (ip, port)."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # The kernel prints each 32-bit word of the address in host byte order.
    words = struct.unpack(f"<{len(raw) // 4}I", raw)
    packed = struct.pack(f">{len(words)}I", *words)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, packed), int(port, 16)


def parse_proc_net(text: str, proto: str) -> list[Listener]:
    """The listening (TCP) or unconnected (UDP) sockets in a ``/proc/net/*`` table."""
    wanted = _TCP_LISTEN if proto.startswith("tcp") else _UDP_UNCONNECTED
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != wanted:
            continue
        address, port = decode_address(fields[1])
        found.append(Listener(proto, address, port, int(fields[9])))
    return found


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in (PROC / str(current) / "task").glob("*"):
            try:
                queue.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue  # the task ended meanwhile
    return found


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    for fd in (PROC / str(pid) / "fd").glob("*"):
        try:
            target = fd.readlink()
        except OSError:
            continue
        name = str(target)
        if name.startswith("socket:["):
            inodes.add(int(name[len("socket:["):-1]))
    return inodes


def listeners_of(pid: int) -> list[Listener]:
    """The listening sockets held by ``pid`` and its descendants (all network namespaces
    are read through the first process's ``/proc/<pid>/net``)."""
    inodes: set[int] = set()
    for process in descendants(pid):
        inodes |= socket_inodes(process)
    tables = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            text = (PROC / str(pid) / "net" / proto).read_text()
        except OSError:
            continue
        tables.extend(parse_proc_net(text, proto))
    return [listener for listener in tables if listener.inode in inodes]
