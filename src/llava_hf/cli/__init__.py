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
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (also: LLAVA_HF_DEBUG=1)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_parser(subparsers)
    add_train_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = "DEBUG" if args.verbose else os.environ.get("LLAVA_HF_VERBOSITY", "INFO").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # The judge's and the data engine's HTTP clients log one INFO line per request, which buries the progress bar and
    # the messages that matter; -v shows them.
    for name in ("httpx", "httpx2", "httpcore", "httpcore2", "openai"):
        logging.getLogger(name).setLevel(logging.NOTSET if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"llava-hf {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one error boundary for every command: a message, not a traceback
        if args.debug or os.environ.get("LLAVA_HF_DEBUG", "") not in ("", "0"):
            raise
        print(f"llava-hf {args.command}: error: {describe_error(error)}", file=sys.stderr)
        return 1


def describe_error(error: BaseException) -> str:
    """One line for an error: the project's own errors already name the file, record and fix; for the rest, the
    file involved (where the exception knows it), the kind of problem, and what to try."""
    if isinstance(error, (ValueError, ImportError)) and not isinstance(error, UnicodeDecodeError):
        return str(error)
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        fixes = {
            FileNotFoundError: "check the path",
            PermissionError: "check the file's permissions",
            IsADirectoryError: "give a file, not a folder",
            NotADirectoryError: "a folder in the path is a file",
            FileExistsError: "remove it or choose another path",
        }
        fix = next((text for kind, text in fixes.items() if isinstance(error, kind)), None)
        if fix is None and error.errno == 28:
            fix = "the disk is full: free space or write elsewhere"
        reason = error.strerror or str(error)
        return f"{where}{reason}" + (f" ({fix})" if fix else "")
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text ({error.reason} at byte {error.start}); save the file as UTF-8"
    if isinstance(error, KeyError):
        return f"missing field {error} (run with --debug for where it was read)"
    name = type(error).__name__
    return f"{name}: {error} (run with --debug for the traceback)"


__all__ = ["build_parser", "describe_error", "main"]
