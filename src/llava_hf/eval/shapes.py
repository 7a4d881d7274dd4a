"""Held-out multiple-choice accuracy on the shapes world, and the same model's blind baseline (blank images)."""

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..data.shapes import MCQ_MAX_NEW_TOKENS, MCQ_PROMPT
from ..generation import GenerationSettings
from .runner import load_questions, read_answers, run_inference
from .scienceqa import parse_prediction, score_scienceqa

logger = logging.getLogger(__name__)


def score_by_kind(predictions: dict[str, str], records: list[dict]) -> dict[str, float]:
    hits: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        letter = parse_prediction(predictions[str(record["id"])])
        hits[record.get("kind", "all")].append(letter == record["answer"])
    return {kind: 100.0 * sum(v) / len(v) for kind, v in sorted(hits.items())}


def evaluate_shapes(
    model: Any,
    processor: Any,
    world: str | Path,
    output_dir: str | Path,
    settings: GenerationSettings | None = None,
    model_id: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Answer `mcq_test.json` with the images and again with blank images; score both with the ScienceQA scorer.

    Each question gets the world's `MCQ_PROMPT`, as its training questions did; the letter is read from the answer's
    "The answer is X." (or a bare letter).

    Returns accuracy, the blind accuracy, the gap (how much the model uses the image), chance (the mean of
    1 / number of options), per-kind accuracies and failed parses of both runs.
    """
    world, output_dir = Path(world), Path(output_dir)
    settings = settings or GenerationSettings(max_new_tokens=MCQ_MAX_NEW_TOKENS)
    records = json.loads((world / "mcq_test.json").read_text())
    _check_world_prompt(world)
    questions = load_questions(world / "mcq_test.json", world / "images")
    metrics: dict[str, Any] = {}
    for label, blank in (("", False), ("blind_", True)):
        answers = output_dir / f"answers{'_blind' if blank else ''}.jsonl"
        run_inference(model, processor, questions, answers, settings, model_id, MCQ_PROMPT, blank, progress)
        predictions = {qid: row["text"] for qid, row in read_answers(answers).items()}
        scored = score_scienceqa(predictions, records)
        metrics[f"{label}accuracy"] = scored["accuracy"]
        metrics[f"{label}failed_parses"] = scored["failed_parses"]
        metrics[f"{label}by_kind"] = score_by_kind(predictions, records)
    metrics["gap"] = metrics["accuracy"] - metrics["blind_accuracy"]
    metrics["count"] = len(records)
    # What guessing scores: the mean of 1 / number of options (the blind baseline should sit here).
    metrics["chance"] = 100.0 * sum(1 / record["num_choices"] for record in records) / len(records)
    return metrics


def _check_world_prompt(world: Path) -> None:
    """Warn when the world's training questions end with another instruction than the `MCQ_PROMPT` the test questions
    get here (a world written by another llava-hf version): the model would be asked in words it was not trained on."""
    train = world / "mcq_train.json"
    if not train.is_file():
        return
    records = json.loads(train.read_text())
    if records and not records[0]["conversations"][0]["value"].endswith(MCQ_PROMPT):
        logger.warning(
            "%s: its training questions do not end with %r, which the test questions get now; a model trained on "
            "this world was asked otherwise. Generate the world again (llava-hf data shapes) and retrain.",
            train,
            MCQ_PROMPT.strip(),
        )
