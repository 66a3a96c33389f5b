"""The effective configuration as YAML, with secrets masked (``gateway check-config``)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from config.model import GatewayConfig

MASK = "********"
_SECRET_KEYS = frozenset({"secret", "password"})
# userinfo runs up to the LAST "@" before the path: passwords may contain "@".
_URL_PASSWORD_RE = re.compile(
    r"^(?P<head>[a-z][a-z0-9+.-]*://[^:/@?#]*:)(?P<pw>[^/?#]*)(?P<tail>@)", re.I
)


def render(cfg: GatewayConfig) -> str:
    """Return the effective config as YAML; secrets and URL passwords are replaced by a mask."""
    data = cfg.model_dump(mode="json", by_alias=True)
    return str(yaml.safe_dump(_mask(data), sort_keys=False, allow_unicode=True))


def mask_url(url: str) -> str:
    """Hide the password part of ``scheme://user:password@host``."""
    return _URL_PASSWORD_RE.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", url)


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if key in _SECRET_KEYS and value is not None:
        return MASK
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value
