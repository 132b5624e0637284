"""What a service is, to the runtime: a name, an app, its migrations, its background tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable, Sequence

from starlette.applications import Starlette

from airbourne.db import Migration

if TYPE_CHECKING:
    from airbourne.runtime import Runtime


@dataclass(frozen=True)
class Service:
    name: str
    create_app: Callable[["Runtime"], Starlette]
    migrations: Sequence[Migration] = ()
    background: Sequence[Callable[["Runtime"], Awaitable[None]]] = ()
    """Long-running tasks started with the service and cancelled at shutdown."""
    uses_database: bool = True
