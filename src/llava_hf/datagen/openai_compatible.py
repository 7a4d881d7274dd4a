"""Any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM, SGLang, `transformers serve`, ...), async.

Requests go through one shared `aiohttp` session (keep-alive connections, at most `max_connections` open) rather
than the `openai` client: at hundreds of requests per second on a small machine, the client's per-request overhead
(pydantic models, per-call option handling) costs more CPU than the HTTP itself (measured in
`bench/datagen_throughput.py`). The request and response are the plain Chat Completions JSON; retries are the
engine's, so this class only classifies what went wrong (see `backend.py`).

The API key is read from the environment variable named by `api_key_env` and sent only in the `Authorization`
header; it is never logged or written anywhere.
"""

import asyncio
import email.utils
import json
import logging
import os
import time
from typing import Any

from .backend import BackendUnusable, Completion, RequestFailed, TransientError

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI's), or `Retry-After` as seconds or an HTTP date; else None."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(float(milliseconds) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def http_error(
    status: int, detail: str, url: str, key_fix: str, url_fix: str, retry_after: float | None = None
) -> TransientError | RequestFailed | BackendUnusable:
    """The error for an HTTP status other than 200 from an OpenAI-compatible endpoint: retry (408/409/429/5xx), stop
    the run (401/403: the key; 404: the URL or the model, with the caller's `key_fix` / `url_fix` naming its own
    options), or fail this one request (any other status). `detail` is the start of the server's reply."""
    if status in RETRYABLE_STATUS or status >= 500:
        return TransientError(f"http {status}", f"HTTP {status}: {detail}", retry_after)
    if status in (401, 403):
        return BackendUnusable(
            f"HTTP {status} from {url}: the endpoint refused the key; {key_fix}. Server said: {detail}"
        )
    if status == 404:
        return BackendUnusable(f"HTTP 404 from {url}: {url_fix}. Server said: {detail}")
    return RequestFailed(f"http {status}", f"HTTP {status}: {detail}")


class OpenAICompatibleBackend:
    """`POST {base_url}/chat/completions` with `model`, `messages`, `temperature` and `max_tokens`.

    Args:
        model: the model name on that endpoint.
        base_url: e.g. `http://localhost:8000/v1` (vLLM, SGLang, `transformers serve`); default `$OPENAI_BASE_URL`,
            else OpenAI's.
        api_key_env: the environment variable holding the key (local servers take any key, or none).
        temperature, max_tokens: sampling settings sent with each request.
        timeout: seconds for a whole request (connect, send, generate, read) before it counts as a timeout.
        max_connections: open connections at most; the engine sets it to its concurrency.
        extra_body: more fields for every request body (`top_p`, `seed`, a server's own options, ...).
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.7,
        max_tokens: int = 1024,
        timeout: float = 120.0,
        max_connections: int = 64,
        extra_body: dict[str, Any] | None = None,
    ):
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self.name = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout, self.max_connections = timeout, max_connections
        self.api_key_env = api_key_env
        body = {"model": model, "temperature": temperature, "max_tokens": max_tokens, **(extra_body or {})}
        body.pop("messages", None)
        # `{"model": ..., ..., "messages": [` : the fixed start of every request body.
        self._body_prefix = json.dumps(body, ensure_ascii=False)[:-1] + (", " if body else "") + '"messages": ['
        self._message_cache: dict[tuple[str, str], str] = {}
        self._headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env)
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        else:
            logger.warning(
                "$%s is not set: sending requests without an API key (fine for local servers).", api_key_env
            )
        self._session = None
        self._proxy = self._proxy_auth = None

    def _get_session(self):
        # Created on first use, inside the running event loop: an aiohttp session belongs to one loop.
        if self._session is None:
            import aiohttp
            from aiohttp.helpers import get_env_proxy_for_url
            from yarl import URL

            # HTTP(S)_PROXY / NO_PROXY are honoured, as the openai client does, but looked up once here:
            # `trust_env=True` would look them (and ~/.netrc) up in a worker thread on every request, and those
            # thread hops, contending for the GIL, cost more than the request itself at hundreds per second.
            try:
                self._proxy, self._proxy_auth = get_env_proxy_for_url(URL(self.url))
            except LookupError:
                self._proxy, self._proxy_auth = None, None
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    async def complete(self, messages: list[dict[str, str]]) -> Completion:
        import aiohttp

        session = self._get_session()
        payload = self._encode(messages)
        try:
            async with session.post(
                self.url, data=payload, headers=self._headers, proxy=self._proxy, proxy_auth=self._proxy_auth
            ) as response:
                status, headers = response.status, response.headers
                raw = await response.read()
        except asyncio.TimeoutError as error:  # aiohttp's timeouts subclass it
            raise TransientError("timeout", f"no complete response within {self.timeout} s") from error
        except aiohttp.InvalidURL as error:
            raise BackendUnusable(f"invalid base URL {self.url!r}; pass e.g. http://localhost:8000/v1.") from error
        except aiohttp.ClientError as error:  # resets, refused connections, truncated bodies
            raise TransientError("connection", f"{type(error).__name__}: {error}") from error
        if status == 200:
            return self._completion(raw)
        raise http_error(
            status,
            raw[:300].decode("utf-8", "replace"),
            self.url,
            key_fix=f"set ${self.api_key_env} (or pass --api-key-env NAME) to a valid key",
            url_fix=f"check --base-url (it should end in /v1) and --model {self.name!r}",
            retry_after=parse_retry_after(headers),
        )

    def _encode(self, messages: list[dict[str, str]]) -> bytes:
        """The request body. The system prompt and few-shot turns repeat in every request (thousands of characters),
        so their JSON is cached by (role, content) (string hashes are cached too); only the last message, the
        query, is encoded each time. The bytes equal `json.dumps({**body, "messages": messages})`."""
        parts = []
        for message in messages[:-1]:
            if message.keys() != {"role", "content"}:
                parts.append(json.dumps(message, ensure_ascii=False))
                continue
            key = (message["role"], message["content"])
            encoded = self._message_cache.get(key)
            if encoded is None:
                if len(self._message_cache) >= 4096:  # bounded: user-built message lists need not repeat
                    self._message_cache.clear()
                encoded = self._message_cache[key] = json.dumps(message, ensure_ascii=False)
            parts.append(encoded)
        parts.extend(json.dumps(message, ensure_ascii=False) for message in messages[-1:])
        return (self._body_prefix + ", ".join(parts) + "]}").encode()

    @staticmethod
    def _completion(raw: bytes) -> Completion:
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            # A proxy's HTML page, a cut body, or an error object with status 200: usually passing, so retried.
            raise TransientError(
                "malformed response",
                f"not a chat.completion body ({type(error).__name__}): {raw[:200].decode('utf-8', 'replace')!r}",
            ) from error
        usage = data.get("usage") or {}
        return Completion(
            text=text or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            has_usage=bool(usage),
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
