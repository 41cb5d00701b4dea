"""Issue 12's done-when check: a cancel on one instance against a job another process runs.

    .venv/bin/python -m bench.cancel_race [--rounds 20]

Two `promptreel serve` instances (A, B) on one throwaway PostgreSQL, local providers, a 5 s
video: a job is created on A, and once A reports it `generating_video` at a point between 30%
and 99% (spread over the rounds), B answers the DELETE. Run without a task engine (A runs the
job) and with procrastinate (one `promptreel worker` runs it). Reported per mode:
- jobs whose status changed after they first finished (from their stored events, and the final
  GET against the first finished status): must be 0;
- DELETE answers that do not match the final status (200 `cancelled`, or 409 naming the status
  it finished with): must be 0;
- how long the owner's task took to stop after the DELETE answered: the owner's log line
  `job <id> stopped: ...` (JSON logs, millisecond times) minus the moment the answer arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from backend.store.models import FINISHED_STATUSES
from tests.support.cluster import Cluster
from tests.support.jobs import local_job
from tests.support.postgres import new_database
from tests.support.postgres import stop as stop_postgres
from tests.support.server import Server
from tests.support.streams import open_stream

STOP_LOG_TIMEOUT = 10.0


def stop_time(log_path: Path, job_id: str) -> float | None:
    """The epoch time of the owner's first `job <id> stopped` log line, if it wrote one."""
    for line in log_path.read_text(errors="replace").splitlines():
        if f"job {job_id} stopped" in line and line.startswith("{"):
            return datetime.fromisoformat(json.loads(line)["time"].replace("Z", "+00:00")).timestamp()
    return None


def changed_after_finish(events: list[dict[str, Any]], final_status: str) -> bool:
    """Whether any event after the first finished status tells of another status (or completion)."""
    first: str | None = None
    for event in events:
        # The status each event tells of: a job_update's, or the end a job_completed/job_failed announces.
        status = {"job_completed": "completed", "job_failed": "failed"}.get(event["type"]) or (
            event["data"].get("status") if event["type"] == "job_update" else None
        )
        if first is None:
            first = status if status in FINISHED_STATUSES else None
        elif status is not None and status != first:
            return True
    return first is not None and final_status != first


async def run_rounds(a: Server, b: Server, owner_log: Any, rounds: int) -> dict[str, Any]:
    stream = await open_stream(a)
    changed = mismatched = refused = 0
    stops: list[float] = []
    missing_stop = 0
    try:
        with a.client() as api_a, b.client() as api_b:
            for index in range(rounds):
                target = 30 + (69 * index) // max(1, rounds - 1)  # 30% .. 99%
                job = api_a.post("/api/v1/generate", json=local_job(f"a cancel race, round {index}", videoDuration=5)).json()
                await stream.until(
                    lambda e, job_id=job["id"], target=target: (
                        e.get("jobId") == job_id
                        and (
                            (
                                e["type"] == "job_update"
                                and e["data"]["status"] == "generating_video"
                                and e["data"]["progress"] >= target
                            )
                            or e["type"] in ("job_completed", "job_failed")
                        )
                    ),
                    timeout=120,
                )
                answer = api_b.delete(f"/api/v1/jobs/{job['id']}")
                answered_at = time.time()
                if answer.status_code == 200:
                    claimed = answer.json()["status"]
                    deadline = time.monotonic() + STOP_LOG_TIMEOUT
                    stopped = stop_time(owner_log(job["id"]), job["id"])
                    while stopped is None and time.monotonic() < deadline:  # a log file has no event to await
                        await asyncio.sleep(0.05)
                        stopped = stop_time(owner_log(job["id"]), job["id"])
                    if stopped is None:
                        missing_stop += 1
                    else:
                        stops.append(max(0.0, stopped - answered_at))
                else:
                    refused += 1
                    claimed = answer.json()["details"].get("status", "?")
                    await stream.until(
                        lambda e, job_id=job["id"]: e.get("jobId") == job_id and e["type"] in ("job_completed", "job_failed"),
                        timeout=60,
                    )
                final = api_a.get(f"/api/v1/jobs/{job['id']}").json()["status"]
                events = api_a.get(f"/api/v1/jobs/{job['id']}/events").json()
                changed += changed_after_finish(events, final)
                mismatched += claimed != final
    finally:
        await stream.connection.close()
    return {
        "rounds": rounds,
        "cancelled": rounds - refused,
        "refused_409": refused,
        "status_changed_after_finish": changed,
        "answer_mismatches": mismatched,
        "stop_after_answer_s": {"max": round(max(stops), 3), "median": round(statistics.median(stops), 3)} if stops else None,
        "stops_not_seen": missing_stop,
    }


def owner_log_of(servers: list[Server]) -> Any:
    def find(job_id: str) -> Path:
        for server in servers:
            if f"job {job_id} stopped" in server.log_path.read_text(errors="replace"):
                return server.log_path
        return servers[0].log_path

    return find


async def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cancel_race", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with new_database() as database_url:
            env = {"DATABASE_URL": database_url, "PROMPTREEL_SECRET_KEY": "bench-cancel-race"}
            a, b = Server(root / "a", **env).start(), Server(root / "b", **env).start()
            try:
                results["without a task engine"] = await run_rounds(a, b, owner_log_of([a, b]), args.rounds)
            finally:
                b.stop()
                a.stop()
        with new_database() as database_url:
            cluster = Cluster(root / "cluster", database_url, instances=2, workers=1).start()
            try:
                a, b = cluster.instances
                worker = cluster.workers[0]
                results["procrastinate"] = await run_rounds(a, b, lambda job_id: worker.log_path, args.rounds)
            finally:
                cluster.stop()
    stop_postgres()
    for mode, result in results.items():
        print(f"{mode}: {json.dumps(result)}")


if __name__ == "__main__":
    asyncio.run(main())
