"""Retrying provider calls: which failures are worth another try, how long to wait, and which
calls must never be sent twice.

The rule that keeps users from paying twice: a call that *starts paid work* (OpenAI's image
generation, Replicate's prediction create, Runway's image_to_video) is repeated only when the
failure proves that nothing was started:

- the connection could not be made, or the request could not be written out (the provider
  never read a whole request);
- the provider answered 429 (rate limited: refused before any work), or 502/503/504 (the
  load balancer shed the request or the service was unavailable: Runway documents all three as
  safe to retry).

A read timeout or a connection dropped *after* the request was sent, or a 500, leaves it unknown
whether the work was started; such a create call is not repeated and the step fails with a message
that says so. Reads (polls, downloads) and cancels are idempotent and are retried on any
transient failure.

Each retry is logged to the step (`attempt 2/4 in 1.3 s after 429 ...`), waits for the
provider's `Retry-After` when it gives one, and otherwise backs off exponentially with up to 50%
random jitter (Runway's own advice), so that many clients do not retry in step.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base

from backend.providers.base import ProviderError, StepContext

T = TypeVar("T")

#: Answers to a read (GET) or a cancel that are worth another try.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: Answers to a create call that prove nothing was started (see the module's docstring).
CREATE_RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
#: How long a create call that was on the wire when its step was cancelled may still take to
#: answer, so that the remote work it started is known and can be cancelled too (s).
CREATE_GRACE_SECONDS = 15.0


@dataclass(frozen=True)
class RetryPolicy:
    #: Tries in all, the first included.
    attempts: int = 4
    #: The first backoff (s); each further one doubles, plus up to 50% jitter.
    base_delay: float = 1.0
    max_delay: float = 30.0
    #: A provider's Retry-After is honoured up to this many seconds.
    max_retry_after: float = 120.0


class Transient(Exception):
    """A failure worth another attempt; `reason` says what happened in plain words."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class OutcomeUnknown(Exception):
    """A create call was sent but no answer came back: the provider may have started the work."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or as an HTTP date."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


class _WaitRetryAfterOrBackoff(wait_base):
    def __init__(self, policy: RetryPolicy):
        self.policy = policy

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, Transient) and error.retry_after is not None:
            return min(error.retry_after, self.policy.max_retry_after)
        backoff = min(self.policy.max_delay, self.policy.base_delay * 2 ** (retry_state.attempt_number - 1))
        return backoff * (1 + random.uniform(0, 0.5))


async def with_retries(
    operation: Callable[[], Awaitable[T]],
    *,
    ctx: StepContext | None,
    provider: str,
    label: str,
    what: str,
    policy: RetryPolicy,
) -> T:
    """Run `operation`, again after each `Transient` failure, at most `policy.attempts` times.

    `label` names the provider for people ("Runway"), `what` the call ("polling task 1234").
    When the attempts run out, the step fails with a transient ProviderError naming the last cause.
    """

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        reason = error.reason if isinstance(error, Transient) else repr(error)
        delay = state.next_action.sleep if state.next_action else 0.0
        hint = " (its Retry-After)" if isinstance(error, Transient) and error.retry_after is not None else ""
        message = f"{label} {what}: attempt {state.attempt_number + 1}/{policy.attempts} in {delay:.2f} s{hint} after {reason}"
        if ctx is not None:
            ctx.log(message)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=_WaitRetryAfterOrBackoff(policy),
        retry=retry_if_exception_type(Transient),
        before_sleep=log_retry,
        reraise=True,
    )
    try:
        return await retrying(operation)
    except Transient as error:
        raise ProviderError(
            provider, f"{label} kept failing while {what}: {error.reason} ({policy.attempts} attempts)", transient=True
        ) from error


def describe_transport_error(error: BaseException) -> str:
    names = {
        httpx.ConnectError: "could not connect",
        httpx.ConnectTimeout: "timed out connecting",
        httpx.PoolTimeout: "no free connection",
        httpx.ReadTimeout: "no answer in time (read timeout)",
        httpx.WriteTimeout: "timed out sending the request",
        httpx.RemoteProtocolError: "the connection was dropped",
        httpx.ReadError: "the connection broke while reading the answer",
        httpx.WriteError: "the connection broke while sending the request",
    }
    for kind, text in names.items():
        if isinstance(error, kind):
            detail = str(error).strip()
            return f"{text} ({detail})" if detail else text
    return f"{type(error).__name__}: {error}".rstrip(": ")


#: Transport failures that prove the provider never received a whole request.
NOT_SENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
)


def status_reason(response: httpx.Response) -> str:
    retry_after = parse_retry_after(response.headers)
    text = f"{response.status_code} {response.reason_phrase}".strip()
    return f"{text}, Retry-After {retry_after:g} s" if retry_after is not None else text


async def send(client: httpx.AsyncClient, method: str, url: str, *, creates: bool = False, **kwargs) -> httpx.Response:
    """One HTTP exchange. Raises Transient when another try is worth it and safe, OutcomeUnknown
    when a create call got no answer, and otherwise returns the response, errors included, for the
    provider to explain."""
    try:
        response = await client.request(method, url, **kwargs)
    except NOT_SENT_ERRORS as error:
        raise Transient(describe_transport_error(error)) from error
    except httpx.TransportError as error:
        if creates:
            raise OutcomeUnknown(describe_transport_error(error)) from error
        raise Transient(describe_transport_error(error)) from error
    retryable = CREATE_RETRYABLE_STATUS if creates else RETRYABLE_STATUS
    if response.status_code in retryable:
        raise Transient(status_reason(response), retry_after=parse_retry_after(response.headers))
    return response


async def finish_despite_cancel(awaitable: Awaitable[T], grace: float = CREATE_GRACE_SECONDS) -> tuple[T, bool]:
    """Await a create call to its end even when the step is cancelled meanwhile.

    Returns `(result, cancelled)`. When `cancelled` is true the caller must record what the call
    started (its remote id) and then raise `asyncio.CancelledError`, so that the pipeline cancels
    the remote work instead of leaving it running, and paid for, unseen.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task), False
    except asyncio.CancelledError:
        if task.done() and not task.cancelled() and task.exception() is None:
            return task.result(), True
        try:
            return await asyncio.wait_for(task, grace), True
        except Exception:
            raise asyncio.CancelledError() from None
