"""Token helpers for bench/run.sh: mint, tamper, log in.

Run with the gateway's venv python: ``mint`` signs with its pyjwt (with stdlib hmac when
pyjwt is missing). The HS256 secret is read from the environment (``GATEWAY_JWT_SECRET``
unless ``--secret-env`` names another variable), never from the command line.

    tokens.py mint [--user-id N] [--admin] [--token-type access|refresh] [--exp-offset S]
    tokens.py none  [--user-id N]          # alg "none", empty signature
    tokens.py tamper TOKEN                  # payload rewritten (user 1, admin), signature kept
    tokens.py login BASE_URL EMAIL PASSWORD # prints access, refresh, user_id on 3 lines
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims(user_id: int, admin: bool, token_type: str, exp_offset: int) -> dict[str, Any]:
    """The claims of SPEC §3 for a bench user."""
    now = int(time.time())
    return {
        "user_id": user_id,
        "email": "bench@example.com",
        "is_admin": admin,
        "first_name": "Bench",
        "last_name": "Mark",
        "token_type": token_type,
        "sub": str(user_id),
        "exp": now + exp_offset,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }


def mint(secret: str, payload: dict[str, Any]) -> str:
    """An HS256 token signed with pyjwt, as the gateway would issue it.

    Without pyjwt (a python outside the venv) the same token is signed with hmac.
    """
    try:
        import jwt  # the venv's pyjwt
    except ImportError:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        mac = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256)
        return f"{header}.{body}.{_b64(mac.digest())}"
    return jwt.encode(payload, secret, algorithm="HS256")


def unsigned(payload: dict[str, Any]) -> str:
    """A token with ``alg: none`` and an empty signature (must always be refused)."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}."


def tamper(token: str) -> str:
    """Rewrite the payload (user 1, admin) and keep the original header and signature."""
    header, payload, signature = token.split(".")
    body = json.loads(_unb64(payload))
    body["user_id"] = 1 if body.get("user_id") != 1 else 2
    body["sub"] = str(body["user_id"])
    body["is_admin"] = True
    return f"{header}.{_b64(json.dumps(body, separators=(',', ':')).encode())}.{signature}"


def login(base_url: str, email: str, password: str) -> tuple[str, str, int]:
    """POST /api/v1/auth/login and return (access, refresh, user id)."""
    request = urllib.request.Request(
        base_url.rstrip("/") + "/api/v1/auth/login",
        data=json.dumps({"email": email, "password": password}).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        raise SystemExit(f"login failed: HTTP {exc.code} {detail}") from None
    except (OSError, ValueError) as exc:
        raise SystemExit(f"login failed: {exc}") from None
    access = body.get("access_token") or body.get("accessToken")
    refresh = body.get("refresh_token") or body.get("refreshToken") or ""
    user = body.get("user") or {}
    if not isinstance(access, str):
        raise SystemExit(f"login failed: no access_token in {sorted(body)}")
    user_id = user.get("id")
    if not isinstance(user_id, int):
        user_id = json.loads(_unb64(access.split(".")[1])).get("user_id", 0)
    return access, refresh, int(user_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("mint", "none"):
        sub = commands.add_parser(name)
        sub.add_argument("--user-id", type=int, default=42)
        sub.add_argument("--admin", action="store_true")
        sub.add_argument("--token-type", default="access", choices=["access", "refresh"])
        sub.add_argument("--exp-offset", type=int, default=7200, help="exp = now + this")
        sub.add_argument("--secret-env", default="GATEWAY_JWT_SECRET")
    sub = commands.add_parser("tamper")
    sub.add_argument("token")
    sub = commands.add_parser("login")
    sub.add_argument("base_url")
    sub.add_argument("email")
    sub.add_argument("password")
    args = parser.parse_args(argv)

    if args.command == "tamper":
        print(tamper(args.token))
    elif args.command == "login":
        access, refresh, user_id = login(args.base_url, args.email, args.password)
        print(access, refresh, user_id, sep="\n")
    else:
        payload = claims(args.user_id, args.admin, args.token_type, args.exp_offset)
        if args.command == "none":
            print(unsigned(payload))
        else:
            secret = os.environ.get(args.secret_env, "")
            if not secret:
                print(f"tokens.py: ${args.secret_env} is empty", file=sys.stderr)
                return 2
            print(mint(secret, payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
