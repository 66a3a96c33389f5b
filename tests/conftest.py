"""Fixtures for every test: backends, SMTP sink, gateway, factories."""

from tests.fixtures.backends import backend, clean  # noqa: F401
from tests.fixtures.gateway import client, gateway_client, listener, make_config  # noqa: F401
from tests.fixtures.smtp import mailbox, smtp_server  # noqa: F401
from tests.fixtures.upstream import upstream  # noqa: F401
