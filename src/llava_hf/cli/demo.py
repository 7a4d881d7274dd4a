"""`llava-hf demo` (the Gradio app) and `llava-hf chat` (the terminal chat): `llava_hf.demo`."""

import argparse
import sys

from ._args import add_command, add_dataclass_arguments, add_device_arguments, dataclass_from_args

# The demo's settings the command line sets: generation from `DEMO_GENERATION`, limits from `Limits`.
GENERATION_FIELDS = ("max_new_tokens", "do_sample", "temperature", "top_p")
LIMIT_FIELDS = ("max_image_megabytes", "max_image_megapixels", "max_text_chars", "max_images")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    _demo_parser(subparsers)
    _chat_parser(subparsers)


def _settings_args(parser: argparse.ArgumentParser) -> None:
    from ..demo.chat import DEMO_GENERATION, Limits
    from ..generation import GenerationSettings

    add_dataclass_arguments(parser, GenerationSettings, GENERATION_FIELDS, defaults=DEMO_GENERATION)
    add_device_arguments(parser)
    add_dataclass_arguments(parser, Limits, LIMIT_FIELDS)


def settings_from_args(args: argparse.Namespace):
    """`(limits, generation settings)` from the options, checked against each other."""
    from ..demo.chat import DEMO_GENERATION, Limits
    from ..generation import GenerationSettings

    limits = dataclass_from_args(Limits, args, LIMIT_FIELDS)
    settings = dataclass_from_args(GenerationSettings, args, GENERATION_FIELDS, base=DEMO_GENERATION)
    settings.check(limits)
    return limits, settings


def _demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "demo",
        help="a Gradio multimodal chat with a checkpoint (the Space's app, locally)",
        description="examples:\n  llava-hf demo outputs/stage2\n  llava-hf demo me/llava-smollm2 --port 7861 --share",
    )
    parser.add_argument("model", help="checkpoint folder or Hub id")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve the network")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    parser.add_argument("--share", action="store_true", help="a public gradio.live link")
    parser.add_argument("--title", default=None)
    parser.add_argument("--no-examples", action="store_true", help="no example images")
    _settings_args(parser)
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from ..demo.app import DemoConfig, build_demo_from_pretrained
    from ..demo.examples import write_example_images

    limits, settings = settings_from_args(args)
    examples = [] if args.no_examples else write_example_images(Path(tempfile.gettempdir()) / "llava-hf-examples")
    config = DemoConfig(
        model=args.model,
        title=args.title or f"{Path(args.model).name} (llava-hf)",
        limits=limits,
        generation=settings,
        examples=examples,
        device=args.device,
        dtype=args.dtype,
    )
    demo = build_demo_from_pretrained(config)
    print(f"serving {args.model} on http://{args.host}:{args.port}", flush=True)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


def _chat_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "chat",
        help="chat with a checkpoint in the terminal (questions from standard input)",
        description=(
            "Answers stream as they are generated. Commands: /image PATH, /reset, /quit.\n\nexamples:\n"
            "  llava-hf chat outputs/stage2 --image photo.jpg\n"
            "  echo 'What is in the image?' | llava-hf chat outputs/stage2 --image photo.jpg"
        ),
    )
    parser.add_argument("model", help="checkpoint folder or Hub id")
    parser.add_argument("--image", action="append", default=[], help="image for the first question (repeatable)")
    _settings_args(parser)
    parser.set_defaults(func=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..demo import ChatModel
    from ..demo.terminal import run_terminal_chat
    from ..utils import check_model_path

    limits, settings = settings_from_args(args)
    for image in args.image:  # before loading the model: a wrong path fails at once
        if Path(image).is_dir():
            raise ValueError(f"--image {image} is a folder; give an image file.")
        if not Path(image).is_file():
            raise FileNotFoundError(f"image {image} not found.")
    check_model_path(args.model, "model")
    chat = ChatModel.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    # Bytes that are not UTF-8 reach the chat as lone surrogates, which it refuses line by line, instead of a
    # UnicodeDecodeError that would end the conversation.
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")
    run_terminal_chat(chat, args.image, settings, sys.stdin, sys.stdout, limits)
    return 0
