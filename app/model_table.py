"""`promptreel models`: the model catalog as a table, with what runs now (as GET /api/v1/models)."""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.table import Table

from backend.providers.catalog import ModelEntry
from backend.providers.registry import ProviderRegistry
from backend.settings import Settings


def price_text(entry: ModelEntry) -> str:
    """The price rule in a few words: '$0.12/s', '$0.003/image', 'tokens ($0.02-0.19/image est.)'."""
    price = entry.price
    if price is None:
        return "no price"
    if price.unit == "second":
        return f"${price.usdPerSecond:g}/s"
    figures = sorted({value for row in (price.perImage or {}).values() for value in row.values()})
    span = f"${figures[0]:g}" if len(figures) == 1 else f"${figures[0]:g}-{figures[-1]:g}"
    return f"tokens (est. {span}/image)" if price.unit == "token" else f"{span}/image"


def accepts_text(entry: ModelEntry) -> str:
    if entry.kind == "video":
        return "durations " + ",".join(str(seconds) for seconds in entry.durations) + " s"
    return "sizes " + ", ".join(entry.sizes) + (f"; quality {', '.join(entry.qualities)}" if entry.qualities else "")


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
            price_text(entry),
            accepts_text(entry),
            "[green]yes[/]" if available else f"[red]no[/]: {reason}",
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped into grep or a file: never cut the columns
    console.print(table)
