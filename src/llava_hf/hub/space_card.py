"""The files of a Gradio Space `llava-hf space create` writes that come from templates: the Space's `README.md`
(`templates/space_readme.md.jinja`, its front matter validated with `SpaceCard`) and `app.py`
(`templates/space_app.py.jinja`)."""

from typing import Any

from .rendering import render_template, validate_card


def render_space_readme(
    model: str,
    title: str,
    limits: dict[str, Any],
    *,
    sdk_version: str,
    datasets: list[str] | None = None,
    license: str = "other",
    hardware: str | None = None,
) -> str:
    """The Space's README.md: front matter (`sdk: gradio`, `app_file`, `models`, ...) validated with `SpaceCard`, and
    the demo's `limits` (a `DemoConfig.limits` dict)."""
    metadata: dict[str, Any] = {
        "title": title,
        "emoji": "🌋",
        "colorFrom": "red",
        "colorTo": "yellow",
        "sdk": "gradio",
        "sdk_version": sdk_version,
        "app_file": "app.py",
        "pinned": False,
        "license": license,
        "short_description": f"Chat about images with {model.split('/')[-1]}"[:60],
        "models": [model],
    }
    if datasets:
        metadata["datasets"] = list(datasets)
    if hardware:
        metadata["suggested_hardware"] = hardware
    content = render_template(
        "space_readme.md.jinja", {"metadata": metadata, "title": title, "model": model, "limits": limits}
    )
    validate_card(content, "space")
    return content


def render_space_app(model: str) -> str:
    """The Space's `app.py`: `llava_hf.demo` on `model`, configured by the `demo_config.json` next to it."""
    return render_template("space_app.py.jinja", {"model": model})
