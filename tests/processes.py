"""Run `airbourne serve` as a real process for end-to-end tests."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from support import free_port

SERVICE_NAMES = ("auth", "flights", "booking", "reminder", "gateway")


class Airbourne:
    """One `airbourne serve` process on free ports, with its data folder in `data_dir`."""

    def __init__(self, data_dir: Path, services: str = "all", env: dict[str, str] | None = None,
                 ports: dict[str, int] | None = None) -> None:
        self.services = services
        self.ports = ports or {name: free_port() for name in SERVICE_NAMES}
        self.env = {
            **os.environ,
            "AIRBOURNE_SERVER_DATA_DIR": str(data_dir),
            "AIRBOURNE_SERVER_LOG_LEVEL": "warning",
            **{f"AIRBOURNE_{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None
        self.announced: dict[str, str] = {}
        self.start_args: list[str] = []
        """More arguments for `airbourne serve`, e.g. ["--workers", "2"]."""
        self.errors: list[str] = []

    @property
    def stderr(self) -> str:
        """What the process wrote to stderr so far."""
        return "".join(self.errors)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(self, expect: int, timeout: float = 30.0) -> "Airbourne":
        """Start and wait until `expect` services have printed their URL line."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "airbourne", "serve", "--services", self.services,
             *self.start_args],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        # A reader thread, not select(): readline() on a text pipe buffers several lines at
        # once, and select() would then wait for data that was already read.
        threading.Thread(target=_pump, args=(self.process.stdout, lines), daemon=True).start()
        # stderr is drained too, so a chatty server never blocks on a full pipe.
        self._stderr_reader = threading.Thread(
            target=_collect, args=(self.process.stderr, self.errors), daemon=True)
        self._stderr_reader.start()
        deadline = time.monotonic() + timeout
        while len(self.announced) < expect:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"airbourne did not start: {self.stderr}")
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line.strip():
                name, url = line.split()
                self.announced[name] = url
        return self

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        self._stderr_reader.join(timeout=5)
        return code

    def __enter__(self) -> "Airbourne":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()


def _pump(stream, lines: "queue.Queue[str]") -> None:
    for line in stream:
        lines.put(line)


def _collect(stream, into: list[str]) -> None:
    for line in stream:
        into.append(line)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30.0):
    """Run `airbourne ARGS` to completion; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "airbourne", *args],
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )
