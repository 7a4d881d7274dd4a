"""ScienceQA scoring with the official semantics, minus its random guess.

A prediction is parsed, in this order, into an option letter:
1. the bare letter (`"B"`);
2. a `"X. "` prefix (`"B. apostrophe"`);
3. `The answer is X.` found exactly once;
4. anything else is `FAILED`.

The official scorer then replaced FAILED (and letters beyond the problem's options) by a random option, which made
its accuracy depend on a random seed. Here they are counted, reported and scored wrong.
"""

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..data.scienceqa import problem_metadata
from ..utils import index_rows, read_json, rows_by_id

OPTIONS = ("A", "B", "C", "D", "E")
FAILED = "FAILED"
# Generated tokens per answer by default (`llava-hf eval scienceqa`): a letter, or a short sentence naming one.
ANSWER_MAX_NEW_TOKENS = 16
# The official pattern: "The answer is " + one capital letter + any character.
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse_prediction(text: str, options: tuple[str, ...] = OPTIONS) -> str:
    """The option letter a model's output names, or `FAILED` (see the module docstring for the order)."""
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    if len(found) == 1:
        return found[0]
    return FAILED


def num_options(question: str) -> int:
    """Number of lettered options (`A. ...` lines) in a CQM-A question."""
    count = 0
    for letter in OPTIONS:
        if f"\n{letter}. " in question:
            count += 1
        else:
            break
    return count


def score_scienceqa(
    predictions: dict[str, str],
    questions: Iterable[dict[str, Any]],
    problems: dict[str, dict] | None = None,
    source: str = "questions",
) -> dict[str, Any]:
    """Score `predictions` (question id -> model output) against LLaVA-format ScienceQA `questions`.

    `questions` are LLaVA records (`id`, optional `image`, `conversations` whose gpt turn is the gold letter or a
    solution ending in "The answer is X."), as in `llava_test_CQM-A.json`; records converted by llava-hf also carry
    `subject`, `context_modality` and `grade`. `problems` (the official `problems.json`) adds those categories when
    the records lack them.

    Returns accuracy overall and on the image subset, per category (subject NAT/SOC/LAN, context TXT/IMG/NO, grade
    G1-6/G7-12) where known, the number of failed parses (scored wrong) and per-question `parsed` letters.

    Questions that are not records with an `id` and a question and gold answer as text, an id on two records, a
    prediction that is not text, or no question at all raise a `ValueError` naming `source` (what the questions are
    called in messages: their file) and the question.
    """
    if problems is not None and not isinstance(problems, Mapping):
        raise ValueError(
            f"problems must map problem ids to problems (problems.json's object), got {type(problems).__name__}."
        )
    if isinstance(questions, Mapping):
        raise ValueError(f"{source}: questions must be a list of LLaVA records, not a mapping.")
    unit = "line" if str(source).endswith(".jsonl") else "row"
    records = index_rows(enumerate(questions, start=1), str(source), key="id", unit=unit)  # one record per id
    if not records:
        raise ValueError(f"{source}: no questions to score.")
    totals: Counter = Counter()
    correct: Counter = Counter()
    parsed: dict[str, str] = {}
    failed, out_of_range, missing = [], [], []
    for qid, record in records.items():
        turns = record.get("conversations")
        if not (
            isinstance(turns, list)
            and len(turns) >= 2
            and all(isinstance(turn, dict) and isinstance(turn.get("value"), str) for turn in turns[:2])
        ):
            raise ValueError(
                f"{source}: question {qid!r} needs 'conversations' holding the question (human turn) and its gold "
                "answer (gpt turn) as text."
            )
        if qid in predictions and not isinstance(predictions[qid], str):
            raise ValueError(
                f"the prediction for question {qid!r} is {type(predictions[qid]).__name__}, not text; predictions "
                "map question ids to the model's output strings."
            )
        # The gold letter: the gpt turn itself ("B", CQM-A files) or read from a solution-first answer ("... The
        # answer is B.", QCM-LEA files and the shapes world) with the same parser as the predictions.
        gold = parse_prediction(record["conversations"][1]["value"].strip(), OPTIONS)
        if gold == FAILED:
            raise ValueError(
                f"{source}: question {qid!r}: its gpt turn {record['conversations'][1]['value']!r} names no option "
                "letter; the gold answer must be a letter or end with 'The answer is X.'."
            )
        question = record["conversations"][0]["value"]
        n_options = num_options(question) or len(OPTIONS)
        if qid not in predictions:
            missing.append(qid)
            continue
        letter = parse_prediction(predictions[qid], OPTIONS)  # unstripped, as the official scorer
        parsed[qid] = letter
        if letter == FAILED:
            failed.append(qid)
        elif letter not in OPTIONS[:n_options]:  # "The answer is Y." names no option: wrong, counted
            out_of_range.append(qid)
        hit = letter == gold
        groups = ["all"] + (["image"] if "image" in record else []) + _categories(qid, record, problems)
        for group in groups:
            totals[group] += 1
            correct[group] += hit
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} question(s) have no prediction (first: {missing[:5]}); run inference on the "
            "whole set or score the subset you answered."
        )
    accuracy = {group: 100.0 * correct[group] / totals[group] for group in totals}
    return {
        "accuracy": accuracy.get("all", 0.0),
        "image_accuracy": accuracy.get("image", 0.0),
        "count": totals["all"],
        "correct": correct["all"],
        "image_count": totals["image"],
        "image_correct": correct["image"],
        "categories": {
            g: {"accuracy": accuracy[g], "count": totals[g]} for g in sorted(totals) if g not in ("all", "image")
        },
        "failed_parses": len(failed),
        "failed_ids": failed,
        "out_of_range": len(out_of_range),
        "out_of_range_ids": out_of_range,
        "parsed": parsed,
    }


def _categories(qid: str, record: dict, problems: dict | None) -> list[str]:
    # Records converted by llava-hf carry the categories; otherwise take them from the official problems.json.
    source = record
    if "subject" not in record and problems and qid in problems:
        source = problem_metadata(qid, problems[qid])
    groups = []
    for key in ("subject", "context_modality", "grade_band"):
        if source.get(key):
            groups.append(source[key])
    return groups


def load_predictions(path: str | Path) -> dict[str, str]:
    """Question id -> output text, from an answers JSONL (`question_id`, `text`) or an official result JSON."""
    path = Path(path)
    if path.suffix == ".jsonl":
        outputs = {qid: row.get("text") for qid, row in rows_by_id(path).items()}
    else:
        data = read_json(path)
        if not (isinstance(data, dict) and isinstance(data.get("outputs"), dict)):
            raise ValueError(f"{path}: expected an answers .jsonl or a result JSON with 'outputs'.")
        outputs = {str(k): v for k, v in data["outputs"].items()}
    for qid, text in outputs.items():
        if not isinstance(text, str):
            raise ValueError(
                f"{path}: the answer to question_id {qid!r} has no 'text' string (found {text!r}); every answer needs "
                "the model's output as text."
            )
    return outputs
