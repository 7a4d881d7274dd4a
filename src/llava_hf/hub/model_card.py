"""The model card (`README.md` of a model repo), rendered from `templates/model_card.md.jinja`.

Everything the card says comes from files: the checkpoint's `config.json` and safetensors headers (architecture and
parameter counts), `llava_hf_training.json` written by `recipes/sft.py` (the recipe table; a stage-2 record points to
its stage-1 folder, whose record is read too), and `llava-hf eval` results files (the evaluation table and the
`model-index` metadata).
"""

import json
import logging
import math
from pathlib import Path
from typing import Any

from ..training_record import TRAINING_RECORD, load_training_history  # noqa: F401 - TRAINING_RECORD: hub.cards re-exports it
from ..utils import is_hub_id, read_json, validate_hub_id
from .rendering import CardError, render_template, table_cell, validate_card

logger = logging.getLogger(__name__)

# What `vision_model: offline-default` stands for, as Hub ids (see `llava_hf.backbones`).
OFFLINE_DEFAULT_BASES = ["timm/tf_efficientnet_lite0.in1k", "HuggingFaceTB/SmolLM2-135M-Instruct"]
MODEL_TAGS = ["llava", "llava_hf", "image-text-to-text", "vision-language", "custom_code"]


# -- the checkpoint -------------------------------------------------------------------------------------------------
def read_config(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise CardError(f"{model_dir} has no config.json: not a saved checkpoint.")
    config = read_json(path, dict, "a config.json")
    if config.get("model_type") != "llava_hf":
        raise CardError(
            f"{path}: model_type is {config.get('model_type')!r}, not 'llava_hf'; convert it first (llava-hf convert)."
        )
    return config


def safetensors_shapes(model_dir: Path) -> dict[str, list[int]]:
    """Tensor shapes of a (possibly sharded) checkpoint, from the safetensors headers: no weight is read."""
    from safetensors import SafetensorError, safe_open

    index = model_dir / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else []
    files = [model_dir / f for f in files] or sorted(model_dir.glob("*.safetensors"))
    shapes = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as handle:
                # A slice reads the header only; `safe_open` has `keys()` but cannot be iterated itself.
                shapes.update({name: handle.get_slice(name).get_shape() for name in handle.keys()})  # noqa: SIM118
        except (SafetensorError, OSError) as error:
            raise CardError(
                f"{file} is not a readable safetensors file ({error}): truncated or corrupted; save the checkpoint "
                "again (model.save_pretrained)."
            ) from error
    return shapes


def _count(shapes: dict[str, list[int]], part: str) -> int:
    return sum(math.prod(shape) for name, shape in shapes.items() if part in name)


def _millions(count: int) -> str:
    return f"{count / 1e9:.2f} B" if count >= 1e9 else f"{count / 1e6:.1f} M" if count >= 1e5 else f"{count:,}"


def _chat_template_name(model_dir: Path) -> str:
    from ..chat_templates import TEMPLATE_NAMES, get_chat_template

    path = model_dir / "chat_template.jinja"
    if not path.is_file():
        return "none saved (pass the prompt format yourself)"
    text = path.read_text()
    for name in TEMPLATE_NAMES:
        if get_chat_template(name).strip() == text.strip():
            return f"`{name}` (llava-hf)"
    return "custom (`chat_template.jinja`)"


def describe_architecture(model_dir: str | Path) -> dict[str, Any]:
    """The architecture table's cells, from config.json and the safetensors headers."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    vision, text = config.get("vision_config") or {}, config.get("text_config") or {}
    if vision.get("model_type") == "timm_wrapper":
        vision_text = f"timm `{vision.get('architecture', '?')}` (`TimmWrapperModel`), final feature grid as tokens"
    else:
        vision_text = (
            f"`{vision.get('model_type', '?')}`: {vision.get('num_hidden_layers', '?')} layers, hidden "
            f"{vision.get('hidden_size', '?')}, {vision.get('image_size', '?')} px, patch {vision.get('patch_size', '?')}"
        )
    if vision.get("_name_or_path"):
        vision_text += f", from `{vision['_name_or_path']}`"
    language_text = (
        f"`{text.get('model_type', '?')}`: {text.get('num_hidden_layers', '?')} layers, hidden "
        f"{text.get('hidden_size', '?')}, vocabulary {text.get('vocab_size', '?')}"
    )
    if text.get("_name_or_path"):
        language_text += f", from `{text['_name_or_path']}`"
    shapes = safetensors_shapes(model_dir)
    first = shapes.get("model.multi_modal_projector.linear_1.weight")
    dims = f"{first[1]} -> {first[0]}" if first else f"-> {text.get('hidden_size', '?')}"
    projector_type = config.get("projector_type", "?")
    layers = "Linear -> GELU -> Linear" if projector_type == "mlp2x_gelu" else "one Linear"
    if config.get("projector_input_norm") == "standardize":
        layers = "features standardised per channel, then " + layers
    aspect = config.get("image_aspect_ratio", "?")
    preprocessing = {
        "pad": "`pad`: padded to a square with the mean colour, then resized (LLaVA-1.5)",
        "square": "`square`: the image processor's own resize and crop (LLaVA v1)",
    }.get(aspect, f"`{aspect}`")
    parameters = ""
    if shapes:
        parts = {
            "vision tower": _count(shapes, "vision_tower"),
            "projector": _count(shapes, "multi_modal_projector"),
            "LM": _count(shapes, "language_model") + _count(shapes, "lm_head"),
        }
        parameters = f"{_millions(sum(parts.values()))} total: " + ", ".join(
            f"{name} {_millions(count)}" for name, count in parts.items()
        )
    return {
        "vision": table_cell(vision_text),
        "projector": table_cell(f"`{projector_type}` ({layers}), {dims}"),
        "language": table_cell(language_text),
        "image_tokens": table_cell(
            f"{config.get('image_seq_length', '?')} per image, `<image>` (id {config.get('image_token_id', '?')})"
        ),
        "preprocessing": table_cell(preprocessing),
        "chat_template": table_cell(_chat_template_name(model_dir)),
        "parameters": table_cell(parameters),
        "feature_layer": config.get("vision_feature_layer", "?"),
        "select_strategy": config.get("vision_feature_select_strategy", "?"),
        "image_size": vision.get("image_size"),
        "image_seq_length": config.get("image_seq_length"),
    }


# -- the recipe table -----------------------------------------------------------------------------------------------
def _display_path(value: str | None) -> str:
    """Hub ids as they are; local paths as their last two parts (absolute paths say nothing on the Hub)."""
    if not value:
        return "-"
    if is_hub_id(value):
        return f"`{value}`"
    parts = Path(value).parts
    return f"`{'/'.join(parts[-2:])}` (local)"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _final_loss(log_history: list[dict[str, Any]]) -> str:
    for entry in reversed(log_history or []):
        if "train_loss" in entry:
            return f"{entry['train_loss']:.4g} (mean)"
    for entry in reversed(log_history or []):
        if "loss" in entry:
            return f"{entry['loss']:.4g} (last logged)"
    return "not recorded"


def _image_gain(record: dict[str, Any]) -> str:
    """The grounding meter's last `image_gain` (blank image) and `image_gain_shuffled`, and its first ones."""
    measured = [e for e in record.get("log_history") or [] if isinstance(e.get("image_gain"), (int, float))]
    if not measured:
        return "not measured"

    def pair(entry: dict[str, Any]) -> str:
        text = f"{entry['image_gain']:+.3f} blank"
        if isinstance(entry.get("image_gain_shuffled"), (int, float)):
            text += f", {entry['image_gain_shuffled']:+.3f} shuffled"
        return text

    first, last = measured[0], measured[-1]
    return f"{pair(last)} at step {last.get('step', '?')} (step {first.get('step', '?')}: {pair(first)})"


def _logged(record: dict[str, Any], key: str) -> Any:
    """The last value of `key` in the run's log history (the Trainer logs `train_runtime` once, at the end)."""
    for entry in reversed(record.get("log_history") or []):
        if key in entry:
            return entry[key]
    return None


def _hardware(record: dict[str, Any]) -> tuple[str, int | None]:
    hardware = record.get("hardware")
    if not hardware:
        return "not recorded", None
    processes = hardware.get("num_processes")
    name = hardware.get("device_name") or hardware.get("device", "?")
    return f"{processes} x {name}" if processes else str(name), processes


def _stage_column(record: dict[str, Any]) -> dict[str, str]:
    model_args = record.get("model_args") or {}
    data_args = record.get("data_args") or {}
    args = record.get("training_args") or {}
    stage = str(record.get("stage", model_args.get("stage", "?")))
    if stage == "1":
        if model_args.get("vision_model") == "offline-default":
            start = "offline default: EfficientNet-Lite0 + SmolLM2-135M-Instruct"
        else:
            start = (
                f"{_display_path(model_args.get('vision_model'))} + {_display_path(model_args.get('language_model'))}"
            )
        trains = "projector"
        chat_format = "`plain` (image + caption)"
    else:
        start = _display_path(model_args.get("model_name_or_path"))
        # `use_peft` (records written before it was the name: `use_lora`).
        if model_args.get("use_peft", model_args.get("use_lora")):
            trains = (
                f"LoRA r {model_args.get('lora_r')}, alpha {model_args.get('lora_alpha')} on the LM's linear layers"
                f" + projector (full){', merged' if model_args.get('merge_lora', True) else ''}"
            )
        else:
            trains = "projector + LM (full)"
        # Stage 2 trains with the chat template of the checkpoint it starts from (`recipe_rows` names it when the
        # history has that checkpoint's record); its own `chat_template` argument is not used.
        chat_format = "the starting checkpoint's chat template"
    files = [Path(f).name for f in data_args.get("train_files") or []]
    data = ", ".join(f"`{f}`" for f in files) or "-"
    if data_args.get("max_train_samples"):
        data += f" (first {data_args['max_train_samples']} samples)"
    hardware, processes = _hardware(record)
    per_device, accumulation = args.get("per_device_train_batch_size"), args.get("gradient_accumulation_steps", 1)
    if per_device is not None and processes:
        batch = f"{per_device * accumulation * processes} ({per_device} x {accumulation} accumulation x {processes})"
    else:
        batch = f"{per_device} per device x {accumulation} accumulation"
    max_steps, done = args.get("max_steps", -1), record.get("global_step", "?")
    if max_steps and max_steps > 0:
        length = f"{done} of {max_steps} optimizer steps"
    else:
        length = f"{args.get('num_train_epochs', '?')} epoch(s), {done} optimizer steps"
    learning_rate = f"{args.get('learning_rate')}"
    if model_args.get("projector_lr") is not None:
        learning_rate += f" (projector {model_args['projector_lr']})"
    warmup = args.get("warmup_steps") or 0  # a fraction of the run below 1, else a step count
    warmup_text = f"{float(warmup) * 100:g}% warmup" if 0 < float(warmup) < 1 else f"{warmup} warmup steps"
    precision = "bf16" if args.get("bf16") else "fp16" if args.get("fp16") else "fp32"
    # `activation_checkpointing` is transformers 5's name; `gradient_checkpointing` is a deprecated alias of it.
    if args.get("activation_checkpointing"):
        precision += ", activation checkpointing"
    return {
        "starting point": start,
        "trains": trains + " (vision tower frozen)",
        "data": data,
        "prompt format": chat_format,
        "projector": f"`{model_args.get('projector_type', '?')}`",
        "length": length,
        "learning rate": learning_rate,
        "schedule": f"{args.get('lr_scheduler_type', '?')}, {warmup_text}",
        "global batch": batch,
        "weight decay": str(args.get("weight_decay", "?")),
        "max length": str(args.get("max_length", "?")),
        "precision": precision,
        "attention": _attention(record),
        "seed": str(args.get("seed", "?")),
        "hardware": hardware,
        "training time": _duration(record.get("train_runtime_s") or _logged(record, "train_runtime")),
        "final training loss": _final_loss(record.get("log_history")),
        "image gain (nats / token)": _image_gain(record),
    }


def _attention(record: dict[str, Any]) -> str:
    """The requested `attn_implementation`, and what the language model and the vision tower ran when recorded."""
    requested = f"`{(record.get('model_args') or {}).get('attn_implementation', '?')}`"
    ran = record.get("attn_implementation")
    if not isinstance(ran, dict) or not ran:
        return requested
    parts = ", ".join(f"{key.replace('_', ' ')} `{value}`" for key, value in ran.items())
    return f"{requested}: {parts}"


def recipe_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the recipe table: one label, one value per stage."""
    columns, checkpoint_template = [], None
    for record in history:
        column = _stage_column(record)
        model_args = record.get("model_args") or {}
        if str(record.get("stage", model_args.get("stage"))) == "1":
            checkpoint_template = model_args.get("chat_template")  # what the stage-1 checkpoint keeps
        elif checkpoint_template:
            column["prompt format"] = f"`{checkpoint_template}`"
        columns.append(column)
    if not columns:
        return []
    return [{"label": label, "values": [table_cell(c[label]) for c in columns]} for label in columns[0]]


def base_models_from_history(history: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """`(hub_ids, local_paths)` of the vision encoder and LM recorded by the first stage."""
    if not history:
        return [], []
    model_args = history[0].get("model_args") or {}
    if model_args.get("vision_model") == "offline-default":
        return list(OFFLINE_DEFAULT_BASES), []
    names = [n for n in (model_args.get("language_model"), model_args.get("vision_model")) if n]
    return [n for n in names if is_hub_id(n)], [n for n in names if not is_hub_id(n)]


# -- evaluation -----------------------------------------------------------------------------------------------------
def load_results(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Read `llava-hf eval` results files; a file that is not one fails naming the missing key."""
    from ..eval.results import TASKS

    results = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise CardError(f"evaluation results file {path} not found.")
        result = read_json(path, dict, "an `llava-hf eval` results")
        for key in ("task", "metrics"):
            if key not in result:
                raise CardError(f"{path} is not an `llava-hf eval` results file: it has no {key!r}.")
        if result["task"] not in TASKS:
            raise CardError(f"{path}: unknown task {result['task']!r}; known: {sorted(TASKS)}.")
        results.append(result)
    return results


def _settings_text(result: dict[str, Any]) -> str:
    settings, metrics = result.get("settings") or {}, result.get("metrics") or {}
    parts = []
    if "count" in metrics:
        parts.append(f"{metrics['count']} questions")
    if settings:
        if settings.get("do_sample"):
            parts.append(f"sampling, temperature {settings.get('temperature')}, seed {settings.get('seed')}")
        else:
            parts.append("greedy")
        if settings.get("max_new_tokens"):
            parts.append(f"max {settings['max_new_tokens']} new tokens")
        if settings.get("judge"):
            parts.append(f"judge {settings['judge']}")
    return ", ".join(parts) or "-"


def evaluation_rows(model_index: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for entry, result in zip(model_index[0]["results"] if model_index else [], results):
        for metric in entry["metrics"]:
            rows.append(
                {
                    "dataset": table_cell(entry["dataset"]["name"]),
                    "metric": table_cell(metric["name"]),
                    "value": table_cell(metric["value"]),
                    "settings": table_cell(_settings_text(result)),
                }
            )
    return rows


# -- the model card -------------------------------------------------------------------------------------------------
def _limitations(arch: dict[str, Any], history: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[str]:
    resolution = f"{arch['image_size']} px" if arch.get("image_size") else "the image processor's size"
    items = [
        "Like every LLaVA-style model it can describe objects, text or relations that are not in the image "
        "(hallucination), and it answers with confidence either way: check answers where a mistake matters.",
        f"Images are seen at {resolution} as {arch.get('image_seq_length', '?')} tokens: small text and fine detail "
        "are lost.",
        "Prompts must go through the checkpoint's chat template (`processor.apply_chat_template`), as in the usage "
        "above; other prompt formats degrade the answers.",
        "It inherits the knowledge, biases and licences of its vision encoder and language model, and of its "
        "training data; the combined weights are bound by the licences of both base models.",
    ]
    if history:
        files = sorted({Path(f).name for r in history for f in (r.get("data_args") or {}).get("train_files") or []})
        if files:
            items.append(
                f"It was trained only on {', '.join(f'`{f}`' for f in files)}: outside that distribution its answers "
                "are untested."
            )
    for result in results:
        metrics = result.get("metrics") or {}
        if result.get("task") == "shapes" and "gap" in metrics and metrics["gap"] < 10:
            items.append(
                f"On the held-out shapes questions it scores {metrics['accuracy']:.1f}% with the image and "
                f"{metrics['blind_accuracy']:.1f}% with a blank image: a gap of {metrics['gap']:+.1f} points means "
                "it barely uses the image."
            )
    return items


def _training_curves(model_dir: Path, history: list[dict[str, Any]]) -> dict[str, str] | None:
    """`{"file", "guide"}` for the checkpoint's `training_curves.png` (loss and image gain per stage), drawn now from
    `history` when the recipe did not write it; None when there is nothing to draw."""
    from ..grounding import CURVES_FILE, CURVES_GUIDE, plot_training_curves

    path = model_dir / CURVES_FILE
    if not path.is_file():
        try:
            if not history or plot_training_curves(history, path) is None:
                return None
        except OSError as error:  # a read-only checkpoint folder: the card goes without the plot
            logger.warning("cannot write %s (%s); the card has no training curves.", path, error)
            return None
    return {"file": CURVES_FILE, "guide": CURVES_GUIDE}


def model_card_context(
    model_dir: str | Path,
    repo_id: str,
    *,
    base_models: list[str] | None = None,
    datasets: list[str] | None = None,
    license: str = "other",
    tags: list[str] | None = None,
    eval_results: list[str | Path] | None = None,
    language: list[str] | None = None,
) -> dict[str, Any]:
    """Everything `model_card.md.jinja` renders: `metadata` (the front matter) and the body's tables."""
    from ..eval.results import to_model_index

    model_dir = Path(model_dir)
    arch = describe_architecture(model_dir)
    history = load_training_history(model_dir)
    if base_models is None:
        base_models, local = base_models_from_history(history)
        for path in local:
            logger.warning(
                "base_model: %s is a local path, not a Hub id; it is left out of the card's metadata "
                "(name the Hub model with --base-model).",
                path,
            )
    for key, names in (("base_model", base_models), ("dataset", datasets or [])):
        for name in names:
            try:
                validate_hub_id(name)
            except ValueError as error:
                kind = "Hub dataset id" if key == "dataset" else "Hub id"
                raise CardError(f"{key} {name!r} is not a {kind} (namespace/name): {error}") from error
    results = load_results(list(eval_results or []))
    name = repo_id.split("/")[-1]
    model_index = to_model_index(name, results) if results else []
    metadata: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "image-text-to-text",
        "license": license,
    }
    if language:
        metadata["language"] = list(language)
    if base_models:
        metadata["base_model"] = list(base_models)
    if datasets:
        metadata["datasets"] = list(datasets)
    metadata["tags"] = list(dict.fromkeys(MODEL_TAGS + (["trl", "sft"] if history else []) + list(tags or [])))
    if model_index:
        metadata["model-index"] = model_index
    stages = [str(r.get("stage", "?")) for r in history]
    summary = (
        f"A LLaVA vision-language model trained with llava-hf's `recipes/sft.py` (stage {' + '.join(stages)})"
        if history
        else "A LLaVA vision-language model in the llava-hf format"
    )
    if base_models:
        summary += " from " + " and ".join(f"[{b}](https://huggingface.co/{b})" for b in base_models)
    return {
        "metadata": metadata,
        "title": name,
        "repo_id": repo_id,
        "summary": summary + ".",
        "arch": arch,
        "stages": [{"stage": s, "label": f"stage {s}"} for s in stages],
        "recipe_rows": recipe_rows(history),
        "curves": _training_curves(model_dir, history),
        "evaluations": evaluation_rows(model_index, results),
        "limitations": _limitations(arch, history, results),
    }


def render_model_card(model_dir: str | Path, repo_id: str, template: str | Path | None = None, **kwargs: Any) -> str:
    """The model card (README.md) for `model_dir` pushed as `repo_id`; validated with `ModelCard`."""
    content = render_template("model_card.md.jinja", model_card_context(model_dir, repo_id, **kwargs), template)
    validate_card(content, "model")
    return content
