"""`llava-hf data check`: every problem in a LLaVA data file, counted by kind, before any training starts."""

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .collator import clean_message
from .images import DEFAULT_MAX_PIXELS, image_problem
from .llava_format import RecordError, image_path, iter_llava_file, llava_record_to_row, problem_kind, record_location

# Kinds that are notes, not problems: the data loads (after a safe conversion).
NOTES = {"non-RGB image (converted)"}
EXAMPLES_PER_KIND = 5


@dataclass
class CheckReport:
    records: int = 0
    images: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < EXAMPLES_PER_KIND:
            self.examples[kind].append(message)

    @property
    def problems(self) -> int:
        return sum(count for kind, count in self.counts.items() if kind not in NOTES)

    def passes(self, max_problems: int = 0, max_fraction: float | None = None) -> bool:
        """The policy: at most `max_problems` problems, or at most `max_fraction` of the records when given."""
        if max_fraction is not None:
            return self.problems <= max_fraction * max(self.records, 1)
        return self.problems <= max_problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "images": self.images,
            "problems": self.problems,
            "counts": dict(self.counts),
            "examples": dict(self.examples),
        }

    def render(self) -> str:
        lines = [f"{self.records} records, {self.images} images checked, {self.problems} problem(s)"]
        for kind, count in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            tag = "note" if kind in NOTES else "problem"
            lines.append(f"  {count:>8}  {kind} ({tag})")
            lines += [f"            e.g. {example}" for example in self.examples[kind]]
        return "\n".join(lines)


def _turn_problems(row: dict, where: str, report: CheckReport) -> None:
    roles = [m["role"] for m in row["messages"] if m["role"] != "system"]
    expected = ["user", "assistant"] * (len(roles) // 2 + 1)
    if roles != expected[: len(roles)] or len(roles) % 2:
        report.add("turns out of human/gpt order", f"{where}: roles {roles}")
    for index, message in enumerate(row["messages"]):
        text = "".join(part.get("text") or "" for part in message["content"] if part["type"] == "text")
        has_image = any(part["type"] == "image" for part in message["content"])
        if not text.strip() and not (has_image and message["role"] == "user"):
            report.add("empty turn", f"{where}: conversations[{index}] ({message['role']}) is empty")


def _token_length(processor: Any, row: dict) -> int:
    messages = [clean_message(m) for m in row["messages"]]
    text = processor.apply_chat_template(messages, tokenize=False)
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    return len(ids) + len(row["image_files"]) * (processor.image_seq_length - 1)


def check_llava_files(
    paths: list[str | Path],
    image_root: str | Path | None = None,
    processor: Any = None,
    max_length: int | None = None,
    check_images: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> CheckReport:
    """Read every record of `paths` and report each problem by kind (see `CheckReport.render`)."""
    from tqdm.auto import tqdm

    if max_length is not None and processor is None:
        raise ValueError("max_length needs a processor to count tokens; pass --processor PATH.")
    report = CheckReport()
    for path in paths:
        root = Path(image_root) if image_root is not None else Path(path).parent
        records_before = report.records
        for number, record in tqdm(iter_llava_file(path), disable=not progress, desc=f"checking {Path(path).name}"):
            report.records += 1
            where = record_location(str(path), number, record)
            try:
                row = llava_record_to_row(record, where)
            except RecordError as error:
                report.add(problem_kind(str(error)), str(error))
                continue
            _turn_problems(row, where, report)
            for index, name in enumerate(row["image_files"]):
                try:  # the path rule holds whether or not the images are opened
                    image = image_path(root, name, f"{where} image {index}")
                except RecordError as error:
                    report.add(problem_kind(str(error)), str(error))
                    continue
                if check_images:
                    report.images += 1
                    found = image_problem(Path(image), f"{where} image {index}", max_pixels)
                    if found:
                        report.add(*found)
            if max_length is not None:
                length = _token_length(processor, row)
                if length > max_length:
                    report.add("over max_length after tokenization", f"{where}: {length} tokens > {max_length}")
        if report.records == records_before:  # an empty file is no data: a problem, not a pass
            report.add("file without records", f"{path}: no records; is this the right file?")
    return report


def write_report(report: CheckReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.to_dict(), indent=1))
