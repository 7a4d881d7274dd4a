"""The Gradio app of `llava-hf demo MODEL` and of the Spaces `llava-hf space create` writes: a multimodal chat.

Image upload, answers streamed token by token (`ChatModel.stream`), example images, generation settings, and limits
on image size, pixel count and text length that answer with a message saying which limit and by how much.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .chat import DEMO_GENERATION, ChatModel, GenerationSettings, InputError, Limits, check_text, open_image

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """What the app shows and accepts; a Space stores it as `demo_config.json`."""

    model: str = ""
    title: str = ""
    description: str = ""
    limits: Limits = field(default_factory=Limits)
    generation: GenerationSettings = field(default_factory=lambda: replace(DEMO_GENERATION))
    # [{"text": question, "image": path}], paths relative to the folder of demo_config.json (or absolute).
    examples: list[dict[str, str]] = field(default_factory=list)
    device: str | None = None
    dtype: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return data | {"limits": self.limits.to_dict(), "generation": self.generation.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DemoConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown demo settings {sorted(unknown)}; known: {sorted(known)}.")
        data = dict(data)
        data["limits"] = Limits.from_dict(data.get("limits") or {})
        data["generation"] = replace(DEMO_GENERATION, **(data.get("generation") or {}))
        return cls(**data)


def _file_path(item: Any) -> str | None:
    """The path of a file entry in any of the shapes gradio uses for history and messages."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        if isinstance(item.get("file"), dict):
            return item["file"].get("path")
        return item.get("path")
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], str):
        return item[0]
    return getattr(item, "path", None)


def _parts(content: Any) -> list[tuple[str, str]]:
    """A gradio message content as `[("text", str) | ("file", path)]`."""
    items = content if isinstance(content, list) else [content]
    parts = []
    for item in items:
        if isinstance(item, str):
            parts.append(("text", item))
        elif isinstance(item, dict) and item.get("type") == "text":
            parts.append(("text", item.get("text") or ""))
        elif (path := _file_path(item)) is not None:
            parts.append(("file", path))
    return parts


def to_model_messages(
    history: list[dict[str, Any]], message: dict[str, Any], limits: Limits
) -> tuple[list[dict[str, Any]], list]:
    """Gradio history + the new multimodal message -> the processor's chat messages and the images, checked.

    Consecutive user entries (gradio stores an upload and its text as separate messages) merge into one user turn,
    images first, as LLaVA's data put them.
    """
    text = check_text(message.get("text"), limits)
    turns: list[dict[str, Any]] = []
    for entry in history:
        role = entry.get("role")
        if role not in ("user", "assistant"):
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["parts"] += _parts(entry.get("content"))
        else:
            turns.append({"role": role, "parts": _parts(entry.get("content"))})
    new_files = [_file_path(f) for f in message.get("files") or []]
    turns.append({"role": "user", "parts": [("file", f) for f in new_files if f] + [("text", text)]})
    paths = [value for turn in turns if turn["role"] == "user" for kind, value in turn["parts"] if kind == "file"]
    if len(paths) > limits.max_images:
        raise InputError(
            f"This conversation has {len(paths)} images; the limit is {limits.max_images}. Clear the chat to start "
            "a new one."
        )
    images = [open_image(path, limits) for path in paths]
    messages = []
    for turn in turns:
        if turn["role"] == "user":
            content = [{"type": "image"} for kind, _ in turn["parts"] if kind == "file"]
            texts = [value for kind, value in turn["parts"] if kind == "text" and value.strip()]
            if texts:
                content.append({"type": "text", "text": "\n".join(texts)})
        else:
            answer = "".join(value for kind, value in turn["parts"] if kind == "text")
            content = [{"type": "text", "text": answer}]
        messages.append({"role": turn["role"], "content": content})
    return messages, images


def build_demo(chat: ChatModel, config: DemoConfig, base_dir: str | Path | None = None):
    """The `gr.ChatInterface` (multimodal) for `chat`; `base_dir` resolves relative example paths."""
    import gradio as gr

    limits = config.limits
    defaults = config.generation

    def respond(
        message: dict[str, Any],
        history: list[dict[str, Any]],
        max_new_tokens: float,
        do_sample: bool,
        temperature: float,
        top_p: float,
    ) -> Iterator[str]:
        settings = replace(
            defaults,
            max_new_tokens=int(max_new_tokens),
            do_sample=bool(do_sample),
            temperature=float(temperature),
            top_p=float(top_p),
        )
        try:
            settings.check(limits)
            messages, images = to_model_messages(history, message, limits)
        except InputError as error:
            # gr.Error reaches the browser as a toast and gradio_client as an AppError with this text.
            raise gr.Error(str(error), print_exception=False) from error
        logger.info("answering: %d message(s), %d image(s)", len(messages), len(images))
        yield from chat.stream(messages, images, settings)

    base = Path(base_dir) if base_dir else Path.cwd()
    examples = []
    for example in config.examples:
        image = Path(example["image"])
        image = image if image.is_absolute() else base / image
        examples.append(
            [
                {"text": example["text"], "files": [str(image)]},
                defaults.max_new_tokens,
                defaults.do_sample,
                defaults.temperature,
                defaults.top_p,
            ]
        )
    description = config.description or (
        f"Chat about an image with `{config.model or chat.name}`: upload an image, ask, and the answer streams in. "
        f"Limits: {limits.max_image_megabytes:g} MB and {limits.max_image_megapixels:g} megapixels per image, "
        f"{limits.max_text_chars:,} characters per message, {limits.max_images} images per conversation."
    )
    textbox = gr.MultimodalTextbox(
        file_types=["image"],
        file_count="multiple",
        placeholder="Upload an image and ask about it",
        sources=["upload"],
        show_label=False,
    )
    return gr.ChatInterface(
        respond,
        multimodal=True,
        textbox=textbox,
        chatbot=gr.Chatbot(label=config.title or "llava-hf", height=480),
        additional_inputs=[
            gr.Slider(1, limits.max_new_tokens, value=defaults.max_new_tokens, step=1, label="Max new tokens"),
            gr.Checkbox(value=defaults.do_sample, label="Sample (unchecked: greedy)"),
            gr.Slider(0.05, 2.0, value=defaults.temperature, step=0.05, label="Temperature"),
            gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top-p"),
        ],
        additional_inputs_accordion=gr.Accordion("Generation settings", open=False),
        examples=examples or None,
        cache_examples=False,  # Spaces default to caching, which would run the model at start-up
        title=config.title or "llava-hf",
        description=description,
        concurrency_limit=1,  # one generation at a time on the one model
        api_name="chat",
        flagging_mode="never",
    )


def build_demo_from_pretrained(config: DemoConfig, base_dir: str | Path | None = None):
    """Load `config.model` (a folder or Hub id) and build the app (what the Space's `app.py` calls)."""
    if not config.model:
        raise ValueError("the demo needs a model: a checkpoint folder or a Hub id.")
    chat = ChatModel.from_pretrained(config.model, device=config.device, dtype=config.dtype)
    return build_demo(chat, config, base_dir)
