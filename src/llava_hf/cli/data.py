"""`llava-hf data check|convert|shapes|scienceqa`: check, convert and generate training data (`llava_hf.data`)."""

import argparse

from ._args import add_command, at_least, bounded, default_of


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..data.check import CheckReport
    from ..data.llava_format import STAGES, load_llava_dataset
    from ..data.scienceqa import FORMATS, convert_scienceqa
    from ..data.shapes import build_shapes_world

    data = add_command(subparsers, "data", help="check, convert and generate training data")
    verbs = data.add_subparsers(dest="verb", required=True)

    check = add_command(
        verbs,
        "check",
        help="report every problem in LLaVA data files, counted by kind",
        description=(
            "Report missing/corrupt/huge/non-RGB images, wrong <image> counts, empty turns, turns out of order and "
            "over-long samples. Exits 1 when the problems exceed the policy.\n\nexample:\n"
            "  llava-hf data check llava_v1_5_mix665k.json --image-root data/ --processor out/stage1 --max-length 2048"
        ),
    )
    check.add_argument("files", nargs="+", help="LLaVA .json / .jsonl files")
    check.add_argument("--image-root", default=None, help="folder image paths are relative to (default: the file's)")
    check.add_argument("--processor", default=None, help="a llava_hf checkpoint/processor folder, to count tokens")
    check.add_argument(
        "--max-length", type=at_least(int, 1), default=None, help="flag samples longer than this many tokens"
    )
    check.add_argument("--no-images", action="store_true", help="skip opening the images")
    check.add_argument(
        "--max-problems",
        type=at_least(int, 0),
        default=default_of(CheckReport.passes, "max_problems"),
        help="problems allowed before exiting 1",
    )
    check.add_argument(
        "--max-fraction",
        type=bounded(float, minimum=0, maximum=1),
        default=None,
        help="or: fraction of records allowed to fail",
    )
    check.add_argument("--report", default=None, help="also write the report as JSON here")
    check.set_defaults(func=run_check)

    convert = add_command(
        verbs,
        "convert",
        help="LLaVA JSON/JSONL -> a datasets folder (TRL conversational format)",
        description="example:\n  llava-hf data convert blip_laion_cc_sbu_558k.json out/lcs558k --image-root images/ --stage plain",
    )
    convert.add_argument("files", nargs="+")
    convert.add_argument("output", help="folder for Dataset.save_to_disk")
    convert.add_argument("--image-root", default=None)
    convert.add_argument(
        "--stage",
        choices=STAGES,
        default=default_of(load_llava_dataset, "stage"),
        help="chat: conversations (stage 2); plain: image-caption pairs (stage 1)",
    )
    convert.add_argument("--skip-bad", action="store_true", help="skip and count bad records instead of stopping")
    convert.add_argument(
        "--overwrite", action="store_true", help="replace an existing non-empty output folder (swapped in at the end)"
    )
    convert.set_defaults(func=run_convert)

    shapes = add_command(
        verbs,
        "shapes",
        help="generate the synthetic shapes world (images, COCO annotations, stage-1/2 data, MCQ train/test)",
        description="example:\n  llava-hf data shapes outputs/shapes --num-images 2000 --seed 0",
    )
    shapes.add_argument("output", help="folder to write the world to")
    for name, kind, text in (
        ("num_images", int, "images (scenes) to draw"),
        ("seed", int, "seed of the scenes, their questions and the train/test split"),
        ("image_size", int, "image side, in pixels"),
        ("max_objects", int, "shapes per image at most"),
        ("test_fraction", float, "fraction of the images whose questions are held out for testing"),
    ):
        option = f"--{name.replace('_', '-')}"
        shapes.add_argument(option, type=kind, default=default_of(build_shapes_world, name), help=text)
    shapes.set_defaults(func=run_shapes)

    sqa = add_command(
        verbs,
        "scienceqa",
        help="ScienceQA problems.json + pid_splits.json -> LLaVA JSON",
        description="example:\n  llava-hf data scienceqa ScienceQA/data/scienceqa out/sqa_train_QCM-LEA.json --split train --format QCM-LEA",
    )
    sqa.add_argument("base_dir", help="folder with problems.json and pid_splits.json")
    sqa.add_argument("output", help="LLaVA .json to write")
    sqa.add_argument("--split", default="test", help="the pid_splits.json split to convert (train, val, test, ...)")
    sqa.add_argument(
        "--format",
        default=default_of(convert_scienceqa, "prompt_format"),
        choices=FORMATS,
        help="prompt format: CQM-A (LLaVA-1.5's evaluation file: the answer is the letter), QCM-LEA (LLaVA v1's "
        "fine-tuning: lecture, solution, then the letter), QCM-A",
    )
    sqa.set_defaults(func=run_scienceqa)


def run_check(args: argparse.Namespace) -> int:
    from ..data.check import check_llava_files, write_report

    processor = None
    if args.processor:
        from transformers import AutoProcessor

        from ..utils import check_model_path

        check_model_path(args.processor, "--processor")
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


def run_convert(args: argparse.Namespace) -> int:
    import os
    import shutil
    from pathlib import Path

    from ..data import load_llava_dataset

    output = Path(args.output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not args.overwrite:
        raise ValueError(
            f"{output} exists and is not an empty folder; pass --overwrite to replace it, or choose another output."
        )
    # Every image must be a readable file before anything is written: the save embeds them, and a missing one would
    # fail there, after every row, without naming its record.
    dataset, report = load_llava_dataset(
        args.files,
        args.image_root,
        stage=args.stage,
        on_error="skip" if args.skip_bad else "raise",
        check_image_files=True,
    )
    if report.rows_written == 0:  # an empty dataset would only fail later, in training, far from its cause
        raise ValueError(
            f"{', '.join(args.files)}: no rows to save ({report.summary()}); nothing was written to {output}."
        )
    # Written beside the output and swapped in at the end: a kill mid-save leaves the previous dataset whole.
    staging = output.with_name(f".{output.name}.partial-{os.getpid()}")
    dataset.save_to_disk(str(staging))
    if output.exists():
        retired = output.with_name(f".{output.name}.old-{os.getpid()}")
        output.rename(retired)
        staging.rename(output)
        if retired.is_dir():
            shutil.rmtree(retired)
        else:
            retired.unlink()
    else:
        staging.rename(output)
    print(f"{report.summary()}; saved to {args.output}")
    return 0


def run_shapes(args: argparse.Namespace) -> int:
    from ..data.shapes import build_shapes_world

    counts = build_shapes_world(
        args.output, args.num_images, args.seed, args.image_size, args.max_objects, args.test_fraction
    )
    print(", ".join(f"{name}: {count}" for name, count in counts.items()))
    return 0


def run_scienceqa(args: argparse.Namespace) -> int:
    from ..data.scienceqa import convert_scienceqa

    records = convert_scienceqa(args.base_dir, args.split, args.format, args.output)
    print(f"{len(records)} {args.split} problems in {args.format} -> {args.output}")
    return 0
