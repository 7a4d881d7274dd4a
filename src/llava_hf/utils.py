"""Small helpers shared across llava_hf: device and dtype arguments (and loading a model with them), JSONL files,
checkpoint configs, Hub repo ids.

Nothing here imports the rest of the package, so any module can use it.
"""

import json
import logging
import os
from collections.abc import Iterable, Iterator
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


def load_pretrained(model_class: Any, path: str | Path, device: str | None = None, dtype: Any = "auto", **kwargs: Any):
    """`model_class.from_pretrained(path, dtype=parse_dtype(dtype), **kwargs)` moved to `resolve_device(device)`:
    how `llava-hf` loads the models it runs (an `Auto*` class or a model class)."""
    model = model_class.from_pretrained(path, dtype=parse_dtype(dtype), **kwargs)
    return model.to(resolve_device(device))


# -- checkpoint configs ----------------------------------------------------------------------------------------------
def read_config(folder: str | Path, error: type[Exception] = FileNotFoundError) -> dict[str, Any]:
    """`folder/config.json` as a dict. A folder without one raises `error` (the caller's own error class, e.g. a
    `ValueError` subclass) saying so; a file that is not a JSON object raises a `ValueError` naming it."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise error(f"{folder}: no config.json; is this a model folder?")
    return read_json(path, dict, "a config.json")


def read_json(path: str | Path, expected: type | None = None, what: str = "a JSON") -> Any:
    """The JSON value of the file `path`. A file that is not JSON (or not UTF-8) raises a `ValueError` naming it and
    where it breaks; with `expected` (`dict` or `list`), a value of another type raises naming what the file holds
    (`what` says what the file should be, e.g. "a results"). A missing file raises `FileNotFoundError` as `open`
    does."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}).") from error
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8."
        ) from error
    if expected is not None and not isinstance(value, expected):
        kinds = {dict: "object", list: "array"}
        raise ValueError(
            f"{path}: the top level is a JSON {_json_kind(value)}; {what} file holds a JSON "
            f"{kinds.get(expected, expected.__name__)}."
        )
    return value


def _json_kind(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words (object, array, string, number, true/false, null)."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def atomic_write(path: str | Path, write: Any) -> Path:
    """Call `write(temporary_path)` beside `path`, then rename the file into place: a kill leaves the old file or the
    new one, never a half-written file over a good one (and concurrent writers of the same bytes cannot tear it).
    The file gets the umask's permissions."""
    import uuid

    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` of a UTF-8 text file."""
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


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
            if skip_torn_tail and not line.endswith(b"\n") and not _is_json(line):
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


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return True


def read_jsonl(path: str | Path) -> list[Any]:
    """Every row of a JSONL file (blank lines skipped; a bad line raises naming the file and the line)."""
    return [row for _, row in iter_jsonl(path)]


def rows_by_id(path: str | Path, key: str = "question_id") -> dict[str, Any]:
    """Id (as a string) -> row of a JSONL file of answers or references. A row without `key`, or an id on two lines,
    raises a `ValueError` naming the file and the lines: which of two answers to one question counts is not
    something to guess."""
    return index_rows(iter_jsonl(path), str(path), key)


def index_rows(
    numbered: Iterable[tuple[int, Any]], source: str, key: str = "question_id", unit: str = "line"
) -> dict[str, Any]:
    """Id (as a string) -> row of `(number, row)` pairs read from `source` (a file name, or what a list of rows is
    called), in their order. A row without `key`, or an id on two rows, raises a `ValueError` naming `source` and the
    numbers (`unit`: "line" in a file, "row" in a list). `rows_by_id` reads a file through it; rows that come from
    elsewhere (a list passed from Python) go through it directly, so duplicates are refused the same way."""
    rows: dict[str, Any] = {}
    numbers: dict[str, int] = {}
    for number, row in numbered:
        if not isinstance(row, dict) or row.get(key) is None:  # a null id is no id
            raise ValueError(f"{source} {unit} {number}: a row without {key!r}; every row needs one.")
        ident = str(row[key])
        if ident in numbers:
            raise ValueError(
                f"{source} {unit}s {numbers[ident]} and {number}: {key} {ident!r} appears twice; keep one {unit} "
                f"per {key}: delete one of the two {unit}s."
            )
        rows[ident], numbers[ident] = row, number
    return rows


def repair_torn_tail(path: str | Path) -> bool:
    """Cut an incomplete last line (no trailing newline: a kill mid-write) so that the next append starts on a fresh
    line; returns whether one was cut. A last line that is complete JSON without its newline (written by hand or by
    another tool) is kept and ended with a newline. A missing or empty file is left as it is."""
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
                return _end_or_cut(handle, start + newline + 1, size)
            position = start
        return _end_or_cut(handle, 0, size)


def _end_or_cut(handle: Any, line_start: int, size: int) -> bool:
    """The last line runs from `line_start` to `size` without a newline: end it if it is complete JSON, else cut it."""
    handle.seek(line_start)
    if _is_json(handle.read(size - line_start)):
        handle.seek(size)
        handle.write(b"\n")
        return False
    handle.truncate(line_start)
    return True


# -- Hub repo ids ----------------------------------------------------------------------------------------------------
def validate_hub_id(name: Any, allow_bare_name: bool = False) -> None:
    """Raise `huggingface_hub`'s `HFValidationError` (a `ValueError`) with the reason unless `name` is a
    `namespace/name` repo id by `huggingface_hub.utils.validate_repo_id`'s rules; with `allow_bare_name`, a bare
    `name` too (what a push accepts: the Hub puts it under the login's namespace)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    slashes = name.count("/") if isinstance(name, str) else -1
    if not (slashes == 1 or (slashes == 0 and allow_bare_name)):
        form = "'namespace/name' or 'name'" if allow_bare_name else "'namespace/name'"
        raise HFValidationError(f"Repo id must be in the form {form}: {name!r}.")
    validate_repo_id(name)


def check_model_path(name: str, option: str = "--model") -> None:
    """Refuse, before anything is loaded, a model argument that names neither a local folder nor a Hub repo id: a
    missing path raises `FileNotFoundError` and a file `ValueError`, each naming `option` (instead of the Hub
    client's "Repo id must be in the form ..." for a path that does not exist)."""
    path = Path(name)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{option} {name} is a file; give the checkpoint folder (config.json and the weights).")
        return
    try:
        validate_hub_id(name, allow_bare_name=True)
    except ValueError:
        raise FileNotFoundError(f"{option} {name}: no such folder, and not a Hub repo id (namespace/name).") from None


def is_hub_id(name: str | None) -> bool:
    """Whether `name` is a `namespace/name` repo id (see `validate_hub_id`) that is not an existing local path."""
    if not name or Path(name).exists():
        return False
    try:
        validate_hub_id(name)
    except ValueError:
        return False
    return True
