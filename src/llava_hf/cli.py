"""`llava-hf` command line. Commands import what they need lazily, so `--help` is instant."""

import argparse
import logging
import os
import sys


def _convert_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint between layouts (source layout detected)",
        description=(
            "Convert transformers' built-in Llava or an original LLaVA checkpoint to llava_hf, or llava_hf to "
            "transformers' Llava.\n\nexamples:\n"
            "  llava-hf convert llava-1.5-7b-hf/ out/llava15-llava_hf\n"
            "  llava-hf convert llava-v1.5-7b/ out/ --vision-tower clip-vit-large-patch14-336/ --allow-bin\n"
            "  llava-hf convert out/my-llava/ out/my-llava-hf --to hf-llava"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="checkpoint folder to read")
    parser.add_argument("dst", help="folder to write")
    parser.add_argument("--to", choices=["llava_hf", "hf-llava"], default="llava_hf", help="target layout")
    parser.add_argument(
        "--vision-tower",
        default=None,
        help="local CLIP folder for original checkpoints whose mm_vision_tower is a Hub id",
    )
    parser.add_argument(
        "--allow-bin", action="store_true", help="read .bin weights with torch.load(weights_only=True)"
    )
    parser.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from .convert import convert

    layout = convert(args.src, args.dst, to=args.to, vision_tower=args.vision_tower, allow_bin=args.allow_bin)
    print(f"converted {args.src} ({layout}) -> {args.dst} ({args.to})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-hf", description="llava-hf: a Hugging Face-native LLaVA")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _convert_parser(subparsers)
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


if __name__ == "__main__":
    sys.exit(main())
