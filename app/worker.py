"""`promptreel worker`: runs the jobs that API instances queue in PostgreSQL (procrastinate).

Stopping it (SIGTERM, Ctrl+C) interrupts its jobs without ending them and queues them again
at once, so another worker resumes them; a worker that dies without stopping (SIGKILL, a lost
host) is noticed by the others after PROMPTREEL_STALLED_AFTER_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from backend.observability.logs import configure_logging
from backend.settings import Settings
from backend.system import System

log = logging.getLogger("promptreel.worker")


async def run_worker(settings: Settings, concurrency: int) -> int:
    configure_logging()  # JSON lines; procrastinate's and httpx's per-job chatter left out
    system = System(settings)
    if system.cluster is None:
        raise SystemExit("promptreel: error: a worker needs PROMPTREEL_TASK_ENGINE=procrastinate and a PostgreSQL DATABASE_URL")
    system.migrate()
    await system.cluster.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = asyncio.create_task(system.cluster.run_worker(concurrency), name="procrastinate worker")
    log.info("worker %s running up to %d job(s) at once", system.runner.worker_id, concurrency)
    print(f"promptreel worker {system.runner.worker_id}: ready, {concurrency} job(s) at once", flush=True)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        system.pipeline.stopping = True  # interrupted jobs are handed on, not cancelled
        for task in (worker, stopping):
            task.cancel()
        await asyncio.gather(worker, stopping, return_exceptions=True)
        await system.stop()
    if worker.done() and not worker.cancelled() and worker.exception() is not None:
        log.error("the worker stopped on an error", exc_info=worker.exception())
        return 1
    return 0
