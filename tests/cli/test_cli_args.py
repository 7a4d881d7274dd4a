"""`llava_hf.cli._args`: options built from dataclass fields, and the parser's defaults coming from the library."""

import argparse
import sys
import types
from dataclasses import dataclass, field

import pytest

from llava_hf.cli import build_parser
from llava_hf.cli._args import HelpFormatter, add_dataclass_arguments, dataclass_from_args


@dataclass
class Settings:
    steps: int = field(default=3, metadata={"help": "how many steps"})
    rate: float | None = field(default=None, metadata={"help": "a rate"})
    name: str = "plain"
    fast: bool = field(default=False, metadata={"help": "go fast"})
    progress: bool = field(default=True, metadata={"help": "the progress bar"})
    kinds: tuple[str, ...] = field(default=("a", "b"), metadata={"help": "comma-separated kinds"})
    mode: str = field(default="x", metadata={"help": "the mode", "choices": ("x", "y")})


def parser_for(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_dataclass_arguments(parser, Settings, **kwargs)
    return parser


def test_defaults_come_from_the_dataclass():
    args = parser_for().parse_args([])
    assert dataclass_from_args(Settings, args) == Settings()
    assert (args.steps, args.rate, args.name, args.fast, args.progress, args.kinds) == (
        3,
        None,
        "plain",
        False,
        True,
        ("a", "b"),
    )


def test_an_overridden_flag_lands_in_the_dataclass():
    argv = ["--steps", "7", "--rate", "0.5", "--fast", "--no-progress", "--kinds", "c,d", "--mode", "y"]
    settings = dataclass_from_args(Settings, parser_for().parse_args(argv))
    assert settings == Settings(steps=7, rate=0.5, fast=True, progress=False, kinds=("c", "d"), mode="y")


def test_choices_rename_prefix_and_default_overrides():
    with pytest.raises(SystemExit):
        parser_for().parse_args(["--mode", "z"])
    parser = parser_for(fields=["steps", "name"], prefix="run_", rename={"name": "--title"}, defaults={"steps": 9})
    args = parser.parse_args(["--title", "t"])
    assert (args.run_steps, args.run_name) == (9, "t")
    assert dataclass_from_args(Settings, args, prefix="run_") == Settings(steps=9, name="t")
    preset = Settings(steps=5, fast=True)
    assert dataclass_from_args(Settings, parser_for(defaults=preset).parse_args([])) == preset


def test_help_shows_the_field_help_and_default():
    text = parser_for().format_help()
    assert "how many steps (default: 3)" in text
    assert "turn off the progress bar" in text
    assert "comma-separated kinds (default: a,b)" in text


def test_only_the_named_fields_are_read():
    # `demo` has --max-new-tokens (GenerationSettings) and Limits has a max_new_tokens too: it must keep its own.
    from llava_hf.cli.demo import LIMIT_FIELDS
    from llava_hf.demo import DEMO_GENERATION, GenerationSettings, Limits

    args = build_parser().parse_args(["chat", "model", "--max-new-tokens", "9", "--max-images", "2"])
    assert dataclass_from_args(Limits, args, LIMIT_FIELDS) == Limits(max_images=2)
    generation = dataclass_from_args(GenerationSettings, args, base=DEMO_GENERATION)
    assert generation.max_new_tokens == 9 and generation.top_p == DEMO_GENERATION.top_p


def test_command_defaults_are_the_library_defaults():
    from llava_hf.datagen import EngineSettings
    from llava_hf.demo import DEMO_GENERATION, Limits
    from llava_hf.eval.scienceqa import ANSWER_MAX_NEW_TOKENS
    from llava_hf.generation import GenerationSettings

    parser = build_parser()
    args = parser.parse_args(["generate-instructions", "--annotations", "a", "--model", "m", "--out", "o"])
    assert dataclass_from_args(EngineSettings, args) == EngineSettings()
    args = parser.parse_args(["chat", "model"])
    assert dataclass_from_args(GenerationSettings, args, base=DEMO_GENERATION) == DEMO_GENERATION
    assert dataclass_from_args(Limits, args, ["max_image_megabytes", "max_text_chars"]) == Limits()
    args = parser.parse_args(["eval", "scienceqa", "--output-dir", "o", "--questions", "q"])
    assert dataclass_from_args(GenerationSettings, args) == GenerationSettings(max_new_tokens=ANSWER_MAX_NEW_TOKENS)


def test_train_is_registered_only_when_llava_hf_train_has_make_parser(monkeypatch):
    def choices() -> set[str]:
        action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        return set(action.choices)

    monkeypatch.setitem(sys.modules, "llava_hf.train", None)  # as if there were no such module
    assert "train" not in choices()
    monkeypatch.setitem(sys.modules, "llava_hf.train", types.SimpleNamespace())  # no make_parser
    assert "train" not in choices()

    def make_parser(subparsers):
        subparsers.add_parser("train").set_defaults(func=lambda args: 0)

    monkeypatch.setitem(sys.modules, "llava_hf.train", types.SimpleNamespace(make_parser=make_parser))
    assert "train" in choices()
    assert build_parser().parse_args(["train"]).func(None) == 0
