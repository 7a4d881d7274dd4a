"""`llava-hf` command line: one module per command group, each with `add_parser(subparsers)` and its `run_*`
functions.

- `convert`: `llava-hf convert`;
- `data`: `llava-hf data check|convert|shapes|scienceqa`;
- `eval`: `llava-hf eval scienceqa|llava-bench|summarize|shapes`;
- `generate`: `llava-hf generate-instructions`;
- `hub`: `llava-hf push`, `push-dataset`, `space create|push`;
- `demo`: `llava-hf demo` and `llava-hf chat`;
- `train`, when a module `llava_hf.train` exists and exposes `make_parser(subparsers)`.

Options that fill a dataclass field are built from it (`_args.add_dataclass_arguments`), so their defaults are the
library's. The command modules import the library's heavy parts (datasets, gradio, HTTP clients) only when a command
runs.
"""

import argparse
import importlib
import logging
import os
import sys

from . import convert, data, demo, generate, hub
from . import eval as evaluate
from ._args import HelpFormatter

COMMAND_MODULES = (convert, data, evaluate, generate, hub, demo)
TRAIN_MODULE = "llava_hf.train"


def add_train_parser(subparsers: argparse._SubParsersAction) -> bool:
    """Register `llava-hf train` through `llava_hf.train.make_parser(subparsers)` when that module exists (it adds
    its subparser and sets `func`, as the other commands do, and should import heavy packages only when it runs).
    Returns whether it was registered."""
    try:
        module = importlib.import_module(TRAIN_MODULE)
    except ModuleNotFoundError as error:
        if error.name == TRAIN_MODULE:  # no train module: no train command
            return False
        raise
    make_parser = getattr(module, "make_parser", None)
    if make_parser is None:
        return False
    make_parser(subparsers)
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-hf", description="llava-hf: a Hugging Face-native LLaVA", formatter_class=HelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_parser(subparsers)
    add_train_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = "DEBUG" if args.verbose else os.environ.get("LLAVA_HF_VERBOSITY", "INFO").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"llava-hf {args.command}: error: {error}", file=sys.stderr)
        return 1


__all__ = ["build_parser", "main"]
