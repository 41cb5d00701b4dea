"""The studio's pages: `/` (form, live job list) and `/jobs/{id}` (one job in full).

Page functions build their views from the components and hand them the System; every view
listens to the event bus through its tab's feed (components/live.py), so a job started
anywhere (REST, CLI in this process, another tab) shows up and moves in every open tab. The
header's status bar re-reads the providers' availability as it refreshes and passes a change on
to the form's provider lists.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from fastapi import Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, RedirectResponse
from nicegui import Client, app, ui
from nicegui.page import page as nicegui_page
from starlette.exceptions import HTTPException

from backend.errors import ApiError, BatchNotFound
from backend.jobs.public import job_data
from backend.providers.comfyui.discovery import LocalComfyUIOffer
from backend.system import System
from components.batch_grid import BatchGrid
from components.comfyui_offer import ComfyUIOfferCard
from components.job_card import THUMBNAIL_ROUTE
from components.job_form import JobForm
from components.job_list import JobList
from components.job_page import JobDetail, not_found, unknown_route
from components.login import login_page
from components.session import RENEW_PATH, studio_user, take_up_renewal
from components.spend_meter import SpendMeter
from components.theme import frame

#: Seconds the server keeps a studio tab's page after its socket dropped, for it to come back.
#: NiceGUI's default (3 s) makes a tab whose browser or network stalls a few seconds (a busy
#: laptop, a phone changing networks) reload: the viewer loses what they were typing and the
#: server builds the whole page again. A tab that comes back within this picks up where it was;
#: one that does not costs its feed's filter per event until then (components/live.py).
RECONNECT_SECONDS = 15.0
#: Thumbnails kept in memory (about 15 kB each); the list shows 20 at a time.
THUMBNAIL_CACHE_SIZE = 500
#: A search longer than this, from the URL, is cut (the search box itself has no use for more).
MAX_SEARCH_LENGTH = 200


def register_pages(system: System, *, comfyui_offer: LocalComfyUIOffer | None = None) -> None:
    thumbnails: OrderedDict[str, bytes] = OrderedDict()

    @app.get(THUMBNAIL_ROUTE + "/{job_id}.jpg", include_in_schema=False)
    async def thumbnail(job_id: str, expires: str | None = None, signature: str | None = None) -> Response:
        """A small JPEG of a job's image for the list: 20 full-size PNGs would be tens of megabytes.
        With authentication on, only by a signed link (the studio signs the ones it shows)."""
        if system.auth.enabled:
            try:
                system.auth.check(f"{THUMBNAIL_ROUTE}/{job_id}.jpg", expires, signature)
            except ApiError as error:
                return JSONResponse(error.body(), status_code=error.status_code)
        record = system.jobs.find(job_id)  # the signature was issued to someone who may see the job
        if record is None or not record.job.image_path or record.job.media_expired_at is not None:
            return Response(status_code=404)
        data = thumbnails.get(job_id)
        if data is None:
            # Made once per job and stored beside its image (backend/media/store.py); in a thread: S3 is a network call.
            data = await asyncio.to_thread(system.media.thumbnail, record.job.image_path)
            if data is None:
                return Response(status_code=404)
            thumbnails[job_id] = data
            while len(thumbnails) > THUMBNAIL_CACHE_SIZE:
                thumbnails.popitem(last=False)
        else:
            thumbnails.move_to_end(job_id)
        # A job's image never changes once written; only removal makes it go away.
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @app.get(RENEW_PATH, include_in_schema=False)
    async def renew_session(request: Request) -> RedirectResponse:
        """Sign-in and sign-out land here with a fresh session id (components/session.py)."""
        return RedirectResponse(take_up_renewal(request), status_code=303)

    async def studio_not_found(request: Request, error: HTTPException) -> Response:
        """A branded page for an unknown studio route, in the studio's frame (NiceGUI's own says
        "HTTPException: 404"). Endpoints that are not pages keep their JSON answer, as in NiceGUI."""
        endpoint = request.scope.get("endpoint")
        if endpoint is not None and endpoint is not app and not request.scope.get("nicegui_page_path"):
            return await http_exception_handler(request, error)
        logging.getLogger("nicegui").warning(f"{request.url} not found")  # as NiceGUI logs it (without the query)
        with Client(nicegui_page(""), request=request) as client, frame(system, "Page not found · promptreel"):
            unknown_route(request.url.path)
        return client.build_response(request, 404)

    app.state.studio_not_found = studio_not_found

    @ui.page("/login")
    async def login() -> RedirectResponse | None:
        if studio_user(system) is not None:
            return RedirectResponse("/")
        login_page(system)
        return None

    @ui.page("/", reconnect_timeout=RECONNECT_SECONDS)
    async def studio(q: str = "", status: str = "all") -> RedirectResponse | None:
        user = studio_user(system)
        if user is None:
            return RedirectResponse("/login")
        # The providers' first key checks (at most a moment, once): a refused key shows from the start.
        await system.providers.check_keys()
        if comfyui_offer is not None:
            await comfyui_offer.ready()  # the start-up probe: a second at most, once
        with frame(system, "promptreel studio") as status_bar:
            with ui.element("div").classes(
                "w-full grid grid-cols-1 lg:grid-cols-[minmax(340px,420px)_minmax(0,1fr)] gap-6 items-start"
            ):
                with ui.element("section").classes("w-full lg:sticky lg:top-24").props('aria-label="New job"'):
                    if comfyui_offer is not None and comfyui_offer.open:
                        ComfyUIOfferCard(system, comfyui_offer)
                    form = JobForm(system, user=user)
                    SpendMeter(system, user)  # spend against PROMPTREEL_BUDGETS; nothing without a limit
                with ui.element("section").classes("w-full min-w-0").props('aria-label="Your jobs"'):
                    jobs = JobList(system, on_prefill=form.prefill, user=user, search=q[:MAX_SEARCH_LENGTH], status=status)
            form.on_created = jobs.reveal
            status_bar.on_providers_change(form.set_providers)
        return None

    @ui.page("/jobs/{job_id}", reconnect_timeout=RECONNECT_SECONDS)
    async def job_page(job_id: str) -> RedirectResponse | None:
        user = studio_user(system)
        if user is None:
            return RedirectResponse("/login")
        await system.providers.check_keys()
        record = system.jobs.find(job_id, user)  # someone else's job: as if it did not exist
        title = f"{record.job.prompt[:60]} · promptreel" if record else "Job not found · promptreel"
        with frame(system, title):
            if record is None:
                not_found(job_id)
            else:
                JobDetail(system, job_data(record), user)
        return None

    @ui.page("/batches/{batch_id}", reconnect_timeout=RECONNECT_SECONDS)
    async def batch_page(batch_id: str) -> RedirectResponse | None:
        """A batch's jobs as a grid of cards (the form's "Variants", or POST /api/v1/batches)."""
        user = studio_user(system)
        if user is None:
            return RedirectResponse("/login")
        try:
            system.jobs.batch(batch_id, user)  # someone else's batch: as if it did not exist
        except BatchNotFound:
            with frame(system, "Batch not found · promptreel"):
                unknown_route(f"/batches/{batch_id}")
            return None
        with frame(system, "Batch · promptreel"):
            ui.link("← Back to the studio", "/").classes("pr-plain text-sm pr-muted").props("data-testid=back")
            BatchGrid(system, batch_id, user)
        return None
