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


def _eval_parser(subparsers: argparse._SubParsersAction) -> None:
    evaluation = subparsers.add_parser("eval", help="evaluate a checkpoint: scienceqa, llava-bench, shapes")
    verbs = evaluation.add_subparsers(dest="verb", required=True)

    def generation_args(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
        parser.add_argument("--model", help="llava_hf checkpoint folder (or Hub id)")
        parser.add_argument("--output-dir", required=True, help="answers, reviews and results.json go here")
        parser.add_argument("--batch-size", type=int, default=8)
        parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
        parser.add_argument("--do-sample", action="store_true", help="sample (seeded) instead of greedy decoding")
        parser.add_argument("--temperature", type=float, default=0.2)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
        parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")

    sqa = verbs.add_parser(
        "scienceqa",
        help="ScienceQA accuracy with the official parse (failed parses counted, never guessed)",
        description=(
            "examples:\n  llava-hf eval scienceqa --model out/llava --questions llava_test_CQM-A.json "
            "--image-root scienceqa/images/test --output-dir out/eval/sqa\n"
            "  llava-hf eval scienceqa --answers answers.jsonl --questions llava_test_CQM-A.json --output-dir out/eval/sqa"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generation_args(sqa, 16)
    sqa.add_argument("--questions", required=True, help="LLaVA-format CQM-A questions (gpt turn = gold letter)")
    sqa.add_argument("--image-root", default=None)
    sqa.add_argument("--problems", default=None, help="official problems.json, for per-category scores")
    sqa.add_argument("--answers", default=None, help="score an existing answers .jsonl (or official result .json)")
    sqa.add_argument("--no-suffix", action="store_true", help="do not append LLaVA-1.5's single-letter instruction")
    sqa.set_defaults(func=_run_eval_scienceqa)

    bench = verbs.add_parser(
        "llava-bench",
        help="LLaVA-Bench relative scores with an LLM judge",
        description=(
            "example:\n  OPENAI_API_KEY=... llava-hf eval llava-bench --model out/llava --questions qa90_questions.jsonl "
            "--context caps_boxes_coco2014_val_80.jsonl --reference qa90_gpt4_answer.jsonl --image-root val2014 "
            "--judge-model gpt-4o --output-dir out/eval/bench"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generation_args(bench, 512)
    bench.add_argument("--questions", required=True)
    bench.add_argument("--context", required=True, help="caps_boxes (COCO) or context.jsonl (in-the-wild)")
    bench.add_argument("--reference", required=True, help="reference answers .jsonl (GPT-4's)")
    bench.add_argument("--answers", default=None, help="candidate answers .jsonl (else generated with --model)")
    bench.add_argument("--image-root", default=None)
    bench.add_argument("--judge-base-url", default=None, help="OpenAI-compatible endpoint (default: OpenAI)")
    bench.add_argument("--judge-model", default=None, help="judge model name on that endpoint")
    bench.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    bench.add_argument("--judge-local", default=None, help="or: a local causal LM folder to judge with")
    bench.set_defaults(func=_run_eval_llava_bench)

    summary = verbs.add_parser("summarize", help="relative scores of existing LLaVA-Bench review files")
    summary.add_argument("reviews", nargs="+")
    summary.set_defaults(func=_run_eval_summarize)

    shapes = verbs.add_parser(
        "shapes",
        help="held-out shapes-world accuracy and the blank-image baseline",
        description="example:\n  llava-hf eval shapes --model out/stage2 --world outputs/shapes --output-dir out/eval/shapes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generation_args(shapes, 8)
    shapes.add_argument("--world", required=True, help="folder written by `llava-hf data shapes`")
    shapes.set_defaults(func=_run_eval_shapes)


def _load_model(args: argparse.Namespace):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import llava_hf  # noqa: F401  (registers the Auto classes)

    if not args.model:
        raise ValueError("--model is required to generate answers.")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=dtype).to(device)
    return model, AutoProcessor.from_pretrained(args.model)


def _settings(args: argparse.Namespace):
    from .eval.runner import GenerationSettings

    return GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        seed=args.seed,
        batch_size=args.batch_size,
    )


def _run_eval_scienceqa(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict
    from pathlib import Path

    from .eval.results import make_results, write_results
    from .eval.runner import SCIENCEQA_SUFFIX, load_questions, run_inference
    from .eval.scienceqa import load_predictions, score_scienceqa

    out = Path(args.output_dir)
    answers = Path(args.answers) if args.answers else out / "answers.jsonl"
    suffix = "" if args.no_suffix else SCIENCEQA_SUFFIX
    if not args.answers:
        model, processor = _load_model(args)
        questions = load_questions(args.questions, args.image_root)
        run_inference(model, processor, questions, answers, _settings(args), Path(args.model).name, suffix)
    problems = json.loads(Path(args.problems).read_text()) if args.problems else None
    metrics = score_scienceqa(load_predictions(answers), json.loads(Path(args.questions).read_text()), problems)
    data = {"questions": args.questions, "answers": answers} | ({"problems": args.problems} if args.problems else {})
    settings = asdict(_settings(args)) | {"prompt_suffix": suffix}
    path = write_results(
        make_results("scienceqa", args.model or "answers-file", data, settings, metrics), out / "results.json"
    )
    print(
        f"ScienceQA: {metrics['accuracy']:.2f}% ({metrics['correct']}/{metrics['count']}), image subset "
        f"{metrics['image_accuracy']:.2f}%, failed parses {metrics['failed_parses']} (scored wrong) -> {path}"
    )
    return 0


def _run_eval_llava_bench(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from .eval.llava_bench import OpenAIJudge, TransformersJudge, read_jsonl, review, summarize
    from .eval.results import make_results, write_results
    from .eval.runner import load_questions, run_inference

    out = Path(args.output_dir)
    answers = Path(args.answers) if args.answers else out / "answers.jsonl"
    if not args.answers:
        model, processor = _load_model(args)
        run_inference(
            model,
            processor,
            load_questions(args.questions, args.image_root),
            answers,
            _settings(args),
            Path(args.model).name,
        )
    if args.judge_local:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        judge = TransformersJudge(
            AutoModelForCausalLM.from_pretrained(args.judge_local), AutoTokenizer.from_pretrained(args.judge_local)
        )
    elif args.judge_model:
        judge = OpenAIJudge(args.judge_model, base_url=args.judge_base_url, api_key_env=args.judge_key_env)
    else:
        raise ValueError("pass --judge-model (an OpenAI-compatible endpoint) or --judge-local (a local model folder).")
    reviews = out / "reviews.jsonl"
    report = review(
        judge,
        read_jsonl(args.questions),
        read_jsonl(args.context),
        read_jsonl(args.reference),
        read_jsonl(answers),
        reviews,
    )
    metrics = summarize(read_jsonl(reviews))
    data = {"questions": args.questions, "context": args.context, "reference": args.reference, "answers": answers}
    settings = asdict(_settings(args)) | {"judge": judge.name, "judge_base_url": args.judge_base_url}
    path = write_results(
        make_results("llava-bench", args.model or "answers-file", data, settings, metrics), out / "results.json"
    )
    print(_render_summary(metrics) + f"\nunreadable judge replies: {report.unparseable} -> {path}")
    return 0


def _render_summary(summary: dict) -> str:
    lines = ["category   relative  reference  candidate  count"]
    for category, row in summary.items():
        if isinstance(row, dict):
            lines.append(
                f"{category:<10} {row['relative_score']:8.1f}  {row['reference_mean_x10']:9.1f}  "
                f"{row['candidate_mean_x10']:9.1f}  {row['count']:5d}"
            )
    if summary.get("excluded_unparseable"):
        lines.append(f"excluded (no readable scores): {summary['excluded_unparseable']}")
    return "\n".join(lines)


def _run_eval_summarize(args: argparse.Namespace) -> int:
    from .eval.llava_bench import read_jsonl, summarize

    for path in args.reviews:
        print(f"{path}\n{_render_summary(summarize(read_jsonl(path)))}")
    return 0


def _run_eval_shapes(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from .eval.results import make_results, write_results
    from .eval.shapes import evaluate_shapes

    model, processor = _load_model(args)
    metrics = evaluate_shapes(model, processor, args.world, args.output_dir, _settings(args), Path(args.model).name)
    data = {"questions": Path(args.world) / "mcq_test.json"}
    path = write_results(
        make_results("shapes", args.model, data, asdict(_settings(args)), metrics),
        Path(args.output_dir) / "results.json",
    )
    print(
        f"shapes: {metrics['accuracy']:.2f}% with the image, {metrics['blind_accuracy']:.2f}% with a blank image "
        f"(gap {metrics['gap']:+.2f} points, {metrics['count']} questions) -> {path}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-hf", description="llava-hf: a Hugging Face-native LLaVA")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _convert_parser(subparsers)
    _data_parser(subparsers)
    _eval_parser(subparsers)
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
