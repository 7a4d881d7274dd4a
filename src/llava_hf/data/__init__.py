"""Data: LLaVA formats <-> datasets, images, the assistant-only collator, ScienceQA, the synthetic shapes world."""

from .collator import LabelError, LlavaDataCollator
from .images import ImageError, load_image
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
    "ImageError",
    "LabelError",
    "LlavaDataCollator",
    "load_image",
    "ConversionReport",
    "RecordError",
    "llava_record_to_row",
    "load_llava_dataset",
    "row_to_llava_record",
    "to_plain",
    "write_llava_json",
]
