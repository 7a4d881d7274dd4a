"""The Hub: model, dataset and Space cards (`model_card`, `dataset_card`, `space_card`, rendered from the Jinja
templates in `templates/`), and pushing checkpoints, datasets and Spaces (`push`).

Tokens come only from `huggingface_hub` itself (`HF_TOKEN` or `hf auth login`); the endpoint from `HF_ENDPOINT`.
"""

from .dataset_card import render_dataset_card
from .model_card import load_training_history, render_model_card
from .push import HubPushError, PushResult, create_space, push_dataset, push_model, push_space
from .rendering import CardError, validate_card
from .space_card import render_space_readme

__all__ = [
    "CardError",
    "HubPushError",
    "PushResult",
    "create_space",
    "load_training_history",
    "push_dataset",
    "push_model",
    "push_space",
    "render_dataset_card",
    "render_model_card",
    "render_space_readme",
    "validate_card",
]
