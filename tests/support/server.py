"""The server under test: `python -m app serve` in a subprocess on a free port, with a clean
environment, and the helpers that start and stop processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "REPLICATE_API_TOKEN",
    "REPLICATE_BASE_URL",
    "RUNWAYML_API_SECRET",
    "RUNWAY_API_KEY",
    "RUNWAYML_BASE_URL",
    "DATABASE_URL",
)
STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a server under test: no real keys, its own data folder."""
    # PYTEST_CURRENT_TEST would switch NiceGUI into its own test mode: the server runs as a user runs it.
    env = {key: value for key, value in os.environ.items() if key not in PROVIDER_VARIABLES and not key.startswith("PYTEST_")}
    env.update(PROMPTREEL_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def wait_until_answers(url: str, process: subprocess.Popen, log_path: Path, what: str) -> None:
    """Wait until `url` answers 200, or fail with the process's log if it exits or takes too long."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:  # readiness has no event to await from outside: poll the URL
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start:\n{log_path.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_process(process, signal.SIGKILL)
    raise RuntimeError(f"{what} did not answer {url} in {STARTUP_TIMEOUT}s:\n{log_path.read_text()}")


def stop_process(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    """Send `sig` and wait for the exit; kill a process that does not stop within 30 s."""
    if process and process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Server:
    """`python -m app serve` as a user starts it, on a free port (`command`: another way to start
    it, such as the benchmarks' `bench/harness.py serve`, given the same `--port`)."""

    def __init__(self, data_dir: Path, port: int | None = None, command: Sequence[str] = ("-m", "app", "serve"), **env: str):
        self.data_dir = data_dir
        self.command = list(command)
        self.port = port or free_port()
        self.env = clean_env(data_dir, **env)
        self.process: subprocess.Popen[str] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, ready_path: str = "/health") -> Server:
        """Start, and wait until `ready_path` answers 200 (`/docs` for a server meant to be unhealthy)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, *self.command, "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        wait_until_answers(f"{self.url}{ready_path}", self.process, self.log_path, "server")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.process, sig)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)
