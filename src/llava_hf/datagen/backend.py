"""What the engine needs from an LLM backend: one async chat completion, and errors that say whether to retry.

A backend turns a list of chat messages into a `Completion` (text, finish reason, token usage). It signals failure
with one of three errors, and the engine decides what to do:

- `TransientError`: worth retrying (HTTP 408/409/429/5xx, timeouts, connection resets, malformed bodies); may carry
  the server's `Retry-After` in seconds;
- `RequestFailed`: this request will not succeed as it is (HTTP 400, 413, 422, a generation error); recorded as a
  failure and tried again on the next run;
- `BackendUnusable`: no request can succeed (HTTP 401/403/404: wrong key, URL or model); the run stops at once.
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


class ChatBackend(Protocol):
    """The interface the engine drives; `name` is recorded in each output record as `model`."""

    name: str

    async def complete(self, messages: list[dict[str, str]]) -> Completion: ...

    async def aclose(self) -> None: ...
