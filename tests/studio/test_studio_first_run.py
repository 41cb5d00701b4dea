"""A first-time user's studio (issue 19): refusals in plain words, one click one job, the new
job in view, what the local renderer understood, settings that do something, quiet logs.

The API's side runs against a real server subprocess; the studio's side with NiceGUI's
simulated user (the fixtures of tests/test_studio_user.py); the renderer's on real PNGs.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from backend.jobs.request import validate_request
from backend.render.prompt_scene import understanding
from components.job_form import EXAMPLE_PROMPTS, JobForm
from tests.support.jobs import local_job
from tests.support.server import Server
from tests.support.streams import EventStream, ends_job, open_stream

from . import test_studio_user
from .test_studio_user import _JOB_LISTS, _STATUS_BARS, Studio, after_flush, stored_job

# The studio's fixtures (a System, the real pages, NiceGUI's simulated user), shared by name.
studio = test_studio_user.studio
provider_settings = test_studio_user.provider_settings
key_check_answer = test_studio_user.key_check_answer
openai_key_check = test_studio_user.openai_key_check

#: Bad requests, the sentence a person reads for each, and the field `details` names.
SENTENCES = [
    ({**local_job(), "prompt": ""}, "Describe a scene first.", "prompt"),
    ({"provider": "local"}, "Describe a scene first.", "prompt"),
    ({**local_job(), "prompt": "  \n "}, "The prompt is only spaces; describe a scene in words.", "prompt"),
    ({**local_job(), "prompt": "x" * 4001}, "The prompt is too long: at most 4,000 characters.", "prompt"),
    (local_job(seed=-1), "The seed is a whole number from 0 to 4,294,967,295.", "settings.seed"),
    (local_job(seed=2**32), "The seed is a whole number from 0 to 4,294,967,295.", "settings.seed"),
    (local_job(seed="12"), "The seed is a whole number from 0 to 4,294,967,295.", "settings.seed"),
    (
        local_job(videoDuration=0),
        "The video length is a whole number of seconds that the video model allows (5 or 10 with the defaults).",
        "settings.videoDuration",
    ),
    (
        local_job(videoDuration=7),
        "settings.videoDuration: promptreel-animate-1 makes videos of 5, 10 seconds",
        "settings.videoDuration",
    ),
    (local_job(imageSize="800x600"), "The image size is 1024x1024, 1792x1024 or 1024x1792.", "settings.imageSize"),
    (
        {**local_job(), "provider": "midjourney"},
        "Choose an image provider: openai, replicate or local (dalle3 and flux1 are their guide names).",
        "provider",
    ),
    (local_job(colour="red"), "Unknown field 'settings.colour': remove it.", "settings.colour"),
]


@pytest.mark.parametrize(
    ("body", "sentence", "field"), SENTENCES, ids=[f"{field}-{i}" for i, (_, _, field) in enumerate(SENTENCES)]
)
def test_api_refuses_in_plain_words_and_names_the_field(shared_server: Server, body: dict, sentence: str, field: str):
    with shared_server.client() as api:
        response = api.post("/api/v1/generate", json=body)
    assert response.status_code == 422
    error = response.json()
    assert error["code"] == "VALIDATION_ERROR"
    assert error["error"] == sentence
    assert error["details"]["field"] == field
    assert error["details"]["errors"][0] == {"field": field, "message": sentence}


# -- the studio, with NiceGUI's simulated user ---------------------------------------------------


@pytest.fixture
def forms(monkeypatch: pytest.MonkeyPatch) -> list[JobForm]:
    """Every JobForm the pages build, newest last."""
    made: list[JobForm] = []
    original_init = JobForm.__init__

    def remember(self: JobForm, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(JobForm, "__init__", remember)
    return made


async def test_one_click_one_job_and_the_button_waits_for_the_answer(studio: Studio, forms: list[JobForm]):
    await studio.user.open("/")
    (form,) = forms
    studio.user.find(marker="prompt").type("A lighthouse at dusk")
    create = studio.system.jobs.create
    enabled_during_request = []

    async def watched_create(*args, **kwargs):
        enabled_during_request.append(form.button.enabled)
        return await create(*args, **kwargs)

    studio.system.jobs.create = watched_create  # type: ignore[method-assign]
    # a double click: the second arrives while the first is in flight, or just after it answered
    first, second = await asyncio.gather(form.submit(), form.submit())
    third = await form.submit()
    assert first is not None and second is None and third is None
    assert enabled_during_request == [False], "the button is disabled while the request is in flight"
    assert form.button.enabled
    assert studio.system.store.list()[1] == 1, "one click, one job"
    key = form.idempotency_key
    assert len(key) == 32
    # a different submission is a new job, with a key of its own
    studio.user.find(marker="prompt").clear().type("A lighthouse at dawn")
    assert await form.submit() is not None
    assert studio.system.store.list()[1] == 2 and form.idempotency_key != key


async def test_the_new_job_is_shown_even_under_a_filter_that_hides_it(studio: Studio, forms: list[JobForm]):
    for index in range(3):
        stored_job(studio.system, f"A harbour at night {index}")
    # the search and the filter come from the URL (a reload or a shared link keeps them)
    await studio.user.open("/?q=harbour&status=completed")
    await studio.user.should_see(marker="job-summary", content="3 jobs match")
    jobs = _JOB_LISTS[-1]
    assert jobs.search_input.value == "harbour" and jobs.status_select.value == "completed"
    studio.user.find(marker="prompt").type("A red hot-air balloon over dunes at sunrise")
    record = await forms[-1].submit()
    assert record is not None
    assert record.job.id in jobs.cards, "the new job is on the page"
    assert jobs.search == "" and jobs.filter == "all"
    assert jobs.search_input.value == "" and jobs.status_select.value == "all"
    assert studio.user.notify.contains("Job started. The search and status filter were cleared to show it.")
    # with no filter in the way, the toast says nothing more
    studio.user.notify.messages.clear()
    studio.user.find(marker="prompt").clear().type("A snowy lake at dawn")
    assert await forms[-1].submit() is not None
    assert studio.user.notify.messages == ["Job started."]


async def test_a_field_error_goes_when_the_field_changes(studio: Studio, forms: list[JobForm]):
    await studio.user.open("/")
    form = forms[-1]
    assert await form.submit() is None
    assert form.prompt.error == "Describe a scene first."
    assert form.prompt.props["error"] is True and form.prompt.props["error-message"] == "Describe a scene first."
    studio.user.find(marker="prompt").type("   ")
    assert form.prompt.error is None, "typing clears the message"
    assert await form.submit() is None
    assert form.prompt.error == "The prompt is only spaces; describe a scene in words."
    studio.user.find(marker="prompt").clear().type("A desert at noon")
    studio.user.find(marker="seed").type("twelve")
    assert await form.submit() is None
    assert form.seed.error == "The seed is a whole number from 0 to 4,294,967,295." and form.prompt.error is None
    assert studio.system.store.list()[1] == 0


# -- what the local renderer understood, over REST -------------------------------------------------


def image_done(job_id: str):
    def predicate(event: dict) -> bool:
        data = event.get("data") or {}
        return (
            event.get("jobId") == job_id
            and event["type"] == "step_update"
            and data.get("id") == "image_generation"
            and (data.get("status") in ("completed", "failed"))
        )

    return predicate


async def test_a_local_job_records_which_words_it_drew(server: Server, events: EventStream):
    with server.client() as api:
        jobs = {}
        for prompt, _, _ in UNDERSTOOD_PROMPTS:
            response = api.post("/api/v1/generate", json=local_job(prompt, seed=7))
            assert response.status_code == 201, response.text
            jobs[prompt] = response.json()["id"]
        for prompt, drawn, unknown in UNDERSTOOD_PROMPTS:
            await events.until(image_done(jobs[prompt]))
            job = api.get(f"/api/v1/jobs/{jobs[prompt]}").json()
            assert job["metadata"]["understoodWords"] == drawn
            assert job["metadata"]["notUnderstoodWords"] == unknown
            log = next(step["log"] for step in job["steps"] if step["id"] == "image_generation")
            assert f"not understood: {', '.join(unknown)}" in "\n".join(log)


#: Issue 19's three prompts the local renderer cannot draw, and what it says of them.
UNDERSTOOD_PROMPTS = [
    ("a cat sleeping on a windowsill in the rain", ["rain"], ["cat", "sleeping", "windowsill"]),
    ("a portrait of an old fisherman", [], ["portrait", "old", "fisherman"]),
    ("a bowl of ramen on a wooden table", [], ["bowl", "ramen", "wooden", "table"]),
]


# -- what the local renderer understood, in the studio ---------------------------------------------


async def test_card_and_job_page_say_what_the_local_renderer_drew(studio: Studio):
    job = stored_job(
        studio.system,
        "a cat sleeping on a windowsill in the rain",
        extra={"understoodWords": ["rain"], "notUnderstoodWords": ["cat", "sleeping", "windowsill"]},
    )
    await studio.user.open("/")
    await studio.user.should_see("Drew: rain")
    await studio.user.should_see("Not understood: cat, sleeping, windowsill")
    card = _JOB_LISTS[-1].cards[job.id]
    assert (
        card.view["drew"] == "rain"
        and "OpenAI (GPT Image) or FLUX on Replicate" in card.props["hint"]
        and "ComfyUI" in card.props["hint"]
    )
    await studio.user.open(f"/jobs/{job.id}")
    await studio.user.should_see("What the local renderer understood")
    await studio.user.should_see("Drew: rain")
    await studio.user.should_see("Not understood: cat, sleeping, windowsill")
    await studio.user.should_see("For other subjects choose OpenAI (GPT Image) or FLUX on Replicate")


async def test_an_example_prompt_fills_the_form_and_is_drawn_word_for_word(studio: Studio, forms: list[JobForm]):
    await studio.user.open("/")
    assert len(studio.user.find(marker="example").elements) == len(EXAMPLE_PROMPTS)
    for example in EXAMPLE_PROMPTS:
        label = example.split(",")[0].removeprefix("A ").capitalize()
        studio.user.find(marker="example", content=label).click()
        assert forms[-1].prompt.value == example
        assert understanding(example)[1] == [], f"the local renderer cannot draw all of {example!r}"


async def test_the_form_says_what_high_quality_changes(studio: Studio):
    await studio.user.open("/")
    await studio.user.should_see(marker="quality-hint", content="High: painted at 2× and scaled down")


# -- quiet by default --------------------------------------------------------------------------------


async def test_answered_requests_are_not_logged_by_default_refusals_and_transitions_are(tmp_path: Path):
    server = Server(tmp_path / "data").start()
    try:
        stream = await open_stream(server)
        with server.client() as api:
            job_id = api.post("/api/v1/generate", json=local_job("a snowy lake at dawn")).json()["id"]
            await stream.until(ends_job(job_id))
            for _ in range(5):
                assert api.get(f"/api/v1/jobs/{job_id}").status_code == 200
            assert api.get("/api/v1/jobs/job_missing").status_code == 404
        await stream.connection.close()
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
    requests = [(line["method"], line["path"], line["status"]) for line in lines if line["event"] == "http_request"]
    assert requests == [("GET", "/api/v1/jobs/job_missing", 404)], "only the refusal"
    assert not [line for line in lines if line["event"] == "websocket"]
    transitions = [line["status"] for line in lines if line["event"] == "job_transition" and line.get("job_id") == job_id]
    assert transitions[-1] == "completed" and len(transitions) >= 3


def test_the_readme_links_nothing_outside_the_repository():
    root = Path(__file__).resolve().parents[2]
    links = re.findall(r"\]\(([^)#\s]+)", (root / "README.md").read_text())
    outside = [link for link in links if "://" not in link and not (root / link).resolve().is_relative_to(root)]
    assert links and not outside, outside


def test_an_unknown_route_gets_the_studios_own_page(shared_server: Server):
    with shared_server.client() as api:
        page = api.get("/no/such/page")
        api_route = api.get("/api/v1/no-such-route")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "There is no such page" in page.text and "Back to the studio" in page.text
    assert "HTTPException" not in page.text
    assert api_route.status_code == 404 and api_route.json()["code"] == "NOT_FOUND"  # the API still answers JSON


async def test_the_header_count_agrees_with_the_job_page_when_the_job_ends(studio: Studio):
    await studio.user.open("/")
    completed: asyncio.Future = asyncio.get_running_loop().create_future()
    stop = studio.system.bus.listen(
        lambda event: event["type"] == "job_completed" and not completed.done() and completed.set_result(event)
    )
    try:
        record = await studio.system.jobs.create(validate_request(local_job("A snowy lake at dawn", seed=1)))
        await studio.user.open(f"/jobs/{record.job.id}")
        status_bar = _STATUS_BARS[-1]
        await asyncio.wait_for(completed, 120)
    finally:
        stop()
    await after_flush(studio.system, [studio.user], lambda: status_bar.active.text == "0")
