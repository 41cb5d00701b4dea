"""Fast logic tests of the studio's components with NiceGUI's simulated user (no browser, no server).

Each test gets its own System (SQLite in a temporary folder) and the real pages; the user is
NiceGUI's `User` from `nicegui.testing`, driven through `user_simulation`, so this module
needs no pytest plugin and does not touch the other tests' configuration.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from nicegui import app as nicegui_app
from nicegui import ui
from nicegui.storage import Storage
from nicegui.testing.user import User
from nicegui.testing.user_simulation import user_simulation

from backend.jobs.public import job_update_data, step_data
from backend.jobs.request import validate_request
from backend.providers import registry
from backend.providers.openai_images import OpenAIImageProvider as DalleImageProvider
from backend.settings import Settings
from backend.store.models import Job, JobStatus, StepKind
from backend.system import System
from components import job_list as job_list_module
from components import status_bar as status_bar_module
from components.job_card import JobCard
from components.job_list import JobList
from components.live import client_feed
from components.status_bar import StatusBar
from tests.support.jobs import local_job

# Events reach the page in a flush FLUSH_INTERVAL after they arrive; should_see retries every
# 0.1 s, so give it a few seconds' worth of attempts (it returns as soon as it sees).
RETRIES = int(3 / 0.1)


def next_flush(system: System, user: User) -> asyncio.Future[None]:
    """Done once the tab's next flush (components/live.py) has updated its page."""
    with user.client:
        return client_feed(system.jobs).next_flush()


def listeners(system: System, monkeypatch: pytest.MonkeyPatch) -> set[object]:
    """The listeners added to the job events from now on and not stopped yet (an open tab has one)."""
    live: set[object] = set()
    listen = system.jobs.listen

    def counted(callback):
        stop = listen(callback)
        live.add(callback)

        def stop_counted() -> None:
            live.discard(callback)
            stop()

        return stop_counted

    monkeypatch.setattr(system.jobs, "listen", counted)
    return live


def page_reads(system: System, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The pages of jobs read from now on (JobService.list calls: every open list's reads)."""
    reads: list[dict] = []
    read = system.jobs.list

    def counted(*args, **kwargs):
        reads.append(kwargs)
        return read(*args, **kwargs)

    monkeypatch.setattr(system.jobs, "list", counted)
    return reads


async def after_flush(system: System, users: list[User], check, timeout: float = 10.0) -> None:
    """Await the tabs' next flush (it is due FLUSH_INTERVAL after the events), then check what it showed."""
    if not check():
        flushes = [next_flush(system, user) for user in users]
        await asyncio.wait_for(asyncio.gather(*flushes), timeout)
    assert check(), "the view did not update"


@contextmanager
def next_job_created(system: System) -> Iterator[asyncio.Future]:
    """A future for the first `job_update` of a new (pending) job published on the bus."""
    future: asyncio.Future = asyncio.get_running_loop().create_future()

    def listen(event: dict) -> None:
        if event["type"] == "job_update" and event["data"]["status"] == "pending" and not future.done():
            future.set_result(event)

    stop = system.bus.listen(listen)
    try:
        yield future
    finally:
        stop()


class Studio:
    def __init__(self, user: User, system: System):
        self.user = user
        self.system = system

    def element(self, marker: str) -> ui.element:
        (found,) = self.user.find(marker=marker).elements
        return found

    async def api_error(self, body: dict) -> str:
        """The message the real REST route answers for this body."""
        response = await self.user.http_client.post("/api/v1/generate", json=body)
        assert response.status_code in (400, 422), response.text
        return response.json()["error"]


#: Every JobList and header StatusBar the pages built, newest last (the tests read their counters).
_JOB_LISTS: list[JobList] = []
_STATUS_BARS: list[StatusBar] = []


@pytest.fixture
def provider_settings() -> dict[str, str]:
    """Extra settings of the studio's System; a test parametrizes it to configure a provider."""
    return {}


@pytest.fixture
def key_check_answer() -> tuple[bool | None, str | None]:
    """What OpenAI's key check first answers (ok, reason); a test parametrizes it."""
    return (True, None)


@pytest.fixture
def openai_key_check(monkeypatch: pytest.MonkeyPatch, key_check_answer: tuple[bool | None, str | None]) -> dict:
    """OpenAI's key check, answered here (no request leaves the test); set ["answer"] to change it."""
    check = {"answer": key_check_answer}
    monkeypatch.setattr(DalleImageProvider, "check_key", lambda self, timeout=5.0: check["answer"])
    return check


@pytest.fixture
async def studio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider_settings: dict[str, str], openai_key_check: dict
) -> AsyncIterator[Studio]:
    for name in ("OPENAI_API_KEY", "REPLICATE_API_TOKEN", "RUNWAYML_API_SECRET", "RUNWAY_API_KEY", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    original_init = JobList.__init__

    def remember(self: JobList, *args, **kwargs) -> None:  # the tests look at the list's own counters
        original_init(self, *args, **kwargs)
        _JOB_LISTS.append(self)

    monkeypatch.setattr(JobList, "__init__", remember)
    original_status_init = StatusBar.__init__

    def remember_status(self: StatusBar, *args, **kwargs) -> None:
        original_status_init(self, *args, **kwargs)
        _STATUS_BARS.append(self)

    monkeypatch.setattr(StatusBar, "__init__", remember_status)
    # the browser storage (dark mode) of simulated users goes to this test's folder, as NiceGUI's own plugin does
    monkeypatch.setattr(Storage, "path", tmp_path / "storage")
    monkeypatch.setattr(nicegui_app, "storage", Storage())
    async with user_simulation() as user:
        from app.pages import register_pages
        from backend.api import mount_api

        system = System(Settings(_env_file=None, PROMPTREEL_DATA_DIR=tmp_path / "data", **provider_settings))
        system.migrate()
        mount_api(nicegui_app, system)  # the same REST routes, to compare the form's answers with the API's
        register_pages(system)
        try:
            yield Studio(user, system)
        finally:
            await system.stop()
            _JOB_LISTS.clear()
            _STATUS_BARS.clear()


def stored_job(system: System, prompt: str, status: str = "completed", **fields) -> Job:
    """A job written straight to the store, as a finished run leaves it (no runner involved)."""
    job = Job(
        id=f"job_{abs(hash((prompt, time.monotonic_ns()))):012d}",
        prompt=prompt,
        provider="local",
        video_provider="local",
        status=status,
        progress=100 if status == "completed" else 0,
        image_size="1024x1024",
        video_duration=5,
        quality="standard",
        seed=1,
        **fields,
    )
    system.store.create(job)
    return job


async def test_studio_shows_form_status_and_empty_state(studio: Studio):
    await studio.user.open("/")
    await studio.user.should_see("New reel")
    await studio.user.should_see("No jobs yet — describe a scene in the form")
    await studio.user.should_see(marker="estimate", content="$0.00")
    await studio.user.should_see("free · rendered on this machine")
    # every image provider is listed; the ones without a key are disabled, with the setting to set
    select = studio.element("image-provider")
    options = {option["label"]: option for option in select._props["options"]}
    assert set(options) == {"OpenAI (GPT Image)", "FLUX.1 (Replicate)", "Local renderer"}
    assert options["OpenAI (GPT Image)"]["disable"] and options["OpenAI (GPT Image)"]["reason"] == "set OPENAI_API_KEY"
    assert options["FLUX.1 (Replicate)"]["reason"] == "set REPLICATE_API_TOKEN"
    assert "disable" not in options["Local renderer"]
    video = studio.element("video-provider")
    video_options = {option["label"]: option for option in video._props["options"]}
    assert video_options["Runway"]["reason"] == "set RUNWAYML_API_SECRET" and video.value == "local"


@pytest.mark.parametrize(
    ("prompt", "seed"),
    [("   ", ""), ("x" * 4001, ""), ("a quiet harbour", "abc"), ("a quiet harbour", "-4"), ("a quiet harbour", str(2**32))],
)
async def test_form_refuses_what_the_api_refuses_with_the_same_words(studio: Studio, prompt: str, seed: str):
    await studio.user.open("/")
    studio.user.find(marker="prompt").type(prompt)
    if seed:
        studio.user.find(marker="seed").type(seed)
    studio.user.find(marker="generate").click()
    body = local_job(prompt, videoProvider="local")
    if seed:
        body["settings"]["seed"] = int(seed) if seed.lstrip("-").isdigit() else seed
    expected = await studio.api_error(body)
    field = studio.element("seed" if seed else "prompt")  # the sentence shows at the field it is about
    for _ in range(RETRIES):  # the click's handler runs as a task of its own; should_see polls the same way
        if field.error is not None:
            break
        await asyncio.sleep(0.1)
    assert field.error == expected
    assert studio.system.store.list()[1] == 0, "nothing may be stored"


async def test_counter_and_ctrl_enter_submit(studio: Studio):
    await studio.user.open("/")
    studio.user.find(marker="prompt").type("A red fox in fresh snow")
    await studio.user.should_see(marker="prompt-count", content="23 / 4000")
    studio.user.find(marker="prompt").type("x" * 4000)
    await studio.user.should_see(marker="prompt-count", content="4023 / 4000")
    with next_job_created(studio.system) as created:
        studio.user.find(marker="prompt").clear().type("A red fox in fresh snow").trigger("keydown.ctrl.enter")
        event = await asyncio.wait_for(created, 10)
    (record,), _ = studio.system.store.list()
    assert record.job.id == event["jobId"]
    assert record.job.prompt == "A red fox in fresh snow" and record.job.provider == "local"
    await studio.user.should_see(marker="job-card", retries=RETRIES)
    await studio.system.jobs.cancel(record.job.id)


async def test_dice_gives_a_seed_that_the_job_keeps(studio: Studio):
    await studio.user.open("/")
    studio.user.find(marker="dice").click()
    seed = studio.element("seed").value
    assert seed.isdigit() and 0 <= int(seed) <= 2**32 - 1
    studio.user.find(marker="prompt").type("Dunes under a full moon")
    with next_job_created(studio.system) as created:
        studio.user.find(marker="generate").click()
        await asyncio.wait_for(created, 10)
    (record,), _ = studio.system.store.list()
    assert record.job.seed == int(seed)
    await studio.system.jobs.cancel(record.job.id)


async def test_job_created_elsewhere_appears_and_updates_in_place(studio: Studio, monkeypatch: pytest.MonkeyPatch):
    await studio.user.open("/")
    jobs = _JOB_LISTS[-1]
    reads = page_reads(studio.system, monkeypatch)
    record = await studio.system.jobs.create(validate_request(local_job("A lighthouse in a storm")))
    await studio.user.should_see("A lighthouse in a storm", retries=RETRIES)
    assert len(reads) == 1, "a new job reads the page once"
    card: JobCard = jobs.cards[record.job.id]
    # progress events change the card's elements; the page is not read again
    reads.clear()
    await studio.system.runner.wait(record.job.id)
    await after_flush(studio.system, [studio.user], lambda: card.job["status"] == "completed")
    assert card.view["statusLabel"] == "Completed"
    assert card.view["progress"] == 100
    assert card.view["thumbnail"].endswith(f"{record.job.id}.jpg")
    assert card.view["video"] == f"/api/v1/jobs/{record.job.id}/download/video"
    assert not reads, "progress events must not reload the list"


async def test_a_burst_of_new_jobs_re_points_the_cards_and_reads_the_page_a_few_times(
    studio: Studio, monkeypatch: pytest.MonkeyPatch
):
    """New jobs arriving flush after flush: the page is read at most once per RELOAD_INTERVAL, and
    its twenty cards are re-pointed at the newest jobs rather than deleted and made again."""
    for index in range(20):
        stored_job(studio.system, f"An old harbour study {index}")
    await studio.user.open("/")
    jobs = _JOB_LISTS[-1]
    cards = set(jobs.cards.values())
    reads, started = page_reads(studio.system, monkeypatch), time.monotonic()
    flushes, newest = 6, []
    for _ in range(flushes):  # a few new jobs per flush, as a burst of POSTs brings them
        for _ in range(5):
            job = stored_job(studio.system, f"A new lantern study {len(newest)}", status="pending")
            studio.system.bus.publish("job_update", job.id, job_update_data(job))
            newest.append(job.id)
        await asyncio.wait_for(next_flush(studio.system, studio.user), 10)
    await studio.user.should_see(f"A new lantern study {len(newest) - 1}", retries=RETRIES)
    elapsed = time.monotonic() - started
    assert set(jobs.cards.values()) == cards, "the same card elements show the new jobs"
    assert list(jobs.cards) == newest[::-1][:20]
    assert [card.view["id"] for card in jobs.cards.values()] == newest[::-1][:20]
    # without the interval every flush would read the page: `flushes` reads in about half as many seconds
    assert len(reads) <= elapsed / job_list_module.RELOAD_INTERVAL + 1, (len(reads), elapsed)


async def test_pagination_filter_and_search_read_one_page(studio: Studio, monkeypatch: pytest.MonkeyPatch):
    for index in range(45):
        stored_job(studio.system, f"Harbour study number {index}", status="failed" if index % 3 == 0 else "completed", error="x")
    stored_job(studio.system, "A unique zeppelin over fields")
    calls: list[dict] = []
    original = studio.system.store.list

    def spy(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(studio.system.store, "list", spy)
    await studio.user.open("/")
    await studio.user.should_see(marker="job-summary", content="1–20 of 46 jobs")
    assert calls[-1]["limit"] == job_list_module.PAGE_SIZE and calls[-1]["offset"] == 0
    jobs = _JOB_LISTS[-1]
    assert len(jobs.cards) == 20
    jobs.pager.value = 3
    await studio.user.should_see(marker="job-summary", content="41–46 of 46 jobs")
    assert calls[-1]["offset"] == 40 and len(jobs.cards) == 6
    studio.element("status-filter").value = "failed"
    await studio.user.should_see(marker="job-summary", content="15 jobs match")
    assert calls[-1]["statuses"] == ("failed",)
    studio.element("status-filter").value = "all"
    studio.user.find(marker="search").type("zeppelin")
    await studio.user.should_see(marker="job-summary", content="1 job matches")
    assert [card.job["prompt"] for card in jobs.cards.values()] == ["A unique zeppelin over fields"]
    studio.user.find(marker="search").clear().type("no such words")
    await studio.user.should_see(marker="empty-state", content="Nothing matches")


async def test_forty_tabs_cost_little_per_event_and_let_go_when_closed(studio: Studio, monkeypatch: pytest.MonkeyPatch):
    """Forty open studio tabs: each event costs a filter and an append per tab; cards update in place."""
    job = stored_job(studio.system, "A slow glacier", status=JobStatus.GENERATING_VIDEO.value)
    await studio.user.open("/")
    users = []
    live = listeners(studio.system, monkeypatch)
    for _ in range(39):
        other = User(studio.user.http_client)
        await other.open("/")
        users.append(other)
    assert len(live) == 39, "one listener per tab"
    lists = _JOB_LISTS[-40:]
    reads = page_reads(studio.system, monkeypatch)
    updated = studio.system.store.update_step(job.id, StepKind.VIDEO, status="running", progress=0)
    for percent in range(1, 100):
        updated.progress = percent
        studio.system.bus.publish("step_update", job.id, step_data(updated))
        job.progress = 30 + int(percent * 0.7)
        studio.system.bus.publish("job_update", job.id, job_update_data(job))
    # 198 events reach each tab in one flush (what that costs the server: bench/tabs.py)
    await after_flush(
        studio.system, [studio.user, *users], lambda: all(jobs.cards[job.id].view["progress"] == 99 for jobs in lists)
    )
    assert not reads, "progress never re-reads the list"
    # closing tabs removes their listeners
    for other in users:
        other.client.delete()
    assert not live


async def test_job_page_shows_settings_cost_and_error(studio: Studio):
    job = stored_job(
        studio.system,
        "A broken bridge",
        status="failed",
        error="Video generation failed: the image to animate is missing from the media store",
        image_model="promptreel-scene-1",
    )
    await studio.user.open(f"/jobs/{job.id}")
    await studio.user.should_see("This job failed")
    await studio.user.should_see("Video generation failed: the image to animate is missing from the media store")
    await studio.user.should_see("promptreel-scene-1")
    await studio.user.should_see("Settings used")
    await studio.user.should_see("No video: the job failed.")


async def test_unknown_job_page_is_friendly(studio: Studio):
    await studio.user.open("/jobs/job_doesnotexist")
    await studio.user.should_see("We could not find that job")
    await studio.user.should_see("Back to the studio")


async def test_dark_mode_is_remembered(studio: Studio):
    await studio.user.open("/")
    (dark,) = studio.user.find(kind=ui.dark_mode).elements
    assert dark.value is None  # follows the system until the user chooses
    studio.user.javascript_rules[re.compile(".*body--dark")] = lambda _: False  # the system shows light
    studio.user.find(marker="dark-toggle").click()
    await studio.user.should_see(marker="dark-toggle")
    for _ in range(3 * RETRIES):  # the click asks the browser what it shows, then switches
        if dark.value is not None:
            break
        await asyncio.sleep(0.1)
    assert dark.value is True
    await studio.user.open("/")  # a new page for the same browser
    (dark,) = studio.user.find(kind=ui.dark_mode).elements
    assert dark.value is True


OPENAI_KEY = {"OPENAI_API_KEY": "sk-test-not-a-real-key"}
REFUSED = (False, "OpenAI rejected the API key (401)")


def provider_chip(studio: Studio, name: str) -> tuple[bool, str]:
    """(shown as available, the providers tooltip) of the header's chip for `name`."""
    dot = studio.element(f"provider-{name}").default_slot.children[0]
    (tooltip,) = [child for child in studio.element("providers").default_slot.children if isinstance(child, ui.tooltip)]
    return "pr-dot-on" in dot.classes, tooltip.text


def provider_options(select: ui.select) -> dict[str, dict]:
    return {option["label"]: option for option in select._props["options"]}


async def providers_shown(status: StatusBar, check, timeout: float = 10.0) -> None:
    """Await the header's next change of the providers (and so the form's, told first), unless it
    already shows what `check` wants, then check what it showed."""
    if not check():
        changed: asyncio.Future = asyncio.get_running_loop().create_future()
        stop = status.on_providers_change(lambda *_infos: changed.done() or changed.set_result(None))
        try:
            await asyncio.wait_for(changed, timeout)
        except TimeoutError:
            pass  # the assertion below says what was missed
        finally:
            stop()
    assert check(), "the header never showed the refused key"


@pytest.mark.parametrize(("provider_settings", "key_check_answer"), [(OPENAI_KEY, REFUSED)])
async def test_a_key_refused_at_start_shows_in_the_header_and_the_form(studio: Studio):
    await studio.user.open("/")  # the page awaits the first key checks: the refusal is known
    available, tooltip = provider_chip(studio, "dalle3")
    assert not available and "OpenAI: OpenAI rejected the API key (401)" in tooltip
    assert provider_chip(studio, "local")[0]
    select = studio.element("image-provider")
    option = provider_options(select)["OpenAI (GPT Image)"]
    assert option["disable"] and option["reason"] == "OpenAI rejected the API key (401)"
    assert select.value == "local" and select.error is None, "the form starts on an available provider"
    await studio.user.should_see(
        marker="provider-hint", content="OpenAI, FLUX.1 and Runway are unavailable; open a list to see why."
    )


@pytest.mark.parametrize("provider_settings", [OPENAI_KEY])
async def test_a_key_refused_later_shows_when_the_status_refreshes(
    studio: Studio, openai_key_check: dict, monkeypatch: pytest.MonkeyPatch
):
    # no timer tick during the test: only the job event and the key check's answer may update the header
    monkeypatch.setattr(status_bar_module, "LOAD_REFRESH_SECONDS", 3600.0)
    await studio.user.open("/")
    assert provider_chip(studio, "dalle3")[0]
    select = studio.element("image-provider")
    assert select.value == "dalle3" and "disable" not in provider_options(select)["OpenAI (GPT Image)"]
    await studio.user.should_see(marker="provider-hint", content="FLUX.1 and Runway need an API key")
    # OpenAI now refuses the key; the next check (made stale at once here) says so
    openai_key_check["answer"] = REFUSED
    monkeypatch.setattr(registry, "KEY_OK_TTL", 0.0)
    # a job event makes every open tab refresh its status (as a DALL-E job failing on the key would)
    (status,) = _STATUS_BARS
    status_reads = []
    read_status = studio.system.jobs.status
    monkeypatch.setattr(studio.system.jobs, "status", lambda: status_reads.append(1) or read_status())
    flushed = next_flush(studio.system, studio.user)
    studio.system.bus.publish("job_failed", "job_elsewhere", {"id": "job_elsewhere", "status": "failed", "error": REFUSED[1]})
    await asyncio.wait_for(flushed, 10)
    assert len(status_reads) == 1, "a job's new status refreshes the header once, at the flush"
    # that refresh read the stale verdict (the cache answers at once) and started the key check
    # behind it; the header shows the check's answer as soon as it comes
    await providers_shown(status, lambda: not provider_chip(studio, "dalle3")[0])
    assert "OpenAI: OpenAI rejected the API key (401)" in provider_chip(studio, "dalle3")[1]
    # the form's list follows the header: disabled with the reason, and the chosen one is marked
    option = provider_options(select)["OpenAI (GPT Image)"]
    assert option["disable"] and option["reason"] == "OpenAI rejected the API key (401)"
    assert select.error == "Unavailable: OpenAI rejected the API key (401)"
    await studio.user.should_see(
        marker="provider-hint", content="OpenAI, FLUX.1 and Runway are unavailable; open a list to see why."
    )


async def test_job_page_shows_the_webhook_deliveries(studio: Studio):
    from backend.webhooks.outbox import WebhookOutbox

    plain = stored_job(studio.system, "No webhook here")
    job = stored_job(studio.system, "A lighthouse with a webhook")
    with studio.system.store.transaction() as connection:
        WebhookOutbox.subscribe(connection, job.id, "https://hooks.example.com/promptreel", ["completed"])
    studio.system.bus.publish("job_completed", job.id, {"id": job.id})
    assert studio.system.webhooks.derive() == 1
    with studio.system.engine.begin() as connection:  # as an attempt that got a 503 records it
        connection.exec_driver_sql(
            "UPDATE webhook_deliveries SET attempts = 1, history = "
            '\'[{"attempt": 1, "at": "2026-12-06T12:00:00Z", "statusCode": 503, "error": "answered 503"}]\''
        )
    await studio.user.open(f"/jobs/{job.id}")
    await studio.user.should_see("https://hooks.example.com/promptreel")
    await studio.user.should_see("completed: pending, attempt 1, HTTP 503 at 12:00:00 UTC", retries=RETRIES)
    await studio.user.open(f"/jobs/{plain.id}")
    await studio.user.should_see("No webhook here")
    await studio.user.should_not_see("Webhook")


@pytest.mark.parametrize("provider_settings", [{"PROMPTREEL_BUDGETS": "*:10/day"}])
async def test_the_studio_shows_spend_against_the_limit_and_warns_at_80_percent(studio: Studio):
    stored_job(studio.system, "paid earlier", image_cost=7.99)
    await studio.user.open("/")
    await studio.user.should_see(marker="spend-text", content="$7.99 of $10.00 spent today (service limit)")
    await studio.user.should_not_see("nearly at the limit")
    job = stored_job(studio.system, "paid again", image_cost=0.01)  # 8.00 of 10.00: 80%
    studio.system.bus.publish("job_update", job.id, job_update_data(job))  # a job ended: the meter reads again
    await studio.user.should_see(
        marker="spend-text", content="$8.00 of $10.00 spent today (service limit) — nearly at the limit", retries=RETRIES
    )
    assert studio.element("spend")._props["role"] == "alert"


async def test_the_studio_shows_no_spend_without_a_limit(studio: Studio):
    stored_job(studio.system, "paid earlier", image_cost=7.99)
    await studio.user.open("/")
    await studio.user.should_see("New reel")
    await studio.user.should_not_see(marker="spend")
