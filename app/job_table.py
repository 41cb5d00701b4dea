"""`promptreel jobs`: the stored jobs as a table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from backend.settings import Settings
from backend.system import System

STATUS_STYLES = {"completed": "green", "failed": "red", "cancelled": "yellow"}


def print_jobs(settings: Settings, *, limit: int, status: str | None) -> None:
    system = System(settings, run_here=True)  # nothing starts: only its JobService is read
    system.migrate()
    records, total = system.jobs.list(statuses=[status] if status else [], limit=limit)
    table = Table(title=f"{len(records)} of {total} job(s), newest first")
    for column in ("id", "created (UTC)", "status", "progress", "provider", "cost"):
        table.add_column(column, no_wrap=True)
    table.add_column("prompt", overflow="fold", min_width=24)
    for record in records:
        job = record.job
        style = STATUS_STYLES.get(job.status, "cyan")
        table.add_row(
            job.id,
            job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"[{style}]{job.status}[/]",
            f"{job.progress}%",
            f"{job.provider} → {job.video_provider}",
            f"${job.total_cost:.3f}",
            job.prompt if len(job.prompt) <= 80 else job.prompt[:77] + "...",
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped into grep or a file: never cut the columns
    console.print(table)
    system.engine.dispose()
