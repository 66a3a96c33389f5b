"""``gateway serve | migrate | check-config | users create`` (argparse only; no rules here)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from config import (
    KEY_PAIR_ALGORITHMS,
    ConfigError,
    GatewayConfig,
    load_config,
    mask_url,
    render,
)

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
DEFAULT_CONFIG = os.environ.get("GATEWAY_CONFIG", "gateway.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Auth gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", default=DEFAULT_CONFIG, help="path to gateway.yaml (env GATEWAY_CONFIG)"
        )
        return p

    with_config(sub.add_parser("serve", help="run the gateway"))
    with_config(sub.add_parser("migrate", help="apply database migrations"))
    with_config(sub.add_parser("check-config", help="validate and print the effective config"))
    users = sub.add_parser("users", help="manage users").add_subparsers(
        dest="users_command", required=True
    )
    create = with_config(users.add_parser("create", help="create a user"))
    create.add_argument("--email", required=True)
    create.add_argument("--password", required=True)
    create.add_argument("--admin", action="store_true", help="make the user an admin")
    create.add_argument("--verified", action="store_true", help="mark the email verified")
    create.add_argument("--first-name", default="")
    create.add_argument("--last-name", default="")
    create.add_argument("--username", default=None, help="default: the email address")
    update = with_config(users.add_parser("update", help="change a user's admin flag or state"))
    update.add_argument("--email", required=True)
    admin = update.add_mutually_exclusive_group()
    admin.add_argument("--admin", dest="admin", action="store_true", default=None)
    admin.add_argument("--no-admin", dest="admin", action="store_false")
    active = update.add_mutually_exclusive_group()
    active.add_argument("--active", dest="active", action="store_true", default=None)
    active.add_argument(
        "--inactive", dest="active", action="store_false", help="also ends every session"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gateway`` console script."""
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    _setup_logging(cfg)
    if args.command in ("check-config", "serve"):
        from auth.templates import MailTemplates

        try:  # a template that could not be rendered stops start-up, not a send
            MailTemplates.load(cfg.email.templates_dir)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_CONFIG
    if args.command != "migrate" and (
        cfg.jwt.algorithm in KEY_PAIR_ALGORITHMS or not cfg.uses_sqlite
    ):  # the signing key, read now (the embedded database's generated secret is made later)
        from auth.keys import SecretUnavailable, load_signing_keys

        try:
            load_signing_keys(cfg)
        except SecretUnavailable as exc:
            print(str(ConfigError([str(exc)], args.config)), file=sys.stderr)
            return EXIT_CONFIG
    if args.command == "check-config":
        sys.stdout.write(render(cfg))
        print(f"# {args.config}: OK", file=sys.stderr)
        return EXIT_OK
    if args.command == "migrate":
        return _migrate(cfg)
    if args.command == "users" and args.users_command == "update":
        return _update_user(cfg, args)
    if args.command == "users":
        return _create_user(cfg, args)
    from gateway.server import serve

    return serve(cfg)


def _setup_logging(cfg: GatewayConfig) -> None:
    logging.basicConfig(
        level=cfg.logging.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if cfg.logging.level != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _migrate(cfg: GatewayConfig) -> int:
    from auth.db import migrate

    try:
        asyncio.run(migrate(cfg.database.url))
    except Exception as exc:
        print(f"migration failed on {mask_url(cfg.database.url)}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"database at {mask_url(cfg.database.url)} is at the latest revision")
    return EXIT_OK


def _update_user(cfg: GatewayConfig, args: argparse.Namespace) -> int:
    from auth.errors import AuthError
    from gateway.admin import update_user

    if args.admin is None and args.active is None:
        print(
            "nothing to change: give --admin/--no-admin and/or --active/--inactive", file=sys.stderr
        )
        return EXIT_CONFIG
    try:
        user = asyncio.run(update_user(cfg, args.email, is_admin=args.admin, is_active=args.active))
    except AuthError as exc:
        print("cannot update user: " + "; ".join(exc.details), file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        print(f"cannot update user: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    state = "active" if user.is_active else "inactive"
    role = "admin" if user.is_admin else "not admin"
    print(f"updated {user.email} (id {user.id}): {role}, {state}")
    return EXIT_OK


def _create_user(cfg: GatewayConfig, args: argparse.Namespace) -> int:
    from auth.errors import AuthError
    from auth.schemas import CreateUserInput, parse_input
    from gateway.admin import create_user

    try:
        data = parse_input(
            CreateUserInput,
            {
                "email": args.email,
                "password": args.password,
                "username": args.username or args.email,
                "first_name": args.first_name,
                "last_name": args.last_name,
                "is_admin": args.admin,
                "email_verified": args.verified,
            },
            cfg.auth.password,
        )
        user = asyncio.run(create_user(cfg, data))
    except AuthError as exc:
        print("cannot create user: " + "; ".join(exc.details), file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        print(f"cannot create user: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    role = "admin" if user.is_admin else "user"
    print(f"created {role} {user.email} with id {user.id}")
    return EXIT_OK
