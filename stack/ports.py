"""Port checks of the local stack: find a taken port before a part fails on it with an obscure error."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path

from services.health import PortInUseError


class StackError(RuntimeError):
    """The local stack cannot start or keep running; the message is one clear sentence per problem."""


class PortTakenError(StackError, PortInUseError):
    """One or more ports the local stack needs are already in use (the message has one line per port).

    Also a :class:`services.health.PortInUseError`, the error a server raises when its port is taken.
    """


def port_in_use(host: str, port: int) -> bool:
    """True if ``port`` on ``host`` cannot be listened on right now (something else holds it).

    Binds a throw-away socket with ``SO_REUSEADDR`` (as the servers of the stack do), so a port that
    only has connections in TIME_WAIT counts as free while a listening socket counts as taken.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def taken_port_message(label: str, port: int, config_key: str | None = None) -> str:
    """The one-line explanation for a taken ``port`` used by the part called ``label``."""
    if config_key and "." in config_key:
        table, key = config_key.split(".", 1)
        where = f"[{table}] {key}"
    else:
        where = f"[stack] {config_key}" if config_key else "[stack] temporal_address/ports"
    return (f"port {port} ({label}) is already in use — is another `vpp up` running? "
            f"stop it or set {where} in a config file")


def check_ports_free(
    ports: Mapping[str, int],
    *,
    host: str = "127.0.0.1",
    config_keys: Mapping[str, str] | None = None,
) -> None:
    """Raise :class:`PortTakenError` if any of ``ports`` (part label -> TCP port) is taken on ``host``.

    ``config_keys`` maps a label to the ``[stack]`` setting that moves its port, for the message.
    All taken ports are reported at once, one line each.
    """
    keys = config_keys or {}
    problems = [taken_port_message(label, port, keys.get(label))
                for label, port in ports.items() if port_in_use(host, port)]
    if problems:
        raise PortTakenError("\n".join(problems))


# Where the kernel picks ports for outgoing connections and for servers that bind port 0 (Linux's default).
DEFAULT_EPHEMERAL_PORTS = (32768, 60999)
# Ports below the ephemeral range free_tcp_port chooses from.
CHOSEN_PORT_SPAN = 12000


def ephemeral_port_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's ephemeral port range (first, last), or Linux's default where it cannot be read."""
    try:
        first, last = (int(part) for part in Path(path).read_text().split()[:2])
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_PORTS
    return first, last


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (for benchmarks and tests), chosen at random
    just below the kernel's ephemeral range: a port handed to a server started later (Temporal's UI) must not
    be one the kernel gives meanwhile to another process binding port 0 (Temporal's own services do), which a
    port from the ephemeral range can be."""
    import random

    first, _ = ephemeral_port_range()
    low = max(1024, first - CHOSEN_PORT_SPAN)
    chooser = random.SystemRandom()
    for _ in range(200):
        port = chooser.randrange(low, first)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # the span is full: any free port
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
