"""Gateway: the public entry. Routes by path prefix, checks tokens, limits request rates."""

from airbourne.service import Service
from airbourne.services.gateway.app import create_app

SERVICE = Service(name="gateway", create_app=create_app, uses_database=False)
