"""An upload that a job still needs is not deleted under it, whatever the interleaving: a DELETE or
a round of expiry racing a new job that names the upload (`settings.sourceImage`), on SQLite and on
PostgreSQL (where several instances share the database, so no lock of one process would do).

The invariant checked after each race: every unfinished job that animates an upload finds its row
and its bytes; a job that has taken its picture keeps its own fitted copy (tests/system/
test_uploads_pipeline.py deletes the upload after such a job and downloads the job's image).

The create runs in a thread of its own (its own event loop), held at a chosen point by an event
while the DELETE or expiry runs; nothing waits on time. Two interleavings are pinned down by hand;
a stateful test (hypothesis) tries sequences of uploads, held creates, DELETEs, expiry rounds and
jobs that take their picture and end against a model of what each must answer.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import text

from backend.errors import ApiError, FieldInvalid, UploadInUse, UploadNotFound
from backend.jobs.request import BatchListRequest, GenerateRequest
from backend.settings import Settings
from backend.store.models import UNFINISHED_STATUSES, JobStatus, utcnow
from backend.system import System
from backend.uploads.images import fit_picture
from tests.support import pictures

#: Generous bounds on the events below (each is set within milliseconds when all is well).
WAIT_SECONDS = 30
REQUEST = {"prompt": "slow push in", "provider": "upload", "settings": {"videoProvider": "local"}}
#: Sequences of steps tried by the stateful test (each up to 12 steps; the same ones every run).
STATEFUL_EXAMPLES = int(os.environ.get("PROMPTREEL_UPLOAD_RACE_EXAMPLES", "50"))


async def new_upload(system: System) -> str:
    data = pictures.png()
    return (await system.uploads.create(io.BytesIO(data), len(data), "photo.png")).id


def check_no_job_lost_its_picture(system: System) -> None:
    unfinished = [status.value for status in UNFINISHED_STATUSES]
    records, _ = system.store.list(statuses=unfinished, limit=1000)
    for record in records:
        job = record.job
        if job.provider != "upload":
            continue
        upload_id = job.extra["sourceImage"]
        assert system.uploads.store.get(upload_id) is not None, f"{job.id} needs upload {upload_id}, whose row is gone"
        assert system.media.read_upload(upload_id) is not None, f"{job.id} needs upload {upload_id}, whose bytes are gone"


class HeldCreate:
    """`JobService.create` of a job using `upload_id`, run in a thread, stopped where a method
    wrapped by `hold_after` is called in that thread until `finish`."""

    #: The create that the current thread runs, if any.
    _running = threading.local()

    def __init__(self, system: System, upload_id: str):
        self.system = system
        self.upload_id = upload_id
        self.request = GenerateRequest.model_validate({**REQUEST, "settings": {**REQUEST["settings"], "sourceImage": upload_id}})
        self.held = threading.Event()
        self.released = threading.Event()
        self.job_id: str | None = None
        self.error: ApiError | None = None
        self.thread = threading.Thread(target=self._run, name="held-create")

    def hold(self) -> None:
        self.held.set()
        assert self.released.wait(WAIT_SECONDS), "the test never released the create"

    @classmethod
    def hold_after(cls, method: Callable[..., Any]) -> Callable[..., Any]:
        """`method`, which holds the create of the thread that calls it (if one) once it has run."""

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            create: HeldCreate | None = getattr(cls._running, "create", None)
            if create is not None:
                create.hold()
            return result

        return wrapped

    def _run(self) -> None:
        HeldCreate._running.create = self
        try:
            self.job_id = asyncio.run(self.system.jobs.create(self.request)).job.id
        except ApiError as error:
            self.error = error
        finally:
            self.held.set()  # a create that failed before its hold does not leave the test waiting

    def start(self) -> HeldCreate:
        self.thread.start()
        assert self.held.wait(WAIT_SECONDS)
        return self

    def finish(self) -> None:
        self.released.set()
        self.thread.join(WAIT_SECONDS)
        assert not self.thread.is_alive()


class HeldBatchCreate(HeldCreate):
    """The same, through `JobService.create_batch`: a list of one job that animates the upload."""

    def _run(self) -> None:
        HeldCreate._running.create = self
        try:
            batch = BatchListRequest.model_validate({"jobs": [self.request.model_dump(exclude_none=True)]})
            self.job_id = asyncio.run(self.system.jobs.create_batch(batch)).jobs[0].job.id
        except ApiError as error:
            self.error = error
        finally:
            self.held.set()


@pytest.fixture(params=["sqlite", "postgres"])
def system(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[System]:
    database = {"DATABASE_URL": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    built = System(Settings(_env_file=None, PROMPTREEL_DATA_DIR=tmp_path, **database))
    built.migrate()

    async def enqueue(job_id: str) -> None:  # the jobs stay pending (unfinished): the race is about their creation
        return None

    monkeypatch.setattr(built.jobs.queue, "enqueue", enqueue)
    yield built
    built.engine.dispose()


def remove(system: System, how: str, upload_id: str) -> bool:
    """Remove the upload by DELETE or by a round of expiry past its time; True if it went."""
    if how == "delete":
        try:
            asyncio.run(system.uploads.delete(upload_id))
        except UploadInUse:
            return False
        return True
    return system.uploads.expire(utcnow() + timedelta(hours=25)) == [upload_id]


@pytest.mark.parametrize("via", ["generate", "batch"])
@pytest.mark.parametrize("how", ["delete", "expire"])
async def test_an_upload_removed_between_the_creates_check_and_its_insert_refuses_the_job(
    system: System, how: str, via: str, monkeypatch: pytest.MonkeyPatch
):
    upload_id = await new_upload(system)
    create = (HeldCreate if via == "generate" else HeldBatchCreate)(system, upload_id)
    # The rate limiter's is the last check before the job is stored: the upload was found by then.
    for name in ("check", "check_many"):
        monkeypatch.setattr(system.jobs.rate_limiter, name, HeldCreate.hold_after(getattr(system.jobs.rate_limiter, name)))
    create.start()
    assert create.error is None, create.error
    removed = await asyncio.to_thread(remove, system, how, upload_id)
    create.finish()

    assert removed  # nothing used it yet: it went, row and bytes
    assert isinstance(create.error, FieldInvalid), f"a job {create.job_id} was stored for a removed upload"
    field = "settings.sourceImage" if via == "generate" else "jobs[0].settings.sourceImage"
    assert create.error.details["field"] == field
    assert system.store.list(limit=10)[1] == 0
    check_no_job_lost_its_picture(system)


def lock_waits(system: System) -> int:
    with system.engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one()


@pytest.mark.parametrize("system", ["postgres"], indirect=True)
@pytest.mark.parametrize("how", ["delete", "expire"])
async def test_a_removal_waits_for_a_create_that_holds_the_upload_and_then_keeps_it(
    system: System, how: str, monkeypatch: pytest.MonkeyPatch
):
    """PostgreSQL: the create's transaction has stored the job (not yet committed) when the removal
    starts; the removal waits for it on the upload's row, then sees the job and keeps the upload."""
    upload_id = await new_upload(system)
    create = HeldCreate(system, upload_id)
    # The events are the last thing the create stores in its transaction: hold there, uncommitted.
    monkeypatch.setattr(system.jobs.pipeline.bus, "record", HeldCreate.hold_after(system.jobs.pipeline.bus.record))
    create.start()
    outcome: dict[str, bool] = {}
    done = threading.Event()

    def removal() -> None:
        try:
            outcome["removed"] = remove(system, how, upload_id)
        finally:
            done.set()

    remover = threading.Thread(target=removal, name="removal")
    remover.start()
    # The state the server reports: the removal waiting for a lock (or, wrongly, done without one).
    waited = False
    while not done.is_set() and not waited:
        waited = lock_waits(system) > 0
        done.wait(0.02)
    create.finish()
    remover.join(WAIT_SECONDS)

    assert create.error is None and create.job_id is not None, create.error
    assert waited, "the removal did not wait for the create that names the upload"
    assert outcome == {"removed": False}
    check_no_job_lost_its_picture(system)


def interleavings(system: System) -> type[RuleBasedStateMachine]:
    """Uploads, creates held between their check and their insert, DELETEs, rounds of expiry and
    jobs that take their picture and end, in any order, against a model of what must happen."""

    class UploadInterleavings(RuleBasedStateMachine):
        uploads = Bundle("uploads")

        def __init__(self) -> None:
            super().__init__()
            self.present: set[str] = set()  # uploads whose row the model says exists
            self.pending: list[HeldCreate] = []  # checked, not yet stored
            self.using: dict[str, str] = {}  # unfinished job -> its upload
            self.ended: dict[str, str] = {}  # ended job -> its fitted copy

        @rule(target=uploads)
        def upload(self) -> str:
            upload_id = asyncio.run(new_upload(system))
            self.present.add(upload_id)
            return upload_id

        @rule(upload_id=uploads)
        def begin_create(self, upload_id: str) -> None:
            create = HeldCreate(system, upload_id).start()
            if upload_id in self.present:
                assert create.error is None, create.error
                self.pending.append(create)
            else:  # refused by its check already
                create.finish()
                assert isinstance(create.error, FieldInvalid) and create.job_id is None

        @precondition(lambda self: self.pending)
        @rule(data=st.data())
        def finish_create(self, data: st.DataObject) -> None:
            create = self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1), label="create"))
            create.finish()
            if create.upload_id in self.present:
                assert create.error is None and create.job_id is not None, create.error
                self.using[create.job_id] = create.upload_id
            else:  # removed since its check
                assert isinstance(create.error, FieldInvalid), f"job {create.job_id} stored for a removed upload"

        @rule(upload_id=uploads)
        def delete(self, upload_id: str) -> None:
            try:
                asyncio.run(system.uploads.delete(upload_id))
                outcome = "deleted"
            except UploadInUse:
                outcome = "in use"
            except UploadNotFound:
                outcome = "gone"
            if upload_id not in self.present:
                assert outcome == "gone"
            else:
                assert outcome == ("in use" if upload_id in self.using.values() else "deleted")
            if outcome == "deleted":
                self.present.discard(upload_id)

        @rule()
        def expire(self) -> None:
            removed = set(system.uploads.expire(utcnow() + timedelta(hours=25)))
            assert removed == self.present - set(self.using.values())
            self.present -= removed

        @precondition(lambda self: self.using)
        @rule(data=st.data())
        def take_picture_and_end(self, data: st.DataObject) -> None:
            """What the job's image step does (its fitted copy from the upload), then its end."""
            job_id = data.draw(st.sampled_from(sorted(self.using)), label="job")
            upload = system.uploads.store.get(self.using.pop(job_id))
            stored = system.media.read_upload(upload.id) if upload is not None else None
            assert upload is not None and stored is not None, f"{job_id} finds its upload gone"
            fitted = fit_picture(stored, 64, 64, "crop", upload.width * upload.height)
            self.ended[job_id] = system.media.write_image(job_id, fitted)
            system.store.update_job(job_id, status=JobStatus.COMPLETED.value, image_path=self.ended[job_id])

        @invariant()
        def no_job_lost_its_picture(self) -> None:
            check_no_job_lost_its_picture(system)
            for job_id, image in self.ended.items():
                assert system.media.read_bytes(image) is not None, f"{job_id} lost its fitted copy"

        def teardown(self) -> None:
            """Leave no create held and no upload behind for the next example."""
            for create in self.pending:
                create.finish()
                if create.job_id is not None:
                    self.using[create.job_id] = create.upload_id
            for job_id in self.using:
                system.store.update_job(job_id, status=JobStatus.FAILED.value)
            system.uploads.expire(utcnow() + timedelta(hours=25))

    return UploadInterleavings


def test_no_interleaving_of_creates_removals_and_job_ends_loses_a_picture(system: System, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(system.jobs.rate_limiter, "check", HeldCreate.hold_after(system.jobs.rate_limiter.check))
    run_state_machine_as_test(
        interleavings(system),
        settings=settings(max_examples=STATEFUL_EXAMPLES, stateful_step_count=12, deadline=None, database=None, derandomize=True),
    )
