"""End to end: a real `airbourne serve --services auth,flights` process spoken to over HTTP,
stopped and started again, with its data still there."""

import httpx
import pytest

from processes import Airbourne

pytestmark = pytest.mark.e2e


def post(base: str, path: str, body: dict, status: int = 201) -> dict:
    answer = httpx.post(f"{base}/api/v1/{path}", json=body)
    assert answer.status_code == status, answer.text
    return answer.json()["data"]


def test_signup_signin_create_flight_then_restart(tmp_path, database_url):
    env = {"AIRBOURNE_DATABASE_URL": database_url} if database_url.startswith("mysql") else {}
    server = Airbourne(tmp_path / "data", services="auth,flights", env=env).start(expect=2)
    try:
        auth, flights = server.url("auth"), server.url("flights")
        user = post(auth, "signup", {"email": "ada@example.com", "password": "password123"})
        assert "password" not in user
        token = post(auth, "signin", {"email": "ada@example.com", "password": "password123"}, 200)["token"]
        city1 = post(flights, "city", {"name": "Lisbon"})
        city2 = post(flights, "city", {"name": "Oslo"})
        dep = post(flights, "airports", {"name": "LIS", "address": "Alameda", "cityId": city1["id"]})
        arr = post(flights, "airports", {"name": "OSL", "address": "Gardermoen", "cityId": city2["id"]})
        plane = post(flights, "airplane", {"modelNumber": "A320", "capacity": 180})
        flight = post(flights, "flights", {
            "flightNumber": "AB123", "airplaneId": plane["id"],
            "departureAirportID": dep["id"], "arrivalAirportId": arr["id"],
            "departureTime": "2030-10-10T10:00:00Z", "arrivalTime": "2030-10-10T14:00:00Z",
            "price": 5000, "boardingGate": "G7",
        })
        assert flight["totalSeats"] == 180
    finally:
        assert server.stop() == 0

    again = Airbourne(tmp_path / "data", services="auth,flights", env=env, ports=server.ports)
    with again.start(expect=2):
        read = httpx.get(f"{flights}/api/v1/flights/{flight['id']}")
        assert read.status_code == 200
        assert read.json()["data"]["flightNumber"] == "AB123"
        assert read.json()["data"]["totalSeats"] == 180
        # the generated JWT secret was kept, so the token from before the restart still works
        answer = httpx.get(f"{auth}/api/v1/isAuthenticated", headers={"x-access-token": token})
        assert answer.status_code == 200 and answer.json()["data"] == user["id"]
