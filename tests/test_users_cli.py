"""`airbourne users grant EMAIL ROLE`: the operator's way to make an administrator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from airbourne.cli import main
from airbourne.services.auth import SERVICE
from support import client, make_config, started

PASSWORD = "password123"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data folder both the test's auth service and the command use."""
    for name in list(os.environ):
        if name.startswith("AIRBOURNE_") and not name.startswith("AIRBOURNE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AIRBOURNE_SERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AIRBOURNE_SERVER_LOG_LEVEL", "warning")
    return tmp_path / "data"


def is_admin_after_signup(
    tmp_path: Path, email: str, grant: list[str] | None = None
) -> tuple[int | None, bool]:
    """Sign `email` up, run `airbourne users grant ...grant` if given (between two starts of the
    service, as an operator would), then ask isAdmin. Returns the command's exit status."""

    async def signup() -> tuple[int, str]:
        async with started(make_config(tmp_path), [SERVICE]) as runtime:
            async with client(runtime.apps["auth"]) as http:
                body = {"email": email, "password": PASSWORD}
                user = (await http.post("/api/v1/signup", json=body)).json()["data"]
                token = (await http.post("/api/v1/signin", json=body)).json()["data"]["token"]
                return user["id"], token

    async def is_admin(user_id: int, token: str) -> bool:
        async with started(make_config(tmp_path), [SERVICE]) as runtime:
            async with client(runtime.apps["auth"]) as http:
                answer = await http.get(
                    "/api/v1/isAdmin", params={"id": user_id}, headers={"x-access-token": token}
                )
                assert answer.status_code == 200, answer.text
                return answer.json()["data"]

    user_id, token = anyio.run(signup)
    status = main(["users", "grant", *grant]) if grant else None
    return status, anyio.run(is_admin, user_id, token)


def test_grant_makes_a_known_user_an_admin(tmp_path: Path, data_dir: Path, capsys) -> None:
    status, admin = is_admin_after_signup(tmp_path, "ada@example.com", ["Ada@Example.com", "admin"])
    assert status == 0 and admin is True
    assert capsys.readouterr().out.strip() == "Ada@Example.com now has role ADMIN"


def test_without_a_grant_a_user_is_not_an_admin(tmp_path: Path, data_dir: Path) -> None:
    assert is_admin_after_signup(tmp_path, "ada@example.com") == (None, False)


def test_granting_twice_is_harmless(tmp_path: Path, data_dir: Path) -> None:
    is_admin_after_signup(tmp_path, "ada@example.com", ["ada@example.com", "ADMIN"])
    assert main(["users", "grant", "ada@example.com", "ADMIN"]) == 0


def test_an_unknown_role_is_a_one_line_error(tmp_path: Path, data_dir: Path, capsys) -> None:
    status, admin = is_admin_after_signup(tmp_path, "ada@example.com", ["ada@example.com", "PILOT"])
    assert status == 1 and admin is False
    error = capsys.readouterr().err
    assert error == "airbourne: no role named PILOT; roles are ADMIN, AIRLINE_BUSINESS, CUSTOMER\n"


def test_an_unknown_user_is_a_one_line_error_from_the_real_command(data_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "airbourne", "users", "grant", "nobody@example.com", "ADMIN"],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )
    assert done.returncode != 0
    assert done.stderr == "airbourne: no user with email nobody@example.com\n"
    assert done.stdout == ""
