"""Raw LLM responses -> LLaVA conversations, or a rejection with its reason.

Conversation and complex-reasoning responses come as labelled blocks, the paper's raw format:

    Question:
    What colour is the bus?
    ===
    Answer:
    The bus is red.
    ===
    Question:
    ...

(`Question: text` on one line and blocks without the `===` separators are read too: smaller models often drop
them.) Complex reasoning has exactly one question/answer pair. A detailed description is plain text; its human turn
is one of our `DETAIL_INSTRUCTIONS`, drawn with the record's seed.

`<image>` goes into the first human turn, before (`<image>\\n...`) or after (`...\\n<image>`) the text at random
(seeded), as in the released LLaVA data.

A response is rejected, never repaired in silence, when it was cut by the token limit (`finish_reason == "length"`)
or by the provider's content filter, is empty, has an empty question or answer, has unbalanced or unlabelled blocks, has the wrong number of pairs for
complex reasoning, is a refusal, or contains the `<image>` placeholder itself.
"""

import random
import re
from dataclasses import dataclass

from .prompts import DETAIL_INSTRUCTIONS, canonical_kind

IMAGE_PLACEHOLDER = "<image>"

# Rejection reasons (the keys of the report's `rejected` counts).
TRUNCATED = "truncated"
FILTERED = "content filter"
EMPTY_RESPONSE = "empty response"
EMPTY_TURN = "empty question or answer"
UNBALANCED = "unbalanced Q/A"
WRONG_TURN_COUNT = "wrong number of Q/A pairs"
REFUSAL = "refusal"
PLACEHOLDER = "contains <image>"

# Phrases that mark a refusal or a model talking about itself rather than the image. Deliberately narrow: "I cannot
# tell whether ..." or "I can't see any other people" are good answers about the image and must survive.
REFUSAL_PATTERNS = (
    r"\bI'?m sorry\b",
    r"\bI am sorry\b",
    r"\bI apologi[sz]e\b",
    r"\bas an AI\b",
    r"\bas a(n AI)? language model\b",
    r"\bI (?:can ?not|can't|am unable to|'m unable to|am not able to|'m not able to) "
    r"(?:help|assist|comply|fulfil|fulfill|access)\b",
    r"\bI do(?: not|n't) have (?:access to|the ability to see) (?:the|this|an) image\b",
)
_REFUSAL = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)
_SEPARATOR = re.compile(r"^\s*={3,}\s*$")
_LABEL = re.compile(r"^\s*(?:\*\*)?(question|answer)(?:\*\*)?\s*:\s*(?:\*\*)?\s*(.*)$", re.IGNORECASE)


class ResponseRejected(ValueError):
    """A response that cannot become a record; `reason` is one of the module's reason constants."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Turn:
    question: str
    answer: str


def parse_qa_blocks(text: str) -> list[Turn]:
    """`Question:` / `Answer:` blocks -> turns; raises `ResponseRejected` when they do not alternate Q, A, Q, A."""
    blocks: list[list] = []  # [label, lines]
    for number, line in enumerate(text.splitlines(), start=1):
        if _SEPARATOR.match(line):
            continue
        label = _LABEL.match(line)
        if label:
            blocks.append([label.group(1).lower(), [label.group(2)]])
        elif blocks:
            blocks[-1][1].append(line)
        elif line.strip():
            raise ResponseRejected(UNBALANCED, f"line {number} is text before the first Question:/Answer: label")
    if not blocks:
        raise ResponseRejected(UNBALANCED, "no Question:/Answer: blocks")
    turns = []
    for index in range(0, len(blocks), 2):
        pair = blocks[index : index + 2]
        labels = [label for label, _ in pair]
        if labels != ["question", "answer"]:
            raise ResponseRejected(
                UNBALANCED, f"block {index + 1} starts {' then '.join(labels)}, expected question then answer"
            )
        question, answer = ("\n".join(lines).strip() for _, lines in pair)
        if not question or not answer:
            missing = "question" if not question else "answer"
            raise ResponseRejected(EMPTY_TURN, f"pair {index // 2 + 1} has an empty {missing}")
        turns.append(Turn(question, answer))
    return turns


def check_response(text: str | None, finish_reason: str | None) -> str:
    """The checks common to every type; returns the stripped text."""
    if finish_reason == "length":
        raise ResponseRejected(TRUNCATED, "the response hit the token limit (finish_reason=length)")
    if finish_reason == "content_filter":
        raise ResponseRejected(
            FILTERED, "the provider's content filter cut the response (finish_reason=content_filter)"
        )
    text = (text or "").replace("\u2019", "'").strip()  # curly apostrophes would dodge the refusal patterns
    if not text:
        raise ResponseRejected(EMPTY_RESPONSE, "the response is empty")
    refusal = _REFUSAL.search(text)
    if refusal:
        raise ResponseRejected(REFUSAL, f"contains {refusal.group(0)!r}")
    if IMAGE_PLACEHOLDER in text:
        raise ResponseRejected(PLACEHOLDER, f"the response itself contains {IMAGE_PLACEHOLDER}")
    return text


def response_to_turns(kind: str, text: str | None, finish_reason: str | None, rng: random.Random) -> list[Turn]:
    """Validated turns of one response; detailed descriptions get an instruction drawn from `rng`."""
    kind = canonical_kind(kind)
    text = check_response(text, finish_reason)
    if kind == "detail":
        return [Turn(rng.choice(DETAIL_INSTRUCTIONS), text)]
    turns = parse_qa_blocks(text)
    if kind == "complex" and len(turns) != 1:
        raise ResponseRejected(WRONG_TURN_COUNT, f"complex reasoning needs one question/answer pair, got {len(turns)}")
    return turns


def to_conversations(turns: list[Turn], rng: random.Random) -> list[dict[str, str]]:
    """LLaVA `conversations`, `<image>` before or after the first question (drawn from `rng`)."""
    conversations = []
    for index, turn in enumerate(turns):
        question = turn.question
        if index == 0:
            question = f"{IMAGE_PLACEHOLDER}\n{question}" if rng.random() < 0.5 else f"{question}\n{IMAGE_PLACEHOLDER}"
        conversations.append({"from": "human", "value": question})
        conversations.append({"from": "gpt", "value": turn.answer})
    return conversations


def parse_response(kind: str, text: str | None, finish_reason: str | None, rng: random.Random) -> list[dict[str, str]]:
    """Response -> LLaVA conversations; raises `ResponseRejected` with the reason."""
    return to_conversations(response_to_turns(kind, text, finish_reason, rng), rng)
