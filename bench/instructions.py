"""One process, everything in it: a fixed upstream, the gateway's edge, and clients.

``python bench/instructions.py N`` sends N proxied requests (10 keep-alive connections, a valid
access token, an ``auth: required`` route) and exits; ``--direct`` sends them to the upstream
itself. Run under ``valgrind --tool=callgrind`` by ``bench/instructions.sh``, which turns two
runs into instructions per request: a count that does not move with the machine's load or
clock, for comparing two versions of the hot path (the timing benchmark cannot see a few
percent through this VM's noise). The upstream answers every request with the same small
nginx-like response; the clients are asyncio streams; both are the same in every comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import cast

import uvloop
from aiohttp import web

from auth.tokens import TokenUser
from config import build_config
from gateway.app import create_app
from gateway.appkeys import SERVICES
from gateway.edge.runner import GatewayRunner

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 02:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"
)
CONNECTIONS = 10


class Upstream(asyncio.Protocol):
    """Answers each request head with ``RESPONSE`` (no request here has a body)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.transport.write(RESPONSE)


async def client(port: int, request: bytes, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 "):
            raise SystemExit(f"unexpected answer: {head!r}")
        start = head.index(b"Content-Length: ") + 16
        await reader.readexactly(int(head[start : head.index(b"\r\n", start)]))
    writer.close()


async def main(count: int, direct: bool, workdir: Path) -> None:
    loop = asyncio.get_running_loop()
    upstream = await loop.create_server(Upstream, "127.0.0.1", 0)
    upstream_port = upstream.sockets[0].getsockname()[1]
    cfg = build_config(
        {
            "database": {"url": f"sqlite+aiosqlite:///{workdir}/instructions.db"},
            "jwt": {"secret": "instructions-benchmark-secret-0123456789"},
            "sessions": {"poll_interval": "60s"},  # no database poll inside the measured part
            "routes": [
                {
                    "name": "bench",
                    "prefix": "/",
                    "upstream": f"http://127.0.0.1:{upstream_port}",
                    "auth": "required",
                }
            ],
        },
        env={},
    )
    app = create_app(cfg)
    runner = GatewayRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    service = app[SERVICES].auth_service()
    user = TokenUser(1, "bench@example.com", False, "Bench", "User")
    token = service.tokens.issue(user, "access", "bench-session").token
    request = (
        f"GET /bench HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    target = upstream_port if direct else port
    await asyncio.gather(
        *(client(target, request, count // CONNECTIONS) for _ in range(CONNECTIONS))
    )
    await runner.cleanup()
    upstream.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    parser.add_argument("--direct", action="store_true", help="to the upstream, no gateway")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gw-instructions.") as tmp:
        uvloop.run(main(args.count, args.direct, Path(tmp)))
