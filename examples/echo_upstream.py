"""A tiny upstream for trying the gateway: answers every request with what it received.

.venv/bin/python examples/echo_upstream.py          # listens on 127.0.0.1:9000
"""

from __future__ import annotations

import sys

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    """Method, path, query and headers of the request as JSON."""
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": dict(request.headers),
            "body_length": len(body),
        }
    )


def main() -> None:
    """Serve the echo app on 127.0.0.1 (port from argv, default 9000)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    web.run_app(app, host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
