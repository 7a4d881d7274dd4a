"""Loaded by pytest before any test module: puts `tests/` on `sys.path`, so every test module, in any folder and any
import mode, imports the helpers as `fixtures.<name>` (and `conftest` for the functions below)."""

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# No test may reach the Hub: everything is built from configs or read from local folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


def single_thread():
    """Run a module's tests on one thread: a tiny model runs ~30x faster on one thread than on two when the CPU is
    shared (OpenMP spin-waits). Modules opt in with `one_thread = pytest.fixture(scope="module", autouse=True)(...)`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tester():
    from fixtures.tester import LlavaModelTester

    return LlavaModelTester()


def require(module: str, import_it: bool = True):
    """Import (or just find) `module`, else skip; under `make test` (LLAVA_HF_REQUIRE_E2E=1) a missing module
    fails instead, so the end-to-end tests can never be skipped there by accident."""
    import importlib
    import importlib.util

    try:
        if not import_it:
            if importlib.util.find_spec(module) is None:
                raise ImportError(f"no module named {module!r}")
            return None
        return importlib.import_module(module)
    except ImportError as error:
        if os.environ.get("LLAVA_HF_REQUIRE_E2E") == "1":
            pytest.fail(f"{module} is required for the end-to-end tests under make test: {error}", pytrace=False)
        pytest.skip(f"{module} not installed", allow_module_level=True)
