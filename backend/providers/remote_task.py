"""What the providers that run a remote task share: Replicate's predictions and Runway's tasks.

Both start paid work with one create call, answer with an id, and are then polled until the work
reaches an end. This class does that part once: create the task under the never-pay-twice rules
of `retry.py` (a create is repeated only when nothing was started; a create whose outcome is
unknown, or that failed with a 5xx, is not sent again), save its id at once (also when the job is
cancelled while the create is on the wire, so that what it started is cancelled too), poll again
the id saved before a restart instead of paying for new work, poll until the task ends or
`max_wait` passes, and cancel it.

A provider subclasses it and keeps only what is its own: the request it sends, where its tasks
live, what its statuses mean and how far along they are, and how it explains a refusal.
"""

from __future__ import annotations

import asyncio
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any, Literal

import httpx

from backend.media.checks import MediaLimits, probe_video
from backend.providers.base import ProviderError, StepContext
from backend.providers.output_urls import OutputUrlPolicy
from backend.providers.remote import download, http_client
from backend.providers.retry import (
    OutcomeUnknown,
    RetryPolicy,
    Transient,
    finish_despite_cancel,
    send,
    status_reason,
    with_retries,
)
from backend.settings import Settings

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
#: Longest a remote task may take before the step gives up on it (s).
DEFAULT_MAX_WAIT = 30 * 60.0


def error_body(response: httpx.Response) -> dict[str, Any] | str:
    """An error answer's JSON object, for the provider to read; else its text in one short line."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or status_reason(response)
    return body if isinstance(body, dict) else str(body)[:200]


class RemoteTaskProvider(ABC):
    name: str
    #: The provider for people, in messages and logs: "Replicate".
    label: str
    #: What the provider calls its unit of work: "prediction", "task".
    noun: str
    #: The create call in messages: "starting the prediction".
    create_what: str
    #: Why a 401 fails the step ("Replicate rejected the API token (401)"), and the setting to check.
    key_rejected: str
    key_setting: str
    #: Answers to the create call that carry the new task.
    created_status: Container[int] = range(200, 300)
    #: Where a task is polled: "/v1/tasks/{id}".
    poll_path: str
    #: The cancel call ("DELETE", "/v1/tasks/{id}"), and the answers that mean it is cancelled (or gone).
    cancel_method: str
    cancel_path: str
    cancel_ok: Container[int]
    #: Called with (model, reason) when the provider answers that it has no such model: the
    #: registry marks the model unavailable, so the studio and /models show it at once.
    on_model_missing: Callable[[str, str], None] | None = None

    def __init__(
        self,
        settings: Settings,
        *,
        policy: RetryPolicy | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_wait: float = DEFAULT_MAX_WAIT,
        on_key_rejected: Callable[[str], None] | None = None,
    ):
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.max_wait = max_wait
        self.on_key_rejected = on_key_rejected
        self.limits = MediaLimits.from_settings(settings)

    # -- what each provider says for itself ----------------------------------------------------

    @property
    @abstractmethod
    def base_url(self) -> str: ...

    @abstractmethod
    def _headers(self) -> dict[str, str]: ...

    @abstractmethod
    async def _create_request(self, request: Any, ctx: StepContext) -> tuple[str, dict[str, Any]]:
        """The path and JSON body of the create call (logged as the step starts)."""

    @abstractmethod
    def _detail(self, response: httpx.Response) -> str:
        """The readable part of an error answer."""

    @abstractmethod
    def _refusal(self, status: int, detail: str, what: str) -> ProviderError | None:
        """The provider's own reading of an answer; None leaves it to the shared wording (which
        reads a 401 before this, and a 5xx after it)."""

    @abstractmethod
    def _outcome_unknown(self, reason: str) -> str:
        """The message when the create call was sent but got no answer."""

    @abstractmethod
    def _status_line(self, remote_id: str, status: str) -> str:
        """The log line when the task's status changes."""

    @abstractmethod
    def _settle(self, remote_id: str, status: str, task: dict[str, Any], ctx: StepContext) -> bool:
        """Read one poll: True when the task succeeded, a ProviderError raised when it ended
        otherwise, else False after reporting its progress."""

    @abstractmethod
    def _billed_model(self, request: Any, task: dict[str, Any]) -> str:
        """The model a task that succeeded ran, as pricing.py prices it."""

    # -- the shared part -------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        return http_client(
            provider=self.name, label=self.label, base_url=self.base_url, headers=self._headers(), timeout=self.timeout
        )

    def _model_missing(self, model: str, error: ProviderError, way_out: str = "choose another model") -> ProviderError:
        """The job's error for a model the provider says does not exist (its words and the way
        out, never a base URL), after telling the registry."""
        if self.on_model_missing:
            self.on_model_missing(model, f"{self.label} answered that the model does not exist ({error.message})")
        message = f"{self.label} has no model '{model}' ({error.message}); {way_out}, or update the model catalog"
        return ProviderError(self.name, message, code="MODEL_NOT_FOUND")

    async def _download_video(self, url: str, output_path: Path, ctx: StepContext) -> tuple[int, int, float]:
        """The task's video, downloaded next to `output_path`, checked to play, then moved into
        place atomically (a reader never sees half a file): its width, height and seconds."""
        partial = output_path.with_name(output_path.name + ".part")
        try:
            await self._download_output(url, partial, kind="video", ctx=ctx)
            try:
                width, height, seconds = await asyncio.to_thread(probe_video, partial, self.limits.image_pixels)
            except ValueError as error:
                raise ProviderError(self.name, f"{self.label}'s output is not a playable video ({error})") from error
            os.replace(partial, output_path)
        finally:
            partial.unlink(missing_ok=True)
        return width, height, seconds

    async def _download_output(self, url: str, dest: Path, *, kind: Literal["image", "video"], ctx: StepContext) -> None:
        """Fetch the task's output to `dest` under the output URL rules (output_urls.py); the API
        key goes along only while the URL is on the API's own origin."""
        urls = OutputUrlPolicy(
            self.base_url, provider=self.name, label=self.label, allow_private=self.settings.allow_private_output_urls
        )
        await download(
            url,
            dest,
            kind=kind,
            limits=self.limits,
            urls=urls,
            ctx=ctx,
            provider=self.name,
            label=self.label,
            policy=self.policy,
            timeout=self.timeout,
            headers=self._headers(),
        )

    async def _run(self, request: Any, ctx: StepContext) -> tuple[str, dict[str, Any]]:
        """Start the task (or take up the one saved before a restart) and wait for its end:
        its id and its last state. Once it succeeded the pipeline is told at once: it is paid
        for, even if the job is cancelled while its output downloads."""
        async with self._client() as client:
            if ctx.remote_id:
                remote_id = ctx.remote_id
                ctx.log(f"polling {self.label} {self.noun} {remote_id} again (started before a restart)")
            elif ctx.resumed:  # stopped between sending the create and saving its id: it may have been accepted
                raise ProviderError(
                    self.name,
                    f"{self.label}'s {self.noun} request was interrupted by a restart before its id was saved; it may "
                    "already have been charged, so it was not sent again. Run the job again to make a new one.",
                    code="PROVIDER_INTERRUPTED",
                )
            else:
                path, body = await self._create_request(request, ctx)
                remote_id = await self._create(client, path, body, ctx)
            task = await self._wait(client, remote_id, ctx)
            ctx.remote_succeeded(self._billed_model(request, task))
            return remote_id, task

    async def _create(self, client: httpx.AsyncClient, path: str, body: dict[str, Any], ctx: StepContext) -> str:
        async def attempt() -> str:
            response, cancelled = await finish_despite_cancel(send(client, "POST", path, creates=True, json=body))
            if cancelled:  # the job was cancelled while the provider answered: keep what it started, so it is cancelled too
                try:
                    await ctx.save_remote_id(self._created_id(response))
                except ProviderError:
                    pass  # nothing was started
                raise asyncio.CancelledError()
            return self._created_id(response)

        try:
            remote_id = await with_retries(
                attempt, ctx=ctx, provider=self.name, label=self.label, what=self.create_what, policy=self.policy
            )
        except OutcomeUnknown as error:
            raise ProviderError(self.name, self._outcome_unknown(error.reason), transient=True) from error
        await ctx.save_remote_id(remote_id)
        return remote_id

    def _created_id(self, response: httpx.Response) -> str:
        if response.status_code in self.created_status:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("id"):
                return str(body["id"])
            raise ProviderError(self.name, f"{self.label} started a {self.noun} but its answer has no {self.noun} id")
        raise self._explain(response, self.create_what, creates=True)

    def _explain(self, response: httpx.Response, what: str, *, creates: bool = False) -> ProviderError:
        status, detail = response.status_code, self._detail(response)
        if status == 401:
            if self.on_key_rejected:
                self.on_key_rejected(self.key_rejected)
            return ProviderError(self.name, f"{self.key_rejected}: check {self.key_setting}", code="PROVIDER_AUTH")
        refusal = self._refusal(status, detail, what)
        if refusal is not None:
            return refusal
        if status >= 500 and creates:
            return ProviderError(
                self.name,
                f"{self.label} failed while {what} ({status}: {detail}); it was not sent again, as it may have started the work",
                transient=True,
            )
        return ProviderError(self.name, f"{self.label} answered {status} while {what}: {detail}", transient=status >= 500)

    def _explain_poll(self, response: httpx.Response, remote_id: str) -> ProviderError:
        return self._explain(response, f"polling {self.noun} {remote_id}")

    async def _get(self, client: httpx.AsyncClient, remote_id: str, ctx: StepContext) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            response = await send(client, "GET", self.poll_path.format(id=remote_id))
            if response.status_code != 200:
                raise self._explain_poll(response, remote_id)
            try:
                task = response.json()
            except ValueError as error:
                raise Transient("the answer was not JSON") from error
            if not isinstance(task, dict):
                raise Transient(f"the answer was not a {self.noun}")
            return task

        return await with_retries(
            attempt, ctx=ctx, provider=self.name, label=self.label, what=f"polling {self.noun} {remote_id}", policy=self.policy
        )

    async def _wait(self, client: httpx.AsyncClient, remote_id: str, ctx: StepContext) -> dict[str, Any]:
        deadline = time.monotonic() + self.max_wait
        last_status = None
        while True:
            task = await self._get(client, remote_id, ctx)
            status = str(task.get("status"))
            if status != last_status:
                ctx.log(self._status_line(remote_id, status))
                last_status = status
            if self._settle(remote_id, status, task, ctx):
                return task
            if time.monotonic() > deadline:
                raise ProviderError(
                    self.name, f"the {self.noun} {remote_id} did not finish within {self.max_wait / 60:g} minutes", transient=True
                )
            await asyncio.sleep(self.settings.poll_interval)

    async def cancel_remote(self, remote_id: str) -> None:
        async with self._client() as client:

            async def attempt() -> None:
                response = await send(client, self.cancel_method, self.cancel_path.format(id=remote_id))
                if response.status_code not in self.cancel_ok:
                    raise self._explain(response, f"cancelling {self.noun} {remote_id}")

            await with_retries(
                attempt,
                ctx=None,
                provider=self.name,
                label=self.label,
                what=f"cancelling {self.noun} {remote_id}",
                policy=self.policy,
            )
