"""What the model, dataset and Space cards share: the Jinja templates in `templates/`, and validation with
`huggingface_hub`'s card classes.

The templates live only here, inside the package, so that an installed wheel renders cards too (`model_cards/` at the
repository root points here). The front matter is a dict dumped with `yaml.safe_dump`, then parsed back with
`ModelCard` / `DatasetCard` / `SpaceCard`, so a card that would not validate never leaves llava-hf.
"""

from pathlib import Path
from typing import Any

import yaml

TEMPLATES = Path(__file__).parent / "templates"


class CardError(ValueError):
    """A card that cannot be written or would not validate; the message names the field."""


def _environment(template_dir: Path):
    import jinja2

    def to_yaml(data: dict[str, Any]) -> str:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000).strip()

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,  # a missing context key is a bug, never an empty cell
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["to_yaml"] = to_yaml
    return environment


def render_template(name: str, context: dict[str, Any], template: str | Path | None = None) -> str:
    """Render `templates/<name>` (or a user's template file) with `context`."""
    if template is not None:
        path = Path(template)
        if not path.is_file():
            raise CardError(f"card template {path} not found.")
        import jinja2

        try:
            return _environment(path.parent).get_template(path.name).render(**context)
        except jinja2.TemplateSyntaxError as error:
            raise CardError(f"card template {path} line {error.lineno}: {error.message}") from error
        except jinja2.TemplateError as error:  # an undefined name, a filter that fails
            raise CardError(f"card template {path}: {type(error).__name__}: {error}") from error
    return _environment(TEMPLATES).get_template(name).render(**context)


def validate_card(content: str, repo_type: str = "model"):
    """Parse a card with huggingface_hub's card class for `repo_type` (strict metadata parsing) and check the keys
    the Hub needs; returns the card. Raises `CardError` naming the problem."""
    from huggingface_hub import DatasetCard, ModelCard, SpaceCard

    card_class = {"model": ModelCard, "dataset": DatasetCard, "space": SpaceCard}[repo_type]
    try:
        card = card_class(content, ignore_metadata_errors=False)
    except Exception as error:  # yaml errors, model-index parse errors
        raise CardError(f"the {repo_type} card's metadata does not parse: {error}") from error
    data = card.data.to_dict()
    required = {
        "model": ["pipeline_tag", "library_name", "license", "tags"],
        "dataset": ["license", "configs", "task_categories"],
        "space": ["sdk", "app_file", "models", "title"],
    }[repo_type]
    missing = [key for key in required if not data.get(key)]
    if missing:
        raise CardError(f"the {repo_type} card's metadata lacks {', '.join(missing)}.")
    if repo_type == "model" and data.get("model-index") is not None and not card.data.eval_results:
        raise CardError("the model card's model-index has no results the Hub can read.")
    return card


def table_cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines folded."""
    return str(value).replace("|", "\\|").replace("\n", " ")
