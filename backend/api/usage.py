"""GET /api/v1/usage: the caller's spend today and this month, and the spending limits that apply.

An admin (a user named in PROMPTREEL_ADMIN_USERS, or anyone when authentication is off: then
every job is the one local user's) also gets `users`: every user with jobs this month, each with
their own spend and limits.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from backend.api.deps import SystemDep, UserDep
from backend.api.routes import errors
from backend.jobs.budgets import period_bounds
from backend.store.models import utcnow

router = APIRouter()


class Limit(BaseModel):
    scope: str  # a user's name, or "*" for the whole service
    period: Literal["day", "month"]
    limit: float
    spent: float
    remaining: float
    resetsAt: str


class Spend(BaseModel):
    day: float
    month: float


class UserUsage(BaseModel):
    user: str | None
    spent: Spend
    limits: list[Limit]


class UsageBody(UserUsage):
    users: list[UserUsage] | None = None  # an admin's answer only


def admins(names: str | None) -> set[str]:
    return {name.strip() for name in (names or "").split(",") if name.strip()}


@router.get("/api/v1/usage", tags=["system"], response_model=UsageBody, responses=errors(401, 429))
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
