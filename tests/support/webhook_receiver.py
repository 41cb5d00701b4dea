"""A real webhook receiver on loopback: answers each POST with the next scripted status, keeps
every request, and lets a test wait for the n-th one (a condition, not a sleep)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """`statuses`: the answers in turn (the last one repeats); `location`: a redirect's target."""

    def __init__(self, statuses: tuple[int, ...] = (200,), port: int = 0, location: str | None = None):
        self.statuses = list(statuses)
        self.location = location
        self.received: list[Received] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.changed:
                    status = receiver.statuses[min(len(receiver.received), len(receiver.statuses) - 1)]
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    receiver.changed.notify_all()
                self.send_response(status)
                if receiver.location and 300 <= status < 400:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(self, count: int, timeout: float = 120) -> list[Received]:
        """The first `count` requests, once they arrived."""
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} webhook request(s) arrived, {count} awaited")
            return list(self.received)


@contextmanager
def receiving(statuses: tuple[int, ...] = (200,), port: int = 0, location: str | None = None) -> Iterator[Receiver]:
    receiver = Receiver(statuses, port, location)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join()
