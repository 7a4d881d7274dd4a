"""Data: LLaVA formats <-> datasets, images, the assistant-only collator, ScienceQA, the synthetic shapes world."""

from .llava_format import (
    ConversionReport,
    RecordError,
    llava_record_to_row,
    load_llava_dataset,
    row_to_llava_record,
    to_plain,
    write_llava_json,
)

__all__ = [
    "ConversionReport",
    "RecordError",
    "llava_record_to_row",
    "load_llava_dataset",
    "row_to_llava_record",
    "to_plain",
    "write_llava_json",
]
