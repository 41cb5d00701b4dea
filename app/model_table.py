"""`promptreel models`: the model catalog as a table, with what runs now (as GET /api/v1/models)."""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.table import Table

from backend.providers.registry import ProviderRegistry
from backend.settings import Settings


def print_models(settings: Settings, *, kind: str | None, provider: str | None) -> None:
    registry = ProviderRegistry(settings)
    entries = [entry for entry, _, _ in registry.models(kind=kind, provider=provider)]
    asyncio.run(registry.check_models(entries))
    table = Table(title="Models (PROMPTREEL_MODELS_FILE adds more)")
    for column in ("id", "provider", "kind", "default", "price", "accepts", "available"):
        table.add_column(column, overflow="fold")
    for entry, available, reason in registry.models(kind=kind, provider=provider):
        table.add_row(
            entry.id,
            entry.provider,
            entry.kind,
            "yes" if registry.is_default(entry) else "",
            entry.price_summary(),
            entry.accepts_summary(),
            "[green]yes[/]" if available else f"[red]no[/]: {reason}",
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped into grep or a file: never cut the columns
    console.print(table)
