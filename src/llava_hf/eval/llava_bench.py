"""LLaVA-Bench: an LLM judge scores a reference answer and a candidate answer, each from 1 to 10.

The judge sees what GPT-4 saw when it wrote the references: the symbolic context (COCO captions and boxes, or the
in-the-wild image description), the question, then the reference answer (Assistant 1) and the candidate
(Assistant 2). Its reply starts with the two scores. Reviews keep the original layout
(`{"question_id", "category": "llava_bench_<cat>", "content", "tuple": [reference_score, candidate_score], ...}`),
and the relative score of a category is mean(candidate) / mean(reference) x 100.

Judges: any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM, SGLang, `transformers serve`; the `openai`
client retries 429 / 5xx / timeouts / resets with exponential backoff and honours `Retry-After`), or a local
transformers model. A reply whose scores cannot be read is asked again, then recorded with an error and reported.
"""

import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils import read_jsonl, repair_torn_tail

logger = logging.getLogger(__name__)

# Generated tokens per candidate answer by default (`llava-hf eval llava-bench`): detailed descriptions run long.
ANSWER_MAX_NEW_TOKENS = 512

# Our own wording of the judging instructions, per question type.
JUDGE_SYSTEM = "You are a careful, impartial judge of answers to questions about images."
RUBRICS = {
    "conv": (
        "Two assistants answered the question above about an image you cannot see; the context describes it. "
        "Judge how helpful, relevant and accurate each answer is, and whether its level of detail fits the question."
    ),
    "detail": (
        "Two assistants were asked to describe the image that the context describes. Judge how accurate, complete "
        "and well organised each description is, penalising details the context does not support."
    ),
    "complex": (
        "Two assistants answered a question that needs reasoning about the image the context describes. Judge the "
        "correctness of each answer's reasoning and conclusion, its use of the visual facts, and its clarity."
    ),
}
REPLY_FORMAT = (
    "Give each assistant a score from 1 to 10, 10 being best. On the first line write only the two scores, "
    "Assistant 1's then Assistant 2's, separated by a space. From the second line on, explain your judgement "
    "without letting the order of the answers or their length sway you."
)
_SCORES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[ ,]\s*(\d+(?:\.\d+)?)\s*$")


def category_of(question: dict) -> str:
    return str(question.get("category", "conv")).removeprefix("llava_bench_")


def symbolic_context(entry: dict) -> str:
    """COCO: the captions, one per line, then `category: [x1, y1, x2, y2]` boxes. In-the-wild: the description."""
    if "captions" in entry:
        lines = list(entry["captions"])
        boxes = [f"{i['category']}: {i['bbox']}" for i in entry.get("instances", [])]
        return "\n".join(lines) + ("\n\n" + "\n".join(boxes) if boxes else "")
    if "caption" in entry:
        return entry["caption"]
    raise ValueError(f"context entry {entry.get('id', entry.get('image'))!r} has neither 'captions' nor 'caption'.")


def judge_messages(context: str, question: str, reference: str, candidate: str, category: str) -> list[dict[str, str]]:
    rubric = RUBRICS.get(category, RUBRICS["conv"])
    user = (
        f"[Context]\n{context}\n\n[Question]\n{question}\n\n"
        f"[Assistant 1]\n{reference}\n[End of Assistant 1]\n\n"
        f"[Assistant 2]\n{candidate}\n[End of Assistant 2]\n\n"
        f"[Instructions]\n{rubric} {REPLY_FORMAT}"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_scores(reply: str) -> tuple[float, float] | None:
    """The two scores on the reply's first line, or None."""
    first = reply.strip().split("\n", 1)[0] if reply else ""
    match = _SCORES.match(first)
    if not match:
        return None
    scores = (float(match.group(1)), float(match.group(2)))
    return scores if all(1 <= s <= 10 for s in scores) else None


# -- judges ----------------------------------------------------------------------------------------------------------
class OpenAIJudge:
    """Any OpenAI-compatible Chat Completions endpoint. The key comes from the environment (`api_key_env`)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.2,
        max_tokens: int = 1024,
        timeout: float = 120.0,
        max_retries: int = 6,
    ):
        from openai import OpenAI

        self.model, self.temperature, self.max_tokens = model, temperature, max_tokens
        self.client = OpenAI(
            base_url=base_url,
            api_key=os.environ.get(api_key_env) or "EMPTY",  # local servers take any key
            timeout=timeout,
            max_retries=max_retries,  # 429 / 5xx / timeouts / connection errors, exponential backoff, Retry-After
        )

    @property
    def name(self) -> str:
        return self.model

    def __call__(self, messages: list[dict[str, str]]) -> str:
        response = self.client.chat.completions.create(
            model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
        )
        return response.choices[0].message.content or ""


class TransformersJudge:
    """A local chat model (any `AutoModelForCausalLM` with a chat template), greedy."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int = 256):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens

    @property
    def name(self) -> str:
        return str(getattr(self.model, "name_or_path", "local"))

    def __call__(self, messages: list[dict[str, str]]) -> str:
        import torch

        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.model.device)
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


# -- reviewing -------------------------------------------------------------------------------------------------------
@dataclass
class ReviewReport:
    reviewed: int = 0
    skipped_existing: int = 0
    unparseable: int = 0
    unparseable_ids: list[str] | None = None


def _by_id(rows: Iterable[dict], key: str = "question_id") -> dict[str, dict]:
    return {str(row[key]): row for row in rows}


def review(
    judge: Callable[[list[dict[str, str]]], str],
    questions: list[dict],
    contexts: list[dict],
    references: list[dict],
    candidates: list[dict],
    reviews_file: str | Path,
    attempts: int = 3,
    progress: bool = True,
) -> ReviewReport:
    """Judge every question into `reviews_file` (JSONL, appended; questions reviewed already are skipped)."""
    from tqdm.auto import tqdm

    context_by_image = {str(c.get("image")): c for c in contexts}
    refs, cands = _by_id(references), _by_id(candidates)
    reviews_file = Path(reviews_file)
    if repair_torn_tail(reviews_file):  # a kill mid-write: that question is judged again
        logger.warning(
            "%s: cut an incomplete last line left by a killed run; its question is judged again.", reviews_file
        )
    done = {str(r["question_id"]) for r in read_jsonl(reviews_file)} if reviews_file.is_file() else set()
    report = ReviewReport(unparseable_ids=[])
    with reviews_file.open("a", encoding="utf-8") as out:
        for question in tqdm(questions, desc="judging", disable=not progress):
            qid = str(question["question_id"])
            if qid in done:
                report.skipped_existing += 1
                continue
            for name, table in (("reference", refs), ("candidate", cands)):
                if qid not in table:
                    raise ValueError(f"question {qid}: no {name} answer.")
            if str(question.get("image")) not in context_by_image:
                raise ValueError(f"question {qid}: no context for image {question.get('image')!r}.")
            category = category_of(question)
            messages = judge_messages(
                symbolic_context(context_by_image[str(question["image"])]),
                question["text"],
                refs[qid]["text"],
                cands[qid]["text"],
                category,
            )
            content, scores, problem = "", None, ""
            for _ in range(attempts):
                try:
                    content = judge(messages)
                except Exception as error:  # noqa: BLE001 - a failed call (after the client's own retries) is retried here, then reported
                    content, problem = "", f"{type(error).__name__}: {error}"
                    continue
                scores = parse_scores(content)
                if scores is not None:
                    break
                problem = "no two 1-10 scores on the first line"
            row = {
                "id": report.reviewed + report.skipped_existing + 1,
                "question_id": question["question_id"],
                "answer1_id": refs[qid].get("answer_id"),
                "answer2_id": cands[qid].get("answer_id"),
                "category": f"llava_bench_{category}",
                "content": content,
                "tuple": list(scores) if scores else [-1.0, -1.0],
            }
            if scores is None:
                row["error"] = f"{problem} (after {attempts} attempts)"
                report.unparseable += 1
                report.unparseable_ids.append(qid)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            report.reviewed += 1
    if report.unparseable:
        logger.warning("%d judge replies had no readable scores: %s", report.unparseable, report.unparseable_ids)
    return report


def summarize(reviews: Iterable[dict]) -> dict[str, Any]:
    """Relative score per category and overall: mean(candidate) / mean(reference) x 100, plus both means (x10, as
    the original printed them) and the count. Reviews without readable scores are counted and left out."""
    scores: dict[str, list[tuple[float, float]]] = defaultdict(list)
    excluded = 0
    for row in reviews:
        reference, candidate = row["tuple"]
        if reference < 0 or candidate < 0:
            excluded += 1
            continue
        category = category_of(row)
        scores[category].append((reference, candidate))
        scores["all"].append((reference, candidate))
    summary: dict[str, Any] = {}
    for category, pairs in sorted(scores.items()):
        reference = sum(p[0] for p in pairs) / len(pairs)
        candidate = sum(p[1] for p in pairs) / len(pairs)
        summary[category] = {
            # A reference scored 0 throughout leaves nothing to be relative to: None, not a ZeroDivisionError.
            "relative_score": 100.0 * candidate / reference if reference > 0 else None,
            "reference_mean_x10": 10 * reference,
            "candidate_mean_x10": 10 * candidate,
            "count": len(pairs),
        }
    summary["excluded_unparseable"] = excluded
    return summary
