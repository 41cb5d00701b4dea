"""GET /metrics: Prometheus's text format (0.0.4, which every scraper reads), from the System's
own registry (backend/observability/metrics.py)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

router = APIRouter()


@router.get("/metrics", tags=["system"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Jobs by status, queue length, step durations, provider errors, HTTP requests, process stats."""
    system = request.app.state.system
    body = await asyncio.to_thread(system.observer.metrics.exposition)  # reads the store: off the event loop
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
