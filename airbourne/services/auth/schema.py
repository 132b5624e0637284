"""The auth service's tables and the migrations that build them."""

from __future__ import annotations

import sqlalchemy as sa
from databases.core import Connection

from airbourne.db import Migration, create_tables, record_columns

ROLES = ("ADMIN", "AIRLINE_BUSINESS", "CUSTOMER")
NEW_USER_ROLE = "CUSTOMER"

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    *record_columns(),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("password", sa.String(255), nullable=False),
)
"""`password` holds the argon2 hash, never the password."""

roles = sa.Table(
    "roles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(32), nullable=False, unique=True),
)

user_roles = sa.Table(
    "user_roles",
    metadata,
    sa.Column("userId", sa.Integer, sa.ForeignKey(users.c.id, ondelete="CASCADE")),
    sa.Column("roleId", sa.Integer, sa.ForeignKey(roles.c.id, ondelete="CASCADE")),
    sa.PrimaryKeyConstraint("userId", "roleId"),
)
"""One row per role a user has; the primary key keeps each pair unique."""


async def _seed_roles(conn: Connection, dialect_name: str) -> None:
    """Insert the roles that are missing, so it can run again safely."""
    existing = {row[0] for row in await conn.fetch_all(sa.select(roles.c.name))}
    for name in ROLES:
        if name not in existing:
            await conn.execute(roles.insert().values(name=name))


MIGRATIONS = [
    Migration(1, "users, roles and user_roles tables", create_tables(users, roles, user_roles)),
    Migration(2, "the ADMIN, AIRLINE_BUSINESS and CUSTOMER roles", _seed_roles),
]
