"""A real OpenAI-compatible Chat Completions server on loopback, with injected faults, for the data-engine tests.

`FakeChatServer` runs an aiohttp app in its own thread and event loop (so it never shares the client's loop) and
answers `POST /v1/chat/completions` with `chat.completion` JSON. Each request is identified by its type and query
(`"<type>\\n<last user message>"`: the image's context); `faults(key, attempt)` decides what the n-th attempt of a
request gets:

- `None`: a normal answer (with `usage`), written in the format of the type the system prompt asks for;
- `"429"`: HTTP 429 with `Retry-After` (`retry_after` seconds); `"500"`, `"503"`: server errors;
- `"timeout"`: the answer is held `hang` seconds, past the client's timeout;
- `"reset"`: the connection is aborted without a response;
- `"malformed"`: HTTP 200 with a body that is not a chat.completion; `"400"`: a bad request; `"401"`: bad key.

A query containing `REFUSE` gets a refusal, `TRUNCATE` gets `finish_reason: "length"`, `UNBALANCED` gets a question
without an answer. Every attempt is logged with its arrival time, outcome and the usage it returned.
"""

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from conftest import require
from llava_hf.datagen.prompts import load_prompts

web = require("aiohttp.web")  # the `datagen` extra; skipped without it (fails under `make test`)

SYSTEM_TO_KIND = {prompt.system: kind for kind, prompt in load_prompts().items()}


def answer_for(kind: str, query: str) -> tuple[str, str]:
    """A response in the format of `kind`, built from the query's first line, and its finish reason."""
    first = query.splitlines()[0].strip(". ") if query else "an image"
    if "TRUNCATE" in query:
        return "Question:\nWhat is shown?\n===\nAnswer:\nThe picture shows", "length"
    if "REFUSE" in query:
        return "I'm sorry, but I can't help with describing this image.", "stop"
    if "UNBALANCED" in query:
        return "Question:\nWhat is shown?\n===\nQuestion:\nWhere is it?", "stop"
    if kind == "detail":
        return f"The picture shows this: {first}. Everything sits on a plain background.", "stop"
    if kind == "complex":
        return f"Question:\nWhy does it look like this?\n===\nAnswer:\nBecause {first}.", "stop"
    return (
        f"Question:\nWhat is in the image?\n===\nAnswer:\n{first}.\n===\nQuestion:\nIs it outdoors?\n===\n"
        "Answer:\nIt is hard to tell from the picture.",
        "stop",
    )


@dataclass
class Attempt:
    query: str
    attempt: int
    arrived: float
    outcome: str
    usage: dict | None = None
    authorization: str | None = None


@dataclass
class FakeChatServer:
    faults: Callable[[str, int], str | None] = lambda query, attempt: None
    latency: float = 0.0
    retry_after: str = "0.2"
    hang: float = 1.0
    log: list[Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self.in_flight = self.max_in_flight = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- the handler ---------------------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        messages = body["messages"]
        query = messages[-1]["content"]
        kind = SYSTEM_TO_KIND.get(messages[0]["content"], "conversation")
        key = f"{kind}\n{query}"  # detail and complex share a context: the type tells their requests apart
        with self._lock:
            attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
            fault = self.faults(key, attempt)
            entry = Attempt(key, attempt, time.monotonic(), fault or "ok")
            entry.authorization = request.headers.get("Authorization")
            self.log.append(entry)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._respond(request, body, kind, query, attempt, fault, entry)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _respond(self, request, body, kind, query, attempt, fault, entry) -> web.StreamResponse:
        messages = body["messages"]
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault in ("400", "401", "429", "500", "503"):
            headers = {"Retry-After": self.retry_after} if fault == "429" else {}
            error = {"error": {"message": f"injected {fault}", "type": "test"}}
            return web.json_response(error, status=int(fault), headers=headers)
        if fault == "timeout":
            await asyncio.sleep(self.hang)
            return web.json_response({"error": {"message": "too late"}}, status=503)
        if fault == "reset":
            request.transport.abort()  # RST/close with no response at all
            raise asyncio.CancelledError
        if fault == "malformed":
            return web.Response(
                text="<html>502 Bad Gateway</html>" if attempt % 2 else '{"object": "chat.completion"}'
            )
        content, finish_reason = answer_for(kind, query)
        usage = {
            "prompt_tokens": sum(len(m["content"]) for m in messages) // 4,
            "completion_tokens": len(content) // 4 + 1,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        entry.usage = usage
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.log)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage,
            }
        )

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def __enter__(self) -> "FakeChatServer":
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake chat server did not start")
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- what happened -------------------------------------------------------------------------------------------
    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.log:
            counts[entry.outcome] = counts.get(entry.outcome, 0) + 1
        return counts
