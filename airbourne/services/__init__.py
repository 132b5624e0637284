"""The services one `airbourne serve` can run, in start-up order.

Adding a service is adding its `SERVICE` here; the runtime needs no change.
"""

from airbourne.service import Service
from airbourne.services import auth, flights, reminder

SERVICES: dict[str, Service] = {
    service.name: service for service in (auth.SERVICE, flights.SERVICE, reminder.SERVICE)
}
