"""The services one `airbourne serve` can run, in start-up order.

Adding a service is adding its `SERVICE` here; the runtime needs no change. The gateway
comes last: it forwards to the apps built before it.
"""

from airbourne.service import Service
from airbourne.services import auth, booking, flights, gateway, reminder

SERVICES: dict[str, Service] = {
    service.name: service
    for service in (auth.SERVICE, flights.SERVICE, booking.SERVICE, reminder.SERVICE, gateway.SERVICE)
}
