"""The studio's spend against the user's spending limits (PROMPTREEL_BUDGETS), warning from 80%.

Shown only when a limit applies to the user (theirs or the service's `*`). It shows the limit
closest to being reached, and reads the spend again when one of the user's jobs is created or
ends (a job's status changes), never on progress.
"""

from __future__ import annotations

from typing import Any

from nicegui import ui

from backend.auth import User
from backend.system import System

from .live import client_feed

#: The share of a limit from which the meter warns.
WARN_AT = 0.8
PERIOD_WORDS = {"day": "today", "month": "this month"}


def tightest(usage: dict[str, Any]) -> dict[str, Any] | None:
    """The limit with the largest share spent (None: no limit applies)."""
    limits = usage["limits"]
    return max(limits, key=lambda limit: limit["spent"] / limit["limit"] if limit["limit"] else 1.0, default=None)


def spend_text(limit: dict[str, Any]) -> str:
    """'$8.50 of $10.00 spent today (service limit)'."""
    whose = " (service limit)" if limit["scope"] == "*" else ""
    return f"${limit['spent']:.2f} of ${limit['limit']:.2f} spent {PERIOD_WORDS[limit['period']]}{whose}"


def warns(limit: dict[str, Any]) -> bool:
    return limit["spent"] >= WARN_AT * limit["limit"]


class SpendMeter:
    def __init__(self, system: System, user: User):
        self.system = system
        self.user = user
        with ui.element("div").classes("pr-stat items-center gap-1").mark("spend") as self.chip:
            self.icon = ui.icon("savings", size="16px")
            self.label = ui.label().classes("text-xs").mark("spend-text")
        self.refresh()
        client_feed(system.jobs).subscribe(lambda _events: self.refresh(), accept=lambda event: event["type"] != "step_update")

    def refresh(self) -> None:
        limit = tightest(self.system.jobs.budgets.usage(self.user.name))
        self.chip.set_visibility(limit is not None)
        if limit is None:
            return
        warning = warns(limit)
        self.label.set_text(spend_text(limit) + (" — nearly at the limit" if warning else ""))
        self.icon.props(f"name={'warning' if warning else 'savings'}")
        self.icon.classes(replace="text-warning" if warning else "pr-muted")
        self.chip.props(f"role={'alert' if warning else 'status'}")
