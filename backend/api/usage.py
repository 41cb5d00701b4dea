"""GET /api/v1/usage: the caller's spend today and this month, and the spending limits that apply.

An admin (a user named in PROMPTREEL_ADMIN_USERS, or anyone when authentication is off: then
every job is the one local user's) also gets `users`: every user with jobs this month, each with
their own spend and limits.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from backend.api.deps import SystemDep, UserDep
from backend.api.routes import errors
from backend.jobs.budgets import period_bounds
from backend.store.models import utcnow

router = APIRouter()


def admins(names: str | None) -> set[str]:
    return {name.strip() for name in (names or "").split(",") if name.strip()}


@router.get("/api/v1/usage", tags=["system"], responses=errors(401, 429))
async def usage(system: SystemDep, user: UserDep) -> JSONResponse:
    """Spend in USD (finished jobs' actual costs plus unfinished jobs' estimates, by creation time,
    UTC days and months) and each limit of PROMPTREEL_BUDGETS that applies to the caller."""
    budgets = system.jobs.budgets
    answer = budgets.usage(user.name)
    if user.name is None or user.name in admins(system.settings.admin_users):
        month_start = period_bounds("month", utcnow())[0]
        owners = sorted(budgets.owners(month_start), key=lambda owner: owner or "")
        answer["users"] = [budgets.usage(owner) for owner in owners]
    return JSONResponse(answer)
