"""The auth service's SQL: users, their password hashes and their roles."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from databases import Database

from airbourne import db
from airbourne.http import conflict
from airbourne.services.auth.schema import NEW_USER_ROLE, roles, user_roles, users


async def create_user(database: Database, email: str, password_hash: str) -> dict[str, Any]:
    """Insert a user with the new-user role; a taken email is a 409."""
    now = db.utcnow()
    row = {"email": email, "password": password_hash, "createdAt": now, "updatedAt": now}
    async with database.connection() as conn:
        async with db.transaction(conn):
            try:
                user_id = (await db.run(conn, db.insert_sql(users, tuple(row)), row)).lastrowid
            except db.IntegrityErrors:
                raise conflict(f"a user with email {email} already exists") from None
            await db.run(conn, _GRANT_NEW_USER_ROLE, {"user": user_id, "role": NEW_USER_ROLE})
    return {"id": user_id, "email": email, "createdAt": db.iso(now), "updatedAt": db.iso(now)}


_GRANT_NEW_USER_ROLE = (
    f"INSERT INTO {user_roles.name} (userId, roleId)"
    f" SELECT :user, id FROM {roles.name} WHERE name = :role"
)


async def find_credentials(database: Database, email: str) -> tuple[int, str] | None:
    """The id and password hash of the user with `email`, if there is one."""
    row = await database.fetch_one(
        sa.select(users.c.id, users.c.password).where(users.c.email == email)
    )
    return None if row is None else (row[0], row[1])


async def get_user(database: Database, user_id: int) -> dict[str, Any] | None:
    """The user's public record `{id, email, createdAt, updatedAt}` (never the hash)."""
    row = await database.fetch_one(
        sa.select(users.c.id, users.c.email, users.c.createdAt, users.c.updatedAt)
        .where(users.c.id == user_id)
    )
    return None if row is None else db.as_dict(row)


async def user_exists(database: Database, user_id: int) -> bool:
    return await database.fetch_val(sa.select(users.c.id).where(users.c.id == user_id)) is not None


async def roles_of(database: Database, user_id: int) -> set[str] | None:
    """The names of the roles of user `user_id`, or None if there is no such user."""
    if not await user_exists(database, user_id):
        return None
    rows = await database.fetch_all(
        sa.select(roles.c.name)
        .join(user_roles, user_roles.c.roleId == roles.c.id)
        .where(user_roles.c.userId == user_id)
    )
    return {row[0] for row in rows}


async def grant_role(database: Database, email: str, role: str) -> None:
    """Give the user with `email` the role named `role`; granting it again changes nothing."""
    user_id = await database.fetch_val(sa.select(users.c.id).where(users.c.email == email))
    if user_id is None:
        raise LookupError(f"no user with email {email}")
    role_id = await database.fetch_val(sa.select(roles.c.id).where(roles.c.name == role))
    if role_id is None:
        rows = await database.fetch_all(sa.select(roles.c.name).order_by(roles.c.name))
        names = [row[0] for row in rows]
        raise LookupError(f"no role named {role}; roles are {', '.join(names)}")
    try:
        await database.execute(user_roles.insert().values(userId=user_id, roleId=role_id))
    except db.IntegrityErrors:
        pass  # the user has the role already
