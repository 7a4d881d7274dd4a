"""The engine's JSONL -> LLaVA JSON (`id`, `image`, `conversations`, as LLaVA-Instruct-158K) and a `datasets.Dataset`.

Both go through `llava_hf.data.llava_format`: each record is validated by `llava_record_to_row` (one `<image>`, human
and gpt turns), written by `write_llava_json` and loaded by `load_llava_dataset`, so what the engine writes is what
training reads. Records stream in file order (memory stays flat at 158K+ records); a key seen twice (possible only
if files were concatenated by hand) is kept once.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..data.llava_format import llava_record_to_row, load_llava_dataset, write_llava_json
from ..utils import iter_jsonl
from .store import RECORDS, record_key

LLAVA_JSON = "llava_instruct.json"


def _records_path(source: str | Path) -> Path:
    source = Path(source)
    return source / RECORDS if source.is_dir() else source


def iter_records(source: str | Path) -> Iterator[dict[str, Any]]:
    """Accepted records of an output folder (or its `instructions.jsonl`), each key once."""
    path = _records_path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no records; run `llava-hf generate-instructions` first.")
    seen = set()
    for _, row in iter_jsonl(path, skip_torn_tail=True):  # a killed run's incomplete last line is skipped
        key = record_key(row)
        if key not in seen:
            seen.add(key)
            yield row


def iter_llava_rows(source: str | Path) -> Iterator[dict[str, Any]]:
    """The records as `llava_format` rows (validated), with only LLaVA's fields."""
    path = _records_path(source)
    for row in iter_records(path):
        record = {"id": row["id"], "image": row["image"], "conversations": row["conversations"]}
        yield llava_record_to_row(record, where=f"{path} record {row['id']!r}")


def write_llava_instruct(source: str | Path, path: str | Path | None = None) -> tuple[Path, int]:
    """Write the records as LLaVA JSON (`.json`, or `.jsonl` by suffix); default `<out>/llava_instruct.json`."""
    folder = Path(source) if Path(source).is_dir() else Path(source).parent
    path = Path(path) if path is not None else folder / LLAVA_JSON
    count = write_llava_json(iter_llava_rows(source), path)
    return path, count


def load_instruction_dataset(source: str | Path, image_root: str | Path | None = None, **kwargs: Any):
    """The records as a `datasets.Dataset` in TRL's conversational format (`load_llava_dataset`'s layout); returns
    `(dataset, report)`. Writes the LLaVA JSON first (next to the records) and loads it with `image_root`."""
    path, _ = write_llava_instruct(source)
    return load_llava_dataset(path, image_root=image_root, **kwargs)
