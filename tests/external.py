"""The real files in ../shared/external (original LLaVA / ScienceQA formats). Tests using them skip when absent."""

from pathlib import Path

import pytest

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "external"


def external(*parts: str) -> Path:
    path = EXTERNAL.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (conformance files live in ../shared/external)")
    return path
