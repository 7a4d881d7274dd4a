"""The chat templates llava_hf ships: `plain` (stage 1), `vicuna_v1` (stage 2) and `chatml` (SmolLM2, Qwen, ...)."""

from importlib import resources

TEMPLATE_NAMES = ("plain", "vicuna_v1", "chatml")


def get_chat_template(name: str, default_system: str = "") -> str:
    """Return the Jinja source of a shipped template.

    `default_system` fills the system prompt ChatML adds when the conversation has none (SmolLM2's own template adds
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face"); other templates ignore it.
    """
    if name not in TEMPLATE_NAMES:
        raise ValueError(f"Unknown chat template {name!r}; choose one of {list(TEMPLATE_NAMES)}.")
    source = resources.files(__package__).joinpath(f"{name}.jinja").read_text()
    return source.replace("__DEFAULT_SYSTEM__", default_system.replace('"', '\\"'))
