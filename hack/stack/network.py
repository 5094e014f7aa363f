"""The stack's network: a node namespace with a bridge, one namespace per Pod, and forwards from loopback.

Nothing touches the machine's own network: every interface lives in a namespace the stack made (the
node's bridge, each Pod's veth pair), and the machine's loopback only gets listening sockets that
forward into the node namespace (on 127.0.0.1, or on another address of 127.0.0.0/8, which Linux
routes to `lo` without any configuration). Sockets are opened inside a namespace by switching this
thread into it for the `socket()` call alone (a socket keeps the namespace it was made in).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

SUBNET_PREFIX = "10.77.0."
NODE_IP = SUBNET_PREFIX + "1"
PREFIX_LEN = 24
BRIDGE = "cni0"


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def netns_path(name: str) -> str:
    return f"/run/netns/{name}"


def exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def delete(name: str) -> None:
    if exists(name):
        with contextlib.suppress(RuntimeError):
            _ip("netns", "del", name)


def exec_prefix(name: str) -> list[str]:
    """Prefix a command with this to run it in namespace `name` (network only: mounts stay shared)."""
    return ["nsenter", f"--net={netns_path(name)}", "--"]


@contextlib.contextmanager
def inside(path: str) -> Iterator[None]:
    """Switch the calling thread into the namespace at `path` for the block (sockets made here stay there)."""
    with open("/proc/thread-self/ns/net") as home, open(path) as target:
        if _libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {path}")
        try:
            yield
        finally:
            if _libc.setns(home.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home")


def listener_in(path: str, port: int, host: str = "127.0.0.1", exact: bool = False) -> socket.socket:
    """A listening TCP socket on host:port in the namespace at `path` (port 0: any; taken: any, unless
    `exact`, which raises OSError instead)."""
    with inside(path):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        if not port or exact:
            sock.close()
            raise
        sock.bind((host, 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def create_node(name: str) -> None:
    """The node namespace: loopback up and a bridge at NODE_IP that Pod veths join."""
    delete(name)
    _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")
    _ip("-n", name, "link", "add", BRIDGE, "type", "bridge")
    _ip("-n", name, "addr", "add", f"{NODE_IP}/{PREFIX_LEN}", "dev", BRIDGE)
    _ip("-n", name, "link", "set", BRIDGE, "up")


def create_pod(node: str, name: str, ip: str) -> None:
    """A Pod namespace with eth0 at `ip`, wired to the node's bridge, default route via the node."""
    delete(name)
    host_end = "v" + name[-12:]
    _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")
    _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", host_end, "netns", node)
    _ip("-n", name, "addr", "add", f"{ip}/{PREFIX_LEN}", "dev", "eth0")
    _ip("-n", name, "link", "set", "eth0", "up")
    _ip("-n", name, "route", "add", "default", "via", NODE_IP)
    _ip("-n", node, "link", "set", host_end, "master", BRIDGE)
    _ip("-n", node, "link", "set", host_end, "up")


@dataclass
class AddressPool:
    """Pod IPs on the node's subnet, handed out round-robin as host-local IPAM does: an address comes back
    only after the others, so no peer's ARP cache still names a deleted Pod's interface for it."""

    first: int = 10
    last: int = 250
    used: set[int] = field(default_factory=set)
    _next: int = 0

    def take(self) -> str:
        size = self.last - self.first + 1
        start = self._next or self.first
        for step in range(size):
            n = self.first + (start - self.first + step) % size
            if n not in self.used:
                self.used.add(n)
                self._next = self.first + (n - self.first + 1) % size
                return f"{SUBNET_PREFIX}{n}"
        raise RuntimeError("the node's pod subnet is full")

    def release(self, ip: str) -> None:
        self.used.discard(int(ip.rsplit(".", 1)[1]))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class Forward:
    """Listens on a loopback address of the machine (the namespace at `listen_ns`) and connects from this
    one; `exact`: the port or nothing (start raises OSError), else any port when `local_port` is taken."""

    def __init__(
        self,
        listen_ns: str,
        target: tuple[str, int],
        local_port: int = 0,
        host: str = "127.0.0.1",
        exact: bool = False,
    ) -> None:
        self.listen_ns = listen_ns
        self.target = target
        self.local_port = local_port
        self.host = host
        self.exact = exact
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        sock = listener_in(self.listen_ns, self.local_port, self.host, self.exact)
        self._server = await asyncio.start_server(self._handle, sock=sock)
        self.local_port = int(sock.getsockname()[1])
        return self.local_port

    def retarget(self, target: tuple[str, int]) -> None:
        self.target = target

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError) as err:
            log.info("forward_connect_failed", target=self.target, error=str(err))
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
