"""Reminder: notification tickets from HTTP and the broker, and the emails they become."""

from airbourne.service import Service
from airbourne.services.reminder.app import create_app
from airbourne.services.reminder.consumer import consume
from airbourne.services.reminder.schema import MIGRATIONS
from airbourne.services.reminder.sender import prune_periodically, send_periodically

SERVICE = Service(
    name="reminder",
    create_app=create_app,
    migrations=MIGRATIONS,
    background=[consume, send_periodically, prune_periodically],
)
