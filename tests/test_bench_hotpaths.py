"""The hot-path scripts of bench/ run and their checks pass: a short run of each on the
embedded defaults, as a newcomer would start it (`python -m bench.hotpaths.<name>`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "args",
    [
        ["database", "--seconds", "0.5", "--concurrency", "4"],
        ["queue", "--seconds", "0.5", "--concurrency", "4"],
        ["email", "--seconds", "0.5", "--concurrency", "4"],
        ["notifications", "--bookings", "30"],
    ],
    ids=lambda args: args[0],
)
def test_a_hot_path_script_runs_and_its_check_passes(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"bench.hotpaths.{args[0]}", *args[1:]],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "check: " in done.stdout and "as expected" in done.stdout, done.stdout
