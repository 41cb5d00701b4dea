"""Spending limits (PROMPTREEL_BUDGETS): per user and for the whole service, per day and per month, in USD.

`"alice:20/day,bob:100/month,*:500/month"`: `*` is the whole service. A user's spend in a period
is what their jobs created in it cost: the actual cost of finished jobs plus the estimate of
unfinished ones, read from the database, so every instance counts the same. Periods are UTC
calendar days and months. A job whose estimate would take its user or the service past a limit
is refused before anything is stored or queued (402 BUDGET_EXCEEDED); reaching a limit exactly
is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Engine, select, text
from sqlmodel import col

from backend.errors import ApiError
from backend.store.models import FINISHED_STATUSES, Job, utcnow

Period = Literal["day", "month"]
EVERYONE = "*"
ADJECTIVE: dict[Period, str] = {"day": "daily", "month": "monthly"}
_ENTRY = re.compile(r"^\s*([^:\s,]+)\s*:\s*(\d+(?:\.\d+)?)\s*/\s*(day|month)\s*$")


@dataclass(frozen=True)
class Budget:
    scope: str  # a user's name, or EVERYONE
    limit: float
    period: Period


def parse_budgets(text: str | None) -> list[Budget]:
    """The budgets of a PROMPTREEL_BUDGETS value; ValueError naming the entry at fault."""
    budgets: list[Budget] = []
    for entry in (text or "").split(","):
        if not entry.strip():
            continue
        match = _ENTRY.match(entry)
        if match is None:
            raise ValueError(f"PROMPTREEL_BUDGETS: {entry.strip()!r} is not name:amount/day or name:amount/month")
        period: Period = "day" if match[3] == "day" else "month"
        budgets.append(Budget(match[1], float(match[2]), period))
    return budgets


def period_bounds(period: Period, now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar day or month holding `now`: its start, and when the next one starts."""
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class BudgetExceeded(ApiError):
    status_code = 402
    code = "BUDGET_EXCEEDED"

    def __init__(self, budget: Budget, spent: float, estimate: float, resets_at: datetime):
        who = "the service" if budget.scope == EVERYONE else f"user '{budget.scope}'"
        super().__init__(
            f"This job (estimated ${estimate:.4f}) would take {who} past the {ADJECTIVE[budget.period]} limit "
            f"of ${budget.limit:.2f} (${spent:.4f} spent so far); it resets at {iso(resets_at)}.",
            {
                "scope": budget.scope,
                "period": budget.period,
                "limit": budget.limit,
                "spent": spent,
                "estimate": estimate,
                "resetsAt": iso(resets_at),
            },
        )


class Budgets:
    """Spend read from the job store, and the check of a new job against the limits."""

    def __init__(self, engine: Engine, budgets: list[Budget], estimate_of: Callable[[Job], float]):
        self.engine = engine
        self.budgets = budgets
        #: The estimate of a stored, unfinished job (its cost is not known yet).
        self.estimate_of = estimate_of

    def spent(
        self, scope: str | None, since: datetime, connection: Connection | None = None, exclude: Collection[str] = ()
    ) -> float:
        """What the jobs of `scope` (a user, or EVERYONE; None: authentication is off) created since `since` cost,
        leaving out the jobs `exclude` names; read in `connection` when given (a create's transaction)."""
        query = select(Job).where(col(Job.created_at) >= since)
        if scope != EVERYONE:
            query = query.where(col(Job.owner) == scope if scope is not None else col(Job.owner).is_(None))
        if exclude:
            query = query.where(col(Job.id).not_in(list(exclude)))
        total = 0.0
        with nullcontext(connection) if connection is not None else self.engine.connect() as reading:
            for row in reading.execute(query).mappings():
                job = Job.model_validate(dict(row))
                total += job.image_cost + job.video_cost if job.status in FINISHED_STATUSES else self.estimate_of(job)
        return round(total, 4)

    def applying_to(self, user_name: str | None) -> list[Budget]:
        return [budget for budget in self.budgets if budget.scope in (EVERYONE, user_name)]

    def check(self, user_name: str | None, estimate: float) -> None:
        """BudgetExceeded when a job estimated at `estimate` would take the user or the service past a limit."""
        self._check(user_name, estimate, None, ())

    def hold(self, connection: Connection, user_name: str | None, estimate: float, job_ids: Collection[str]) -> None:
        """`check` again inside the transaction that stores the jobs `job_ids` (after their INSERT), so
        that two creates racing on two instances cannot both pass a limit only one of them fits:
        PostgreSQL takes a lock that every such check takes, held until the commit; on SQLite the
        INSERT took the one write lock already. BudgetExceeded rolls the jobs back."""
        if not self.applying_to(user_name):
            return
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('promptreel_budgets'))"))
        self._check(user_name, estimate, connection, job_ids)

    def _check(self, user_name: str | None, estimate: float, connection: Connection | None, exclude: Collection[str]) -> None:
        now = utcnow()
        for budget in self.applying_to(user_name):
            start, resets_at = period_bounds(budget.period, now)
            spent = self.spent(budget.scope, start, connection, exclude)
            if round(spent + estimate, 4) > budget.limit:
                raise BudgetExceeded(budget, spent, estimate, resets_at)

    def usage(self, user_name: str | None) -> dict[str, Any]:
        """`user_name`'s spend today and this month, and each limit that applies with its spend."""
        now = utcnow()
        spend = {period: self.spent(user_name, period_bounds(period, now)[0]) for period in ("day", "month")}
        limits = []
        for budget in self.applying_to(user_name):
            start, resets_at = period_bounds(budget.period, now)
            spent = spend[budget.period] if budget.scope != EVERYONE else self.spent(EVERYONE, start)
            limits.append(
                {
                    "scope": budget.scope,
                    "period": budget.period,
                    "limit": budget.limit,
                    "spent": spent,
                    "remaining": round(max(budget.limit - spent, 0.0), 4),
                    "resetsAt": iso(resets_at),
                }
            )
        return {"user": user_name, "spent": spend, "limits": limits}

    def owners(self, since: datetime) -> Iterable[str | None]:
        """Every owner with a job created since `since`."""
        with self.engine.connect() as connection:
            return [row[0] for row in connection.execute(select(col(Job.owner)).where(col(Job.created_at) >= since).distinct())]
