"""An internal service a hostile provider answer may point the server at: it must never be reached."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .base import FakeServer

SECRET = "internal-admin-secret-4f1c"


class SecretServer(FakeServer):
    """`GET /admin/secret` answers a secret; every request to it is recorded (`seen()`)."""

    label = "secret"

    def __init__(self) -> None:
        super().__init__(key="")

    def routes(self) -> list[Route]:
        return [Route("/admin/secret", self.secret, methods=["GET"])]

    async def secret(self, request: Request) -> Response:
        return PlainTextResponse(SECRET * 1000)
