"""What the engine needs from an LLM backend: one async chat completion, and errors that say whether to retry.

A backend turns a list of chat messages into a `Completion` (text, finish reason, token usage). It signals failure
with one of three errors, and the engine decides what to do:

- `TransientError`: worth retrying (HTTP 408/409/429/5xx, timeouts, connection resets, malformed bodies); may carry
  the server's `Retry-After` in seconds;
- `RequestFailed`: this request will not succeed as it is (HTTP 400, 413, 422, a generation error); recorded as a
  failure and tried again on the next run;
- `BackendUnusable`: no request can succeed (HTTP 401/403/404: wrong key, URL or model); the run stops at once.

`CircuitBreaker` turns a run of requests that all failed for good on transient errors into a `BackendUnusable`: the
data engine and the LLaVA-Bench judge both stop on a server that is down instead of spending every request's
backoff on it.
"""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Completion:
    """One response: the text, why generation stopped (`"stop"`, `"length"`, ...) and the token usage."""

    text: str
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    has_usage: bool = True  # False when the server sent no `usage`: the cost report then says so


class TransientError(Exception):
    """Retry this request (after `retry_after` seconds when the server said so). `kind` groups the error counts."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


class RequestFailed(Exception):
    """This request cannot succeed as sent; `kind` groups the failure counts."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class BackendUnusable(Exception):
    """No request can succeed (bad key, URL or model): stop the run."""


class CircuitBreaker:
    """Stop a run when `limit` requests in a row failed for good (after their own retries) on transient errors.

    A server that is down, or a base URL that points nowhere, fails every request with a refused connection or a
    timeout, and each request spends its whole retry backoff before it is recorded as failed: without this, a run
    over thousands of requests would take hours to fail them all. A success resets the count, so a flaky server
    that answers now and then is not cut off; a request refused as sent (`RequestFailed`) says nothing about the
    server and is not counted.

    Args:
        limit: failed requests in a row that stop the run (at least 1).
        endpoint: what the requests went to (its URL), the message's first words.
    """

    def __init__(self, limit: int, endpoint: str):
        if limit < 1:
            raise ValueError(f"the circuit breaker's limit must be at least 1, got {limit}.")
        self.limit, self.endpoint = limit, endpoint
        self.in_a_row = 0
        self.any_success = False

    def success(self) -> None:
        self.in_a_row, self.any_success = 0, True

    def failure(self, last_error: str, resume: str) -> None:
        """Count one request that failed for good on a transient error; at the limit, raise `BackendUnusable`
        naming the endpoint and `last_error`, then `resume`: the caller's word on what was kept and how to go on."""
        self.in_a_row += 1
        if self.in_a_row < self.limit:
            return
        what = (
            f"the first {self.limit} requests all failed"
            if not self.any_success
            else f"{self.limit} requests in a row failed"
        )
        raise BackendUnusable(
            f"{self.endpoint}: {what} after their retries (last error: {last_error}); check that the server is up "
            f"and that the URL is right. {resume}"
        )


class ChatBackend(Protocol):
    """The interface the engine drives; `name` is recorded in each output record as `model`."""

    name: str

    async def complete(self, messages: list[dict[str, str]]) -> Completion: ...

    async def aclose(self) -> None: ...
