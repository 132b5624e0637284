"""The flights service: cities, airports, airplanes, flights and their seat inventory."""

from airbourne.service import Service
from airbourne.services.flights.app import create_app, prune_periodically
from airbourne.services.flights.schema import MIGRATIONS

SERVICE = Service(
    name="flights", create_app=create_app, migrations=MIGRATIONS,
    background=[prune_periodically],
)
