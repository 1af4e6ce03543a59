"""Free TCP ports on loopback for the servers the tests start (Ray nodes, the S3 and vLLM servers)."""

from __future__ import annotations

import socket


def free_ports(n: int = 1) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 now (all held open together while they are picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
