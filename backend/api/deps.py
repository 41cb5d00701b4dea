"""The FastAPI dependencies of the routes: the System and its JobService, the caller, and a job
the caller may see.

They are coroutines: FastAPI runs a plain function in its thread pool, a thread hop per request
that cost more than the whole dependency (bench/api.py). A route that names both `UserDep`
and `JobDep` authenticates once (FastAPI caches a dependency per request).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from backend.auth import User
from backend.errors import Unauthorized
from backend.jobs.service import JobService
from backend.store.jobs import JobRecord
from backend.system import System


async def get_system(request: Request) -> System:
    return request.app.state.system


SystemDep = Annotated[System, Depends(get_system)]


async def get_jobs(system: SystemDep) -> JobService:
    return system.jobs


JobsDep = Annotated[JobService, Depends(get_jobs)]

#: `Authorization: Bearer <token>`; shown in /docs, checked by `current_user` (auto_error off: our error format).
bearer = HTTPBearer(auto_error=False, description="API_TOKEN / one of API_TOKENS (only when authentication is on)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def client_address(connection: HTTPConnection) -> str:
    """The client's address, whose wrong tokens are counted: the connection's peer, or the
    X-Forwarded-For of a proxy uvicorn trusts (FORWARDED_ALLOW_IPS, loopback by default)."""
    return connection.client.host if connection.client else "unknown"


def authenticate(request: Request, system: System, credentials: HTTPAuthorizationCredentials | None) -> User:
    """The caller (authentication on), or the one local user (off); 401 for a missing or wrong token,
    429 for an address that sent too many wrong ones within a minute."""
    user = system.auth.user_for(credentials.credentials if credentials else None, client_address(request))
    if user is None:
        raise Unauthorized("The API token is not valid.") if credentials else Unauthorized()
    request.state.user = user  # for the request log
    return user


async def current_user(request: Request, system: SystemDep, credentials: Credentials) -> User:
    return authenticate(request, system, credentials)


UserDep = Annotated[User, Depends(current_user)]


async def owned_job(job_id: str, jobs: JobsDep, user: UserDep) -> JobRecord:
    """The job of the path's `job_id`, if the caller may see it (404 JOB_NOT_FOUND otherwise)."""
    return jobs.get(job_id, user)


JobDep = Annotated[JobRecord, Depends(owned_job)]
