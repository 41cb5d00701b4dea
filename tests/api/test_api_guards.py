"""Guards that need a server in an odd state, so they run the API in-process on a plain FastAPI app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from backend.api import mount_api
from backend.settings import Settings
from backend.system import System
from tests.support.jobs import local_job


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator:
    systems: list[System] = []

    def build(**environment: str) -> tuple[TestClient, System]:
        settings = Settings(PROMPTREEL_DATA_DIR=tmp_path / "data", **environment)
        system = System(settings)
        system.migrate()
        app = FastAPI()
        mount_api(app, system)
        systems.append(system)
        return TestClient(app, raise_server_exceptions=False), system

    yield build
    for system in systems:
        system.engine.dispose()


def test_an_unexpected_error_still_answers_the_error_body(make_client, monkeypatch):
    client, system = make_client()

    def broken(**_):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(system.store, "list", broken)
    response = client.get("/api/v1/jobs")
    assert response.status_code == 500
    assert response.json() == {
        "error": "Something went wrong on the server; the error is in its log.",
        "code": "INTERNAL_ERROR",
        "details": {},
    }


def test_a_model_without_a_published_price_is_refused_before_anything_is_stored(make_client):
    client, system = make_client(
        REPLICATE_API_TOKEN="r8_test",
        REPLICATE_BASE_URL="http://127.0.0.1:9",
        PROMPTREEL_FLUX_MODEL_HIGH="someone/unpriced-model",
    )
    response = client.post("/api/v1/generate", json={**local_job(quality="high", videoProvider="local"), "provider": "flux1"})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "PRICE_UNKNOWN" and "someone/unpriced-model" in body["error"]
    assert body["details"] == {"provider": "flux1", "videoProvider": "local"}
    assert system.store.list()[1] == 0
