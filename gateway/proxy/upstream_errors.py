"""How an exchange with an upstream fails (``upstream_pool``).

Kept apart from ``upstream_pool`` because that module may be compiled (``gateway/native.py``):
mypyc cannot compile a subclass of ``TimeoutError``, so the error classes stay interpreted.
"""

from __future__ import annotations

__all__ = ["Stale", "UpstreamError", "UpstreamTimeout"]


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer with a usable HTTP response."""


class UpstreamTimeout(TimeoutError):
    """The upstream was slower than the timeout (connecting, answering, or sending a chunk)."""


class Stale(Exception):
    """A reused connection turned out to be closed; the request may be sent again."""
