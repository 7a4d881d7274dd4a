"""Compatibility module: the card code lives in `model_card`, `dataset_card`, `space_card` and `rendering`.

`llava_hf.hub.cards` was the one module for all three cards; its public names stay importable from here.
"""

from .dataset_card import DATASET_TAGS, dataset_card_context, prompt_types, render_dataset_card, size_category
from .model_card import (
    MODEL_TAGS,
    OFFLINE_DEFAULT_BASES,
    TRAINING_RECORD,
    base_models_from_history,
    describe_architecture,
    evaluation_rows,
    load_results,
    load_training_history,
    model_card_context,
    read_config,
    recipe_rows,
    render_model_card,
)
from .rendering import TEMPLATES, CardError, render_template, validate_card
from .space_card import render_space_app, render_space_readme

__all__ = [
    "DATASET_TAGS",
    "MODEL_TAGS",
    "OFFLINE_DEFAULT_BASES",
    "TEMPLATES",
    "TRAINING_RECORD",
    "CardError",
    "base_models_from_history",
    "dataset_card_context",
    "describe_architecture",
    "evaluation_rows",
    "load_results",
    "load_training_history",
    "model_card_context",
    "prompt_types",
    "read_config",
    "recipe_rows",
    "render_dataset_card",
    "render_model_card",
    "render_space_app",
    "render_space_readme",
    "render_template",
    "size_category",
    "validate_card",
]
