"""The data engine: every (image, type, sample) key -> one request -> a record, a rejection or a recorded failure.

- **Concurrency**: a fixed pool of `concurrency` worker coroutines pulls keys from one queue, so at most that many
  requests are in flight (a semaphore's bound, without creating 100K pending tasks up front).
- **Retries**: `TransientError`s (429, 5xx, timeouts, resets, malformed bodies) are retried up to `max_retries`
  times, after the server's `Retry-After` when it sent one, else after an exponential backoff with jitter
  (`min(max_backoff, initial_backoff * 2**attempt)` times a uniform factor in [0.5, 1), so many workers hit by the
  same outage do not come back in lockstep). What still fails is written to `failed.jsonl`, counted, reported, and
  tried again by the next run. A backend that cannot work (HTTP 401/403/404, or `max(10, concurrency)` requests
  in a row failing on transient errors after their retries: a server that is down, see
  `backend.CircuitBreaker`) stops the run at once, saying why.
- **Resume**: the output is append-only JSONL keyed by (image id, type, sample index) (see `store.py`); a restarted
  run skips done keys, so a run killed at any point neither loses nor duplicates a record.
- **Determinism**: the few-shot order, the detail instruction and the `<image>` position depend only on the seed and
  the key, never on completion order.
- **Accounting**: prompt and completion tokens from each response's `usage` (rejected responses cost money too),
  the cost at the given prices per million tokens, a tqdm bar with the rate and the error counts, and a final
  `RunReport` (also written to `report.json`).
"""

import asyncio
import gc
import json
import logging
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..utils import atomic_write_text
from .backend import BackendUnusable, ChatBackend, CircuitBreaker, Completion, RequestFailed, TransientError
from .context import ImageContext
from .parsing import ResponseRejected, parse_response
from .prompts import KINDS, PromptSet, canonical_kind, load_prompts, request_rng
from .store import REPORT, InstructionStore

logger = logging.getLogger(__name__)


@dataclass
class EngineSettings:
    """How the engine runs. Prices are per million tokens, in whatever currency you count in."""

    kinds: tuple[str, ...] = field(default=KINDS, metadata={"help": "comma-separated instruction types"})
    samples_per_image: int = field(default=1, metadata={"help": "requests per image and type"})
    seed: int = field(default=0, metadata={"help": "few-shot order, detail instruction, <image> position"})
    concurrency: int = field(default=32, metadata={"help": "requests in flight at most"})
    max_retries: int = field(default=6, metadata={"help": "retries per request on 429/5xx/timeouts/resets"})
    initial_backoff: float = field(default=1.0, metadata={"help": "seconds before the first retry"})
    max_backoff: float = field(default=60.0, metadata={"help": "longest backoff between retries, in seconds"})
    # A server asking for longer than this gets this (a run should not stall for hours).
    max_retry_after: float = field(default=300.0, metadata={"help": "longest Retry-After honoured, in seconds"})
    input_price: float = field(default=0.0, metadata={"help": "price per 1M prompt tokens, for the cost"})
    output_price: float = field(default=0.0, metadata={"help": "price per 1M completion tokens"})
    progress: bool = field(default=True, metadata={"help": "the progress bar"})

    def __post_init__(self) -> None:
        self.kinds = tuple(canonical_kind(kind) for kind in self.kinds)
        if not self.kinds:
            raise ValueError(f"kinds is empty: name at least one instruction type ({', '.join(KINDS)}).")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds {self.kinds} repeat a type; list each of {', '.join(KINDS)} once.")
        for name in ("samples_per_image", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries}.")
        for name in ("initial_backoff", "max_backoff", "max_retry_after", "input_price", "output_price"):
            value = getattr(self, name)
            if not value >= 0:  # NaN too: it would sleep or cost NaN
                raise ValueError(f"{name} must be 0 or more, got {value}.")


@dataclass
class RunReport:
    """What one run did. `errors` counts every failed attempt by kind (retried or not); `failed` counts the keys
    that failed for good in this run, by the kind of their last error."""

    total: int = 0
    done: int = 0
    skipped_existing: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    torn_lines_repaired: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    responses_without_usage: int = 0
    cost: float = 0.0
    elapsed_s: float = 0.0
    model: str = ""
    stopped: str | None = None  # why the run stopped early (an unusable backend), else None

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def left(self) -> int:
        """Keys neither done nor failed in this run (it stopped early): the next run does them."""
        return self.total - self.skipped_existing - self.done - self.rejected_total - self.failed_total

    @property
    def requests_per_second(self) -> float:
        handled = self.done + self.rejected_total + self.failed_total
        return handled / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "rejected_total": self.rejected_total,
            "failed_total": self.failed_total,
            "left": self.left,
            "requests_per_second": round(self.requests_per_second, 2),
        }

    def render(self) -> str:
        def counts(table: dict[str, int]) -> str:
            return ", ".join(f"{n} {kind}" for kind, n in sorted(table.items())) or "none"

        lines = [
            f"keys: {self.total} (done now {self.done}, skipped as done before {self.skipped_existing})",
            f"rejected: {self.rejected_total} ({counts(self.rejected)})",
            f"failed after retries: {self.failed_total} ({counts(self.failed)})"
            + ("; rerun the same command to retry them" if self.failed_total else ""),
            f"request errors: {counts(self.errors)}; retries: {self.retries}",
            f"tokens: {self.prompt_tokens} prompt + {self.completion_tokens} completion; cost: {self.cost:.4f}"
            + (f" ({self.responses_without_usage} responses had no usage)" if self.responses_without_usage else ""),
            f"time: {self.elapsed_s:.1f} s ({self.requests_per_second:.1f} requests/s)",
        ]
        if self.torn_lines_repaired:
            lines.append(f"incomplete lines from a killed run cut and redone: {self.torn_lines_repaired}")
        if self.left:
            lines.append(f"left for the next run: {self.left}")
        if self.stopped:
            lines.append(f"STOPPED: {self.stopped}")
        return "\n".join(lines)


class InstructionEngine:
    """Generate instruction data for `contexts` with `backend` into `out_dir` (see the module docstring)."""

    def __init__(
        self,
        backend: ChatBackend,
        out_dir: str | Path,
        settings: EngineSettings | None = None,
        prompts: dict[str, PromptSet] | None = None,
    ):
        self.backend = backend
        self.out_dir = Path(out_dir)
        self.settings = settings or EngineSettings()
        self.prompts = prompts or load_prompts(self.settings.kinds)
        missing = [kind for kind in self.settings.kinds if kind not in self.prompts]
        if missing:
            raise ValueError(f"no prompt set for type(s) {missing}; pass prompts for every type in settings.kinds.")
        self._jitter = random.Random()  # jitter only decorrelates retries; it need not be reproducible
        self._breaker = self._new_breaker()

    def keys(self, contexts: Iterable[ImageContext]) -> Iterator[tuple[ImageContext, str, int]]:
        for context in contexts:
            for kind in self.settings.kinds:
                for sample_index in range(self.settings.samples_per_image):
                    yield context, kind, sample_index

    async def run(self, contexts: Iterable[ImageContext]) -> RunReport:
        # Everything alive now (torch, transformers, the contexts: ~400K objects) is moved out of the garbage
        # collector's sight for the run: a full collection over them pauses every request for ~0.3 s, and a long
        # run at hundreds of requests/s triggers many. Undone at the end, unless the caller had frozen already.
        freeze = gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            return await self._run(contexts)
        finally:
            if freeze:
                gc.unfreeze()

    async def _run(self, contexts: Iterable[ImageContext]) -> RunReport:
        report = RunReport(model=self.backend.name)
        self._breaker = self._new_breaker()
        start = time.perf_counter()
        with InstructionStore(self.out_dir) as store:
            report.torn_lines_repaired = store.torn_lines
            todo, seen = [], set()
            for item in self.keys(contexts):
                key = (item[0].image_id, item[1], item[2])
                if key in seen:  # two contexts with one id would write one key twice
                    raise ValueError(f"image id {key[0]!r} appears twice in the contexts; image ids key the records.")
                seen.add(key)
                report.total += 1
                if key in store.done:
                    report.skipped_existing += 1
                else:
                    todo.append(item)
            if report.skipped_existing:
                logger.info("%s: %d keys done before, %d to go", self.out_dir, report.skipped_existing, len(todo))
            try:
                await self._run_pool(todo, store, report)
            except BackendUnusable as error:
                report.stopped = str(error)
                raise
            finally:
                report.elapsed_s = time.perf_counter() - start
                atomic_write_text(self.out_dir / REPORT, json.dumps(report.to_dict(), indent=2) + "\n")
                await self.backend.aclose()
        return report

    async def _run_pool(self, todo: list, store: InstructionStore, report: RunReport) -> None:
        from tqdm.auto import tqdm

        queue = iter(todo)
        bar = tqdm(total=len(todo), desc="generating", unit=" req", disable=not self.settings.progress)
        last_postfix = 0.0

        async def worker() -> None:
            nonlocal last_postfix
            for context, kind, sample_index in queue:  # a shared iterator: each key goes to exactly one worker
                await self._one(context, kind, sample_index, store, report)
                now = time.monotonic()
                if now - last_postfix > 0.5:  # formatting the postfix per request would cost more than the request
                    last_postfix = now
                    bar.set_postfix_str(
                        f"errors={sum(report.errors.values())} rejected={report.rejected_total} "
                        f"failed={report.failed_total}",
                        refresh=False,
                    )
                bar.update(1)

        workers = [asyncio.ensure_future(worker()) for _ in range(min(self.settings.concurrency, len(todo)))]
        try:
            if workers:
                done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            bar.close()

    async def _one(
        self, context: ImageContext, kind: str, sample_index: int, store: InstructionStore, report: RunReport
    ) -> None:
        seed, image_id = self.settings.seed, context.image_id
        prompt_set = self.prompts[kind]
        messages = prompt_set.messages(
            context.render(with_boxes=prompt_set.uses_boxes), request_rng(seed, image_id, kind, sample_index, "shots")
        )
        key_fields = {"image_id": image_id, "type": kind, "sample_index": sample_index}
        completion, error, attempts = await self._request(messages, report)
        if completion is None:
            kind_of_error, message, transient = error
            report.failed[kind_of_error] = report.failed.get(kind_of_error, 0) + 1
            store.write_failure({**key_fields, "image": context.image, "error": message, "attempts": attempts})
            if transient:
                self._breaker.failure(message, "Failures are in failed.jsonl; run the same command again once it is.")
            return
        self._breaker.success()
        report.prompt_tokens += completion.prompt_tokens
        report.completion_tokens += completion.completion_tokens
        report.responses_without_usage += not completion.has_usage
        report.cost = (
            report.prompt_tokens * self.settings.input_price + report.completion_tokens * self.settings.output_price
        ) / 1e6
        usage = {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens}
        try:
            conversations = parse_response(
                kind,
                completion.text,
                completion.finish_reason,
                request_rng(seed, image_id, kind, sample_index, "record"),
            )
        except ResponseRejected as rejection:
            report.rejected[rejection.reason] = report.rejected.get(rejection.reason, 0) + 1
            store.write_rejection(
                {
                    **key_fields,
                    "image": context.image,
                    "reason": rejection.reason,
                    "detail": rejection.detail,
                    "response": completion.text,
                    "finish_reason": completion.finish_reason,
                    "model": self.backend.name,
                    "usage": usage,
                }
            )
            return
        store.write_record(
            {
                "id": f"{image_id}-{kind}-{sample_index}",
                "image": context.image,
                "conversations": conversations,
                **key_fields,
                "model": self.backend.name,
                "finish_reason": completion.finish_reason,
                "usage": usage,
            }
        )
        report.done += 1

    async def _request(
        self, messages: list[dict[str, str]], report: RunReport
    ) -> tuple[Completion | None, tuple[str, str, bool], int]:
        """`(completion, _, attempts)` on success; `(None, (error kind, message, transient), attempts)` on failure."""
        settings = self.settings
        for attempt in range(settings.max_retries + 1):
            try:
                return await self.backend.complete(messages), ("", "", False), attempt + 1
            except TransientError as error:
                report.errors[error.kind] = report.errors.get(error.kind, 0) + 1
                if attempt == settings.max_retries:
                    return None, (error.kind, str(error), True), attempt + 1
                if error.retry_after is not None:
                    delay = min(error.retry_after, settings.max_retry_after)
                else:
                    delay = min(settings.max_backoff, settings.initial_backoff * 2**attempt)
                    delay *= self._jitter.uniform(0.5, 1.0)
                report.retries += 1
                await asyncio.sleep(delay)
            except RequestFailed as error:
                report.errors[error.kind] = report.errors.get(error.kind, 0) + 1
                return None, (error.kind, str(error), False), attempt + 1
            except BackendUnusable:
                raise
            except Exception as error:  # noqa: BLE001 - a backend bug must not kill 100K requests: record, report
                logger.warning("unexpected backend error (recorded as a failure): %s", error, exc_info=True)
                kind = f"unexpected {type(error).__name__}"
                report.errors[kind] = report.errors.get(kind, 0) + 1
                return None, (kind, str(error), False), attempt + 1
        raise AssertionError("unreachable")

    def _new_breaker(self) -> CircuitBreaker:
        # With many requests in flight, a server going down fails them all at once: the limit is at least the
        # concurrency, so one burst of in-flight failures is what stops the run, not fewer.
        endpoint = getattr(self.backend, "url", None) or f"the {self.backend.name!r} backend"
        return CircuitBreaker(max(10, self.settings.concurrency), endpoint)


def generate_instructions(
    contexts: Iterable[ImageContext],
    backend: ChatBackend,
    out_dir: str | Path,
    settings: EngineSettings | None = None,
    prompts: dict[str, PromptSet] | None = None,
) -> RunReport:
    """Run the engine to completion (blocking); see `InstructionEngine`."""
    return asyncio.run(InstructionEngine(backend, out_dir, settings, prompts).run(contexts))
