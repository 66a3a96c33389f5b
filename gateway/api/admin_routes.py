"""``/api/v1/auth/users``: user management for admins (the service checks the caller)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from auth.schemas import UserListQuery, UserPatchInput, parse_input
from auth.views import UserView
from gateway.api.shared import access_token, auth_service, json_body, reply, user_body


def admin_user_body(user: UserView) -> dict[str, Any]:
    """A user as admins see it: the /login fields plus ``email_verified`` and ``is_active``."""
    return {**user_body(user, verified=True), "is_active": user.is_active}


def _user_id(request: web.Request) -> int:
    return int(request.match_info["user_id"])  # the route admits digits only


async def list_users(request: web.Request) -> web.Response:
    """GET /users?email_prefix=&limit=&offset=."""
    token = access_token(request)
    query = parse_input(UserListQuery, dict(request.query))
    page = await auth_service(request).list_users(token, query)
    return reply(
        request,
        {
            "users": [admin_user_body(user) for user in page.users],
            "total": page.total,
            "limit": page.limit,
            "offset": page.offset,
        },
    )


async def get_user(request: web.Request) -> web.Response:
    """GET /users/{id}."""
    user = await auth_service(request).get_user(access_token(request), _user_id(request))
    return reply(request, {"user": admin_user_body(user)})


async def patch_user(request: web.Request) -> web.Response:
    """PATCH /users/{id}: is_admin, is_active, first_name, last_name, email_verified."""
    token = access_token(request)
    changes = parse_input(UserPatchInput, await json_body(request))
    user = await auth_service(request).patch_user(token, _user_id(request), changes)
    return reply(request, {"user": admin_user_body(user)})


async def delete_user(request: web.Request) -> web.Response:
    """DELETE /users/{id}: the user and every session of it."""
    await auth_service(request).delete_user(access_token(request), _user_id(request))
    return reply(request, {"message": "user has been deleted"})


def add_admin_routes(router: web.UrlDispatcher) -> None:
    """Register these handlers on the auth sub-application's router."""
    router.add_get("/users", list_users, allow_head=False)
    router.add_get(r"/users/{user_id:\d{1,20}}", get_user, allow_head=False)
    router.add_patch(r"/users/{user_id:\d{1,20}}", patch_user)
    router.add_delete(r"/users/{user_id:\d{1,20}}", delete_user)
