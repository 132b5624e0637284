"""`airbourne serve` as a process: which ports it opens, how it refuses, how it stops."""

import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from processes import Airbourne, run_cli

pytestmark = pytest.mark.e2e


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_help_is_useful():
    result = run_cli("--help")
    assert result.returncode == 0 and "serve" in result.stdout and "users" in result.stdout
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    assert "--services" in result.stdout and "--config" in result.stdout
    assert "auth, flights" in result.stdout


def test_serves_only_the_services_asked_for(tmp_path):
    with Airbourne(tmp_path, services="flights") as server:
        server.start(expect=1)
        assert list(server.announced) == ["flights"]
        assert server.announced["flights"] == server.url("flights")
        answer = httpx.get(server.url("flights") + "/api/v1/city")
        assert answer.status_code == 200 and answer.json()["success"] is True
        assert not listening(server.ports["auth"])
        assert server.stop(signal.SIGINT) == 0


def test_sigterm_stops_cleanly_with_exit_code_zero(tmp_path):
    server = Airbourne(tmp_path, services="auth,flights").start(expect=2)
    assert httpx.get(server.url("auth") + "/api/v1/dummy").json() == {"message": "OK"}
    assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.stderr
    assert not listening(server.ports["auth"])


def test_unknown_service_is_refused_in_one_line(tmp_path):
    result = run_cli("serve", "--services", "flights,payments",
                     env={"AIRBOURNE_SERVER_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "unknown service payments" in result.stderr and "Traceback" not in result.stderr


def test_port_in_use_is_refused_in_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--services", "flights", env={
            "AIRBOURNE_SERVER_DATA_DIR": str(tmp_path), "AIRBOURNE_FLIGHTS_PORT": str(port)})
    assert result.returncode != 0
    assert result.stderr.strip() == f"airbourne: flights: port {port} on 127.0.0.1 is already in use"


def test_bad_configuration_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[auth]\nport = 'three'\n")
    result = run_cli("serve", "--config", str(bad))
    assert result.returncode != 0
    assert result.stderr.strip() == "airbourne: auth.port must be int, got 'three'"
    result = run_cli("serve", env={"AIRBOURNE_BROKER_URL": "kafka://x"})
    assert result.returncode != 0 and "broker.url must start with" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("services, setting, value, reason", [
    ("flights,gateway", "GATEWAY_RATE_LIMIT", "lots", "gateway.rate_limit"),
    ("reminder", "MAIL_FROM_ADDRESS", "nobody", "mail.from_address must be an address"),
])
def test_a_setting_an_app_refuses_stops_start_up_in_one_line(
    tmp_path, services, setting, value, reason
):
    """Checked when the app is built, after the databases opened: their threads must not
    keep the process alive after the error."""
    result = run_cli("serve", "--services", services, timeout=20, env={
        "AIRBOURNE_SERVER_DATA_DIR": str(tmp_path), f"AIRBOURNE_{setting}": value,
        **{f"AIRBOURNE_{name.upper()}_PORT": "0" for name in services.split(",")}})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("airbourne: ") and reason in last, result.stderr
    assert "Traceback" not in result.stderr


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes the idle connection `sock` within `seconds`."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def test_idle_keep_alive_connections_are_closed_after_the_configured_time(tmp_path):
    with Airbourne(tmp_path, services="flights",
                   env={"AIRBOURNE_SERVER_KEEP_ALIVE_SECONDS": "1"}) as server:
        server.start(expect=1)
        request = b"GET /api/v1/city HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.ports["flights"])) as sock:
            sock.sendall(request)
            answer = b""
            while not answer.endswith(b"}"):  # the whole answer, which may come in parts
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            assert not _closed_within(sock, 0.3)  # kept open for the next request
            assert _closed_within(sock, 5.0)  # and closed once idle for a second
        assert server.stop(signal.SIGINT) == 0


def test_workers_share_the_ports_and_stop_together(tmp_path):
    """`--workers 2` on the embedded defaults: both processes serve, bookings made in
    either reach the one relay and sender (worker 0), and SIGTERM stops them all."""
    server = Airbourne(tmp_path / "data", services="all")
    server.start_args = ["--workers", "2"]
    server.start(expect=5)
    workers = children(server.process.pid)
    assert len(workers) == 2
    try:
        auth, flights, gateway = server.url("auth"), server.url("flights"), server.url("gateway")
        body = {"email": "ada@example.com", "password": "password123"}
        assert httpx.post(f"{auth}/api/v1/signup", json=body).status_code == 201
        session = httpx.post(f"{auth}/api/v1/signin", json=body).json()["data"]
        ids = []
        for name in ("Lisbon", "Oslo"):
            city = httpx.post(f"{flights}/api/v1/city", json={"name": name}).json()["data"]
            ids.append(httpx.post(f"{flights}/api/v1/airports", json={
                "name": name, "address": "Terminal", "cityId": city["id"]}).json()["data"]["id"])
        plane = httpx.post(f"{flights}/api/v1/airplane", json={"modelNumber": "A320", "capacity": 100})
        flight = httpx.post(f"{flights}/api/v1/flights", json={
            "flightNumber": "AB1", "airplaneId": plane.json()["data"]["id"],
            "departureAirportID": ids[0], "arrivalAirportId": ids[1],
            "departureTime": "2030-01-01T10:00:00Z", "arrivalTime": "2030-01-01T12:00:00Z",
            "price": 100}).json()["data"]
        with httpx.Client() as client:  # new connections: the kernel spreads them over workers
            for _ in range(20):
                answer = client.post(
                    f"{gateway}/bookingservice/api/v1/bookings",
                    json={"flightId": flight["id"], "userId": session["id"], "NoOfSeats": 1},
                    headers={"x-access-token": session["token"], "connection": "close"})
                assert answer.status_code == 200, answer.text
        seats = httpx.get(f"{flights}/api/v1/flights/{flight['id']}").json()["data"]["totalSeats"]
        assert seats == 80
        outbox = tmp_path / "data" / "outbox"
        deadline = time.monotonic() + 20
        while len(list(outbox.glob("*.eml"))) < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(list(outbox.glob("*.eml"))) == 20
    finally:
        assert server.stop() == 0
    assert not listening(server.ports["gateway"])
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc, Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
