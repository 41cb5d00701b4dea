"""Bad input gets the documented error body, names the field, and changes nothing."""

from __future__ import annotations

import pytest

from tests.support.jobs import local_job
from tests.support.server import Server


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "code", "details"}, body
    assert body["code"] == code
    assert isinstance(body["error"], str) and body["error"]
    if field is not None:
        assert body["details"]["field"] == field, body
        # the generate request's fields get a sentence for a person (FIELD_SENTENCES); others name the field
        assert field.lower() in body["error"].lower() or field.split(".")[0] in ("prompt", "provider", "settings"), body
    return body


BAD_REQUESTS = [
    ({"provider": "local", "settings": {}}, "prompt"),
    ({**local_job(), "prompt": ""}, "prompt"),
    ({**local_job(), "prompt": "   "}, "prompt"),
    ({**local_job(), "prompt": "x" * 4001}, "prompt"),
    ({**local_job(), "prompt": 42}, "prompt"),
    ({**local_job(), "provider": "midjourney"}, "provider"),
    ({**local_job(), "provider": None}, "provider"),
    (local_job(imageSize="800x600"), "settings.imageSize"),
    (local_job(imageSize=1024), "settings.imageSize"),
    (local_job(videoDuration=7), "settings.videoDuration"),
    (local_job(videoDuration="5"), "settings.videoDuration"),
    (local_job(videoDuration=5.5), "settings.videoDuration"),
    (local_job(quality="ultra"), "settings.quality"),
    (local_job(seed=-1), "settings.seed"),
    (local_job(seed=2**32), "settings.seed"),
    (local_job(seed="12"), "settings.seed"),
    (local_job(seed=True), "settings.seed"),
    (local_job(videoProvider="sora"), "settings.videoProvider"),
    (local_job(colour="red"), "settings.colour"),
    ({**local_job(), "priority": 1}, "priority"),
    ({**local_job(), "settings": "fast"}, "settings"),
]


@pytest.mark.parametrize("body, field", BAD_REQUESTS, ids=[field + str(i) for i, (_, field) in enumerate(BAD_REQUESTS)])
def test_bad_generate_request_is_refused_and_queues_nothing(shared_server: Server, body, field):
    with shared_server.client() as api:
        before = api.get("/api/v1/jobs").headers["X-Total-Count"]
        assert_error(api.post("/api/v1/generate", json=body), 422, "VALIDATION_ERROR", field)
        assert api.get("/api/v1/jobs").headers["X-Total-Count"] == before


@pytest.mark.parametrize("content", [b"not json", b'{"prompt": ', b"[]", b""])
def test_non_json_body(shared_server: Server, content):
    with shared_server.client() as api:
        response = api.post("/api/v1/generate", content=content, headers={"Content-Type": "application/json"})
        assert_error(response, 422, "VALIDATION_ERROR")


def test_unconfigured_provider_is_refused_at_once(shared_server: Server):
    with shared_server.client() as api:
        before = api.get("/api/v1/jobs").headers["X-Total-Count"]
        for provider, variable in (("dalle3", "OPENAI_API_KEY"), ("flux1", "REPLICATE_API_TOKEN")):
            body = assert_error(
                api.post("/api/v1/generate", json={**local_job(), "provider": provider}), 400, "PROVIDER_UNAVAILABLE", "provider"
            )
            assert variable in body["error"] and body["details"]["missing"] == variable
        body = assert_error(api.post("/api/v1/generate", json=local_job(videoProvider="runway")), 400, "PROVIDER_UNAVAILABLE")
        assert "RUNWAYML_API_SECRET" in body["error"]
        assert api.get("/api/v1/jobs").headers["X-Total-Count"] == before
        assert api.get("/api/v1/status").json()["queue_length"] == 0


def test_unknown_job_and_routes(shared_server: Server):
    with shared_server.client() as api:
        assert_error(api.get("/api/v1/jobs/job_doesnotexist"), 404, "JOB_NOT_FOUND")
        assert_error(api.delete("/api/v1/jobs/job_doesnotexist"), 404, "JOB_NOT_FOUND")
        assert_error(api.get("/api/v1/jobs/job_doesnotexist/download/image"), 404, "JOB_NOT_FOUND")
        # Ids are looked up in the store, never used as paths.
        assert_error(api.get("/api/v1/jobs/..%2F..%2Fetc%2Fpasswd/download/image"), 404, "NOT_FOUND")
        assert_error(api.get("/api/v1/jobs/%2e%2e/download/image"), 404, "JOB_NOT_FOUND")
        assert_error(api.get("/api/v1/jobs/job_x';DROP TABLE jobs;--"), 404, "JOB_NOT_FOUND")
        assert_error(api.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
        assert_error(api.put("/api/v1/generate", json=local_job()), 405, "METHOD_NOT_ALLOWED")
        assert_error(api.get("/api/v1/jobs/x/download/audio"), 422, "VALIDATION_ERROR", "type")


@pytest.mark.parametrize(
    "query, field",
    [("limit=0", "limit"), ("limit=100000", "limit"), ("offset=-1", "offset"), ("status=done", "status"), ("limit=ten", "limit")],
)
def test_bad_list_query(shared_server: Server, query, field):
    with shared_server.client() as api:
        assert_error(api.get(f"/api/v1/jobs?{query}"), 422, "VALIDATION_ERROR", field)


def test_a_studio_path_that_does_not_exist_is_a_page_not_json(shared_server: Server):
    with shared_server.client() as api:
        response = api.get("/no/such/page")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
