"""The job lifecycle under a stateful fuzzer (hypothesis's RuleBasedStateMachine).

Real services: one to three "processes" (each a real `System`: store, event log and bus, pipeline,
runner, job service, on one database and one media folder), on SQLite and on PostgreSQL. Their
image and video providers are gated fakes (tests/support/gated_providers.py): every call parks until a rule
sends it a progress tick, its result or a failure. The rules interleave at random: create, progress,
step result, step failure, cancel and remove (through any process's JobService, not only the
owner's), a crash (the process's tasks stop without a word and keep their leases, as under
SIGKILL), a clean stop, a new process starting on the same database and media folder, time passing
(every lease ages; the live processes beat, adopting the jobs of a process that stopped beating),
and media retention.

Time is the test's: the processes run on one event loop whose clock only jumps when a rule says so
(`SteppedClockLoop`), and leases age by rewriting `heartbeat_at`; nothing sleeps. After every rule
the loop settles (every job task is parked in a provider call or done), then every invariant below
is checked against the database and the media folder.

`PROMPTREEL_FUZZ_EXAMPLES` (default 400) and `PROMPTREEL_FUZZ_STEPS` (default 30) set the budget per
database; failures are kept in `.hypothesis/lifecycle/` and replayed first on the next run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, delete, select, text, update

from backend.errors import BatchNotFound, JobBusy, JobNotAnimatable, JobNotCancellable, JobNotFound
from backend.events.log import CHANNEL
from backend.jobs.request import AnimateRequest, VariantsRequest, validate_request
from backend.media.retention import announce_expired, expire_media
from backend.settings import Settings
from backend.store.database import create_db_engine, migrate
from backend.store.models import Batch, Job, JobEvent, JobStatus, JobStep, StepKind, StepStatus, utcnow
from backend.system import System
from tests.support.gated_providers import REMOTE_MARK, GatedProviders, SteppedClockLoop, World

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("PROMPTREEL_FUZZ_EXAMPLES", "400"))
STEPS = int(os.environ.get("PROMPTREEL_FUZZ_STEPS", "30"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    database=DirectoryBasedExampleDatabase(ROOT / ".hypothesis" / "lifecycle"),
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
#: Heartbeats an hour apart on the loop's clock: they run only when a tick jumps it, never by themselves.
HEARTBEAT_SECONDS = 3600.0
STALLED_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
#: How much older every lease gets per beat round: less than the stall limit (a live owner, which
#: beats every round, never looks dead), so a silent owner's jobs are free from the second round on.
LEASE_AGING = timedelta(seconds=2 * HEARTBEAT_SECONDS)
#: Beat rounds per tick: enough for a silent owner's jobs to be adopted within one step.
ROUNDS_PER_TICK = 2
MAX_PROCESSES = 3
MAX_JOBS = 6
#: Real seconds a rule (or the settling after it) may take before the run is declared stuck.
STUCK_AFTER = 60.0

STATUS_RANK = {
    JobStatus.PENDING: 0,
    JobStatus.GENERATING_IMAGE: 1,
    JobStatus.GENERATING_VIDEO: 2,
    JobStatus.COMPLETED: 3,
    JobStatus.FAILED: 3,
    JobStatus.CANCELLED: 3,
}
ENDED_STEP = {StepStatus.COMPLETED.value, StepStatus.FAILED.value, StepStatus.CANCELLED.value}
MEDIA_FILES = ("image.png", "video.mp4")
JOB_EVENTS = ("job_update", "job_completed", "job_failed")


@dataclass(eq=False)
class Process:
    label: str
    system: System
    beats: int = 0

    def __repr__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Seen:
    """What the store said of a job after a rule."""

    status: str
    progress: int
    image_cost: float
    video_cost: float
    steps: dict[str, str]  # kind -> status
    expired: bool
    #: settings.imageOnly: it ends after its image, with no video.
    image_only: bool = False

    @property
    def finished(self) -> bool:
        return JobStatus(self.status).finished


@dataclass(eq=False)
class JobRef:
    label: str
    id: str
    removed: bool = False
    last: Seen | None = None
    #: The job as it was first seen finished: what it must stay.
    final: Seen | None = None
    #: What its delivered results had charged (image, video) when it was first seen finished.
    charged_at_finish: tuple[float, float] = (0.0, 0.0)
    #: The batch it was made in (create_batch, animate), if any.
    batch_id: str | None = None

    def __repr__(self) -> str:
        return self.label


def _rows(engine: Engine) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, list[Any]]]:
    jobs, steps, events = Job.__table__, JobStep.__table__, JobEvent.__table__  # type: ignore[attr-defined]
    with engine.connect() as connection:
        job_rows = {row.id: row for row in connection.execute(select(jobs))}
        step_rows: dict[str, dict[str, Any]] = {}
        for row in connection.execute(select(steps)):
            step_rows.setdefault(row.job_id, {})[row.kind] = row
        event_rows: dict[str, list[Any]] = {}
        for row in connection.execute(select(events).order_by(events.c.job_id, events.c.seq)):
            event_rows.setdefault(row.job_id, []).append(row)
    return job_rows, step_rows, event_rows


def _files_in(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def _money(value: float) -> float:
    return round(value, 6)


class LifecycleMachine(RuleBasedStateMachine):
    """Subclassed once per database; `database_url` and `data_dir` are set by the test that runs it."""

    database_url: ClassVar[str]
    data_dir: ClassVar[Path]
    #: The live processes (a crash or a stop consumes one) and the jobs: bundles, so that a step
    #: names the same process or job however the shrinker cuts the steps before it.
    processes = Bundle("processes")
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.loop = SteppedClockLoop()
        self.world = World()
        self.engine = create_db_engine(self.database_url)
        with self.engine.begin() as connection:  # the database is the test's, migrated once: emptied per run
            for model in (JobEvent, JobStep, Job, Batch):
                connection.execute(delete(model.__table__))  # type: ignore[attr-defined]
        shutil.rmtree(self.data_dir / "media", ignore_errors=True)
        self.media_dir = self.data_dir / "media"
        self.live: list[Process] = []
        self.started = 0
        self.barriers = 0
        self.refs: list[JobRef] = []

    # -- driving the loop --------------------------------------------------------------------

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run one rule's coroutine on the loop, then let the loop settle."""
        return self.loop.run_until_complete(self._then_settle(coroutine))

    async def _then_settle(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await asyncio.wait_for(coroutine, STUCK_AFTER)
        finally:
            await self._settle()
            # PostgreSQL: every instance hears every event (EventRelay) and may act on it (stop a job
            # cancelled elsewhere); hear them all before the next rule, so that a run replays exactly.
            while await self._hear_everything():
                await self._settle()

    async def _hear_everything(self) -> bool:
        """Wait until every live process's relay has delivered every event committed so far (one
        NOTIFY of our own, sent last: PostgreSQL delivers notifications in commit order). Answers
        whether a job task was stopped meanwhile (then the loop settles again)."""
        listening = [process for process in self.live if process.system.relay is not None]
        if not listening:
            return False
        self.barriers += 1
        marker = f"fuzz-barrier-{self.barriers}"
        heard: set[str] = set()
        running_before = self._running_tasks()

        def hearer(label: str) -> Callable[[dict[str, Any]], None]:
            def hear(event: dict[str, Any]) -> None:
                if event["jobId"] == marker:
                    heard.add(label)
                    self.world.changed.set()

            return hear

        stops = [process.system.bus.listen(hearer(process.label)) for process in listening]
        try:
            payload = json.dumps({"type": "fuzz_barrier", "jobId": marker, "data": {}, "seq": None})
            with self.engine.begin() as connection:
                connection.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})
            while len(heard) < len(listening):
                self.world.changed.clear()
                await asyncio.wait_for(self.world.changed.wait(), STUCK_AFTER)
        finally:
            for stop in stops:
                stop()
        return self._running_tasks() != running_before

    def _running_tasks(self) -> set[asyncio.Task[Any]]:
        return {
            task
            for process in self.live
            for task in process.system.runner._tasks.values()
            if not task.done() and not task.cancelling()
        }

    async def _settle(self) -> None:
        """Wait until every job task of every live process is parked in a provider call or done."""
        while True:
            self.world.changed.clear()
            parked = self.world.parked_tasks()
            busy = [
                task
                for process in self.live
                for task in process.system.runner._tasks.values()
                if not task.done() and task not in parked
            ]
            if not busy:
                return
            changed = asyncio.ensure_future(self.world.changed.wait())
            done, _ = await asyncio.wait([changed, *busy], timeout=STUCK_AFTER, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if not done:
                raise AssertionError(f"the processes did not settle in {STUCK_AFTER}s: {busy}")

    # -- processes -----------------------------------------------------------------------------

    async def _start_process(self) -> Process:
        label = f"P{self.started}"
        self.started += 1
        process_settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            PROMPTREEL_DATA_DIR=self.data_dir,
            DATABASE_URL=self.database_url,
            OPENAI_API_KEY=None,
            REPLICATE_API_TOKEN=None,
            RUNWAYML_API_SECRET=None,
            PROMPTREEL_HEARTBEAT_SECONDS=HEARTBEAT_SECONDS,
            PROMPTREEL_STALLED_AFTER_SECONDS=STALLED_AFTER_SECONDS,
            PROMPTREEL_REMOTE_CONCURRENCY=MAX_JOBS,
            PROMPTREEL_RATE_LIMIT_PER_MINUTE=0,
        )
        system = System(process_settings)
        # Test seam: the gated fakes answer for flux1 and runway wherever the system asks for a provider.
        system.providers = system.pipeline.providers = system.jobs.providers = GatedProviders(process_settings, self.world, label)
        process = Process(label, system)
        beat = system.store.heartbeat

        def counted_beat(*args: Any, **kwargs: Any) -> list[str]:  # a tick waits until every live runner beat once
            try:
                return beat(*args, **kwargs)
            finally:
                process.beats += 1
                self.world.changed.set()

        system.store.heartbeat = counted_beat  # type: ignore[method-assign]
        await system.start()
        self.live.append(process)
        return process

    @initialize(target=processes)
    def first_processes(self) -> MultipleResults[Process]:
        """Two instances on one database from the start: the case where a cancel or a remove lands on
        an instance that does not run the job."""
        return multiple(self.run(self._start_process()), self.run(self._start_process()))

    @precondition(lambda self: len(self.live) < MAX_PROCESSES)
    @rule(target=processes)
    def start_process(self) -> Process:
        """A new process (a new worker id) on the same database and media folder."""
        return self.run(self._start_process())

    @staticmethod
    async def _kill(process: Process) -> None:
        system = process.system
        system.pipeline.stopping = True  # its job tasks end without writing a thing, as under SIGKILL
        tasks = [*system.runner._tasks.values(), system.runner._heartbeat, system._housekeeping, system.webhooks._task]
        if system.relay is not None:
            tasks.append(system.relay._task)
        alive = [task for task in tasks if task is not None]
        for task in alive:
            task.cancel()
        await asyncio.gather(*alive, return_exceptions=True)
        system.engine.dispose()

    @rule(target=processes, process=consumes(processes))
    def crash_and_restart(self, process: Process) -> Process:
        """The process dies: its tasks stop, its leases stay taken until they go stale. A new process
        (a new worker id) starts in its place on the same database and media folder."""
        self.live.remove(process)
        self.run(self._kill(process))
        return self.run(self._start_process())

    @rule(target=processes, process=consumes(processes))
    def stop(self, process: Process) -> MultipleResults[Process]:
        """A clean stop: the process interrupts its jobs and releases them (the last one is started again)."""
        self.live.remove(process)
        self.run(process.system.stop())
        return multiple(self.run(self._start_process())) if not self.live else multiple()

    @rule()
    def tick(self) -> None:
        """Time passes, in rounds: every lease ages, then every live process beats once (and adopts
        the jobs whose owner stopped beating)."""
        jobs = Job.__table__  # type: ignore[attr-defined]
        for _ in range(ROUNDS_PER_TICK):
            with self.engine.begin() as connection:
                leases = connection.execute(select(jobs.c.id, jobs.c.heartbeat_at).where(jobs.c.heartbeat_at.is_not(None))).all()
                for job_id, beat in leases:
                    connection.execute(update(jobs).where(jobs.c.id == job_id).values(heartbeat_at=beat - LEASE_AGING))
            before = {process.label: process.beats for process in self.live}
            self.loop.skip(HEARTBEAT_SECONDS)  # before any timer of the rule's own is armed: only the heartbeats are due
            self.run(self._beats_after(before))

    async def _beats_after(self, before: dict[str, int]) -> None:
        while any(process.beats == before[process.label] for process in self.live):
            self.world.changed.clear()
            await self.world.changed.wait()

    # -- what users do -------------------------------------------------------------------------

    @precondition(lambda self: len(self.refs) < MAX_JOBS)
    @rule(
        target=jobs,
        owner=processes,
        remote=st.booleans(),
        quality=st.sampled_from(["standard", "high"]),
        duration=st.sampled_from([5, 10]),
    )
    def create(self, owner: Process, remote: bool, quality: str, duration: int) -> JobRef:
        label = f"job{len(self.refs)}"
        request = validate_request(
            {
                "prompt": f"fuzz {label}" + (f" {REMOTE_MARK}" if remote else ""),
                "provider": "flux1",
                "settings": {"videoProvider": "runway", "quality": quality, "videoDuration": duration},
            }
        )
        record = self.run(owner.system.jobs.create(request))
        ref = JobRef(label, record.job.id)
        self.refs.append(ref)
        note(f"{label} = {ref.id}, created on {owner.label}")
        return ref

    @rule(job=jobs, service=processes)
    def cancel(self, job: JobRef, service: Process) -> None:
        try:
            self.run(service.system.jobs.cancel(job.id))
            note(f"{job.label} cancelled on {service.label}")
        except (JobNotFound, JobNotCancellable) as error:
            note(f"{job.label}: cancel on {service.label} refused: {error}")

    @precondition(lambda self: len(self.refs) <= MAX_JOBS - 2)
    @rule(target=jobs, owner=processes, image_only=st.booleans())
    def create_batch(self, owner: Process, image_only: bool) -> MultipleResults[JobRef]:
        """Two variants in one batch (images only, or image and video), written in one transaction."""
        request = VariantsRequest.model_validate(
            {
                "prompt": "fuzz batch",
                "provider": "flux1",
                "settings": {"videoProvider": "runway", "imageOnly": image_only},
                "count": 2,
            }
        )
        batch = self.run(owner.system.jobs.create_batch(request))
        refs = [
            JobRef(f"job{len(self.refs) + index}", record.job.id, batch_id=batch.batch.id)
            for index, record in enumerate(batch.jobs)
        ]
        self.refs += refs
        kind = "images only" if image_only else "with videos"
        note(f"{', '.join(ref.label for ref in refs)} = batch {batch.batch.id} ({kind}), created on {owner.label}")
        return multiple(*refs)

    @rule(job=jobs, service=processes)
    def cancel_batch(self, job: JobRef, service: Process) -> None:
        """DELETE /api/v1/batches/{id} of the job's batch, on any instance: its unfinished jobs are cancelled."""
        if job.batch_id is None:
            return
        try:
            self.run(service.system.jobs.cancel_batch(job.batch_id))
            note(f"batch of {job.label} cancelled on {service.label}")
        except BatchNotFound as error:
            note(f"batch of {job.label}: cancel on {service.label} refused: {error}")

    @precondition(lambda self: len(self.refs) < MAX_JOBS)
    @rule(target=jobs, job=jobs, service=processes)
    def animate(self, job: JobRef, service: Process) -> JobRef | MultipleResults[JobRef]:
        """The video of a completed image-only job: a new job that takes its image (refused for any other)."""
        try:
            record = self.run(service.system.jobs.animate(job.id, AnimateRequest()))
        except (JobNotFound, JobNotAnimatable) as error:
            note(f"{job.label}: animate on {service.label} refused: {error}")
            return multiple()
        ref = JobRef(f"job{len(self.refs)}", record.job.id, batch_id=record.job.batch_id)
        self.refs.append(ref)
        note(f"{ref.label} = {ref.id}, animating {job.label}, created on {service.label}")
        return ref

    @rule(job=jobs, service=processes)
    def remove(self, job: JobRef, service: Process) -> None:
        try:
            self.run(service.system.jobs.remove(job.id))
            job.removed = True
            note(f"{job.label} removed on {service.label}")
        except (JobNotFound, JobBusy) as error:
            note(f"{job.label}: remove on {service.label} refused: {error}")

    @rule(job=jobs, service=processes)
    def expire(self, job: JobRef, service: Process) -> None:
        """Media retention, run by `service`, with a cutoff just after `job` ended (now, if it has not)."""
        system = service.system
        record = system.store.get(job.id)
        now = utcnow()
        cutoff = now
        if record is not None and record.job.job_status.finished:
            cutoff = min(now, record.job.updated_at + timedelta(microseconds=1))
        expired = expire_media(system.store, system.media, cutoff)
        note(f"retention expired {[ref.label for ref in self.refs if ref.id in expired]}")

        async def announce() -> None:
            announce_expired(system.store, system.bus, expired)

        self.run(announce())

    # -- what the providers do -----------------------------------------------------------------

    def has_parked_call(self) -> bool:
        return any(call.parked for call in self.world.calls)

    def _command(self, data: st.DataObject, command: str, value: int = 0) -> None:
        order = {ref.id: index for index, ref in enumerate(self.refs)}
        parked = sorted((call for call in self.world.calls if call.parked), key=lambda call: (order[call.job_id], call.process))
        names = [f"{self.label_of(call.job_id)}'s {call.kind.value} call in {call.process}" for call in parked]
        name = data.draw(st.sampled_from(names), label="call")
        call = parked[names.index(name)]
        call.send(command, value)
        self.run(asyncio.sleep(0))

    def label_of(self, job_id: str) -> str:
        return next(ref.label for ref in self.refs if ref.id == job_id)

    @precondition(has_parked_call)
    @rule(data=st.data(), percent=st.integers(1, 99))
    def progress(self, data: st.DataObject, percent: int) -> None:
        self._command(data, "progress", percent)

    @precondition(has_parked_call)
    @rule(data=st.data())
    def step_result(self, data: st.DataObject) -> None:
        self._command(data, "complete")

    @precondition(has_parked_call)
    @rule(data=st.data())
    def step_failure(self, data: st.DataObject) -> None:
        self._command(data, "fail")

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def lifecycle_holds(self) -> None:
        assert not self.world.violations, "\n".join(self.world.violations)
        job_rows, step_rows, event_rows = _rows(self.engine)
        for ref in self.refs:
            if ref.removed:
                self._check_removed(ref, job_rows, step_rows, event_rows)
                continue
            row = job_rows.get(ref.id)
            assert row is not None, f"{ref.label} ({ref.id}) vanished without being removed; last seen {ref.last}"
            steps = step_rows.get(ref.id, {})
            now = Seen(
                status=row.status,
                progress=row.progress,
                image_cost=row.image_cost,
                video_cost=row.video_cost,
                steps={kind.value: steps[kind.value].status for kind in StepKind if kind.value in steps},
                expired=row.media_expired_at is not None,
                image_only=bool(row.extra.get("imageOnly")),
            )
            self._check_status(ref, now)
            self._check_progress(ref, now)
            self._check_cost(ref, now)
            self._check_events(ref, row, event_rows.get(ref.id, []))
            self._check_files(ref, now)
            if now.finished and ref.final is None:
                ref.final = now
                ref.charged_at_finish = self._charged(ref)
            ref.last = now

    def _charged(self, ref: JobRef) -> tuple[float, float]:
        return (
            _money(self.world.charged[ref.id, StepKind.IMAGE.value]),
            _money(self.world.charged[ref.id, StepKind.VIDEO.value]),
        )

    def _check_status(self, ref: JobRef, now: Seen) -> None:
        before = ref.last
        if before is not None:
            assert STATUS_RANK[JobStatus(now.status)] >= STATUS_RANK[JobStatus(before.status)], (
                f"{ref.label} ({ref.id}) status went back: {before.status} -> {now.status}"
            )
        if ref.final is not None:
            final = ref.final
            assert now.status == final.status, (
                f"{ref.label} ({ref.id}) changed after it finished: status {final.status} -> {now.status}"
            )
            for kind, outcome in final.steps.items():
                # A step the canceller could not end (another process ran it) may only be closed as cancelled.
                allowed = {outcome} if outcome in ENDED_STEP else {outcome, StepStatus.CANCELLED.value}
                assert now.steps[kind] in allowed, (
                    f"{ref.label} ({ref.id}) changed after it finished ({final.status}):"
                    f" step {kind} {outcome} -> {now.steps[kind]}"
                )
        if now.status == JobStatus.COMPLETED:
            assert set(now.steps.values()) == {StepStatus.COMPLETED.value}, (
                f"{ref.label} ({ref.id}) completed with steps {now.steps}"
            )

    def _check_progress(self, ref: JobRef, now: Seen) -> None:
        if ref.last is not None:
            assert now.progress >= ref.last.progress, (
                f"{ref.label} ({ref.id}) progress went down: {ref.last.progress} -> {now.progress}"
            )
        if ref.final is not None:
            assert now.progress == ref.final.progress, (
                f"{ref.label} ({ref.id}) changed after it finished ({ref.final.status}):"
                f" progress {ref.final.progress} -> {now.progress}"
            )
        assert (now.progress == 100) == (now.status == JobStatus.COMPLETED), (
            f"{ref.label} ({ref.id}) is {now.status} at progress {now.progress}: 100 is for completed jobs, and only them"
        )

    def _check_cost(self, ref: JobRef, now: Seen) -> None:
        stored = (_money(now.image_cost), _money(now.video_cost))
        charged = self._charged(ref)
        if ref.last is not None:
            assert now.image_cost + now.video_cost >= ref.last.image_cost + ref.last.video_cost, (
                f"{ref.label} ({ref.id}) cost went down:"
                f" {ref.last.image_cost}+{ref.last.video_cost} -> {now.image_cost}+{now.video_cost}"
            )
        assert stored == charged, (
            f"{ref.label} ({ref.id}) costs (image, video) {stored} but its steps' delivered results charged {charged}"
        )
        if ref.final is not None:
            # A finished job's cost changes only by a late result's charge (a step that ended after a cancel).
            assert stored == (_money(ref.final.image_cost), _money(ref.final.video_cost)) or charged != ref.charged_at_finish, (
                f"{ref.label} ({ref.id}) changed after it finished ({ref.final.status}): cost "
                f"{(ref.final.image_cost, ref.final.video_cost)} -> {stored} with no result delivered since"
            )

    def _check_events(self, ref: JobRef, row: Any, events: list[Any]) -> None:
        numbers = [event.seq for event in events]
        assert numbers == list(range(1, len(events) + 1)) and row.event_seq == len(events), (
            f"{ref.label} ({ref.id}) events are not numbered 1..n without gaps: {numbers}, job.event_seq={row.event_seq}"
        )
        # What the job-level events say (a step_update's status and progress are its step's).
        told = [
            (
                event.seq,
                event.type,
                *((event.data.get("status"), event.data.get("progress")) if event.type in JOB_EVENTS else (None, None)),
            )
            for event in events
        ]
        rank, progress, status, ended_at = 0, 0, None, None
        for seq, type_, said, percent in told:
            if ended_at is not None:
                # Only retention speaks after the end: a job_update that repeats it (its media expired).
                assert type_ == "job_update" and said == status and percent == progress, (
                    f"{ref.label} ({ref.id}) event {seq} ({type_} {said} {percent})"
                    f" after its {told[ended_at - 1][1]} (event {ended_at}): {told}"
                )
            if said is None:
                continue
            assert STATUS_RANK[JobStatus(said)] >= rank and (
                status is None or not JobStatus(status).finished or said == status
            ), f"{ref.label} ({ref.id}) events tell status {status} -> {said} at event {seq}: {told}"
            rank, status = STATUS_RANK[JobStatus(said)], said
            if percent is not None:
                assert percent >= progress and (percent < 100 or said == JobStatus.COMPLETED), (
                    f"{ref.label} ({ref.id}) events tell progress {progress} -> {percent} ({said}) at event {seq}: {told}"
                )
                progress = percent
            if type_ in ("job_completed", "job_failed"):
                ended_at = seq
        if row.status in (JobStatus.COMPLETED, JobStatus.FAILED):
            ending = "job_completed" if row.status == JobStatus.COMPLETED else "job_failed"
            assert ended_at is not None and told[ended_at - 1][1] == ending, (
                f"{ref.label} ({ref.id}) is {row.status} without a {ending} event: {told}"
            )

    def _check_files(self, ref: JobRef, now: Seen) -> None:
        folder = self.media_dir / ref.id
        if now.status == JobStatus.COMPLETED and not now.expired:
            wanted = MEDIA_FILES[:1] if now.image_only else MEDIA_FILES  # an image-only job has no video
            missing = [name for name in wanted if not (folder / name).is_file()]
            assert not missing, f"{ref.label} ({ref.id}) is completed but {missing} are missing from {folder}"
        if now.expired:
            assert not _files_in(folder), f"{ref.label} ({ref.id}) media expired but {_files_in(folder)} remain in {folder}"

    def _check_removed(self, ref: JobRef, job_rows: dict, step_rows: dict, event_rows: dict) -> None:
        folder = self.media_dir / ref.id
        left = {
            "row": ref.id in job_rows,
            "steps": ref.id in step_rows,
            "events": len(event_rows.get(ref.id, [])),
            "files": _files_in(folder),
        }
        assert not any(left.values()), f"{ref.label} ({ref.id}) was removed but left behind {left}"

    def teardown(self) -> None:
        try:
            for process in self.live:
                self.loop.run_until_complete(self._kill(process))
            self.live.clear()
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            self.engine.dispose()


class LifecycleOnSQLite(LifecycleMachine):
    pass


class LifecycleOnPostgreSQL(LifecycleMachine):
    pass


def run_lifecycle(machine: type[LifecycleMachine], database_url: str, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(database_url)
    migrate(engine)
    engine.dispose()
    machine.database_url, machine.data_dir = database_url, data_dir
    run_state_machine_as_test(machine, settings=FUZZ_SETTINGS)


#: pytest-timeout's limit grows with the budget (a long run is asked for on purpose).
TIMEOUT = max(300, EXAMPLES * STEPS)


@pytest.fixture(autouse=True)
def quiet_backend(caplog: pytest.LogCaptureFixture) -> None:
    """The runs log what the rules provoke on purpose (late results of removed jobs...), hundreds of
    tracebacks per run: a failure's report shows its shrunk steps, not those."""
    caplog.set_level(logging.CRITICAL, logger="backend")


#: The fuzzer kills instances the way a crash would: an abandoned System's open connections and
#: files are what it models, and their finalizers warn when the garbage collector meets them.
ABANDONED_BY_DESIGN = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@ABANDONED_BY_DESIGN
@pytest.mark.timeout(TIMEOUT)
def test_job_lifecycle_on_sqlite(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    run_lifecycle(LifecycleOnSQLite, f"sqlite:///{data_dir / 'promptreel.db'}", data_dir)


@ABANDONED_BY_DESIGN
@pytest.mark.timeout(TIMEOUT)
def test_job_lifecycle_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    run_lifecycle(LifecycleOnPostgreSQL, postgres_url, tmp_path / "data")
