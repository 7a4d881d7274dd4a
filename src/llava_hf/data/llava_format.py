"""LLaVA's JSON / JSONL formats <-> `datasets.Dataset` in TRL's vision-language conversational format.

A LLaVA record:

    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                       {"from": "gpt", "value": "The bus is white and red."}, ...]}

becomes a row

    {"id": "000000033471", "images": [<Image feature: image_root/coco/train2017/000000033471.jpg>],
     "image_files": ["coco/train2017/000000033471.jpg"],
     "messages": [{"role": "user", "content": [{"type": "image", "text": None},
                                               {"type": "text", "text": "\\nWhat are the colors of the bus?"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "The bus is white and red."}]}],
     "metadata": "{}"}

The text is split at each `<image>` exactly, so the placeholder keeps its position (before or after the text) and
`to_llava_record` gives the source strings back unchanged. Fields other than id / image / conversations travel in
`metadata` (JSON). Files stream through `ijson` into Arrow: no image is decoded and no per-row Python objects are kept
for the whole file.
"""

import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils import iter_jsonl

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<image>"
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
LLAVA_ROLES = {value: key for key, value in ROLES.items()}
# The playground layout of LLaVA-Instruct samples: one instruction / output pair per row.
INSTRUCTION_LAYOUT_KEYS = {"instruction", "output"}
# `load_llava_dataset`'s stages: "chat" (stage 2: conversations as they are), "plain" (stage 1: caption pairs).
STAGES = ("chat", "plain")


class RecordError(ValueError):
    """A record that cannot be used; the message names the file, the row, the record id and the problem."""


@dataclass
class ConversionReport:
    """What a conversion did: rows read, written and skipped, with the reason for each skip."""

    rows_read: int = 0
    rows_written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def skip(self, reason: str, message: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.errors) < 100:
            self.errors.append(message)

    def summary(self) -> str:
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items())) or "none"
        return f"{self.rows_read} rows read, {self.rows_written} written, skipped: {skipped}"


# -- reading -------------------------------------------------------------------------------------------------------
def iter_llava_file(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield `(row_number, record)` from a LLaVA `.json` (a top-level array, streamed) or `.jsonl` file."""
    path = Path(path)
    if path.suffix == ".jsonl":
        try:
            yield from iter_jsonl(path)
        except ValueError as error:  # a line that is not JSON, named by file and line
            raise RecordError(str(error)) from error
        return
    import ijson

    with path.open("rb") as handle:
        head = handle.read(4096)
        first = head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1]
        if not first and len(head) < 4096:
            raise RecordError(
                f"{path}: the file is empty; a LLaVA .json file is an array of records [...] (or write one record "
                "per line as .jsonl)."
            )
        # ijson would find no `item` in an object (or a lone string, number, ...) and yield nothing: "0 rows", not an
        # error.
        kind = {b"{": "object", b'"': "string", b"t": "boolean", b"f": "boolean", b"n": "null"}.get(first)
        if kind is None and first and first in b"-0123456789":
            kind = "number"
        if kind is not None:
            raise RecordError(
                f"{path}: the top level is a JSON {kind}, not an array; a LLaVA "
                ".json file is a list of records: wrap them in [...] or write one record per line as .jsonl."
            )
        handle.seek(0)
        # use_float keeps numbers as float instead of Decimal, as json.load would.
        number = 0
        try:
            for number, record in enumerate(ijson.items(handle, "item", use_float=True), start=1):
                yield number, record
        except ijson.JSONError as error:
            detail = " ".join(str(error).split())  # ijson's message spans lines (it points at the spot)
            raise RecordError(
                f"{path}: not valid JSON after record {number} ({detail}); fix the file, or write one record per "
                "line as .jsonl so that one bad line names its line number."
            ) from error


def record_location(source: str, number: int, record: dict) -> str:
    """Where a record is, for messages: `"<file> line|row <number> (id <id>)"`."""
    unit = "line" if source.endswith(".jsonl") else "row"
    record_id = record.get("id") if isinstance(record, dict) else None
    return f"{source} {unit} {number} (id {record_id!r})"


def image_path(root: str | Path, name: str, where: str) -> str:
    """The one rule for a record's image path, in `data check`, `data convert`, training and evaluation: a relative
    path is read under the image root; an absolute path is read as it is (the original LLaVA's `os.path.join` does the
    same); a relative path is relative to the image root and must stay in it: one whose `..` leads out of the root
    is refused (`RecordError` naming the record), as it almost always means a root set one folder too deep; where the
    images really live elsewhere, an absolute path says so."""
    if os.path.isabs(name):
        return name
    if os.path.normpath(name).split(os.sep, 1)[0] == os.pardir:
        raise RecordError(
            f"{where}: image {name!r} leads out of the image root {str(root)!r} through '..'; give it relative to "
            "the image root (or as an absolute path), or pass an --image-root / image_root that contains it."
        )
    return f"{root}/{name}"


def _check_image_file(path: str, where: str) -> None:
    """Raise `RecordError` naming the record unless `path` is a file this process can read."""
    target = Path(path)
    if target.is_dir():
        raise RecordError(f"{where}: image path {path} is a folder, not an image file; fix the record's image.")
    if not target.is_file():  # missing, a broken link or a symlink loop
        raise RecordError(f"{where}: image file not found: {path}; fix the path or the image root.")
    if not os.access(target, os.R_OK):
        raise RecordError(f"{where}: image file {path} is not readable (permissions).")


def _image_files(record: dict, where: str = "record") -> list[str]:
    image = record.get("image")
    if image is None:
        return []
    if isinstance(image, str):
        return [image]
    if isinstance(image, (list, tuple)) and all(isinstance(name, str) for name in image):
        return list(image)
    found = "a list holding non-strings" if isinstance(image, (list, tuple)) else type(image).__name__
    raise RecordError(f"{where}: 'image' is {found}; expected an image path or a list of image paths (strings).")


def split_at_images(text: str) -> list[dict[str, Any]]:
    """Typed content parts of a turn: text chunks and an image part at each `<image>`, in order."""
    if IMAGE_PLACEHOLDER not in text:  # most turns: one text part
        return [{"type": "text", "text": text}] if text else []
    parts: list[dict[str, Any]] = []
    for index, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if index:
            parts.append({"type": "image", "text": None})
        if chunk:
            parts.append({"type": "text", "text": chunk})
    return parts


def llava_record_to_row(record: dict, where: str = "record") -> dict[str, Any]:
    """Validate one LLaVA record and convert it to the conversational row layout (see the module docstring)."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(record).__name__}.")
    if "conversations" not in record and record.keys() >= INSTRUCTION_LAYOUT_KEYS:
        record = instruction_layout_to_llava(record)
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise RecordError(f"{where}: 'conversations' is missing or empty.")
    image_files = _image_files(record, where)
    messages, placeholders = [], 0
    for index, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RecordError(f"{where}: conversations[{index}] needs 'from' and 'value'.")
        role = ROLES.get(turn["from"]) if isinstance(turn["from"], str) else None
        if role is None:
            raise RecordError(
                f"{where}: conversations[{index}] has from={turn['from']!r}; expected one of {sorted(ROLES)}."
            )
        value = turn["value"]
        if not isinstance(value, str):
            raise RecordError(f"{where}: conversations[{index}].value is {type(value).__name__}, not a string.")
        if role == "assistant" and IMAGE_PLACEHOLDER in value:
            raise RecordError(f"{where}: conversations[{index}] is a gpt turn with an <image> placeholder.")
        placeholders += value.count(IMAGE_PLACEHOLDER)
        messages.append({"role": role, "content": split_at_images(value)})
    # A conversation that opens with a gpt turn (ShareGPT-style data) loses that turn, as the original preprocessing
    # drops it (`source = source[1:]`); it is logged. The rest must alternate human / gpt, as the original asserts.
    first = next((i for i, message in enumerate(messages) if message["role"] != "system"), None)
    if first is not None and messages[first]["role"] == "assistant" and len(messages) > first + 1:
        logger.info("%s: the leading gpt turn is dropped (the conversation must open with a human turn).", where)
        conversations = conversations[:first] + conversations[first + 1 :]  # the caller's record stays whole
        del messages[first]
    roles = [message["role"] for message in messages if message["role"] != "system"]
    if roles != ["user", "assistant"] * (len(roles) // 2) or not roles:
        raise RecordError(
            f"{where}: turns out of human/gpt order (roles {roles}); every human turn must be followed by its gpt answer."
        )
    # Every answer empty: every label would be -100, a sample that trains on nothing (one empty answer among others
    # is masked, as the original does).
    answers = [turn["value"] for message, turn in zip(messages, conversations) if message["role"] == "assistant"]
    if not any(answer.strip() for answer in answers):
        raise RecordError(f"{where}: every answer (from: gpt) is empty: nothing to train on; write the answers.")
    if placeholders != len(image_files):
        raise RecordError(
            f"{where}: the conversations have {placeholders} <image> placeholder(s) but 'image' has "
            f"{len(image_files)}; "
            + (
                "add an <image> placeholder to the first human turn."
                if placeholders < len(image_files)
                else "remove one or add an image."
            )
        )
    extra = {k: v for k, v in record.items() if k not in ("id", "image", "conversations")}
    return {
        "id": str(record.get("id", "")),
        "image_files": image_files,
        "messages": messages,
        "metadata": json.dumps(extra, ensure_ascii=False) if extra else "{}",
    }


def instruction_layout_to_llava(record: dict) -> dict:
    """`{id, image, instruction, output, type}` (LLaVA-Instruct playground rows) -> a one-turn LLaVA record."""
    human = record["instruction"]
    if record.get("image") is not None and IMAGE_PLACEHOLDER not in human:
        human = f"{IMAGE_PLACEHOLDER}\n{human}"
    converted = {k: v for k, v in record.items() if k not in ("instruction", "output")}
    converted["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": record["output"]}]
    return converted


def row_to_llava_record(row: dict[str, Any]) -> dict:
    """Inverse of `llava_record_to_row`: the original LLaVA record, string for string."""
    record: dict[str, Any] = {"id": row["id"]}
    files = list(row.get("image_files") or [])
    if len(files) == 1:
        record["image"] = files[0]
    elif files:
        record["image"] = files
    conversations = []
    for message in row["messages"]:
        value = "".join(
            IMAGE_PLACEHOLDER if part["type"] == "image" else (part.get("text") or "") for part in message["content"]
        )
        conversations.append({"from": LLAVA_ROLES[message["role"]], "value": value})
    record["conversations"] = conversations
    metadata = row.get("metadata")
    if metadata and metadata != "{}":
        record.update(json.loads(metadata))
    return record


# -- datasets ------------------------------------------------------------------------------------------------------
def conversational_features():
    from datasets import Features, Image, List, Value

    part = {"type": Value("string"), "text": Value("string")}
    return Features(
        {
            "id": Value("string"),
            "images": List(Image()),
            "image_files": List(Value("string")),
            "messages": List({"role": Value("string"), "content": List(part)}),
            "metadata": Value("string"),
        }
    )


def _rows(
    paths: list[str],
    image_root: str | None,
    on_error: str,
    stage: str,
    report: ConversionReport,
    check_image_files: bool = False,
) -> Iterator[dict[str, Any]]:
    for path in paths:
        root = str(Path(image_root) if image_root is not None else Path(path).parent)
        for number, record in iter_llava_file(path):
            report.rows_read += 1
            where = record_location(str(path), number, record)
            try:
                row = llava_record_to_row(record, where)
                if stage == "plain":
                    row = to_plain(row, where)
                image_paths = [
                    image_path(root, name, f"{where} image {i}") for i, name in enumerate(row["image_files"])
                ]
                if check_image_files:
                    for index, image in enumerate(image_paths):
                        _check_image_file(image, f"{where} image {index}")
            except RecordError as error:
                if on_error == "raise":
                    raise
                report.skip(type(error).__name__ if not str(error) else problem_kind(str(error)), str(error))
                continue
            row["images"] = [{"path": path, "bytes": None} for path in image_paths]
            report.rows_written += 1
            yield row


def problem_kind(message: str) -> str:
    """The kind of problem a `RecordError` message names (the text after the record's location), to group skipped
    or failing records by in reports."""
    detail = message.split("): ", 1)[-1]
    # Most specific first: several messages also name `conversations[i]` or a placeholder.
    kinds = {
        "from=": "unknown role",
        "'image' is": "bad image field",
        "value is": "non-string value",
        "needs": "malformed turn",
        "gpt turn": "<image> in a gpt turn",
        "out of human/gpt order": "turns out of human/gpt order",
        "is empty": "empty turn",
        "top level": "not a JSON array",
        "placeholder": "image placeholder count",
        "JSON": "invalid JSON",
        "caption": "not a caption pair",
        "leads out of the image root": "image path outside the image root",
        "image file not found": "missing image",
        "not an image file": "missing image",
        "not readable": "unreadable image",
        "conversations": "empty or missing conversations",
    }
    for marker, kind in kinds.items():
        if marker in detail:
            return kind
    return "other"


def load_llava_dataset(
    paths: str | Path | Iterable[str | Path],
    image_root: str | Path | None = None,
    stage: str = "chat",
    on_error: str = "raise",
    cache_dir: str | None = None,
    batch_size: int = 10_000,
    progress: bool = True,
    check_image_files: bool = False,
):
    """Read LLaVA JSON/JSONL file(s) into a `datasets.Dataset` in TRL's vision-language conversational format.

    Args:
        paths: one or more `.json` / `.jsonl` files.
        image_root: folder the records' `image` paths are relative to (default: each file's folder). Images are
            referenced by path and never decoded here.
        stage: `"chat"` (stage 2: conversations as they are) or `"plain"` (stage 1: image + caption, the
            instruction dropped as the original's `plain` format did).
        on_error: `"raise"` (default) stops at the first bad record with a message naming it; `"skip"` skips it,
            counts it by kind and logs the summary.
        cache_dir: where the Arrow file goes (default: datasets' cache, under `llava_hf/`).
        batch_size: rows per Arrow record batch: the memory bound of the conversion.
        check_image_files: whether each image path must name a readable file, checked here (a bad record named,
            or skipped and counted) rather than when something reads the images (`data convert` embeds them).

    Returns:
        `(dataset, report)`: the dataset and a `ConversionReport` of rows read, written and skipped.
    """
    from datasets import Dataset

    if stage not in STAGES:
        raise ValueError(f'stage must be "chat" or "plain", got {stage!r}.')
    if on_error not in ("raise", "skip"):
        raise ValueError(f'on_error must be "raise" or "skip", got {on_error!r}.')
    paths = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
    import pyarrow as pa
    from datasets import config as datasets_config
    from tqdm.auto import tqdm

    report = ConversionReport()
    features = conversational_features()
    schema = features.arrow_schema
    # Rows are converted in Python (~70k rows/s) and written to Arrow in batches: memory stays at one batch, and
    # datasets' per-example encoding (the slow part of Dataset.from_generator) is skipped.
    folder = Path(cache_dir or datasets_config.HF_DATASETS_CACHE) / "llava_hf"
    folder.mkdir(parents=True, exist_ok=True)
    # Named after the inputs, so converting the same files again replaces the earlier copy instead of adding one per
    # run; written beside it and renamed, so a process still reading the earlier copy keeps it whole.
    # The rows hold the image paths as given (root + name), so the root and the files as given are part of the name.
    options = (paths, None if image_root is None else str(image_root), stage, on_error, check_image_files)
    arrow_path = folder / f"llava-{_inputs_key(paths, options)}.arrow"
    partial = arrow_path.with_name(f"{arrow_path.name}.{uuid.uuid4().hex}.partial")
    rows = tqdm(
        _rows(paths, None if image_root is None else str(image_root), on_error, stage, report, check_image_files),
        desc="converting LLaVA rows",
        unit=" rows",
        disable=not progress,
    )
    batch: list[dict[str, Any]] = []
    try:
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for row in rows:
                batch.append(row)
                if len(batch) == batch_size:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch = []
            if batch or report.rows_written == 0:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        os.replace(partial, arrow_path)
    finally:
        partial.unlink(missing_ok=True)  # a bad record stopped the conversion: no half-written copy stays
    dataset = Dataset.from_file(str(arrow_path))
    if report.skipped:
        logger.warning("LLaVA conversion of %s: %s", ", ".join(paths), report.summary())
    else:
        logger.info("LLaVA conversion of %s: %s", ", ".join(paths), report.summary())
    return dataset, report


def _inputs_key(paths: list[str], options: tuple) -> str:
    """A name for the conversion of `paths` with `options`: the files' absolute paths, sizes and modification times
    (an edited file is another conversion) and the options."""
    import hashlib
    import json

    files = []
    for path in paths:
        stat = Path(path).stat()
        files.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.blake2b(json.dumps([files, list(options)]).encode(), digest_size=12).hexdigest()


def to_plain(row: dict[str, Any], where: str = "record") -> dict[str, Any]:
    """Stage-1 (`plain`) form of a caption pair: the image alone in the user turn, the caption as the answer."""
    messages = row["messages"]
    if len(messages) != 2 or messages[0]["role"] != "user" or messages[1]["role"] != "assistant":
        raise RecordError(f"{where}: a stage-1 (plain) caption pair needs exactly one human and one gpt turn.")
    images = [part for part in messages[0]["content"] if part["type"] == "image"]
    if len(images) != 1:
        raise RecordError(f"{where}: a stage-1 (plain) caption pair needs exactly one image, got {len(images)}.")
    return {**row, "messages": [{"role": "user", "content": images}, messages[1]]}


def write_llava_json(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write rows (a Dataset or dicts in the row layout) as a LLaVA `.json` array or `.jsonl` file; returns the count."""
    path = Path(path)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        jsonl = path.suffix == ".jsonl"
        if not jsonl:
            handle.write("[")
        for row in rows:
            text = json.dumps(row_to_llava_record(row), ensure_ascii=False)
            if jsonl:
                handle.write(text + "\n")
            else:
                handle.write(("," if count else "") + "\n" + text)
            count += 1
        if not jsonl:
            handle.write("\n]\n")
    return count
