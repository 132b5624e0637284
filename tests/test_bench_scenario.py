"""The load-test runner (bench/): its summary math on known samples, its VU schedule, and a
few seconds of the seed's scenario against a real `airbourne serve`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is a folder of the repository, not of the installed package

from bench.metrics import (  # noqa: E402
    Check, Series, evaluate, percentile, slowest, summarize, trend,
)
from bench.profiles import PROFILES, Profile, Stage, closed  # noqa: E402
from bench.scenario import CHECKS, THRESHOLDS, drive, flight_times  # noqa: E402
from processes import Airbourne  # noqa: E402
from support import free_port  # noqa: E402


def series(*samples: tuple[float, int]) -> Series:
    """Samples of (duration ms, status), one second apart."""
    result = Series()
    for index, (ms, status) in enumerate(samples):
        result.add(float(index), index + ms / 1000, status)
    return result


def test_percentiles_are_k6s():
    values = [float(n) for n in range(1, 11)]
    assert percentile(values, 0.95) == pytest.approx(9.55)
    assert percentile(values, 0.5) == pytest.approx(5.5)
    assert percentile(values, 0.0) == 1.0 and percentile(values, 1.0) == 10.0
    assert percentile([7.0], 0.99) == 7.0 and percentile([], 0.5) == 0.0
    stats = trend([4.0, 1.0, 3.0, 2.0])
    assert stats["avg"] == 2.5 and stats["min"] == 1.0 and stats["max"] == 4.0
    assert stats["med"] == 2.5 and stats["p(90)"] == pytest.approx(3.7)


def test_summary_counts_failures_checks_and_rates():
    samples = series((100, 200), (200, 201), (1500, 500), (3000, 0))
    metrics = summarize({"setup": series((10, 201)), "booking": samples}, CHECKS)
    assert metrics["http_reqs{operation:booking}"] == {"count": 4, "rate": pytest.approx(4 / 6)}
    assert metrics["http_req_failed{operation:booking}"] == {"rate": 0.5, "passes": 2, "fails": 2}
    assert metrics["http_req_duration{operation:booking}"]["max"] == pytest.approx(3000)
    assert metrics["checks{check:booking_success}"]["rate"] == 0.5
    assert metrics["checks{check:booking_fast}"]["rate"] == 0.5
    assert metrics["checks{check:booking_no_timeout}"]["rate"] == 0.75
    assert metrics["http_req_failed{operation:setup}"]["rate"] == 0.0


def test_the_slowest_requests_are_kept_with_their_start():
    samples = series((5, 200), (300, 200), (20, 0), (250, 201))
    found = slowest({"booking": samples}, count=3, clock_offset=1000.0)["booking"]
    assert [start for start, _ in found] == [1001.0, 1003.0, 1002.0]
    assert [ms for _, ms in found] == pytest.approx([300, 250, 20])
    assert slowest({"booking": series()}) == {"booking": []}


def test_thresholds_are_read_as_k6_writes_them():
    metrics = summarize({"booking": series((100, 200), (300, 200), (2500, 409))}, CHECKS)
    outcomes = {(o.metric, o.condition): o for o in evaluate(THRESHOLDS, metrics)}
    assert len(outcomes) == 6
    assert outcomes[("http_req_duration{operation:booking}", "p(99)<5000")].passed
    assert not outcomes[("http_req_duration{operation:booking}", "p(95)<2000")].passed
    assert not outcomes[("http_req_failed{operation:booking}", "rate<0.05")].passed
    assert not outcomes[("checks{check:booking_success}", "rate>0.95")].passed
    no_login = outcomes[("http_req_duration{operation:login}", "p(95)<300")]
    assert no_login.value is None and not no_login.passed
    fast = {"fast": Check("booking", lambda status, ms: ms < 5)}
    passing = evaluate({"checks{check:fast}": ["rate>=0.5"], "x{operation:booking}": []},
                       summarize({"booking": series((1, 200))}, fast))
    assert [o.passed for o in passing] == [True]
    with pytest.raises(ValueError):
        evaluate({"http_req_failed{operation:booking}": ["rate is low"]}, metrics)


def test_profiles_ramp_one_vu_at_a_time_like_k6():
    load = PROFILES["load"]
    assert load.duration == 300 and load.max_vus == 100
    assert [load.vus_at(t) for t in (0, 15, 30, 90, 105, 285, 300)] == [1, 10, 20, 20, 35, 50, 0]
    counts = [vus for _, vus in load.steps()]
    assert all(abs(b - a) == 1 for a, b in zip(counts, counts[1:]))
    assert PROFILES["stress"].max_vus == 500 and PROFILES["spike"].duration == 160
    assert closed(5).steps() == [(0.0, 64)] and closed(5, vus=8).vus_at(4.9) == 8
    assert not closed(5).think and load.think


def test_flight_times_are_the_seeds_schedule_in_valid_iso():
    assert flight_times(0, 2030) == ("2030-10-10T00:00:00Z", "2030-10-10T02:00:00Z")
    assert flight_times(23, 2030) == ("2030-10-10T23:00:00Z", "2030-10-11T01:00:00Z")
    assert flight_times(49, 2030) == ("2030-10-12T01:00:00Z", "2030-10-12T03:00:00Z")


@pytest.mark.anyio
async def test_drive_runs_as_many_vus_as_the_profile_asks():
    profile = Profile("test", (Stage(0.2, 4), Stage(0.3, 4), Stage(0.2, 0)))
    active, most = 0, 0

    async def iteration() -> None:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.01)
        active -= 1

    completed = await drive(profile, iteration)
    assert most == 4 and active == 0 and completed > 4


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.e2e
def test_smoke_profile_books_through_a_real_airbourne(tmp_path):
    with Airbourne(tmp_path / "data") as server:
        server.start(expect=5)
        result = run_bench(
            "bench.scenario", "--profile", "smoke", "--setup-flights", "3", "--setup-users", "3",
            "--gateway", server.url("gateway"), "--auth", server.url("auth"),
            "--flights", server.url("flights"), "--json", str(tmp_path / "summary.json"),
        )
    assert result.returncode in (0, 99), result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    metrics = summary["metrics"]
    assert metrics["http_reqs{operation:setup}"]["count"] == 2 + 2 + 1 + 3 + 3
    assert metrics["http_reqs{operation:login}"]["count"] == 3
    assert metrics["http_reqs{operation:booking}"]["count"] >= 2
    assert metrics["http_req_failed{operation:booking}"]["rate"] == 0
    assert metrics["checks{check:booking_success}"]["rate"] == 1
    assert len(summary["thresholds"]) == 6
    assert (result.returncode == 0) == summary["passed"]
    assert "booking" in result.stdout and "thresholds" in result.stdout


@pytest.mark.e2e
def test_drain_waits_for_every_confirmation_email(tmp_path):
    with Airbourne(tmp_path / "data") as server:
        server.start(expect=5)
        result = run_bench(
            "bench.drain", "--pid", str(server.process.pid), "--outbox",
            str(tmp_path / "data" / "outbox"), "--duration", "1", "--vus", "4",
            "--setup-flights", "2", "--setup-users", "2", "--gateway", server.url("gateway"),
            "--auth", server.url("auth"), "--flights", server.url("flights"),
            "--peer", f"pytest={os.getpid()}",
        )
        emails = len(list((tmp_path / "data" / "outbox").glob("*.eml")))
    assert result.returncode == 0, result.stderr
    booked = int(result.stdout.split()[1])
    assert booked > 0 and emails == booked
    assert "all done" in result.stdout and "ms per booking" in result.stdout
    costs = result.stdout.splitlines()[-1]
    assert costs.startswith("CPU per booking: airbourne ") and ", pytest " in costs
    assert ", load " in costs and "bookings/s on" in costs


def test_drain_refuses_a_malformed_peer():
    result = run_bench("bench.drain", "--pid", "1", "--outbox", "x", "--peer", "mariadb")
    assert result.returncode == 2 and "expected NAME=PID, got 'mariadb'" in result.stderr


@pytest.mark.e2e
def test_target_mode_drives_the_bare_endpoint(tmp_path):
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "bench.bare", "--port", str(port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while not listening(port):
            assert time.monotonic() < deadline and bare.poll() is None, "bench.bare did not start"
            time.sleep(0.1)
        result = run_bench("bench.scenario", "--target", f"http://127.0.0.1:{port}/api/v1/bookings",
                           "--vus", "4", "--duration", "1", "--json", str(tmp_path / "bare.json"))
    finally:
        bare.terminate()
        bare.wait(10)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "bare.json").read_text())["metrics"]
    assert metrics["http_reqs{operation:target}"]["count"] > 0
    assert metrics["http_req_failed{operation:target}"]["rate"] == 0


@pytest.mark.e2e
def test_soak_runs_rounds_and_samples_the_servers_memory(tmp_path):
    began = time.time()
    with Airbourne(tmp_path / "data") as server:
        server.start(expect=5)
        result = run_bench(
            "bench.soak", "--pid", str(server.process.pid), "--rounds", "2", "--profile",
            "smoke", "--every", "0.5", "--gateway", server.url("gateway"),
            "--auth", server.url("auth"), "--flights", server.url("flights"),
            "--json", str(tmp_path / "soak.json"),
        )
    assert result.returncode == 0, result.stderr
    soak = json.loads((tmp_path / "soak.json").read_text())
    assert [r["round"] for r in soak["rounds"]] == [1, 2]
    for r in soak["rounds"]:
        assert r["bookings"] >= 2 and r["failed"] == 0
        assert 0 < r["p50"] <= r["p95"] <= r["p99"] <= r["max"]
        assert 10 < r["memory_start_mb"] <= r["memory_max_mb"] < 2000
        assert r["memory_end_mb"] <= r["memory_max_mb"]
        assert r["slowest"][0][1] == r["max"] and len(r["slowest"]) == min(10, r["bookings"])
        assert all(began - 1 < start < time.time() + 1 for start, _ in r["slowest"])
    times = [t for t, _ in soak["samples"]]
    assert len(times) >= 4 and times == sorted(times)  # two smoke rounds: over 3 s
    lines = result.stdout.splitlines()
    assert lines[0].startswith("round 1: ") and lines[2].startswith("round 2: ")
    assert lines[1].startswith("  slowest bookings: ") and " ms at " in lines[1]
    assert lines[4].startswith("after the first round: ")


def test_soak_refuses_a_process_that_is_not_there():
    result = run_bench("bench.soak", "--pid", "0")
    assert result.returncode == 2 and "no process 0" in result.stderr
