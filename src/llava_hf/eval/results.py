"""Results JSON (model, data hashes, settings, metrics) and its conversion to a model card's `model-index`."""

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

from ..utils import atomic_write_text
from ..version import __version__

# How each task appears in a model card.
TASKS = {
    "scienceqa": {
        "dataset": {"name": "ScienceQA (test)", "type": "derek-thomas/ScienceQA", "split": "test"},
        "metric": "accuracy",
    },
    "llava-bench": {
        "dataset": {"name": "LLaVA-Bench", "type": "liuhaotian/llava-bench-in-the-wild"},
        "metric": "relative_score",
    },
    "shapes": {
        "dataset": {"name": "llava-hf shapes world (held-out MCQ)", "type": "llava-hf/shapes"},
        "metric": "accuracy",
    },
}


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_results(task: str, model: str, data: dict[str, str | Path], settings: dict, metrics: dict) -> dict[str, Any]:
    """The results record: `data` maps a role (questions, references, ...) to a file, hashed here."""
    return {
        "task": task,
        "model": str(model),
        "data": {role: {"path": str(path), "sha256": sha256(path)} for role, path in data.items()},
        "settings": settings,
        "metrics": metrics,
        "llava_hf_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_results(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=1, ensure_ascii=False))  # a rerun never leaves half a file
    return path


def to_model_index(model_name: str, results: list[dict]) -> list[dict]:
    """`model-index` entries (the Hub's eval-results metadata) from results records."""
    entries = []
    for result in results:
        task = TASKS[result["task"]]
        metrics = result["metrics"]
        values = []
        if result["task"] == "scienceqa":
            values.append({"type": "accuracy", "name": "Accuracy", "value": round(metrics["accuracy"], 2)})
            values.append(
                {"type": "accuracy", "name": "Accuracy (image subset)", "value": round(metrics["image_accuracy"], 2)}
            )
        elif result["task"] == "llava-bench":
            for category in ("all", "conv", "detail", "complex"):
                if category in metrics:
                    name = "Relative score" + ("" if category == "all" else f" ({category})")
                    values.append(
                        {
                            "type": "relative_score",
                            "name": name,
                            "value": round(metrics[category]["relative_score"], 1),
                        }
                    )
        elif result["task"] == "shapes":
            values.append({"type": "accuracy", "name": "Accuracy", "value": round(metrics["accuracy"], 2)})
            values.append(
                {"type": "accuracy", "name": "Accuracy, blank image", "value": round(metrics["blind_accuracy"], 2)}
            )
        entries.append(
            {
                "task": {"type": "image-text-to-text", "name": "Visual question answering"},
                "dataset": task["dataset"],
                "metrics": values,
            }
        )
    return [{"name": model_name, "results": entries}]
