"""/ws: the guide's four event types, pushed from the event bus as they happen.

Client messages: {"type": "subscribe", "jobId": ...} narrows the stream to the jobs named
(with "after": N it first sends the job's stored events numbered above N, then the live ones:
no gap, no duplicate, backend/events/catch_up.py; it accumulates, up to
PROMPTREEL_MAX_WS_SUBSCRIPTIONS jobs: one more is answered with an error TOO_MANY_SUBSCRIPTIONS),
{"type": "unsubscribe", "jobId": ...} drops one (a client that dropped
them all gets none until it subscribes again), {"type": "ping"} is answered {"type": "pong"}.
Anything else gets {"type": "error", ...} in the error format.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from backend.api.deps import client_address
from backend.api.errors import error_response
from backend.api.hosts import origin_allowed
from backend.auth import Authenticator
from backend.errors import ApiError, TooManyWrongTokens
from backend.events.bus import SubscriberTooSlow, Subscription
from backend.events.catch_up import CatchUp
from backend.events.log import Event
from backend.jobs.public import absolute_media_urls

router = APIRouter()
EVENT_TYPES = frozenset({"job_update", "step_update", "job_completed", "job_failed"})
#: Seconds one send (a frame, or a batch of at most MAX_BATCH) may wait for a client that does
#: not read before the client is dropped.
SEND_TIMEOUT = 10.0
#: Events sent in one go to a client that fell behind.
MAX_BATCH = 100
#: Largest `after` a subscribe takes (the event `seq` column is a 32-bit INTEGER).
MAX_SEQ = 2**31 - 1


class FrameTexts:
    """Each event's frame, serialised once for all the clients that share a base URL and a URL
    signer (made per client, the JSON and the signed URLs cost as much as the send itself with 200
    clients). Keyed by the event dict's identity: the bus hands the same dict to every subscription."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._recent: OrderedDict[tuple[int, str, int], tuple[Event, str]] = OrderedDict()

    def text(self, event: Event, base: str, auth: Authenticator) -> str:
        key = (id(event), base, id(auth))
        known = self._recent.get(key)
        if known is not None and known[0] is event:  # `is`: an id may be reused once its dict is gone
            return known[1]
        text = json.dumps({**event, "data": absolute_media_urls(event["data"], base, auth.sign)})
        self._recent[key] = (event, text)
        if len(self._recent) > self.size:
            self._recent.popitem(last=False)
        return text


FRAMES = FrameTexts()


def _http_base(websocket: WebSocket, public_url: str | None) -> str:
    if public_url:
        return public_url
    url = websocket.url
    scheme = "https" if url.scheme == "wss" else "http"
    return f"{scheme}://{url.netloc}/"


def _is_seq(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEQ


def _error(message: str, code: str = "VALIDATION_ERROR", **details: Any) -> dict[str, Any]:
    return {"type": "error", "error": message, "code": code, "details": details}


@router.websocket("/ws")
async def events(websocket: WebSocket, token: str | None = None) -> None:
    """`token`: the API token, when authentication is on (browsers cannot set WebSocket headers)."""
    system = websocket.app.state.system
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, websocket.headers.get("host"), system.settings):
        # Another site's page (CORS does not cover WebSockets): refused at the handshake, nothing sent.
        await websocket.send_denial_response(
            error_response(
                403, f"WebSocket connections from {origin!r} are not allowed.", "ORIGIN_NOT_ALLOWED", {"origin": origin}
            )
        )
        return
    await websocket.accept()
    try:
        user = system.auth.user_for(token, client_address(websocket))
    except TooManyWrongTokens as refused:  # this address guessed too often: told, then closed (try again later)
        await websocket.send_text(json.dumps(_error(refused.message, refused.code, **refused.details)))
        await websocket.close(code=1013, reason="too many wrong tokens")
        return
    if user is None:  # told in the error format, then closed as a policy violation
        await websocket.send_text(
            json.dumps(_error("A valid API token is needed: connect to /ws?token=<token>.", "UNAUTHORIZED"))
        )
        await websocket.close(code=1008, reason="unauthorized")
        return
    base = _http_base(websocket, system.settings.public_url)
    jobs: set[str] | None = None  # None: every job; a set: only these
    send_lock = asyncio.Lock()
    visible: dict[str, bool] = {}  # job id -> whether this user may see it (looked up once per job)
    max_message = system.settings.max_ws_message_bytes
    max_jobs = system.settings.max_ws_subscriptions
    catch_up = CatchUp(lambda job_id, after, limit: system.jobs.events(job_id, user, after, limit))

    def may_see(job_id: str) -> bool:
        seen = visible.get(job_id)
        if seen is None:
            seen = system.jobs.may_see(job_id, user)
            if user.name is not None:  # authentication off: nothing read, nothing to remember
                visible[job_id] = seen
        return seen

    async def send_texts(texts: list[str]) -> None:
        # A client that stops reading would hold this send forever (its TCP buffer full): it is
        # given up after SEND_TIMEOUT, and it catches up by `GET /api/v1/jobs/{id}/events` when back.
        async with send_lock, asyncio.timeout(SEND_TIMEOUT):
            for text in texts:
                await websocket.send_text(text)

    async def send(message: dict[str, Any]) -> None:
        await send_texts([json.dumps(message)])

    async def send_stored(events: list[Event]) -> None:
        # Read from the log: new dicts each time, nothing for FRAMES to share.
        await send_texts(
            [
                json.dumps({**event, "data": absolute_media_urls(event["data"], base, system.auth.sign)})
                for event in events
                if event["type"] in EVENT_TYPES
            ]
        )

    def wanted(event: Event) -> bool:
        return event["type"] in EVENT_TYPES and (jobs is None or event["jobId"] in jobs) and may_see(event["jobId"])

    async def forward(subscription: Subscription) -> None:
        async for first in subscription:
            async with catch_up.lock:  # a job's catch-up and its live events go out in order
                texts = [
                    FRAMES.text(event, base, system.auth)
                    for event in (first, *subscription.drain(MAX_BATCH - 1))
                    if wanted(event) and catch_up.admit(event)
                ]
                if texts:
                    await send_texts(texts)

    async def receive() -> None:
        nonlocal jobs
        while True:
            text = await websocket.receive_text()
            if len(text.encode()) > max_message:
                await send(_error(f"Messages are at most {max_message} bytes.", "PAYLOAD_TOO_LARGE", limit=max_message))
                continue
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
                after = message.get("after")
                if kind == "subscribe" and after is not None and not _is_seq(after):
                    await send(_error("'after' must be an integer from 0 (the last seq the client has).", field="after"))
                    continue
                if jobs is None:
                    jobs = set()
                if kind == "subscribe" and job_id not in jobs and len(jobs) >= max_jobs:  # a connection's memory is bounded
                    message = f"A connection follows at most {max_jobs} jobs: unsubscribe from one first."
                    await send(_error(message, "TOO_MANY_SUBSCRIPTIONS", field="jobId", limit=max_jobs))
                    continue
                if kind == "subscribe" and after is not None:
                    async with catch_up.lock:  # followed from the last stored event sent, before live ones go on
                        try:
                            await catch_up.start(job_id, after, send_stored)
                        except ApiError as error:  # JOB_NOT_FOUND (or someone else's): not followed
                            await send(_error(error.message, error.code, **error.details))
                            continue
                        jobs.add(job_id)
                elif kind == "subscribe":
                    jobs.add(job_id)
                else:
                    jobs.discard(job_id)
                    catch_up.forget(job_id)
            elif kind in ("subscribe", "unsubscribe"):
                await send(_error(f"'{kind}' needs a jobId string.", field="jobId"))
            else:
                await send(_error(f"Unknown message type {kind!r}: use subscribe, unsubscribe or ping.", field="type"))

    with system.jobs.subscribe() as subscription:
        tasks = {asyncio.create_task(forward(subscription)), asyncio.create_task(receive())}
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if isinstance(error, SubscriberTooSlow):
                    await websocket.close(code=1013, reason="client too slow")
                # TimeoutError (a send that never got through): just leave; closing would wait on the
                # same full buffer. The server drops the connection once the handler returns.
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
