"""Small helpers shared across llava_hf: device and dtype arguments, JSONL files, Hub repo ids.

Nothing here imports the rest of the package, so any module can use it.
"""

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


# -- device and dtype ------------------------------------------------------------------------------------------------
def resolve_device(device: str | None = None) -> str:
    """`device` as given, or `"cuda"` when CUDA is available and `"cpu"` otherwise."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_dtype(dtype: Any = "auto") -> Any:
    """A `--dtype` value as `from_pretrained(dtype=...)` takes it: `"auto"` as is, a name such as `"bfloat16"` as
    that `torch.dtype`, a `torch.dtype` as is."""
    if dtype == "auto":
        return dtype
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    if not isinstance(value, torch.dtype):
        raise ValueError(f"dtype must be 'auto' or a torch dtype name (float32, bfloat16, float16), got {dtype!r}.")
    return value


# -- JSONL -----------------------------------------------------------------------------------------------------------
def iter_jsonl(path: str | Path, *, skip_torn_tail: bool = False) -> Iterator[tuple[int, Any]]:
    """`(line_number, row)` for each non-blank line of a JSONL file.

    A line that is not valid JSON raises a `ValueError` naming the file and the line. With `skip_torn_tail` (files
    appended one whole line at a time), an incomplete last line (no newline: the writer was killed mid-line) is
    skipped with a warning; any other bad line was then edited or corrupted, and the error says so.
    """
    path = Path(path)
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if skip_torn_tail and not line.endswith(b"\n"):
                logger.warning("%s line %d: incomplete last line (a killed run); ignored.", path, number)
                return
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                reason = error.msg if isinstance(error, json.JSONDecodeError) else f"not UTF-8: {error.reason}"
                hint = (
                    "; the file is written whole lines at a time, so this line was edited or corrupted: fix or "
                    "delete it and run again."
                    if skip_torn_tail
                    else "."
                )
                raise ValueError(f"{path} line {number}: not valid JSON ({reason}){hint}") from error
            yield number, row


def read_jsonl(path: str | Path) -> list[Any]:
    """Every row of a JSONL file (blank lines skipped; a bad line raises naming the file and the line)."""
    return [row for _, row in iter_jsonl(path)]


def repair_torn_tail(path: str | Path) -> bool:
    """Cut an incomplete last line (no trailing newline: a kill mid-write) so that the next append starts on a fresh
    line; returns whether one was cut. A missing or empty file is left as it is."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb+") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return False
        # Walk back to the previous newline in blocks: the file can be hundreds of MB.
        position, block = size, 1 << 16
        while position > 0:
            start = max(0, position - block)
            handle.seek(start)
            chunk = handle.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline != -1:
                handle.truncate(start + newline + 1)
                return True
            position = start
        handle.truncate(0)
        return True


# -- Hub repo ids ----------------------------------------------------------------------------------------------------
def validate_hub_id(name: Any) -> None:
    """Raise `huggingface_hub`'s `HFValidationError` (a `ValueError`) with the reason unless `name` is a
    `namespace/name` repo id by `huggingface_hub.utils.validate_repo_id`'s rules."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(name, str) or name.count("/") != 1:
        raise HFValidationError(f"Repo id must be in the form 'namespace/name': {name!r}.")
    validate_repo_id(name)


def is_hub_id(name: str | None) -> bool:
    """Whether `name` is a `namespace/name` repo id (see `validate_hub_id`) that is not an existing local path."""
    if not name or Path(name).exists():
        return False
    try:
        validate_hub_id(name)
    except ValueError:
        return False
    return True
