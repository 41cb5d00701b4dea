"""/ws clients: a stream of a server's events that a test awaits, and the predicates it awaits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from .server import Server


class EventStream:
    """A /ws connection that collects events and lets a test await the ones it needs."""

    def __init__(self, connection: websockets.ClientConnection):
        self.connection = connection
        self.events: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def next(self, timeout: float = 60) -> dict[str, Any]:
        message = json.loads(await asyncio.wait_for(self.connection.recv(), timeout))
        self.events.append(message)
        return message

    async def until(self, predicate, timeout: float = 120) -> dict[str, Any]:
        """Read events until one matches; fails with what was seen when the time is up."""

        async def read() -> dict[str, Any]:
            while True:
                message = json.loads(await self.connection.recv())
                self.events.append(message)
                if predicate(message):
                    return message

        try:
            return await asyncio.wait_for(read(), timeout)
        except TimeoutError:
            raise AssertionError(f"no matching event in {timeout}s; saw {self.events[-5:]}") from None

    def of_job(self, job_id: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("jobId") == job_id]


def ends_job(job_id: str):
    def predicate(event: dict[str, Any]) -> bool:
        return event.get("jobId") == job_id and (
            event["type"] in ("job_completed", "job_failed")
            or (event["type"] == "job_update" and event["data"]["status"] == "cancelled")
        )

    return predicate


async def open_stream(server: Server) -> EventStream:
    return EventStream(await websockets.connect(server.ws_url, max_size=None))
