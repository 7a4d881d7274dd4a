"""Requests to the LLM: a system prompt, few-shot examples as alternating user/assistant turns, then the query.

As in the paper, each of the three instruction types (conversation, detailed description, complex reasoning) has its
own system prompt and a few hand-written examples: the user turn of an example is a symbolic context (captions, and
boxes for the types that use them) and the assistant turn is the response wanted for it. The query is the image's
own context as the last user turn. The examples' order is shuffled per request from the seed and the record key, so
a request is the same whatever order or concurrency it runs in.

Our prompts and examples (written for this project) live in `llava_hf/datagen/prompts/`. Swap in your own with a
folder of the same layout (the layout of the original LLaVA `playground/data/prompts` folder, so that works too):

    my_prompts/
      conversation/          (or conv/)
        system.txt           (or system_message.txt): the system prompt
        000_caps.txt         example 0, user turn: a context
        000_conv.txt         example 0, assistant turn: the response wanted
        001_caps.txt ...     as many pairs as you like (numbered, read in order)
      detail/                (or detail_description/)
      complex/               (or complex_reasoning/)

A type missing from the folder keeps our built-in prompt set.
"""

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

KINDS = ("conversation", "detail", "complex")
# Other spellings: LLaVA's record `type` values and its prompt folder names.
ALIASES = {
    "conv": "conversation",
    "conversation": "conversation",
    "detail": "detail",
    "detail_description": "detail",
    "description": "detail",
    "complex": "complex",
    "complex_reasoning": "complex",
    "reasoning": "complex",
}
# Conversations are asked "as if looking at the image", from the captions alone, as in the paper; descriptions and
# reasoning also get the boxes, for layout, counts and sizes.
USES_BOXES = {"conversation": False, "detail": True, "complex": True}

# Our own phrasings of "describe the image in detail": the human turn of a detailed-description record (the LLM
# writes only the description). One is drawn per record, seeded.
DETAIL_INSTRUCTIONS = (
    "Tell me everything you can see in this picture.",
    "What is going on in this image? Please be thorough.",
    "Give a detailed account of this photo, including the setting and the objects in it.",
    "Describe this scene as fully as you can.",
    "Paint a detailed picture in words of what this image shows.",
    "Go through this image carefully and describe what it contains.",
    "Could you describe this image for me in detail?",
    "Write a few paragraphs describing this photo.",
    "Describe the main things in this image and how they are arranged.",
    "Provide a complete, careful description of the picture.",
)


def canonical_kind(name: str) -> str:
    """`conv` -> `conversation`, `detail_description` -> `detail`, ...; unknown names raise, listing the choices."""
    kind = ALIASES.get(name.strip().lower())
    if kind is None:
        raise ValueError(f"unknown instruction type {name!r}; choose from {', '.join(KINDS)} (or {sorted(ALIASES)}).")
    return kind


@dataclass(frozen=True)
class FewShotExample:
    context: str  # the user turn: a symbolic context
    response: str  # the assistant turn: the response wanted


@dataclass(frozen=True)
class PromptSet:
    """One instruction type's system prompt and few-shot examples."""

    kind: str
    system: str
    examples: tuple[FewShotExample, ...]
    source: str = "built-in"

    @property
    def uses_boxes(self) -> bool:
        return USES_BOXES[self.kind]

    def messages(self, context: str, rng: random.Random) -> list[dict[str, str]]:
        """Chat messages: system, the examples in an order drawn from `rng` (user, assistant, ...), the query."""
        order = rng.sample(range(len(self.examples)), k=len(self.examples))
        messages = [{"role": "system", "content": self.system}]
        for index in order:
            example = self.examples[index]
            messages.append({"role": "user", "content": example.context})
            messages.append({"role": "assistant", "content": example.response})
        messages.append({"role": "user", "content": context})
        return messages


def request_rng(seed: int, image_id: str, kind: str, sample_index: int, purpose: str) -> random.Random:
    """A random stream that depends only on the seed and the record key (string seeding is stable across runs)."""
    return random.Random(f"{seed}|{image_id}|{kind}|{sample_index}|{purpose}")


# -- loading ---------------------------------------------------------------------------------------------------------
_FOLDERS = {
    "conversation": ("conversation", "conv"),
    "detail": ("detail", "detail_description"),
    "complex": ("complex", "complex_reasoning"),
}
_SYSTEM_FILES = ("system.txt", "system_message.txt")


def load_prompt_set(kind: str, folder: str | Path | None = None) -> PromptSet:
    """The prompt set of `kind` from `folder` (the layout in the module docstring), or our built-in one."""
    kind = canonical_kind(kind)
    if folder is not None:
        for name in _FOLDERS[kind]:
            if (Path(folder) / name).is_dir():
                return _read_prompt_folder(kind, Path(folder) / name)
    return _read_prompt_folder(kind, resources.files("llava_hf.datagen") / "prompts" / kind, source="built-in")


def load_prompts(kinds: list[str] | tuple[str, ...] = KINDS, folder: str | Path | None = None) -> dict[str, PromptSet]:
    """Prompt sets by canonical type name. A `folder` that does not exist is an error (a mistyped path would
    otherwise run the whole job on the built-in prompts)."""
    if folder is not None and not Path(folder).is_dir():
        raise FileNotFoundError(f"prompts folder {folder} not found (or not a folder); see the layout in --help.")
    return {canonical_kind(kind): load_prompt_set(kind, folder) for kind in kinds}


def _read_prompt_folder(kind: str, folder, source: str | None = None) -> PromptSet:
    # `folder` is a Path or an importlib Traversable (the package's files): both have joinpath/iterdir/read_text.
    names = {entry.name for entry in folder.iterdir()}
    system_name = next((name for name in _SYSTEM_FILES if name in names), None)
    if system_name is None:
        raise FileNotFoundError(f"{folder}: no system prompt; add system.txt (the {kind} system prompt).")
    system = folder.joinpath(system_name).read_text(encoding="utf-8").strip()
    if not system:
        raise ValueError(f"{folder / system_name}: the system prompt is empty.")
    examples = []
    for caps in sorted(name for name in names if name.endswith("_caps.txt")):
        conv = caps.removesuffix("_caps.txt") + "_conv.txt"
        if conv not in names:
            raise FileNotFoundError(f"{folder / caps} has no response file {conv}; add it or remove the example.")
        examples.append(
            FewShotExample(
                context=folder.joinpath(caps).read_text(encoding="utf-8").strip(),
                response=folder.joinpath(conv).read_text(encoding="utf-8").strip(),
            )
        )
    orphans = sorted(
        name
        for name in names
        if name.endswith("_conv.txt") and name.removesuffix("_conv.txt") + "_caps.txt" not in names
    )
    if orphans:
        raise FileNotFoundError(f"{folder}: {orphans} have no matching *_caps.txt context file.")
    return PromptSet(kind=kind, system=system, examples=tuple(examples), source=source or str(folder))
