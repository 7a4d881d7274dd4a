"""The demo: a multimodal chat over a llava_hf checkpoint, in Gradio (`llava-hf demo`, Spaces) or a terminal
(`llava-hf chat`). `chat` holds the engine and the input limits; `app` the Gradio layer (imports gradio lazily)."""

from .chat import DEMO_GENERATION, ChatModel, GenerationSettings, InputError, Limits, check_text, open_image

__all__ = [
    "DEMO_GENERATION",
    "ChatModel",
    "GenerationSettings",
    "InputError",
    "Limits",
    "check_text",
    "open_image",
]
