"""The flights service over HTTP: cities, airplanes, airports and flights, each route's
success and failure, with the envelope of API.md.

The record flows, the 409 paths, the filters and the prefix search run on SQLite and on
MariaDB (`api`); the input checks, which never reach SQL, run on SQLite only (`local_api`).
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest

from airbourne.services.flights import SERVICE
from support import client, make_config, started

pytestmark = pytest.mark.anyio

RECORD_KEYS = {"id", "createdAt", "updatedAt"}
FLIGHT_KEYS = RECORD_KEYS | {
    "flightNumber", "airplaneId", "departureAirportID", "arrivalAirportId", "departureTime",
    "arrivalTime", "price", "boardingGate", "totalSeats",
}


@contextlib.asynccontextmanager
async def flights_api(
    tmp_path: Path, database_url: str | None
) -> AsyncIterator[httpx.AsyncClient]:
    async with started(make_config(tmp_path, database_url), [SERVICE]) as runtime:
        async with client(runtime.apps["flights"]) as http:
            yield http


@pytest.fixture
async def api(tmp_path: Path, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The flights app on a fresh database: once on SQLite, once on MariaDB."""
    async with flights_api(tmp_path, database_url) as http:
        yield http


@pytest.fixture
async def local_api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The flights app on the embedded SQLite default."""
    async with flights_api(tmp_path, None) as http:
        yield http


def succeeded(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["success"] is True and body["err"] == {} and body["message"], body
    return body["data"]


def failed(answer: httpx.Response, status: int, field: str | None = None) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["success"] is False and body["data"] == {} and body["message"], body
    if field is not None:
        assert body["err"]["field"] == field, body
    return body["message"]


async def post(http: httpx.AsyncClient, path: str, body: dict) -> dict:
    return succeeded(await http.post(f"/api/v1/{path}", json=body), 201)


async def new_city(http: httpx.AsyncClient, name: str | None = None) -> dict:
    return await post(http, "city", {"name": name or f"City {uuid.uuid4().hex[:8]}"})


async def new_airport(http: httpx.AsyncClient, city_id: int | None = None) -> dict:
    if city_id is None:
        city_id = (await new_city(http))["id"]
    name = f"Airport {uuid.uuid4().hex[:8]}"
    return await post(http, "airports", {"name": name, "address": "Main road 1", "cityId": city_id})


async def new_airplane(http: httpx.AsyncClient, capacity: int = 150) -> dict:
    return await post(http, "airplane", {"modelNumber": "Boeing 737", "capacity": capacity})


def flight_body(airplane: dict, departure: dict, arrival: dict, **fields: Any) -> dict:
    return {
        "flightNumber": f"FN{uuid.uuid4().hex[:8]}",
        "airplaneId": airplane["id"],
        "departureAirportID": departure["id"],
        "arrivalAirportId": arrival["id"],
        "departureTime": "2030-10-10T10:00:00Z",
        "arrivalTime": "2030-10-10T12:00:00Z",
        "price": 5000,
        **fields,
    }


async def new_flight(http: httpx.AsyncClient, **fields: Any) -> dict:
    airplane = await new_airplane(http)
    departure, arrival = await new_airport(http), await new_airport(http)
    return await post(http, "flights", flight_body(airplane, departure, arrival, **fields))


# --- record flows, both databases ----------------------------------------------------------


async def test_city_create_read_update_delete(api: httpx.AsyncClient) -> None:
    city = await post(api, "city", {"name": "Delhi"})
    assert set(city) == RECORD_KEYS | {"name"} and city["name"] == "Delhi"
    assert city["createdAt"].endswith("Z") and city["createdAt"] == city["updatedAt"]

    assert succeeded(await api.get(f"/api/v1/city/{city['id']}")) == city
    renamed = succeeded(await api.patch(f"/api/v1/city/{city['id']}", json={"name": "New Delhi"}))
    assert renamed["name"] == "New Delhi" and renamed["createdAt"] == city["createdAt"]
    assert renamed["updatedAt"] >= city["updatedAt"]
    assert succeeded(await api.get("/api/v1/city")) == [renamed]

    assert succeeded(await api.delete(f"/api/v1/city/{city['id']}")) is True
    for answer in (
        await api.get(f"/api/v1/city/{city['id']}"),
        await api.patch(f"/api/v1/city/{city['id']}", json={"name": "Gone"}),
        await api.delete(f"/api/v1/city/{city['id']}"),
    ):
        assert failed(answer, 404) == f"city {city['id']} not found"
    assert succeeded(await api.get("/api/v1/city")) == []


async def test_airplane_create_read_update_delete(api: httpx.AsyncClient) -> None:
    default = await post(api, "airplane", {"modelNumber": "A320"})
    assert set(default) == RECORD_KEYS | {"modelNumber", "capacity"}
    assert default["capacity"] == 200
    bigger = await post(api, "airplane", {"modelNumber": "A320", "capacity": 1_000_000})
    assert bigger["capacity"] == 1_000_000  # a model number may repeat

    url = f"/api/v1/airplane/{default['id']}"
    changed = succeeded(await api.patch(url, json={"capacity": 180}))
    assert (changed["modelNumber"], changed["capacity"]) == ("A320", 180)
    renamed = succeeded(await api.patch(url, json={"modelNumber": "A321"}))
    assert (renamed["modelNumber"], renamed["capacity"]) == ("A321", 180)
    assert succeeded(await api.get(url)) == renamed
    assert [plane["id"] for plane in succeeded(await api.get("/api/v1/airplane"))] == [
        default["id"], bigger["id"],
    ]

    assert succeeded(await api.delete(f"/api/v1/airplane/{bigger['id']}")) is True
    failed(await api.get(f"/api/v1/airplane/{bigger['id']}"), 404)


async def test_airport_create_read_update_delete(api: httpx.AsyncClient) -> None:
    delhi, mumbai = await new_city(api), await new_city(api)
    body = {"name": "IGI", "address": "Palam", "cityId": delhi["id"]}
    airport = await post(api, "airports", body)
    assert set(airport) == RECORD_KEYS | {"name", "address", "cityId"}
    assert (airport["name"], airport["address"], airport["cityId"]) == ("IGI", "Palam", delhi["id"])
    bare = await post(api, "airports", {"name": "Safdarjung", "cityId": delhi["id"]})
    assert bare["address"] is None

    moved = succeeded(
        await api.patch(f"/api/v1/airports/{bare['id']}", json={"cityId": mumbai["id"]})
    )
    assert (moved["name"], moved["cityId"]) == ("Safdarjung", mumbai["id"])
    assert succeeded(await api.get(f"/api/v1/airports/{bare['id']}")) == moved
    assert succeeded(await api.get("/api/v1/airports")) == [airport, moved]

    assert succeeded(await api.delete(f"/api/v1/airports/{airport['id']}")) is True
    failed(await api.get(f"/api/v1/airports/{airport['id']}"), 404)


async def test_flight_create_read_update_delete(api: httpx.AsyncClient) -> None:
    airplane = await new_airplane(api, capacity=180)
    departure, arrival = await new_airport(api), await new_airport(api)
    body = flight_body(
        airplane, departure, arrival, departureTime="2030-10-10T12:00:00+02:00",
        arrivalTime="2030-10-10T14:30:00", price=0, boardingGate="G7", totalSeats=5,
    )
    flight = await post(api, "flights", body)
    assert set(flight) == FLIGHT_KEYS  # the internal capacity column stays inside
    assert flight["totalSeats"] == 180  # the airplane's capacity, whatever the body said
    assert flight["departureTime"] == "2030-10-10T10:00:00.000Z"  # zones become UTC
    assert flight["arrivalTime"] == "2030-10-10T14:30:00.000Z"  # no zone means UTC
    assert (flight["price"], flight["boardingGate"]) == (0, "G7")
    assert flight["departureAirportID"] == departure["id"]
    assert flight["arrivalAirportId"] == arrival["id"]
    assert succeeded(await api.get(f"/api/v1/flights/{flight['id']}")) == flight

    changed = succeeded(await api.patch(
        f"/api/v1/flights/{flight['id']}",
        json={"price": 7500, "boardingGate": "B2", "departureTime": "2030-10-10T09:00:00Z"},
    ))
    assert (changed["price"], changed["boardingGate"]) == (7500, "B2")
    assert changed["departureTime"] == "2030-10-10T09:00:00.000Z"
    assert changed["totalSeats"] == 180 and changed["flightNumber"] == flight["flightNumber"]
    assert succeeded(await api.get("/api/v1/flights")) == [changed]

    assert succeeded(await api.delete(f"/api/v1/flights/{flight['id']}")) is True
    failed(await api.get(f"/api/v1/flights/{flight['id']}"), 404)
    assert succeeded(await api.delete(f"/api/v1/airplane/{airplane['id']}")) is True


async def test_names_and_flight_numbers_are_unique(api: httpx.AsyncClient) -> None:
    await new_city(api, "Pune")
    other = await new_city(api, "Goa")
    assert "Pune" in failed(await api.post("/api/v1/city", json={"name": "Pune"}), 409)
    failed(await api.patch(f"/api/v1/city/{other['id']}", json={"name": "Pune"}), 409)
    assert succeeded(await api.get(f"/api/v1/city/{other['id']}"))["name"] == "Goa"

    first, second = await new_airport(api), await new_airport(api)
    clash = {"name": first["name"], "cityId": first["cityId"]}
    failed(await api.post("/api/v1/airports", json=clash), 409)
    failed(await api.patch(f"/api/v1/airports/{second['id']}", json={"name": first["name"]}), 409)

    flight, another = await new_flight(api), await new_flight(api)
    airplane = await new_airplane(api)
    body = flight_body(airplane, first, second, flightNumber=flight["flightNumber"])
    assert flight["flightNumber"] in failed(await api.post("/api/v1/flights", json=body), 409)
    number = {"flightNumber": flight["flightNumber"]}
    failed(await api.patch(f"/api/v1/flights/{another['id']}", json=number), 409)
    assert len(succeeded(await api.get("/api/v1/flights"))) == 2


async def test_records_in_use_cannot_be_deleted(api: httpx.AsyncClient) -> None:
    city = await new_city(api)
    departure, arrival = await new_airport(api, city["id"]), await new_airport(api, city["id"])
    airplane = await new_airplane(api)
    flight = await post(api, "flights", flight_body(airplane, departure, arrival))

    assert "airports" in failed(await api.delete(f"/api/v1/city/{city['id']}"), 409)
    for airport in (departure, arrival):
        assert "flights" in failed(await api.delete(f"/api/v1/airports/{airport['id']}"), 409)
    assert "flights" in failed(await api.delete(f"/api/v1/airplane/{airplane['id']}"), 409)
    succeeded(await api.get(f"/api/v1/city/{city['id']}"))

    succeeded(await api.delete(f"/api/v1/flights/{flight['id']}"))
    succeeded(await api.delete(f"/api/v1/airplane/{airplane['id']}"))
    succeeded(await api.delete(f"/api/v1/airports/{departure['id']}"))
    failed(await api.delete(f"/api/v1/city/{city['id']}"), 409)
    succeeded(await api.delete(f"/api/v1/airports/{arrival['id']}"))
    succeeded(await api.delete(f"/api/v1/city/{city['id']}"))


async def test_flight_filters(api: httpx.AsyncClient) -> None:
    airplane = await new_airplane(api)
    a, b, c = await new_airport(api), await new_airport(api), await new_airport(api)
    ab = await post(api, "flights", flight_body(airplane, a, b, price=100))
    ac = await post(api, "flights", flight_body(airplane, a, c, price=300))
    bc = await post(api, "flights", flight_body(airplane, b, c, price=500))
    ca = await post(api, "flights", flight_body(airplane, c, a, price=700))

    async def found(query: str) -> list[int]:
        return [flight["id"] for flight in succeeded(await api.get(f"/api/v1/flights?{query}"))]

    assert await found("") == [ab["id"], ac["id"], bc["id"], ca["id"]]
    assert await found(f"arrivalAirportId={c['id']}") == [ac["id"], bc["id"]]
    assert await found(f"departureAirportID={a['id']}") == [ab["id"], ac["id"]]
    assert await found("minPrice=300") == [ac["id"], bc["id"], ca["id"]]
    assert await found("maxPrice=300") == [ab["id"], ac["id"]]
    assert await found("minPrice=200&maxPrice=600") == [ac["id"], bc["id"]]
    route = f"departureAirportID={a['id']}&arrivalAirportId={c['id']}"
    assert await found(f"{route}&maxPrice=300") == [ac["id"]]
    assert await found(f"{route}&minPrice=301") == []
    assert await found("minPrice=800") == []
    assert len(await found("arrivalAirportId=&departureAirportID=&minPrice=&maxPrice=")) == 4


async def test_city_prefix_search(api: httpx.AsyncClient) -> None:
    names = ["Delhi", "Delaware", "New Delhi", "100% Town", "1000 Town", "a_b", "axb", "x/y", "xy"]
    for name in names:
        await new_city(api, name)

    async def found(prefix: str) -> list[str]:
        answer = await api.get("/api/v1/city", params={"name": prefix})
        return [city["name"] for city in succeeded(answer)]

    assert await found("Del") == ["Delhi", "Delaware"]
    assert await found("New") == ["New Delhi"]
    assert await found("100%") == ["100% Town"]  # % and _ match themselves only
    assert await found("a_") == ["a_b"]
    assert await found("x/") == ["x/y"]
    assert await found("Nowhere") == []
    assert await found("") == names


# --- input checks, SQLite ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["city", "airplane", "airports", "flights"])
@pytest.mark.parametrize("content", [b"{", b"[1, 2]", b'"text"', b"null", b"", b"\xff"])
async def test_bodies_must_be_json_objects(
    local_api: httpx.AsyncClient, path: str, content: bytes
) -> None:
    failed(await local_api.post(f"/api/v1/{path}", content=content), 400, "body")
    failed(await local_api.patch(f"/api/v1/{path}/1", content=content), 400, "body")


LONG = "x" * 256

BAD_FIELDS = [
    ("city", {}, "name"),
    ("city", {"name": None}, "name"),
    ("city", {"name": 42}, "name"),
    ("city", {"name": "   "}, "name"),
    ("city", {"name": LONG}, "name"),
    ("airplane", {}, "modelNumber"),
    ("airplane", {"modelNumber": LONG}, "modelNumber"),
    ("airplane", {"modelNumber": "A320", "capacity": 0}, "capacity"),
    ("airplane", {"modelNumber": "A320", "capacity": -5}, "capacity"),
    ("airplane", {"modelNumber": "A320", "capacity": 1_000_001}, "capacity"),
    ("airplane", {"modelNumber": "A320", "capacity": 1.5}, "capacity"),
    ("airplane", {"modelNumber": "A320", "capacity": "many"}, "capacity"),
    ("airplane", {"modelNumber": "A320", "capacity": True}, "capacity"),
    ("airplane", {"modelNumber": "A320", "capacity": "200"}, "capacity"),  # a string
    ("airports", {"cityId": 1}, "name"),
    ("airports", {"name": "IGI"}, "cityId"),
    ("airports", {"name": "IGI", "cityId": "one"}, "cityId"),
    ("airports", {"name": "IGI", "cityId": 0}, "cityId"),
    ("airports", {"name": "IGI", "cityId": 1, "address": LONG}, "address"),
    ("airports", {"name": "IGI", "cityId": 1, "address": ["street"]}, "address"),
]

FLIGHT = {
    "flightNumber": "AI101", "airplaneId": 1, "departureAirportID": 1, "arrivalAirportId": 2,
    "departureTime": "2030-10-10T10:00:00Z", "arrivalTime": "2030-10-10T12:00:00Z",
    "price": 5000,
}
BAD_FIELDS += [("flights", {k: v for k, v in FLIGHT.items() if k != name}, name) for name in FLIGHT]
BAD_FIELDS += [
    ("flights", {**FLIGHT, "flightNumber": LONG}, "flightNumber"),
    ("flights", {**FLIGHT, "boardingGate": LONG}, "boardingGate"),
    ("flights", {**FLIGHT, "airplaneId": "abc"}, "airplaneId"),
    ("flights", {**FLIGHT, "departureAirportID": -1}, "departureAirportID"),
    ("flights", {**FLIGHT, "arrivalAirportId": 2**31}, "arrivalAirportId"),
    ("flights", {**FLIGHT, "price": -1}, "price"),
    ("flights", {**FLIGHT, "price": 10.5}, "price"),
    ("flights", {**FLIGHT, "price": "cheap"}, "price"),
    ("flights", {**FLIGHT, "price": "5000"}, "price"),
    ("flights", {**FLIGHT, "airplaneId": "1"}, "airplaneId"),
    ("flights", {**FLIGHT, "departureTime": "tomorrow"}, "departureTime"),
    ("flights", {**FLIGHT, "arrivalTime": 1760000000}, "arrivalTime"),
    ("flights", {**FLIGHT, "arrivalTime": "2030-10-10T10:00:00Z"}, "arrivalTime"),
    ("flights", {**FLIGHT, "arrivalTime": "2030-10-10T09:00:00Z"}, "arrivalTime"),
    ("flights", {**FLIGHT, "arrivalAirportId": 1}, "arrivalAirportId"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD_FIELDS)
async def test_bad_fields_are_400_naming_the_field(
    local_api: httpx.AsyncClient, path: str, body: dict, field: str
) -> None:
    message = failed(await local_api.post(f"/api/v1/{path}", json=body), 400, field)
    assert field in message


@pytest.mark.parametrize("path", ["city", "airplane", "airports", "flights"])
async def test_ids_in_the_path(local_api: httpx.AsyncClient, path: str) -> None:
    for bad in ("abc", "0", "-3", "1.5", "99999999999", "1e3"):
        for method in ("GET", "PATCH", "DELETE"):
            answer = await local_api.request(method, f"/api/v1/{path}/{bad}", json={"name": "x"})
            failed(answer, 400, "id")
    valid_patch = {"name": "x", "modelNumber": "x", "price": 1}
    for method in ("GET", "PATCH", "DELETE"):
        answer = await local_api.request(method, f"/api/v1/{path}/12345", json=valid_patch)
        assert failed(answer, 404).endswith("12345 not found")


async def test_referenced_records_must_exist(local_api: httpx.AsyncClient) -> None:
    answer = await local_api.post("/api/v1/airports", json={"name": "IGI", "cityId": 99})
    assert failed(answer, 404, "cityId") == "cityId: city 99 not found"
    airport = await new_airport(local_api)
    answer = await local_api.patch(f"/api/v1/airports/{airport['id']}", json={"cityId": 99})
    failed(answer, 404, "cityId")

    airplane, other = await new_airplane(local_api), await new_airport(local_api)
    body = flight_body(airplane, airport, other)
    for field in ("airplaneId", "departureAirportID", "arrivalAirportId"):
        failed(await local_api.post("/api/v1/flights", json={**body, field: 99}), 404, field)
    flight = await post(local_api, "flights", body)
    for field in ("airplaneId", "departureAirportID", "arrivalAirportId"):
        answer = await local_api.patch(f"/api/v1/flights/{flight['id']}", json={field: 99})
        failed(answer, 404, field)
    assert succeeded(await local_api.get(f"/api/v1/flights/{flight['id']}")) == flight


async def test_patch_rules(local_api: httpx.AsyncClient) -> None:
    flight = await new_flight(local_api)  # 10:00 to 12:00
    url = f"/api/v1/flights/{flight['id']}"
    failed(await local_api.patch(url, json={}), 400, "body")
    failed(await local_api.patch(url, json={"unknown": 1}), 400, "body")
    failed(await local_api.patch(url, json={"totalSeats": 500}), 400, "totalSeats")
    failed(await local_api.patch(url, json={"totalSeats": 500, "price": 1}), 400, "totalSeats")
    too_early = {"arrivalTime": "2030-10-10T09:00:00Z"}
    too_late = {"departureTime": "2030-10-10T13:00:00Z"}
    for change in (too_early, too_late):  # each checked against the stored other end
        failed(await local_api.patch(url, json=change), 400, "arrivalTime")
    same = {"arrivalAirportId": flight["departureAirportID"]}
    failed(await local_api.patch(url, json=same), 400, "arrivalAirportId")
    failed(await local_api.patch(url, json={"price": -1}), 400, "price")
    assert succeeded(await local_api.get(url)) == flight

    later = {"departureTime": "2030-10-11T10:00:00Z", "arrivalTime": "2030-10-11T12:00:00Z"}
    moved = succeeded(await local_api.patch(url, json=later))
    assert (moved["departureTime"], moved["arrivalTime"]) == (
        "2030-10-11T10:00:00.000Z", "2030-10-11T12:00:00.000Z",
    )

    city = await new_city(local_api)
    failed(await local_api.patch(f"/api/v1/city/{city['id']}", json={}), 400, "body")
    failed(await local_api.patch(f"/api/v1/city/{city['id']}", json={"name": LONG}), 400, "name")
    airplane = await new_airplane(local_api)
    answer = await local_api.patch(f"/api/v1/airplane/{airplane['id']}", json={"capacity": 0})
    failed(answer, 400, "capacity")


async def test_list_pages_and_bad_queries(local_api: httpx.AsyncClient) -> None:
    ids = [(await new_airplane(local_api))["id"] for _ in range(5)]

    async def page(query: str) -> list[int]:
        answer = await local_api.get(f"/api/v1/airplane?{query}")
        return [plane["id"] for plane in succeeded(answer)]

    assert await page("limit=2") == ids[:2]
    assert await page("limit=2&offset=2") == ids[2:4]
    assert await page("offset=4") == ids[4:]
    assert await page("offset=10") == []
    for query, field in [
        ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=two", "limit"),
        ("offset=-1", "offset"), ("offset=1.5", "offset"),
    ]:
        failed(await local_api.get(f"/api/v1/airplane?{query}"), 400, field)
    for query, field in [
        ("minPrice=abc", "minPrice"), ("maxPrice=-1", "maxPrice"),
        ("arrivalAirportId=0", "arrivalAirportId"),
        ("departureAirportID=1.5", "departureAirportID"),
        ("limit=5000", "limit"),
    ]:
        failed(await local_api.get(f"/api/v1/flights?{query}"), 400, field)
    failed(await local_api.get("/api/v1/city", params={"name": LONG}), 400, "name")


async def test_unknown_routes_and_methods(local_api: httpx.AsyncClient) -> None:
    failed(await local_api.get("/api/v1/nowhere"), 404)
    failed(await local_api.get("/api/v2/city"), 404)
    failed(await local_api.put("/api/v1/city/1", json={"name": "x"}), 405)
    failed(await local_api.delete("/api/v1/city"), 405)


def seed_flight_times(index: int) -> tuple[str, str]:
    """The departure and arrival the seed's last k6 script writes for flight `index`, as its
    JavaScript template literals produce them: hours not padded, arrivals up to T25."""
    day = 10 + index // 24
    return (f"2025-10-{day}T{index % 24}:00:00Z", f"2025-10-{day}T{index % 24 + 2}:00:00Z")


async def test_the_seed_scripts_flight_times_are_accepted(local_api: httpx.AsyncClient) -> None:
    """The old platform's load test must work unchanged: all 50 of its flights are created,
    an hour past 23 rolling into the next day as JavaScript and MySQL read it."""
    airplane = await new_airplane(local_api)
    departure, arrival = await new_airport(local_api), await new_airport(local_api)
    created = []
    for index in range(50):
        leaves, lands = seed_flight_times(index)
        body = flight_body(airplane, departure, arrival, departureTime=leaves, arrivalTime=lands)
        created.append(await post(local_api, "flights", body))
    assert created[0]["departureTime"] == "2025-10-10T00:00:00.000Z"
    assert created[22]["arrivalTime"] == "2025-10-11T00:00:00.000Z"  # T24:00
    assert created[23]["departureTime"] == "2025-10-10T23:00:00.000Z"
    assert created[23]["arrivalTime"] == "2025-10-11T01:00:00.000Z"  # T25:00
    assert created[49]["departureTime"] == "2025-10-12T01:00:00.000Z"
