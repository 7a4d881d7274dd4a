"""The Hub: model and dataset cards (Jinja templates in `templates/`), pushing checkpoints, datasets and Spaces.

Tokens come only from `huggingface_hub` itself (`HF_TOKEN` or `hf auth login`); the endpoint from `HF_ENDPOINT`.
"""

from .cards import (
    CardError,
    load_training_history,
    render_dataset_card,
    render_model_card,
    render_space_readme,
    validate_card,
)
from .push import HubPushError, PushResult, create_space, push_dataset, push_model, push_space

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
