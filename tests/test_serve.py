"""`airbourne serve` as a process: which ports it opens, how it refuses, how it stops."""

import signal
import socket

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
