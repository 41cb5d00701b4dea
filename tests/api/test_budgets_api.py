"""Spending limits through a real server: 402 BUDGET_EXCEEDED before anything is stored or queued,
a limit reached exactly, and GET /api/v1/usage for a user and for an admin."""

from __future__ import annotations

from pathlib import Path

from backend.store.database import create_db_engine
from backend.store.jobs import JobStore
from backend.store.models import Job, JobStatus
from tests.support.jobs import local_job
from tests.support.server import Server

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdefgh"
ROOT = "root-token-0123456789abcdefg"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def spend(server: Server, owner: str, cost: float, job_id: str) -> None:
    """A finished job of `owner` that cost `cost`, written into the server's own database."""
    engine = create_db_engine(f"sqlite:///{server.data_dir / 'promptreel.db'}")
    try:
        job = Job(
            id=job_id,
            prompt="paid earlier",
            provider="dalle3",
            video_provider="runway",
            status=JobStatus.COMPLETED,
            image_size="1024x1024",
            video_duration=5,
            quality="standard",
            seed=1,
            owner=owner,
            image_cost=cost,
        )
        JobStore(engine).create(job)
    finally:
        engine.dispose()


def test_budgets_refuse_past_the_limit_and_usage_tells_the_spend(tmp_path: Path):
    server = Server(
        tmp_path / "data",
        API_TOKENS=f"alice:{ALICE},bob:{BOB},root:{ROOT}",
        PROMPTREEL_BUDGETS="alice:2/day,*:10/month",
        PROMPTREEL_ADMIN_USERS="root",
    ).start()
    try:
        with server.client() as api:
            spend(server, "alice", 2.0, "job_paid_alice")
            # 2.0 spent + 0 estimated (a local job) == the limit: allowed.
            at_limit = api.post("/api/v1/generate", json=local_job("a free sketch"), headers=bearer(ALICE))
            assert at_limit.status_code == 201, at_limit.json()

            spend(server, "alice", 0.0001, "job_paid_alice_more")
            listed = api.get("/api/v1/jobs", headers=bearer(ALICE)).headers["X-Total-Count"]
            refused = api.post("/api/v1/generate", json=local_job("one too many"), headers=bearer(ALICE))
            assert refused.status_code == 402
            body = refused.json()
            assert body["code"] == "BUDGET_EXCEEDED"
            assert {key: body["details"][key] for key in ("scope", "period", "limit", "spent", "estimate")} == {
                "scope": "alice",
                "period": "day",
                "limit": 2.0,
                "spent": 2.0001,
                "estimate": 0.0,
            }
            assert body["details"]["resetsAt"].endswith("T00:00:00Z")
            assert api.get("/api/v1/jobs", headers=bearer(ALICE)).headers["X-Total-Count"] == listed  # nothing stored

            # The service's limit holds for everyone: bob alone is under his (none), the service is not.
            spend(server, "bob", 8.0, "job_paid_bob")
            service = api.post("/api/v1/generate", json=local_job("bob's"), headers=bearer(BOB))
            assert service.status_code == 402 and service.json()["details"]["scope"] == "*"

            mine = api.get("/api/v1/usage", headers=bearer(ALICE)).json()
            assert mine["user"] == "alice" and mine["spent"] == {"day": 2.0001, "month": 2.0001}
            assert [(limit["scope"], limit["spent"]) for limit in mine["limits"]] == [("alice", 2.0001), ("*", 10.0001)]
            assert "users" not in mine  # someone else's spend is not alice's to see
            everyone = api.get("/api/v1/usage", headers=bearer(ROOT)).json()
            assert {user["user"]: user["spent"]["month"] for user in everyone["users"]} == {"alice": 2.0001, "bob": 8.0}
            assert api.get("/api/v1/usage").status_code == 401
    finally:
        server.stop()
