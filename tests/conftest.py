"""Fixtures for every test: backends, SMTP sink, gateway, factories; the event loops."""

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop

from tests.fixtures.backends import backend, clean  # noqa: F401
from tests.fixtures.gateway import client, gateway_client, listener, make_config  # noqa: F401
from tests.fixtures.smtp import mailbox, smtp_server  # noqa: F401
from tests.fixtures.upstream import upstream  # noqa: F401


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """asyncio's loop for every test; uvloop too in modules that set ``BOTH_LOOPS = True``."""
    module = getattr(item, "module", None)
    if getattr(module, "BOTH_LOOPS", False):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}
