"""`promptreel generate`: one job, run in this process, with a live progress bar per step."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from backend.errors import ApiError
from backend.events.bus import Event
from backend.jobs.request import GenerateRequest
from backend.settings import Settings
from backend.store.models import JobStatus, StepKind
from backend.system import System


async def _with_picture(system: System, request: GenerateRequest, image: Path) -> tuple[GenerateRequest, str]:
    """Upload the picture (checked as the API checks it) and name it in the request; answers the upload id."""
    with image.open("rb") as file:
        upload = await system.uploads.create(file, image.stat().st_size, image.name)
    settings = request.settings.model_copy(update={"sourceImage": upload.id})
    return request.model_copy(update={"settings": settings}), upload.id


async def run_generate(settings: Settings, request: GenerateRequest, output_dir: Path, image: Path | None = None) -> int:
    """Run one job here; `image`: animate that picture (request.provider is then `upload`)."""
    console = Console(stderr=True)
    system = System(settings, run_here=True)
    system.migrate()  # only this job runs here: others stay for the server to resume
    progress = Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    )
    bars: dict[str, TaskID] = {kind.value: progress.add_task(kind.label, total=100) for kind in StepKind}
    upload_id: str | None = None
    try:
        if image is not None:
            request, upload_id = await _with_picture(system, request, image)
        record = await system.jobs.create(request)
    except Exception:
        await system.stop()
        raise
    job_id = record.job.id

    def on_event(event: Event) -> None:
        if event["jobId"] == job_id and event["type"] == "step_update":
            progress.update(bars[event["data"]["id"]], completed=event["data"]["progress"])

    stop_listening = system.jobs.listen(on_event)
    console.print(f"job [bold]{job_id}[/] · {request.provider} → {record.job.video_provider} · seed {record.job.seed}")
    try:
        with progress:
            await system.runner.wait(job_id)
    except (KeyboardInterrupt, asyncio.CancelledError):
        await system.jobs.cancel(job_id)
        console.print("cancelled")
        return 130
    finally:
        stop_listening()
        if upload_id is not None:  # the job has its own fitted copy: the upload served its purpose
            with contextlib.suppress(ApiError):
                await system.uploads.delete(upload_id)
        await system.stop()

    job = system.jobs.get(job_id).job
    if job.status != JobStatus.COMPLETED:
        console.print(f"[red]job {job.status}[/]: {job.error or ''}")
        return 1
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for relative in (job.image_path, job.video_path):
        assert relative is not None
        target = output_dir / f"promptreel-{job_id}{PurePosixPath(relative).suffix}"
        await asyncio.to_thread(system.media.save_copy, relative, target)  # a download with S3 media
        written.append(target)
    for path in written:
        print(path.resolve())
    print(f"cost: ${job.total_cost:.3f} (image ${job.image_cost:.3f}, video ${job.video_cost:.3f})", file=sys.stdout)
    return 0
