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
    parser.add_argument(
        "--chat-template",
        default="vicuna_v1",
        help="conversation format for original LLaVA checkpoints: vicuna_v1 (default), plain, or a .jinja file",
    )
    parser.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .convert import convert

    template = args.chat_template
    if template.endswith(".jinja"):
        template = Path(template).read_text()
    layout = convert(
        args.src,
        args.dst,
        to=args.to,
        vision_tower=args.vision_tower,
        allow_bin=args.allow_bin,
        chat_template=template,
    )
    print(f"converted {args.src} ({layout}) -> {args.dst} ({args.to})")
    return 0


def _data_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="check, convert and generate training data")
    verbs = data.add_subparsers(dest="verb", required=True)

    check = verbs.add_parser(
        "check",
        help="report every problem in LLaVA data files, counted by kind",
        description=(
            "Report missing/corrupt/huge/non-RGB images, wrong <image> counts, empty turns, turns out of order and "
            "over-long samples. Exits 1 when the problems exceed the policy.\n\nexample:\n"
            "  llava-hf data check llava_v1_5_mix665k.json --image-root data/ --processor out/stage1 --max-length 2048"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("files", nargs="+", help="LLaVA .json / .jsonl files")
    check.add_argument("--image-root", default=None, help="folder image paths are relative to (default: the file's)")
    check.add_argument("--processor", default=None, help="a llava_hf checkpoint/processor folder, to count tokens")
    check.add_argument("--max-length", type=int, default=None, help="flag samples longer than this many tokens")
    check.add_argument("--no-images", action="store_true", help="skip opening the images")
    check.add_argument("--max-problems", type=int, default=0, help="problems allowed before exiting 1 (default 0)")
    check.add_argument("--max-fraction", type=float, default=None, help="or: fraction of records allowed to fail")
    check.add_argument("--report", default=None, help="also write the report as JSON here")
    check.set_defaults(func=_run_data_check)

    convert = verbs.add_parser(
        "convert",
        help="LLaVA JSON/JSONL -> a datasets folder (TRL conversational format)",
        description="example:\n  llava-hf data convert blip_laion_cc_sbu_558k.json out/lcs558k --image-root images/ --stage plain",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("files", nargs="+")
    convert.add_argument("output", help="folder for Dataset.save_to_disk")
    convert.add_argument("--image-root", default=None)
    convert.add_argument("--stage", choices=["chat", "plain"], default="chat")
    convert.add_argument("--skip-bad", action="store_true", help="skip and count bad records instead of stopping")
    convert.set_defaults(func=_run_data_convert)

    shapes = verbs.add_parser(
        "shapes",
        help="generate the synthetic shapes world (images, COCO annotations, stage-1/2 data, MCQ train/test)",
        description="example:\n  llava-hf data shapes outputs/shapes --num-images 2000 --seed 0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    shapes.add_argument("output")
    shapes.add_argument("--num-images", type=int, default=1000)
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--image-size", type=int, default=224)
    shapes.add_argument("--max-objects", type=int, default=4)
    shapes.add_argument("--test-fraction", type=float, default=0.2)
    shapes.set_defaults(func=_run_data_shapes)

    sqa = verbs.add_parser(
        "scienceqa",
        help="ScienceQA problems.json + pid_splits.json -> LLaVA JSON",
        description="example:\n  llava-hf data scienceqa ScienceQA/data/scienceqa out/sqa_train_QCM-LEA.json --split train --format QCM-LEA",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sqa.add_argument("base_dir", help="folder with problems.json and pid_splits.json")
    sqa.add_argument("output", help="LLaVA .json to write")
    sqa.add_argument("--split", default="test")
    sqa.add_argument("--format", default="CQM-A", choices=["CQM-A", "QCM-LEA", "QCM-A"])
    sqa.set_defaults(func=_run_data_scienceqa)


def _run_data_check(args: argparse.Namespace) -> int:
    from .data.check import check_llava_files, write_report

    processor = None
    if args.processor:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(args.processor)
    report = check_llava_files(
        args.files, args.image_root, processor, args.max_length, check_images=not args.no_images
    )
    print(report.render())
    if args.report:
        write_report(report, args.report)
    ok = report.passes(args.max_problems, args.max_fraction)
    print("PASS" if ok else "FAIL: problems exceed the policy (--max-problems / --max-fraction)")
    return 0 if ok else 1


def _run_data_convert(args: argparse.Namespace) -> int:
    from .data import load_llava_dataset

    dataset, report = load_llava_dataset(
        args.files, args.image_root, stage=args.stage, on_error="skip" if args.skip_bad else "raise"
    )
    dataset.save_to_disk(args.output)
    print(f"{report.summary()}; saved to {args.output}")
    return 0


def _run_data_shapes(args: argparse.Namespace) -> int:
    from .data.shapes import build_shapes_world

    counts = build_shapes_world(
        args.output, args.num_images, args.seed, args.image_size, args.max_objects, args.test_fraction
    )
    print(", ".join(f"{name}: {count}" for name, count in counts.items()))
    return 0


def _run_data_scienceqa(args: argparse.Namespace) -> int:
    from .data.scienceqa import convert_scienceqa

    records = convert_scienceqa(args.base_dir, args.split, args.format, args.output)
    print(f"{len(records)} {args.split} problems in {args.format} -> {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-hf", description="llava-hf: a Hugging Face-native LLaVA")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _convert_parser(subparsers)
    _data_parser(subparsers)
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
