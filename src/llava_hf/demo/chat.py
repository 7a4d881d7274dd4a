"""The chat engine behind `llava-hf demo`, the Space and `llava-hf chat`: input limits and streamed generation.

Nothing here imports gradio: the web app and the terminal chat are thin layers over `ChatModel.stream`.
"""

import logging
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from PIL import Image

from ..generation import GenerationSettings

logger = logging.getLogger(__name__)


class InputError(ValueError):
    """A user input over a limit or unreadable; the message is shown to the user as it is."""


@dataclass
class Limits:
    """What the demo accepts. LLaVA sees images at a few hundred pixels: anything larger only costs memory."""

    max_image_megabytes: float = field(
        default=10.0, metadata={"above": 0, "help": "largest image file accepted, in MB"}
    )
    max_image_megapixels: float = field(
        default=16.0, metadata={"above": 0, "help": "largest image accepted, in megapixels"}
    )
    max_text_chars: int = field(default=2000, metadata={"min": 1, "help": "longest message accepted, in characters"})
    max_images: int = field(default=4, metadata={"min": 0, "help": "images per conversation"})
    max_new_tokens: int = field(
        default=1024, metadata={"min": 1, "help": "the most max_new_tokens a user may ask for"}
    )

    def __post_init__(self) -> None:
        # The command line's parser checks the same bounds (the field metadata); this holds for a demo_config.json or
        # a Limits built in Python: a limit of 0 or below refuses every input, and NaN compares false to all.
        for limit in fields(self):
            value, low, above = getattr(self, limit.name), limit.metadata.get("min"), limit.metadata.get("above")
            if value != value or (low is not None and value < low) or (above is not None and value <= above):
                bound = f"at least {low}" if low is not None else f"above {above}"
                raise ValueError(f"limit {limit.name} must be {bound}, got {value}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Limits":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown limits {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**data)

    def check_generation(self, settings: GenerationSettings) -> None:
        """Refuse generation settings out of range (`GenerationSettings.check` calls this)."""
        if not 1 <= settings.max_new_tokens <= self.max_new_tokens:
            raise InputError(
                f"max new tokens must be between 1 and {self.max_new_tokens}, got {settings.max_new_tokens}."
            )
        if settings.do_sample and not (
            0 < settings.temperature <= 5 and (settings.top_p is None or 0 < settings.top_p <= 1)
        ):
            raise InputError(
                f"sampling needs 0 < temperature <= 5 and 0 < top_p <= 1, got {settings.temperature} and "
                f"{settings.top_p}."
            )


# The demo's generation defaults (the web app shows them as sliders; `llava-hf demo` and `chat` as options).
DEMO_GENERATION = GenerationSettings(max_new_tokens=256, top_p=0.9)


def check_text(text: str | None, limits: Limits) -> str:
    text = (text or "").strip()
    if not text:
        raise InputError("Type a question (the message is empty).")
    try:  # a terminal's undecodable bytes arrive as lone surrogates (stdin's surrogateescape); no tokenizer takes them
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InputError(
            f"The message is not UTF-8 text (an undecodable byte at character {error.start + 1}); type it again, "
            "or set the terminal to UTF-8."
        ) from None
    if len(text) > limits.max_text_chars:
        raise InputError(
            f"The message is {len(text):,} characters long; the limit is {limits.max_text_chars:,}. Shorten it."
        )
    return text


def open_image(path: str | Path, limits: Limits) -> Image.Image:
    """Check the file size, then the pixel count from the header (before decoding), then decode to RGB."""
    from ..data.images import ImageError, load_image

    path = Path(path)
    if not path.is_file():
        raise InputError(f"The image {path.name} was not found; upload (or name) it again.")
    megabytes = path.stat().st_size / 1e6
    if megabytes > limits.max_image_megabytes:
        raise InputError(
            f"The image {path.name} is {megabytes:.1f} MB; the limit is {limits.max_image_megabytes:g} MB. "
            "Upload a smaller file."
        )
    try:
        with Image.open(path) as header:
            width, height = header.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"{path.name} is not an image this demo can read ({error}).") from error
    megapixels = width * height / 1e6
    if megapixels > limits.max_image_megapixels:
        raise InputError(
            f"The image {path.name} is {width}x{height} ({megapixels:.1f} megapixels); the limit is "
            f"{limits.max_image_megapixels:g} megapixels. Resize it."
        )
    try:
        return load_image(path, where=path.name, max_pixels=int(limits.max_image_megapixels * 1e6))
    except ImageError as error:
        raise InputError(str(error)) from error


class TokenIdStreamer:
    """A `generate(streamer=...)` target that hands the new token ids to another thread through a queue (the first
    `put` is the prompt and is skipped, as transformers' streamers do)."""

    _END = None

    def __init__(self) -> None:
        import queue

        self.queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.queue.put(self._END)

    def __iter__(self) -> Iterator[list[int]]:
        while (item := self.queue.get()) is not self._END:
            yield item


class ChatModel:
    """A llava_hf model + processor that streams answers to a conversation.

    `messages` use the processor's chat format: `{"role": "user" | "assistant", "content": [{"type": "image"} |
    {"type": "text", "text": ...}]}`, with one PIL image in `images` per `{"type": "image"}` item, in order.
    """

    def __init__(self, model: Any, processor: Any, name: str = "model"):
        self.model, self.processor, self.name = model.eval(), processor, name
        # One generation at a time: the model is shared by every session of the web app.
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str, device: str | None = None, dtype: str = "auto") -> "ChatModel":
        """Load a checkpoint folder or Hub id; llava_hf's classes are registered, so no remote code runs."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from ..registration import register
        from ..utils import load_pretrained

        register()
        model = load_pretrained(AutoModelForImageTextToText, path, device=device, dtype=dtype)
        return cls(model, AutoProcessor.from_pretrained(path), name=str(path))

    def inputs(self, messages: list[dict[str, Any]], images: list[Image.Image]):
        if sum(1 for m in messages for c in m["content"] if c["type"] == "image") != len(images):
            raise InputError("internal: the image placeholders and the images differ in number.")
        inputs = self.processor.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            images=images or None,
            return_tensors="pt",
        )
        return inputs.to(self.model.device)

    def stream(
        self, messages: list[dict[str, Any]], images: list[Image.Image], settings: GenerationSettings
    ) -> Iterator[str]:
        """Yield the answer so far each time it grows: generation runs in a thread and hands over token ids.

        The answer is decoded from all its ids at each step (not piece by piece, as `TextIteratorStreamer` does), so
        the streamed text always equals `processor.decode(new_ids, skip_special_tokens=True)`: SentencePiece
        tokenizers drop the space of a `▁word` that starts a piece, which piecewise decoding gets wrong.
        """
        inputs = self.inputs(messages, images)
        streamer = TokenIdStreamer()
        kwargs = settings.generate_kwargs()
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                self.model.generate(**inputs, **kwargs, streamer=streamer)
            except BaseException as error:  # re-raised in the caller's thread below
                failure.append(error)
                streamer.end()  # unblock the consumer

        with self._lock:
            thread = threading.Thread(target=generate, daemon=True)
            thread.start()
            ids: list[int] = []
            answer = ""
            for new_ids in streamer:
                ids += new_ids
                text = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
                # "\ufffd": a multi-byte character split across tokens; wait for the rest.
                if text != answer and not text.endswith("\ufffd"):
                    answer = text
                    yield answer
            thread.join()
        if failure:
            raise failure[0]

    def answer(self, messages: list[dict[str, Any]], images: list[Image.Image], settings: GenerationSettings) -> str:
        final = ""
        for final in self.stream(messages, images, settings):  # noqa: B007  (the last value is the answer)
            pass
        return final
