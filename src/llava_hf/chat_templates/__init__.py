"""The chat templates llava_hf ships: `plain` (stage 1), `vicuna_v1` and `llava_v1` (stage 2), and `chatml` (SmolLM2,
Qwen, ...).

`vicuna_v1` and `llava_v1` are the original LLaVA's `conv_vicuna_v1` and `conv_llava_v1`: the same format
(`SeparatorStyle.TWO`, roles `USER`/`ASSISTANT`, separators `" "` and `"</s>"`) with different system prompts. LLaVA
v1 and 1.5 trained with `vicuna_v1` (`--version v1`) and LLaVA-1.5 is evaluated with it; LLaVA v1 checkpoints were
evaluated with `llava_v1`.
"""

from importlib import resources
from pathlib import Path

TEMPLATE_NAMES = ("plain", "vicuna_v1", "llava_v1", "chatml")

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the user's questions."
)
LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions."
)

# name -> (Jinja file, fixed default system prompt or None when the caller's `default_system` fills it)
_SOURCES: dict[str, tuple[str, str | None]] = {
    "plain": ("plain.jinja", None),
    "vicuna_v1": ("vicuna_v1.jinja", VICUNA_V1_SYSTEM),
    "llava_v1": ("vicuna_v1.jinja", LLAVA_V1_SYSTEM),
    "chatml": ("chatml.jinja", None),
}


def get_chat_template(name: str, default_system: str = "") -> str:
    """Return the Jinja source of a shipped template.

    `default_system` fills the system prompt ChatML adds when the conversation has none (SmolLM2's own template adds
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face"). `vicuna_v1` and `llava_v1` always use
    their own (`VICUNA_V1_SYSTEM`, `LLAVA_V1_SYSTEM`), which a leading system message replaces; `plain` has none.
    """
    if name not in _SOURCES:
        raise ValueError(f"Unknown chat template {name!r}; choose one of {list(TEMPLATE_NAMES)}.")
    filename, fixed_system = _SOURCES[name]
    system = default_system if fixed_system is None else fixed_system
    source = resources.files(__package__).joinpath(filename).read_text()
    return source.replace("__DEFAULT_SYSTEM__", system.replace("\\", "\\\\").replace('"', '\\"'))


def resolve_chat_template(template: str | None, default_system: str = "") -> str | None:
    """A chat template given by name, file or source, as Jinja source: the one reading of `--chat-template`,
    `chat_template:` in recipes and `chat_template=` arguments.

    A shipped name (`TEMPLATE_NAMES`) gives `get_chat_template(name, default_system)`; a path ending in `.jinja` gives
    the file's text (a missing file raises `FileNotFoundError`); anything else (Jinja source, or `None`) is returned
    as it is.
    """
    if template is None:
        return None
    if template in TEMPLATE_NAMES:
        return get_chat_template(template, default_system=default_system)
    if template.endswith(".jinja") and "\n" not in template and "{" not in template:
        path = Path(template)
        if not path.is_file():
            raise FileNotFoundError(f"chat template file {template} not found.")
        return path.read_text()
    return template
