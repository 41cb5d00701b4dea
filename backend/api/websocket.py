"""/ws: the guide's four event types, pushed from the event bus as they happen.

Client messages: {"type": "subscribe", "jobId": ...} narrows the stream to the jobs named
(it accumulates), {"type": "unsubscribe", "jobId": ...} drops one (a client that dropped them
all gets none until it subscribes again), {"type": "ping"} is
answered {"type": "pong"}. Anything else gets {"type": "error", ...} in the error format.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ..events import SubscriberTooSlow, Subscription
from ..public import absolute_media_urls

router = APIRouter()
EVENT_TYPES = frozenset({"job_update", "step_update", "job_completed", "job_failed"})


def _http_base(websocket: WebSocket, public_url: str | None) -> str:
    if public_url:
        return public_url
    url = websocket.url
    scheme = "https" if url.scheme == "wss" else "http"
    return f"{scheme}://{url.netloc}/"


def _error(message: str, code: str = "VALIDATION_ERROR", **details: Any) -> dict[str, Any]:
    return {"type": "error", "error": message, "code": code, "details": details}


@router.websocket("/ws")
async def events(websocket: WebSocket) -> None:
    system = websocket.app.state.system
    await websocket.accept()
    base = _http_base(websocket, system.settings.public_url)
    jobs: set[str] | None = None  # None: every job; a set: only these
    send_lock = asyncio.Lock()

    async def send(message: dict[str, Any]) -> None:
        async with send_lock:
            await websocket.send_text(json.dumps(message))

    async def forward(subscription: Subscription) -> None:
        async for event in subscription:
            if event["type"] in EVENT_TYPES and (jobs is None or event["jobId"] in jobs):
                await send({**event, "data": absolute_media_urls(event["data"], base)})

    async def receive() -> None:
        nonlocal jobs
        while True:
            text = await websocket.receive_text()
            try:
                message = json.loads(text)
            except ValueError:
                await send(_error("The message is not valid JSON."))
                continue
            kind = message.get("type") if isinstance(message, dict) else None
            job_id = message.get("jobId") if isinstance(message, dict) else None
            if kind == "ping":
                await send({"type": "pong"})
            elif kind in ("subscribe", "unsubscribe") and isinstance(job_id, str) and job_id:
                if jobs is None:
                    jobs = set()
                (jobs.add if kind == "subscribe" else jobs.discard)(job_id)
            elif kind in ("subscribe", "unsubscribe"):
                await send(_error(f"'{kind}' needs a jobId string.", field="jobId"))
            else:
                await send(_error(f"Unknown message type {kind!r}: use subscribe, unsubscribe or ping.", field="type"))

    with system.bus.subscribe() as subscription:
        tasks = {asyncio.create_task(forward(subscription)), asyncio.create_task(receive())}
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if isinstance(error, SubscriberTooSlow):
                    await websocket.close(code=1013, reason="client too slow")
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
