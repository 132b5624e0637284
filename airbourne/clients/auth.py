"""The auth service as other services see it: who a user is."""

from __future__ import annotations

from typing import Protocol

import aiohttp
from databases import Database

from airbourne.clients.errors import TIMEOUT_SECONDS, call, unexpected
from airbourne.http import ApiError
from airbourne.runtime import Runtime
from airbourne.services.auth import store


class UserNotFound(ApiError):
    def __init__(self, user_id: int) -> None:
        super().__init__(404, "user not found", {"field": "userId", "problem": "names no user"})
        self.user_id = user_id


class AuthClient(Protocol):
    async def user_email(self, user_id: int) -> str:
        """The email of user `user_id`; raises `UserNotFound`."""


class LocalAuth:
    """Auth in this process: a direct query on its database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def user_email(self, user_id: int) -> str:
        user = await store.get_user(self.database, user_id)
        if user is None:
            raise UserNotFound(user_id)
        return user["email"]


class HttpAuth:
    """Auth in another process, through `GET /api/v1/users/{id}`."""

    def __init__(
        self, http: aiohttp.ClientSession, base_url: str, timeout: float = TIMEOUT_SECONDS
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    async def user_email(self, user_id: int) -> str:
        url = f"{self.base_url}/api/v1/users/{user_id}"
        answer = await call(self.http, "auth", "GET", url, timeout=self.timeout)
        if answer.status_code == 404:
            raise UserNotFound(user_id)
        if answer.status_code != 200:
            raise unexpected("auth", "GET", url, answer)
        return answer.json()["data"]["email"]


def auth_client(runtime: Runtime, timeout: float = TIMEOUT_SECONDS) -> AuthClient:
    """In-process when auth runs here, over HTTP to its configured URL otherwise."""
    if runtime.runs("auth"):
        return LocalAuth(runtime.database("auth"))
    return HttpAuth(runtime.http, runtime.config.services["auth"].url, timeout)
