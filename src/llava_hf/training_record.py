"""The training record, `llava_hf_training.json`: what a stage ran (recipe, arguments, precision, hardware, log
history, the grounding meter, the collator's counts), written next to the checkpoint by `training.save_stage_output`
and read back for the model card and the training curves.

It imports only `utils` from the package, so the writer (training), the plot (grounding) and the card (hub) all use
it without importing one another.
"""

import json
from pathlib import Path
from typing import Any

TRAINING_RECORD = "llava_hf_training.json"


def write_training_record(output_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write `record` as the checkpoint's training record (values JSON cannot hold are written as their text)."""
    from .utils import atomic_write_text

    return atomic_write_text(Path(output_dir) / TRAINING_RECORD, json.dumps(record, indent=1, default=str))


def load_training_history(model_dir: str | Path, max_depth: int = 8) -> list[dict[str, Any]]:
    """The training records of a checkpoint and of the checkpoints it started from, oldest stage first.

    A stage-2 record names its starting point in `model_args.model_name_or_path`; when that is a local folder with
    its own record, that record is read too (up to `max_depth` links). A record that is not JSON raises a
    `ValueError` naming the file.
    """
    history, folder, seen = [], Path(model_dir), set()
    while folder is not None and len(history) < max_depth:
        path = folder / TRAINING_RECORD
        if not path.is_file() or path.resolve() in seen:
            break
        seen.add(path.resolve())
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}).") from error
        history.append(record)
        parent = (record.get("model_args") or {}).get("model_name_or_path")
        folder = Path(parent) if parent and Path(parent).is_dir() else None
    return history[::-1]
