"""The assistant-only collator: labels on exactly the answers, loud about everything it cannot do.

Labels come from the processor's chat template (`{% generation %}` markers -> `assistant_masks`): each assistant
answer and its end token is supervised (`</s>` for vicuna_v1, `<|im_end|>` for ChatML, the caption and `\\n` for
plain); the system prompt, user turns, image tokens and padding get -100.

Unlike the original code, which set a whole sample's labels to -100 on a "tokenization mismatch" and trained on
nothing, a sample whose answers cannot be located is an error naming the sample. Over-long samples are truncated in
text only (never through an image's tokens; images whose tokens fall past the cut are dropped with them) or skipped,
and every truncation and skip is counted in `collator.stats`.

`collator.stats` counts in the process that runs the collator: with `dataloader_num_workers > 0` that is a worker,
whose copy the main process never sees. With `stats_in_batch=True` each batch also carries its own counts
(`batch["collator_stats"]`, in `STAT_KEYS` order), which `LlavaSFTTrainer` pops before the forward and sums over
steps and processes.
"""

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from .images import DEFAULT_MAX_PIXELS, load_image

logger = logging.getLogger(__name__)

TRUNCATION_POLICIES = ("text", "skip")
# What `stats` counts, in the order of a batch's `collator_stats` tensor.
STAT_KEYS = ("samples", "truncated", "skipped: longer than max_length", "skipped: no answer left after truncation")
BATCH_STATS_KEY = "collator_stats"


class LabelError(ValueError):
    """A sample whose supervised span cannot be located; names the sample."""


def _runs(mask: list[int]) -> list[tuple[int, int]]:
    """`[start, end)` spans of consecutive ones."""
    spans, start = [], None
    for index, value in enumerate(mask + [0]):
        if value and start is None:
            start = index
        elif not value and start is not None:
            spans.append((start, index))
            start = None
    return spans


@dataclass
class LlavaDataCollator:
    """Collate conversational rows (`messages`, `images`, `id`) into `input_ids`, `attention_mask`,
    `pixel_values` and `labels` for [`LlavaForConditionalGeneration`].

    Args:
        processor: a `LlavaProcessor` whose chat template has `{% generation %}` markers.
        max_length: longest sequence in tokens (`None`: no limit).
        truncation: `"text"` cuts over-long samples at `max_length` (moved back to the start of an image's tokens if
            the cut would fall inside them); `"skip"` drops them. Both are counted in `stats`.
        pad_to_multiple_of: pad the batch length up to a multiple of this.
        max_pixels: decompression-bomb guard for each image.
        chat_template: a Jinja template used instead of the processor's (e.g. `plain` for stage 1, while the
            checkpoint keeps its chat template for inference).
        stats_in_batch: also return the batch's counts as `batch["collator_stats"]` (`torch.LongTensor` of shape
            `(len(STAT_KEYS),)`), for a trainer that removes them before the forward (`LlavaSFTTrainer` does).
        padding_free: concatenate the batch's samples into one row of shape `(1, total_tokens)` with `position_ids`
            restarting at 0 for each sample and no `attention_mask` (TRL's `padding_free` layout, images included:
            `pixel_values` stay in sample order and a sample's image tokens are never split, since samples are
            whole). transformers then masks attention to each sample (sdpa / eager / flex) or runs the
            variable-length FlashAttention kernels (`cu_seq_lens_*`), so the loss equals the padded batch's while no
            compute goes to padding. The first token of each sample gets label -100: no sample is trained to
            predict the next one's start.
    """

    processor: Any
    max_length: int | None = None
    truncation: str = "text"
    pad_to_multiple_of: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    chat_template: str | None = None  # overrides the processor's (stage 1 trains with `plain`)
    stats_in_batch: bool = False
    padding_free: bool = False
    stats: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.truncation not in TRUNCATION_POLICIES:
            raise ValueError(f"truncation must be one of {list(TRUNCATION_POLICIES)}, got {self.truncation!r}.")
        # A non-positive length would cut every sample to nothing (or, negative, slice from the end and keep image
        # tokens whose pixels were dropped): refuse it here rather than mis-train.
        if self.max_length is not None and self.max_length <= 0:
            raise ValueError(f"max_length must be a positive number of tokens or None, got {self.max_length}.")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of <= 0:
            raise ValueError(f"pad_to_multiple_of must be a positive number or None, got {self.pad_to_multiple_of}.")
        if not self.max_pixels > 0:  # 0 would refuse every image as a decompression bomb
            raise ValueError(f"max_pixels must be a positive number of pixels, got {self.max_pixels}.")

    # -- one sample ----------------------------------------------------------------------------------------------
    def encode(self, example: dict[str, Any]) -> dict[str, Any] | None:
        """Tokenize one row; `None` when the sample is skipped (counted in `stats`)."""
        sample_id = example.get("id", "?")
        where = f"sample {sample_id!r}"
        _check_messages(example.get("messages"), where)
        images = [
            load_image(image, f"{where} image {i}", self.max_pixels)
            for i, image in enumerate(example.get("images") or [])
        ]
        messages = _with_images([clean_message(message) for message in example["messages"]], images, where)
        encoded = self.processor.apply_chat_template(
            messages,
            chat_template=self.chat_template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            return_tensors="pt",
        )
        input_ids = encoded["input_ids"][0].tolist()
        mask = [int(v) for v in encoded["assistant_masks"][0]]
        answers = [m for m in messages if m["role"] == "assistant" and _has_text(m)]
        spans = _runs(mask)
        if answers and len(spans) != len(answers):
            raise LabelError(
                f"{where}: {len(answers)} assistant answer(s) but {len(spans)} supervised span(s) in the tokens; the "
                "chat template must wrap each answer and its end token in {% generation %} ... {% endgeneration %}. "
                "Refusing to train on a wrongly masked sample."
            )
        pixel_values = encoded.get("pixel_values")
        image_token_id = self.processor.image_token_id
        self.stats["samples"] += 1

        if self.max_length is not None and len(input_ids) > self.max_length:
            if self.truncation == "skip":
                self.stats["skipped: longer than max_length"] += 1
                logger.debug("%s: %d tokens > max_length %d, skipped", where, len(input_ids), self.max_length)
                return None
            cut = self.max_length
            image_runs = _runs([int(t == image_token_id) for t in input_ids])
            # Images appear as one run each only when images are not adjacent; count them by length instead.
            image_starts = _image_starts(image_runs, self.processor.image_seq_length)
            for start in image_starts:
                if start < cut < start + self.processor.image_seq_length:
                    cut = start  # never cut through an image's tokens
            kept_images = sum(1 for start in image_starts if start + self.processor.image_seq_length <= cut)
            input_ids, mask = input_ids[:cut], mask[:cut]
            if pixel_values is not None:
                pixel_values = pixel_values[:kept_images]
            if answers and not any(mask):
                self.stats["skipped: no answer left after truncation"] += 1
                return None
            self.stats["truncated"] += 1

        labels = [token if supervised else -100 for token, supervised in zip(input_ids, mask)]
        return {"id": sample_id, "input_ids": input_ids, "labels": labels, "pixel_values": pixel_values}

    # -- a batch -------------------------------------------------------------------------------------------------
    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("the batch is empty: the collator needs at least one sample.")
        before = Counter(self.stats)
        encoded = [e for e in (self.encode(example) for example in examples) if e is not None]
        if not encoded:
            raise ValueError(
                f"every sample of this batch was skipped ({dict(self.stats)}); filter over-long samples before "
                "training (`llava-hf data check --max-length`) or use truncation='text'."
            )
        if self.padding_free:
            batch = self._packed(encoded)
        else:
            batch = self._padded(encoded)
        pixel_values = [torch.as_tensor(e["pixel_values"]) for e in encoded if e["pixel_values"] is not None]
        pixel_values = [p for p in pixel_values if p.shape[0] > 0]
        if pixel_values:
            batch["pixel_values"] = torch.cat(pixel_values)
        if self.stats_in_batch:
            batch[BATCH_STATS_KEY] = torch.tensor([self.stats[key] - before[key] for key in STAT_KEYS])
        return batch

    def _pad_id(self) -> int:
        pad_id = self.processor.tokenizer.pad_token_id
        if pad_id is None:
            raise ValueError("the tokenizer has no pad token; set one (llava_hf.build_llava_from_pretrained does).")
        return pad_id

    def _packed(self, encoded: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = [torch.tensor(e["input_ids"]) for e in encoded]
        labels = [torch.tensor(e["labels"]) for e in encoded]
        position_ids = [torch.arange(len(ids)) for ids in input_ids]
        for sample_labels in labels:
            sample_labels[0] = -100  # the previous sample's last token does not predict this one's first
        total = sum(len(ids) for ids in input_ids)
        if self.pad_to_multiple_of and total % self.pad_to_multiple_of:
            # Padding forms its own sequence (position 0 onwards), attended by nothing else and never supervised.
            extra = self.pad_to_multiple_of - total % self.pad_to_multiple_of
            input_ids.append(torch.full((extra,), self._pad_id()))
            labels.append(torch.full((extra,), -100))
            position_ids.append(torch.arange(extra))
        lengths = torch.tensor([len(ids) for ids in input_ids])
        # Sequence boundaries for the variable-length kernels (FlashAttention), computed here on the CPU: the model
        # would otherwise derive them from position_ids with a device-to-host sync in every layer.
        cu_seq_lens = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]).to(torch.int32)
        return {
            "input_ids": torch.cat(input_ids)[None],
            "labels": torch.cat(labels)[None],
            "position_ids": torch.cat(position_ids)[None],
            "cu_seq_lens_q": cu_seq_lens,
            "cu_seq_lens_k": cu_seq_lens,
            "max_length_q": int(lengths.max()),
            "max_length_k": int(lengths.max()),
        }

    def _padded(self, encoded: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(e["input_ids"]) for e in encoded)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(encoded), length), self._pad_id(), dtype=torch.long)
        labels = torch.full((len(encoded), length), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
        for row, e in enumerate(encoded):
            n = len(e["input_ids"])
            input_ids[row, :n] = torch.tensor(e["input_ids"])
            labels[row, :n] = torch.tensor(e["labels"])
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def report(self) -> str:
        """One line: samples seen, truncated and skipped by reason (as counted in this process)."""
        return format_stats(self.stats)


def format_stats(stats: dict[str, int]) -> str:
    """`stats` (a collator's counts) as one line: samples seen, truncated and skipped by reason."""
    return ", ".join(f"{key}: {value}" for key, value in sorted(stats.items()) if value) or "no samples"


def _image_starts(runs: list[tuple[int, int]], image_seq_length: int) -> list[int]:
    starts = []
    for start, end in runs:
        starts += list(range(start, end, image_seq_length))
    return starts


ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "image")


def _check_messages(messages: Any, where: str) -> None:
    """Raise `LabelError` naming the sample unless `messages` is TRL's conversational layout: a non-empty list of
    `{"role": system|user|assistant, "content": str | [{"type": text|image, ...}]}` (an unknown role or part type
    would otherwise be dropped or rendered by the chat template without a word)."""
    if not isinstance(messages, list) or not messages:
        raise LabelError(f"{where}: 'messages' is missing or empty; expected a list of {{role, content}} turns.")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            role = message.get("role") if isinstance(message, dict) else message
            raise LabelError(f"{where}: messages[{index}] has role {role!r}; expected one of {list(ROLES)}.")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not all(
            isinstance(part, dict) and part.get("type") in PART_TYPES for part in content
        ):
            raise LabelError(
                f"{where}: messages[{index}].content must be a string or a list of text/image parts, got {content!r}."
            )


def _with_images(messages: list[dict], images: list, where: str) -> list[dict]:
    """Put the loaded images into the image parts, in reading order (TRL's layout), checking the counts agree."""
    slots = [
        part
        for message in messages
        if not isinstance(message["content"], str)
        for part in message["content"]
        if part["type"] == "image"
    ]
    if len(slots) != len(images):
        raise LabelError(
            f"{where}: messages have {len(slots)} image part(s) but 'images' has {len(images)}; remove one or add an image."
        )
    for part, image in zip(slots, images):
        part["image"] = image
    return messages


def _has_text(message: dict) -> bool:
    content = message["content"]
    if isinstance(content, str):
        return bool(content)
    return any(part.get("type") == "text" and part.get("text") for part in content)


def clean_message(message: dict) -> dict:
    """Drop the `text: None` Arrow gives image parts, so templates and transformers see TRL's plain layout."""
    content = message["content"]
    if isinstance(content, str):
        return {"role": message["role"], "content": content}
    parts = []
    for part in content:
        parts.append({"type": "image"} if part["type"] == "image" else {"type": part["type"], "text": part["text"]})
    return {"role": message["role"], "content": parts}
