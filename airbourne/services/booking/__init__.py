"""Booking: seats on flights, taken atomically, and the messages each booking sends."""

from airbourne.service import Service
from airbourne.services.booking.app import create_app
from airbourne.services.booking.outbox import prune_periodically, relay
from airbourne.services.booking.schema import MIGRATIONS

SERVICE = Service(
    name="booking", create_app=create_app, migrations=MIGRATIONS,
    background=[relay, prune_periodically],
)
