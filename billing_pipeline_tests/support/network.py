"""Ports for tests that start real servers (or need a port nothing listens on)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port free right now on 127.0.0.1; closed again, so nothing answers on it yet."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
