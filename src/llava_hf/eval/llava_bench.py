"""LLaVA-Bench: an LLM judge scores a reference answer and a candidate answer, each from 1 to 10.

The judge sees what GPT-4 saw when it wrote the references: the symbolic context (COCO captions and boxes, or the
in-the-wild image description), the question, then the reference answer (Assistant 1) and the candidate
(Assistant 2). Its reply starts with the two scores. Reviews keep the original layout
(`{"question_id", "category": "llava_bench_<cat>", "content", "tuple": [reference_score, candidate_score], ...}`),
and the relative score of a category is mean(candidate) / mean(reference) x 100.

Judges: any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM, SGLang, `transformers serve`; the `openai`
client retries 429 / 5xx / timeouts / resets with exponential backoff and honours `Retry-After`), or a local
transformers model. A reply whose scores cannot be read is asked again, then recorded with an error and reported.
A judge call that still fails is recorded with an error too; a few in a row (a server that is down) stop the run,
naming the endpoint (`datagen.backend.CircuitBreaker`, as `llava-hf generate-instructions` stops). A rerun keeps
the verdicts and judges again every question whose review is an error.
"""

import json
import logging
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..datagen.backend import BackendUnusable, CircuitBreaker, RequestFailed, TransientError
from ..utils import atomic_write_text, index_rows, iter_jsonl, read_jsonl, repair_torn_tail, rows_by_id

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
# Judge calls in a row that fail (after the client's own retries) before the judge is taken for down: each one has
# already waited through its backoff, so a few are proof enough, and stopping early saves minutes per question.
STOP_AFTER_FAILURES = 3
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
    """Any OpenAI-compatible Chat Completions endpoint. The key comes from the environment (`api_key_env`).

    A call that fails after the client's retries raises the data engine's errors (`datagen.backend`), so that
    `review` tells a server that is down (`TransientError`) from a refused key or an unknown model
    (`BackendUnusable`) and from one bad request (`RequestFailed`)."""

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
        self.api_key_env = api_key_env
        self.client = OpenAI(
            base_url=base_url,
            api_key=os.environ.get(api_key_env) or "EMPTY",  # local servers take any key
            timeout=timeout,
            max_retries=max_retries,  # 429 / 5xx / timeouts / connection errors, exponential backoff, Retry-After
        )

    @property
    def name(self) -> str:
        return self.model

    @property
    def endpoint(self) -> str:
        return str(self.client.base_url).rstrip("/")

    def __call__(self, messages: list[dict[str, str]]) -> str:
        import openai

        from ..datagen.openai_compatible import http_error

        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
            )
        except openai.APIStatusError as error:
            raise http_error(
                error.status_code,
                str(error.message)[:300],
                self.endpoint,
                key_fix=f"set ${self.api_key_env} (or pass --judge-key-env NAME) to a valid key",
                url_fix=f"check --judge-base-url (it should end in /v1) and --judge-model {self.model!r}",
            ) from error
        except openai.APIConnectionError as error:  # refused, reset or timed out (a timeout is a subclass)
            raise TransientError("connection", f"{type(error).__name__}: {error}") from error
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
    """What one `review` call did. `unparseable` replies had no readable scores; `failed` judge calls raised after
    their retries; both are written with an `error` and judged again by the next run, as `retried` counts."""

    reviewed: int = 0
    skipped_existing: int = 0
    retried: int = 0
    unparseable: int = 0
    unparseable_ids: list[str] = field(default_factory=list)
    failed: int = 0
    failed_ids: list[str] = field(default_factory=list)


def is_verdict(row: Any) -> bool:
    """Whether a review row holds the judge's two scores (not an error row, nor the [-1, -1] of an unreadable reply,
    nor a row that is not a JSON object or whose scores are not finite numbers)."""
    if not isinstance(row, dict):
        return False
    scores = row.get("tuple")
    return (
        not row.get("error")
        and isinstance(scores, (list, tuple))
        and len(scores) == 2
        and all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s >= 0 for s in scores
        )
    )


def _indexed(rows: Iterable[dict] | str | Path, name: str) -> dict[str, dict]:
    """Rows by question_id from a JSONL file or from rows: one question_id on two rows is refused naming the file
    (or `name`, for rows passed from Python) and both line numbers, as for any answers file."""
    if isinstance(rows, (str, Path)):
        return rows_by_id(rows)
    return index_rows(enumerate(rows, start=1), name, unit="row")


def read_verdicts(reviews_file: str | Path) -> dict[str, dict]:
    """question_id -> review row with readable scores, from a reviews file (none if it does not exist). Error rows
    are left out; two verdicts for one question are refused naming the file and both lines."""
    reviews_file = Path(reviews_file)
    if not reviews_file.is_file():
        return {}
    return index_rows(
        ((number, row) for number, row in iter_jsonl(reviews_file) if isinstance(row, dict) and is_verdict(row)),
        str(reviews_file),
    )


def missing_reviews(questions: Iterable[dict] | str | Path, reviews_file: str | Path) -> dict[str, str]:
    """question_id -> why it has no verdict in `reviews_file`: the error recorded for it, or `not judged yet`."""
    reviews_file = Path(reviews_file)
    errors = {}
    if reviews_file.is_file():
        for _, row in iter_jsonl(reviews_file, skip_torn_tail=True):
            if isinstance(row, dict) and "question_id" in row and not is_verdict(row):
                errors[str(row["question_id"])] = str(
                    row.get("error") or f"no readable scores: tuple {row.get('tuple')}"
                )
    verdicts = read_verdicts(reviews_file)
    return {qid: errors.get(qid, "not judged yet") for qid in _indexed(questions, "questions") if qid not in verdicts}


def describe_missing(missing: dict[str, str], most: int = 3) -> str:
    """`2: judge call failed: HTTP 500: ...; 1: not judged yet`: the reasons with their counts, the most common
    first."""
    counts = Counter(reason if len(reason) <= 160 else reason[:157] + "..." for reason in missing.values())
    parts = [f"{n}: {reason}" for reason, n in counts.most_common(most)]
    if len(counts) > most:
        parts.append(f"{sum(n for _, n in counts.most_common()[most:])} for other reasons")
    return "; ".join(parts)


def _drop_error_rows(reviews_file: Path, answer_ids: dict[str, tuple[Any, Any]]) -> int:
    """Rewrite `reviews_file` without its error rows and without verdicts on answers that are not the current ones
    (`answer_ids`: question_id -> the reference's and the candidate's `answer_id`; a verdict on an earlier answers
    file names other ids), so that those questions are judged again and the file keeps one row per question;
    returns how many were dropped. The new file replaces the old in one rename, so a kill leaves one or the other."""
    rows = [row for _, row in iter_jsonl(reviews_file)]

    def current(row: Any) -> bool:
        if not isinstance(row, dict) or not is_verdict(row):
            return False
        now = answer_ids.get(str(row.get("question_id")), (None, None))
        then = (row.get("answer1_id"), row.get("answer2_id"))
        return all(a is None or b is None or a == b for a, b in zip(now, then))

    kept = [row for row in rows if current(row)]
    if len(kept) == len(rows):
        return 0
    atomic_write_text(reviews_file, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept))
    return len(rows) - len(kept)


def _unjudgeable(
    questions: list[dict], context_by_image: dict, refs: dict, cands: dict, names: dict[str, str]
) -> list[str]:
    """What keeps each question from being judged (its text, its image's context, its reference and candidate
    answers), each naming the file (`names`: role -> file or argument name) and the question_id."""
    problems = []
    for question in questions:
        qid = str(question["question_id"])
        if not isinstance(question.get("text"), str):
            problems.append(f"{names['questions']}: question {qid} has no 'text' string")
        for role, name, table in (("references", "reference", refs), ("candidates", "candidate", cands)):
            if qid not in table:
                problems.append(f"{names[role]}: no {name} answer to question {qid}")
            elif not isinstance(table[qid].get("text"), str):
                problems.append(f"{names[role]}: the {name} answer to question {qid} has no 'text' string")
        context = context_by_image.get(str(question.get("image")))
        if context is None:
            problems.append(f"{names['contexts']}: no context for image {question.get('image')!r} (question {qid})")
        elif "captions" not in context and "caption" not in context:
            problems.append(
                f"{names['contexts']}: the context of image {question.get('image')!r} has neither 'captions' nor "
                "'caption'"
            )
    return problems


def review(
    judge: Callable[[list[dict[str, str]]], str],
    questions: list[dict] | str | Path,
    contexts: list[dict] | str | Path,
    references: list[dict] | str | Path,
    candidates: list[dict] | str | Path,
    reviews_file: str | Path,
    attempts: int = 3,
    progress: bool = True,
    stop_after_failures: int = STOP_AFTER_FAILURES,
) -> ReviewReport:
    """Judge every question into `reviews_file` (JSONL, appended). Questions, references and candidates are rows or
    JSONL files; one question_id on two rows of any of them is refused (`ValueError` naming the file or argument and
    both rows) before anything is judged, and so is a question without its text, a reference or candidate answer
    with text, or its image's context (naming the file and the question). Questions with a verdict already are
    skipped; rows recorded with an error by an earlier run are dropped and judged again.

    A reply without readable scores is asked again, up to `attempts` times. A judge call that raises
    `TransientError` (`OpenAIJudge`, after its client's retries) is not: it is recorded with an error, and
    `stop_after_failures` of them in a row raise `BackendUnusable` naming the judge's endpoint and how many questions
    have a verdict. `BackendUnusable` from the judge (a refused key, an unknown model) stops at once, saying the same.
    """
    from tqdm.auto import tqdm

    names = {
        role: str(value) if isinstance(value, (str, Path)) else role
        for role, value in (
            ("questions", questions),
            ("contexts", contexts),
            ("references", references),
            ("candidates", candidates),
        )
    }
    questions = list(_indexed(questions, "questions").values())
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}.")
    if isinstance(contexts, (str, Path)):
        contexts = read_jsonl(contexts)
    context_by_image = {str(c.get("image")): c for c in contexts if isinstance(c, dict)}
    refs, cands = _indexed(references, "references"), _indexed(candidates, "candidates")
    # Every question must be judgeable before the first judge call: a gap found halfway would stop a paid run there.
    problems = _unjudgeable(questions, context_by_image, refs, cands, names)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError("; ".join(problems[:3]) + f"{more}. Nothing was judged: fix the files and run again.")
    reviews_file = Path(reviews_file)
    if repair_torn_tail(reviews_file):  # a kill mid-write: that question is judged again
        logger.warning(
            "%s: cut an incomplete last line left by a killed run; its question is judged again.", reviews_file
        )
    report = ReviewReport()
    if reviews_file.is_file():
        answer_ids = {qid: (refs[qid].get("answer_id"), cands[qid].get("answer_id")) for qid in cands if qid in refs}
        report.retried = _drop_error_rows(reviews_file, answer_ids)
        if report.retried:
            logger.info(
                "%s: %d reviews were errors or judged other answers; judging their questions again.",
                reviews_file,
                report.retried,
            )
    done = set(read_verdicts(reviews_file))
    url = getattr(judge, "endpoint", None)
    endpoint = f"judge {url}" if url else f"judge {getattr(judge, 'name', judge)!r}"
    breaker = CircuitBreaker(stop_after_failures, endpoint)

    def resume() -> str:
        judged = sum(str(q["question_id"]) in done for q in questions)
        return (
            f"{judged} of {len(questions)} questions have a review in {reviews_file}; run the same command again "
            "to judge the rest (reviewed questions are kept)."
        )

    with reviews_file.open("a", encoding="utf-8") as out:
        for position, question in enumerate(tqdm(questions, desc="judging", disable=not progress), start=1):
            qid = str(question["question_id"])
            if qid in done:
                report.skipped_existing += 1
                continue
            category = category_of(question)
            messages = judge_messages(
                symbolic_context(context_by_image[str(question["image"])]),
                question["text"],
                refs[qid]["text"],
                cands[qid]["text"],
                category,
            )
            content, scores, problem, answered, down, asked, repeatable = "", None, "", False, False, 0, True
            for _ in range(attempts):
                asked += 1
                try:
                    content = judge(messages)
                except BackendUnusable as error:
                    where = "" if url and url in str(error) else f"{endpoint}: "
                    raise BackendUnusable(f"{where}{str(error).rstrip('. ')}. {resume()}") from error
                except (TransientError, RequestFailed) as error:
                    # The client has retried this with backoff already: asking again here would multiply the wait
                    # (minutes per question on a dead server) for an answer that will not come.
                    content, problem = "", f"judge call failed: {error}"
                    down, repeatable = isinstance(error, TransientError), False
                    break
                except Exception as error:  # noqa: BLE001 - any other judge failure is retried here, then reported
                    content, problem = "", f"judge call failed: {type(error).__name__}: {error}"
                    continue
                answered = True
                scores = parse_scores(content)
                if scores is not None:
                    break
                problem = "no two 1-10 scores on the first line"
            row = {
                "id": position,
                "question_id": question["question_id"],
                "answer1_id": refs[qid].get("answer_id"),
                "answer2_id": cands[qid].get("answer_id"),
                "category": f"llava_bench_{category}",
                "content": content,
                "tuple": list(scores) if scores else [-1.0, -1.0],
            }
            if scores is None:
                row["error"] = f"{problem} (after {asked} attempts)" if repeatable else problem
                if answered:
                    report.unparseable += 1
                    report.unparseable_ids.append(qid)
                else:
                    report.failed += 1
                    report.failed_ids.append(qid)
            else:
                done.add(qid)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            report.reviewed += 1
            if answered:
                breaker.success()
            elif down:
                breaker.failure(problem, resume())
    if report.unparseable:
        logger.warning("%d judge replies had no readable scores: %s", report.unparseable, report.unparseable_ids)
    if report.failed:
        logger.warning("%d judge calls failed: %s", report.failed, report.failed_ids)
    return report


def summarize(reviews: Iterable[dict]) -> dict[str, Any]:
    """Relative score per category and overall: mean(candidate) / mean(reference) x 100, plus both means (x10, as
    the original printed them) and the count. Reviews without readable scores are counted and left out."""
    scores: dict[str, list[tuple[float, float]]] = defaultdict(list)
    excluded = 0
    for row in reviews:
        if not is_verdict(row):
            excluded += 1
            continue
        reference, candidate = row["tuple"]
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
