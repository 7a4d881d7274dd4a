"""An in-process transformers causal LM as the data engine's LLM: prompts from the model's own chat template.

The engine calls `complete` from many coroutines at once; requests queue up and are generated in left-padded batches
of up to `batch_size` in a worker thread, so the event loop keeps writing results while the model runs. Greedy
decoding (`temperature=0`) gives the same text batched or one at a time; with sampling, each batch is seeded from
`seed` and the batch number.

`finish_reason` is `"stop"` when the model emitted an end token and `"length"` when it used all `max_new_tokens`
(the parser rejects those as truncated), as an OpenAI-compatible server reports it.
"""

import asyncio
import logging
from typing import Any

from .backend import Completion, RequestFailed

logger = logging.getLogger(__name__)


class TransformersBackend:
    """Batched generation with a local `AutoModelForCausalLM` and its tokenizer's chat template.

    Example:

        model = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-1.7B-Instruct")
        tokenizer = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-1.7B-Instruct")
        backend = TransformersBackend(model, tokenizer, max_new_tokens=768, batch_size=16)
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        batch_size: int = 8,
        seed: int = 0,
        generate_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                f"the tokenizer of {getattr(model, 'name_or_path', 'the model')!r} has no chat template; use an "
                "instruction-tuned model or set tokenizer.chat_template."
            )
        if tokenizer.pad_token_id is None:  # batching needs a pad token; EOS is the usual stand-in
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_new_tokens, self.temperature, self.batch_size, self.seed = (
            max_new_tokens,
            temperature,
            batch_size,
            seed,
        )
        self.generate_kwargs = dict(generate_kwargs or {})
        self.name = name or str(getattr(model, "name_or_path", "") or "local-model")
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self._eos_ids = eos_ids
        self._pending: list[tuple[list[dict[str, str]], asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self._batches = 0

    @classmethod
    def from_pretrained(
        cls, path: str, device: str | None = None, dtype: str = "auto", **kwargs: Any
    ) -> "TransformersBackend":
        """Load a causal LM folder (or Hub id) and its tokenizer; `device` defaults to CUDA when available."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..utils import load_pretrained

        model = load_pretrained(AutoModelForCausalLM, path, device=device, dtype=dtype)
        return cls(model, AutoTokenizer.from_pretrained(path), name=kwargs.pop("name", path), **kwargs)

    async def complete(self, messages: list[dict[str, str]]) -> Completion:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((messages, future))
        if self._worker is None or self._worker.done():
            # Started now, it first runs after the other coroutines of this loop turn have queued their requests.
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self.batch_size]
            del self._pending[: self.batch_size]
            try:
                results = await asyncio.to_thread(self.generate, [messages for messages, _ in batch])
            except Exception as error:  # noqa: BLE001 - handed to each waiting request, which records a failure
                logger.warning("generation failed for a batch of %d: %s", len(batch), error, exc_info=True)
                failure = RequestFailed("generation error", f"{type(error).__name__}: {error}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(failure)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():  # a cancelled waiter has gone away
                    future.set_result(result)

    def generate(self, conversations: list[list[dict[str, str]]]) -> list[Completion]:
        """Generate one completion per conversation, in one left-padded batch (synchronous)."""
        import torch

        texts = [
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            for messages in conversations
        ]
        # The template already holds any BOS, so the tokenizer must not add another.
        inputs = self.tokenizer(
            texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
        ).to(self.model.device)
        do_sample = self.temperature > 0
        if do_sample:
            torch.manual_seed(self.seed + self._batches)
        self._batches += 1
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": do_sample}
        if do_sample:
            kwargs["temperature"] = self.temperature
        with torch.no_grad():
            output = self.model.generate(
                **inputs, pad_token_id=self.tokenizer.pad_token_id, **kwargs, **self.generate_kwargs
            )
        prompt_length = inputs["input_ids"].shape[1]
        completions = []
        for row, new_tokens in enumerate(output[:, prompt_length:].tolist()):
            end = next((i for i, token in enumerate(new_tokens) if token in self._eos_ids), None)
            if end is None:
                # No end token: the budget ran out (or a stop condition of generate_kwargs ended it early).
                finish, kept, count = (
                    "length" if len(new_tokens) >= self.max_new_tokens else "stop",
                    new_tokens,
                    len(new_tokens),
                )
            else:
                finish, kept, count = "stop", new_tokens[:end], end + 1
            completions.append(
                Completion(
                    text=self.tokenizer.decode(kept, skip_special_tokens=True),
                    finish_reason=finish,
                    prompt_tokens=int(inputs["attention_mask"][row].sum()),
                    completion_tokens=count,
                )
            )
        return completions

    async def aclose(self) -> None:
        if self._worker is not None and not self._worker.done():
            await self._worker
