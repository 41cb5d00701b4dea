"""The two servers bench/fanout.py compares, each noting the wall-clock moment it produced every event.

    python -m bench.fanout_servers product --times FILE [--image-seconds 1 --video-seconds 2] [serve options]
    python -m bench.fanout_servers bare --times FILE --replay FILE --clients N --port PORT

`product`: `promptreel serve` with the fixed-latency providers (bench/harness.py), its event bus
wrapped (not changed) so that every event delivered to the listeners is noted as
(jobId, seq, type, published, delivered): `published` when the pipeline began the state change
(`Pipeline.transition`) or called `publish`,
`delivered` when the bus put it on the subscribers' queues (in between: the event log's write).

`bare`: the baseline, the same stack with nothing of promptreel's (FastAPI on uvicorn, wsproto and
the event loop NiceGUI runs): once N clients are connected it replays the recorded messages at
their recorded moments (relative to the first) and sends each to every client in turn, the usual
broadcast loop. It notes each message's scheduled moment as `published`, so a broadcast that falls
behind its schedule counts against it.

Both write their notes as JSON to FILE when they stop (SIGTERM). Neither compresses frames
(permessage-deflate off, as app/server.py serves).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from bench.harness import _serve


def serve_product(times_path: Path, serve_argv: list[str]) -> None:
    from nicegui import app

    from backend.events.bus import EventBus
    from backend.jobs.pipeline import Pipeline

    notes: list[tuple[str, int | None, str, float, float]] = []
    publishing_since: list[float] = []  # publish -> deliver runs on the loop's thread
    original_deliver = EventBus.deliver

    def noting_start(original: Callable[..., None]) -> Callable[..., None]:
        def publishing(self: EventBus, *args: Any) -> None:
            publishing_since.append(time.time())
            try:
                original(self, *args)
            finally:
                publishing_since.pop()

        return publishing

    EventBus.publish = noting_start(EventBus.publish)  # type: ignore[method-assign]
    # The pipeline's state changes store their events in their own transaction and deliver them
    # after it commits: their moment is when the transition began.
    original_transition = Pipeline.transition

    @contextmanager
    def transition(self: Pipeline, job_id: str) -> Iterator[Any]:
        publishing_since.append(time.time())
        try:
            with original_transition(self, job_id) as opened:
                yield opened
        finally:
            publishing_since.pop()

    Pipeline.transition = transition  # type: ignore[method-assign]

    def deliver(self: EventBus, event: dict[str, Any]) -> None:
        now = time.time()
        notes.append((event["jobId"], event.get("seq"), event["type"], publishing_since[0] if publishing_since else now, now))
        original_deliver(self, event)

    EventBus.deliver = deliver  # type: ignore[method-assign]
    app.on_shutdown(lambda: times_path.write_text(json.dumps(notes)))
    _serve(serve_argv)


def serve_bare(times_path: Path, replay_path: Path, clients: int, port: int) -> None:
    import uvicorn

    replay: list[tuple[float, str]] = json.loads(replay_path.read_text())  # (seconds after the first, text)
    notes: list[tuple[str, int | None, str, float, float]] = []
    connected: list[WebSocket] = []
    all_connected = asyncio.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        replaying = asyncio.create_task(broadcast())
        yield
        replaying.cancel()
        times_path.write_text(json.dumps(notes))

    app = FastAPI(lifespan=lifespan)

    async def broadcast() -> None:
        await all_connected.wait()
        start = time.time() + 0.5
        for offset, text in replay:
            scheduled = start + offset
            if (wait := scheduled - time.time()) > 0:
                await asyncio.sleep(wait)
            event = json.loads(text)
            notes.append((event["jobId"], event.get("seq"), event["type"], scheduled, scheduled))
            for websocket in list(connected):
                await websocket.send_text(text)

    @app.websocket("/ws")
    async def events(websocket: WebSocket) -> None:
        await websocket.accept()
        connected.append(websocket)
        if len(connected) == clients:
            all_connected.set()
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            connected.remove(websocket)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    uvicorn.run(app, host="127.0.0.1", port=port, ws="wsproto", ws_per_message_deflate=False, log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout_servers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    product = commands.add_parser("product", help="promptreel serve with the fixed-latency providers, its events noted")
    product.add_argument("--times", type=Path, required=True)
    bare = commands.add_parser("bare", help="the baseline: a bare broadcast replaying recorded messages")
    bare.add_argument("--times", type=Path, required=True)
    bare.add_argument("--replay", type=Path, required=True, help="JSON list of [seconds after the first, message text]")
    bare.add_argument("--clients", type=int, required=True, help="start replaying once this many are connected")
    bare.add_argument("--port", type=int, required=True)
    options, rest = parser.parse_known_args()
    if options.command == "product":
        serve_product(options.times, rest)
    else:
        serve_bare(options.times, options.replay, options.clients, options.port)


if __name__ == "__main__":
    main()
