"""Auth: users, password hashes, access tokens and roles."""

from airbourne.service import Service
from airbourne.services.auth.app import create_app
from airbourne.services.auth.schema import MIGRATIONS

SERVICE = Service(name="auth", create_app=create_app, migrations=MIGRATIONS)
