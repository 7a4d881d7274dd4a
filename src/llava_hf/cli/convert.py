"""`llava-hf convert`: a checkpoint between layouts (`llava_hf.convert`)."""

import argparse

from ._args import add_command, default_of


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..convert import TARGETS, convert
    from ..processing_llava import IMAGE_PROCESSOR_BACKENDS

    parser = add_command(
        subparsers,
        "convert",
        help="convert a checkpoint between layouts (source layout detected)",
        description=(
            "Convert transformers' built-in Llava or an original LLaVA checkpoint to llava_hf, or llava_hf to "
            "transformers' Llava.\n\nexamples:\n"
            "  llava-hf convert llava-1.5-7b-hf/ out/llava15-llava_hf\n"
            "  llava-hf convert llava-v1.5-7b/ out/ --vision-tower clip-vit-large-patch14-336/ --allow-bin\n"
            "  llava-hf convert out/my-llava/ out/my-llava-hf --to hf-llava"
        ),
    )
    parser.add_argument("src", help="checkpoint folder to read")
    parser.add_argument("dst", help="folder to write")
    parser.add_argument("--to", choices=TARGETS, default=default_of(convert, "to"), help="target layout")
    parser.add_argument(
        "--vision-tower",
        default=None,
        help="local CLIP folder for original checkpoints whose mm_vision_tower is a Hub id",
    )
    parser.add_argument(
        "--allow-bin", action="store_true", help="read .bin weights with torch.load(weights_only=True)"
    )
    parser.add_argument(
        "--chat-template",
        default=None,
        help=(
            "conversation format for original LLaVA checkpoints: vicuna_v1, llava_v1, plain, or a .jinja file "
            "(default: vicuna_v1 for an mlp2x_gelu projector (LLaVA-1.5), llava_v1 for a linear one (LLaVA v1))"
        ),
    )
    parser.add_argument(
        "--image-processor-backend",
        choices=IMAGE_PROCESSOR_BACKENDS,
        default=None,
        help=(
            "transformers' image processor backend for the llava_hf processor (default: pil for original LLaVA "
            "checkpoints, the original's pixels exactly; for transformers' Llava, the class transformers loads). "
            "torchvision is faster but its bicubic resize differs from the original's"
        ),
    )
    parser.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from ..convert import convert

    layout = convert(
        args.src,
        args.dst,
        to=args.to,
        vision_tower=args.vision_tower,
        allow_bin=args.allow_bin,
        chat_template=args.chat_template,  # a name or a .jinja file: convert reads it
        image_processor_backend=args.image_processor_backend,
    )
    print(f"converted {args.src} ({layout}) -> {args.dst} ({args.to})")
    return 0
