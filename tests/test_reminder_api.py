"""The reminder's ticket routes over HTTP, on SQLite and on MariaDB."""

from __future__ import annotations

from typing import AsyncIterator

import httpx
import pytest

from airbourne.services import reminder
from support import client, make_config, started

pytestmark = pytest.mark.anyio

TICKET = {
    "subject": "Your flight AB123",
    "content": "Boarding at gate G7.",
    "recepientEmail": "ada@example.com",
    "notificationTime": "2030-10-09T10:00:00Z",
}


@pytest.fixture
async def api(tmp_path, database_url) -> AsyncIterator[httpx.AsyncClient]:
    config = make_config(tmp_path, database_url)
    async with started(config, [reminder.SERVICE]) as runtime:
        async with client(runtime.apps["reminder"]) as http:
            yield http


async def create(api: httpx.AsyncClient, **changes) -> dict:
    answer = await api.post("/api/v1/tickets", json={**TICKET, **changes})
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]


async def test_create_then_read_a_ticket(api):
    answer = await api.post("/api/v1/tickets", json=TICKET)
    assert answer.status_code == 201
    body = answer.json()
    assert body["success"] is True and body["err"] == {}
    ticket = body["data"]
    assert {k: ticket[k] for k in ("subject", "content", "recepientEmail")} == {
        k: TICKET[k] for k in ("subject", "content", "recepientEmail")
    }
    assert ticket["status"] == "PENDING"
    assert ticket["notificationTime"] == "2030-10-09T10:00:00.000Z"
    assert ticket["attempts"] == 0 and ticket["lastError"] is None
    assert {"id", "createdAt", "updatedAt"} <= ticket.keys()
    assert not {"claimToken", "messageId", "nextAttemptAt"} & ticket.keys()

    read = await api.get(f"/api/v1/tickets/{ticket['id']}")
    assert read.status_code == 200
    assert read.json()["data"] == ticket


async def test_time_with_offset_is_stored_in_utc_and_status_may_be_given(api):
    ticket = await create(api, notificationTime="2030-10-09T12:30:00+02:00", status="SUCCESS")
    assert ticket["notificationTime"] == "2030-10-09T10:30:00.000Z"
    assert ticket["status"] == "SUCCESS"


async def test_list_filters_by_status_and_pages(api):
    first = await create(api)
    second = await create(api, status="FAILED")
    third = await create(api)

    everything = (await api.get("/api/v1/tickets")).json()["data"]
    assert [t["id"] for t in everything] == [first["id"], second["id"], third["id"]]
    pending = (await api.get("/api/v1/tickets", params={"status": "PENDING"})).json()["data"]
    assert [t["id"] for t in pending] == [first["id"], third["id"]]
    page = (await api.get("/api/v1/tickets", params={"limit": 1, "offset": 1})).json()["data"]
    assert [t["id"] for t in page] == [second["id"]]
    none = await api.get("/api/v1/tickets", params={"status": "CANCELLED"})
    assert none.status_code == 200 and none.json()["data"] == []


@pytest.mark.parametrize(
    "params, field",
    [
        ({"status": "DONE"}, "status"),
        ({"status": "pending"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
    ],
)
async def test_bad_list_parameters_are_400(api, params, field):
    answer = await api.get("/api/v1/tickets", params=params)
    assert answer.status_code == 400
    assert answer.json()["err"]["field"] == field
    assert answer.json()["success"] is False


async def test_unknown_ticket_is_404_and_a_bad_id_400(api):
    missing = await api.get("/api/v1/tickets/999")
    assert missing.status_code == 404 and missing.json()["success"] is False
    bad = await api.get("/api/v1/tickets/abc")
    assert bad.status_code == 400 and bad.json()["err"]["field"] == "id"


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"subject": None}, "subject"),
        ({"subject": ""}, "subject"),
        ({"subject": "x" * 256}, "subject"),
        ({"subject": 12}, "subject"),
        ({"content": None}, "content"),
        ({"content": "x" * 10_001}, "content"),
        ({"recepientEmail": None}, "recepientEmail"),
        ({"recepientEmail": "not-an-email"}, "recepientEmail"),
        ({"recepientEmail": "a,b@example.com"}, "recepientEmail"),
        ({"notificationTime": None}, "notificationTime"),
        ({"notificationTime": "tomorrow"}, "notificationTime"),
        ({"notificationTime": 1700000000}, "notificationTime"),
        ({"status": "SENT"}, "status"),
        ({"status": 1}, "status"),
    ],
)
async def test_invalid_ticket_is_400_naming_the_field(api, changes, field):
    body = {k: v for k, v in {**TICKET, **changes}.items() if v is not None}
    answer = await api.post("/api/v1/tickets", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["err"]["field"] == field
    assert field in answer.json()["message"]
    assert (await api.get("/api/v1/tickets")).json()["data"] == []


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b""])
async def test_body_that_is_not_a_json_object_is_400(api, content):
    answer = await api.post(
        "/api/v1/tickets", content=content, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.json()["err"]["field"] == "body"


async def test_longest_content_is_kept_whole(api):
    content = "é" * 10_000
    ticket = await create(api, content=content)
    read = await api.get(f"/api/v1/tickets/{ticket['id']}")
    assert read.json()["data"]["content"] == content
