"""One retry policy for every provider: exponential backoff with full jitter, honouring Retry-After.

The SDKs each retry in their own way (different status lists, caps and logging), so polycap turns
their retries off (``max_retries=0`` / one attempt) and retries here, identically for all of them.
Exceptions are classified by duck typing (an HTTP status on the exception, or a transport error
class name such as ``ReadTimeout``), which works for the OpenAI, Anthropic and Gemini SDKs alike
without importing any of them.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from polycap.errors import OptionError, PolycapError

log = logging.getLogger(__name__)
T = TypeVar("T")

# 408 request timeout, 409 conflict (lock contention), 429 rate limit; every 5xx (529 = overloaded).
RETRYABLE_STATUS = frozenset({408, 409, 429})
_TIMEOUT_MARKERS = ("Timeout",)
_CONNECTION_NAMES = frozenset(
    {"APIConnectionError", "ConnectError", "ConnectionError", "NetworkError", "RemoteProtocolError",
     "ReadError", "WriteError", "TransportError", "ProtocolError", "ServerDisconnectedError"}
)


class RemoteError(PolycapError):
    """A remote call failed for good (after retries, or with a non-retryable answer)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait. ``sleep`` is injectable so tests need not wait.

    The n-th retry (n = 0, 1, ...) waits a uniform random time in [0, min(max_delay, base_delay * 2**n)]
    ("full jitter": clients that failed together do not retry together). A server's Retry-After
    is obeyed instead, capped at ``max_retry_after`` so a bad header cannot stall a batch for hours.
    """

    max_retries: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise OptionError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        for name in ("base_delay", "max_delay", "max_retry_after"):
            if getattr(self, name) < 0:
                raise OptionError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def wait(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return random.uniform(0.0, min(self.max_delay, self.base_delay * 2**retry))


@dataclass(frozen=True)
class Failure:
    """What went wrong with one attempt, in provider-neutral terms."""

    kind: str  # "http", "timeout", "connection" or "other"
    status: int | None = None
    retry_after: float | None = None
    error_type: str = ""

    @property
    def retryable(self) -> bool:
        if self.kind in ("timeout", "connection"):
            return True
        status = self.status
        return self.kind == "http" and status is not None and (status in RETRYABLE_STATUS or status >= 500)

    def describe(self) -> str:
        if self.kind == "http":
            return f"HTTP {self.status}"
        return {"timeout": "request timed out", "connection": "connection error"}.get(self.kind, self.error_type)


def classify(exc: BaseException) -> Failure:
    """Map an SDK or transport exception onto a :class:`Failure`."""
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None)
    if status is None:  # google-genai's APIError carries the status as ``code``
        code = getattr(exc, "code", None)
        status = code if response is not None else None
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status < 600:
        return Failure("http", status, parse_retry_after(getattr(response, "headers", None)))
    names = [cls.__name__ for cls in type(exc).__mro__]
    if any(marker in n for n in names for marker in _TIMEOUT_MARKERS) or isinstance(exc, TimeoutError):
        return Failure("timeout", error_type=names[0])
    if _CONNECTION_NAMES.intersection(names) or isinstance(exc, ConnectionError):
        return Failure("connection", error_type=names[0])
    return Failure("other", error_type=names[0])


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(float(ms) / 1000.0, 0.0)
        value = headers.get("retry-after")
    except (TypeError, ValueError, AttributeError):
        return None
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - time.time(), 0.0)


def call_with_retries(
    fn: Callable[[], T], policy: RetryPolicy, what: str, scrub: Callable[[str], str] = str
) -> tuple[T, int]:
    """Call ``fn`` until it succeeds or the policy gives up; returns (result, attempts).

    Raises :class:`RemoteError` whose message names the failure, the attempts and the SDK's own
    message, passed through ``scrub`` so an API key a server echoed never leaves this function.
    """
    retry = 0
    while True:
        try:
            return fn(), retry + 1
        except Exception as e:  # noqa: BLE001 - classified below, re-raised as RemoteError
            failure = classify(e)
            detail = scrub(_message(e))
            if not failure.retryable or retry >= policy.max_retries:
                tries = f" after {retry + 1} attempts" if retry else ""
                raise RemoteError(f"{what}: {failure.describe()}{tries}: {detail}") from None
            delay = policy.wait(retry, failure.retry_after)
            log.info("%s: %s (%s); retry %d/%d in %.2fs", what, failure.describe(), detail, retry + 1,
                     policy.max_retries, delay)
            policy.sleep(delay)
            retry += 1


def _message(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip() or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_policy(retry: RetryPolicy | None, max_retries: Any) -> RetryPolicy:
    """The explicit policy, else the default one with ``max_retries`` (a common loader kwarg)."""
    if retry is not None:
        if not isinstance(retry, RetryPolicy):
            raise OptionError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        return retry
    return RetryPolicy(max_retries=max_retries)
