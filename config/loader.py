"""Read ``gateway.yaml``: YAML → ``${VAR}`` expansion → ``GATEWAY_*`` overrides → typed model.

Every problem is collected and raised at once in a :class:`ConfigError`, each message
prefixed with its key path (``routes[2].timeout: …``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.model import GatewayConfig
from config.validate import validate

_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# GATEWAY_* environment variables and the key each one overrides.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "GATEWAY_HOST": ("server", "host"),
    "GATEWAY_PORT": ("server", "port"),
    "GATEWAY_WORKERS": ("server", "workers"),
    "GATEWAY_DATABASE_URL": ("database", "url"),
    "GATEWAY_REDIS_URL": ("redis", "url"),
    "GATEWAY_JWT_SECRET": ("jwt", "secret"),
    "GATEWAY_JWT_ALGORITHM": ("jwt", "algorithm"),
    "GATEWAY_JWT_PRIVATE_KEY_FILE": ("jwt", "private_key_file"),
    "GATEWAY_EMAIL_BACKEND": ("email", "backend"),
    "GATEWAY_EMAIL_FROM": ("email", "from"),
    "GATEWAY_EMAIL_VERIFY_URL": ("email", "verify_url"),
    "GATEWAY_SMTP_HOST": ("email", "smtp", "host"),
    "GATEWAY_SMTP_PORT": ("email", "smtp", "port"),
    "GATEWAY_SMTP_USERNAME": ("email", "smtp", "username"),
    "GATEWAY_SMTP_PASSWORD": ("email", "smtp", "password"),
    "GATEWAY_SMTP_STARTTLS": ("email", "smtp", "starttls"),
    "GATEWAY_SMTP_TLS": ("email", "smtp", "tls"),
    "GATEWAY_BCRYPT_COST": ("auth", "password", "bcrypt_cost"),
    "GATEWAY_LOG_LEVEL": ("logging", "level"),
}


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` lists every reason with its key path."""

    def __init__(self, problems: list[str], source: str = "gateway.yaml") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))

    def __str__(self) -> str:
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        return f"invalid configuration in {self.source}:\n{lines}"


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> GatewayConfig:
    """Load, expand and validate a config file (``None``: defaults only)."""
    env = os.environ if env is None else env
    source = str(path) if path is not None else "<defaults>"
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"cannot read file: {exc.strerror or exc}"], source) from None
        except UnicodeDecodeError:
            raise ConfigError(["the file is not valid UTF-8"], source) from None
        except yaml.YAMLError as exc:
            raise ConfigError([f"not valid YAML: {exc}"], source) from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(["the top level must be a mapping of sections"], source)
    return build_config(raw, env=env, overrides=overrides, source=source)


def build_config(
    raw: dict[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    source: str = "<dict>",
) -> GatewayConfig:
    """Validate an already-parsed document (used by :func:`load_config` and by tests)."""
    env = os.environ if env is None else env
    problems: list[str] = []
    data = _expand(raw, env, "", problems)
    for var, key_path in ENV_OVERRIDES.items():
        if var in env:
            _set_path(data, key_path, env[var], problems, var)
    for dotted, value in (overrides or {}).items():
        _set_path(data, tuple(dotted.split(".")), value, problems, dotted)
    if problems:
        raise ConfigError(problems, source)
    try:
        cfg = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_format_error(err) for err in exc.errors()], source) from None
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _expand(value: Any, env: Mapping[str, str], where: str, problems: list[str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{where or '<root>'}: keys must be strings, got {key!r}")
                continue
            out[key] = _expand(item, env, f"{where}.{key}" if where else key, problems)
        return out
    if isinstance(value, list):
        return [_expand(item, env, f"{where}[{i}]", problems) for i, item in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            found = env.get(name)
            if found:
                return found
            return default if default is not None else ""

        return _VAR_RE.sub(substitute, value)
    return value


def _set_path(
    data: dict[str, Any], path: tuple[str, ...], value: Any, problems: list[str], origin: str
) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            problems.append(f"{'.'.join(path)}: cannot apply {origin}: parent is not a mapping")
            return
        node = child
    node[path[-1]] = value


def _format_error(err: Any) -> str:
    loc = ""
    for part in err["loc"]:
        if isinstance(part, int):
            loc += f"[{part}]"
        elif part.startswith(("function-", "constrained-")) or (
            part in ("str", "int", "bool", "float")
            and err["type"] != "extra_forbidden"
            and part == err["loc"][-1]
        ):
            continue  # a union branch or validator name, not a key
        else:
            loc += f".{part}" if loc else part
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    elif err["type"] == "missing":
        message = "required key is missing"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return f"{loc or '<root>'}: {message}"
