"""The dataset card `llava-hf push-dataset` writes (`README.md` of a dataset repo), rendered from
`templates/dataset_card.md.jinja`: the repo's `configs` and `dataset_info`, one row per config and split, and how the
data was made."""

import json
from collections import Counter
from pathlib import Path
from typing import Any

from .rendering import render_template, table_cell, validate_card

DATASET_TAGS = ["llava", "llava_hf", "visual-instruction-tuning"]


def size_category(rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return label
    return "1M<n<10M" if rows < 10_000_000 else "n>10M"


def prompt_types(metadata_column: list[str]) -> str:
    """Counts of the records' `type` (LLaVA-Instruct: conv/detail/complex) or `kind` field, from `metadata`."""
    counts: Counter[str] = Counter()
    for text in metadata_column:
        try:
            fields = json.loads(text) if text else {}
        except json.JSONDecodeError:
            continue
        value = fields.get("type", fields.get("kind"))
        if isinstance(value, str):
            counts[value] += 1
    return ", ".join(f"`{name}` ({count})" for name, count in counts.most_common()) or "not recorded"


def dataset_card_context(
    repo_id: str,
    config_name: str,
    splits: dict[str, dict[str, Any]],
    *,
    license: str = "other",
    generation: dict[str, str] | None = None,
    tags: list[str] | None = None,
    language: list[str] | None = None,
    pretty_name: str | None = None,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`splits` maps a split name to `{"rows", "bytes", "files"}` (paths in the repo). `previous` is the metadata
    already on the Hub: its other configs are kept, so one repo can hold several configs pushed one at a time."""
    previous = previous or {}
    config = {
        "config_name": config_name,
        "data_files": [{"split": split, "path": f"data/{config_name}/{split}-*.parquet"} for split in splits],
    }
    info = {
        "config_name": config_name,
        "splits": [{"name": s, "num_bytes": v["bytes"], "num_examples": v["rows"]} for s, v in splits.items()],
    }
    configs = [c for c in previous.get("configs") or [] if c.get("config_name") != config_name] + [config]
    infos = previous.get("dataset_info") or []
    infos = [i for i in ([infos] if isinstance(infos, dict) else infos) if i.get("config_name") != config_name]
    infos.append(info)
    configs.sort(key=lambda c: (c["config_name"] != "default", c["config_name"]))
    infos.sort(key=lambda i: (i.get("config_name") != "default", i.get("config_name", "")))
    total = sum(s.get("num_examples", 0) for i in infos for s in i.get("splits", []))
    metadata: dict[str, Any] = {"license": license}
    if language:
        metadata["language"] = list(language)
    metadata |= {
        "pretty_name": pretty_name or repo_id.split("/")[-1],
        "task_categories": ["image-text-to-text", "visual-question-answering"],
        "size_categories": [size_category(total)],
        "tags": list(dict.fromkeys(DATASET_TAGS + list(tags or []))),
        "configs": configs,
        "dataset_info": infos,
    }
    split_rows = []
    for entry in infos:
        files = {
            d["split"]: d["path"] for c in configs if c["config_name"] == entry["config_name"] for d in c["data_files"]
        }
        for split in entry.get("splits", []):
            split_rows.append(
                {
                    "config": entry["config_name"],
                    "split": split["name"],
                    "rows": f"{split['num_examples']:,}",
                    "files": files.get(split["name"], "?"),
                }
            )
    generation = {k: table_cell(v) for k, v in (generation or {}).items()}
    for key in ("source", "engine", "llm", "prompt_types", "conversion"):
        generation.setdefault(key, "not recorded")
    if license == "other":
        license_text = (
            "No licence was given when this dataset was pushed (`--license`): check the licences of the source "
            "images and the terms of the model that generated the text before using it."
        )
    else:
        license_text = (
            f"`{license}`. The images and the generating model's terms may add conditions: check the sources above."
        )
    return {
        "metadata": metadata,
        "title": metadata["pretty_name"],
        "repo_id": repo_id,
        "config_name": config_name,
        "summary": f"Visual instruction data in the LLaVA format, {total:,} rows, pushed with `llava-hf push-dataset`.",
        "split_rows": split_rows,
        "generation": generation,
        "license_text": license_text,
    }


def render_dataset_card(
    repo_id: str,
    config_name: str,
    splits: dict[str, dict[str, Any]],
    *,
    template: str | Path | None = None,
    **kwargs: Any,
) -> str:
    """The dataset card (README.md) of `repo_id` with `config_name` pushed; `kwargs` go to `dataset_card_context`.
    Validated with `DatasetCard`."""
    context = dataset_card_context(repo_id, config_name, splits, **kwargs)
    content = render_template("dataset_card.md.jinja", context, template)
    validate_card(content, "dataset")
    return content
