"""`llava-hf eval scienceqa|llava-bench|summarize|shapes`: evaluate a checkpoint (`llava_hf.eval`), write
results.json and print the scores."""

import argparse
import sys
from pathlib import Path
from typing import Any

from ._args import add_command, add_dataclass_arguments, add_device_arguments, at_least, bounded, dataclass_from_args

# The GenerationSettings fields `eval` exposes, in --help order.
GENERATION_FIELDS = ("batch_size", "max_new_tokens", "do_sample", "temperature", "seed")


def _generation_args(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    from ..generation import GenerationSettings

    parser.add_argument("--model", help="llava_hf checkpoint folder (or Hub id)")
    parser.add_argument("--output-dir", required=True, help="answers, reviews and results.json go here")
    add_dataclass_arguments(parser, GenerationSettings, GENERATION_FIELDS, defaults={"max_new_tokens": max_new_tokens})
    add_device_arguments(parser)
    parser.add_argument(
        "--vision-feature-cache",
        metavar="DIR",
        help="store the vision tower's features of each image in DIR and read them back when the image comes again "
        "(a rerun, the blind pass's blank image); entries are keyed by image, tower and precision, so a float32 or "
        "bf16 evaluation does not read a training run's bf16-autocast entries",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..data.shapes import MCQ_MAX_NEW_TOKENS
    from ..eval.llava_bench import ANSWER_MAX_NEW_TOKENS as BENCH_MAX_NEW_TOKENS
    from ..eval.scienceqa import ANSWER_MAX_NEW_TOKENS as SCIENCEQA_MAX_NEW_TOKENS

    evaluation = add_command(subparsers, "eval", help="evaluate a checkpoint: scienceqa, llava-bench, shapes")
    verbs = evaluation.add_subparsers(dest="verb", required=True)

    sqa = add_command(
        verbs,
        "scienceqa",
        help="ScienceQA accuracy with the official parse (failed parses counted, never guessed)",
        description=(
            "examples:\n  llava-hf eval scienceqa --model out/llava --questions llava_test_CQM-A.json "
            "--image-root scienceqa/images/test --output-dir out/eval/sqa\n"
            "  llava-hf eval scienceqa --answers answers.jsonl --questions llava_test_CQM-A.json --output-dir out/eval/sqa"
        ),
    )
    _generation_args(sqa, SCIENCEQA_MAX_NEW_TOKENS)
    sqa.add_argument(
        "--questions",
        required=True,
        help="LLaVA-format questions (gpt turn = the gold letter, or ends with 'The answer is X.')",
    )
    sqa.add_argument("--image-root", default=None)
    sqa.add_argument("--problems", default=None, help="official problems.json, for per-category scores")
    sqa.add_argument("--answers", default=None, help="score an existing answers .jsonl (or official result .json)")
    sqa.add_argument("--no-suffix", action="store_true", help="do not append LLaVA-1.5's single-letter instruction")
    sqa.set_defaults(func=run_scienceqa)

    bench = add_command(
        verbs,
        "llava-bench",
        help="LLaVA-Bench relative scores with an LLM judge",
        description=(
            "example:\n  OPENAI_API_KEY=... llava-hf eval llava-bench --model out/llava --questions qa90_questions.jsonl "
            "--context caps_boxes_coco2014_val_80.jsonl --reference qa90_gpt4_answer.jsonl --image-root val2014 "
            "--judge-model gpt-4o --output-dir out/eval/bench"
        ),
    )
    _generation_args(bench, BENCH_MAX_NEW_TOKENS)
    bench.add_argument("--questions", required=True)
    bench.add_argument("--context", required=True, help="caps_boxes (COCO) or context.jsonl (in-the-wild)")
    bench.add_argument("--reference", required=True, help="reference answers .jsonl (GPT-4's)")
    bench.add_argument("--answers", default=None, help="candidate answers .jsonl (else generated with --model)")
    bench.add_argument("--image-root", default=None)
    bench.add_argument("--judge-base-url", default=None, help="OpenAI-compatible endpoint (default: OpenAI)")
    bench.add_argument("--judge-model", default=None, help="judge model name on that endpoint")
    bench.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    bench.add_argument(
        "--judge-timeout",
        type=bounded(float, above=0),
        default=120.0,
        help="seconds for one judge request before it is retried",
    )
    bench.add_argument(
        "--judge-max-retries",
        type=at_least(int, 0),
        default=6,
        help="retries per judge request on 429/5xx/timeouts/refused connections, with exponential backoff",
    )
    bench.add_argument("--judge-local", default=None, help="or: a local causal LM folder to judge with")
    bench.set_defaults(func=run_llava_bench)

    summary = add_command(verbs, "summarize", help="relative scores of existing LLaVA-Bench review files")
    summary.add_argument("reviews", nargs="+")
    summary.set_defaults(func=run_summarize)

    shapes = add_command(
        verbs,
        "shapes",
        help="held-out shapes-world accuracy and the blank-image baseline",
        description="example:\n  llava-hf eval shapes --model out/stage2 --world outputs/shapes --output-dir out/eval/shapes",
    )
    _generation_args(shapes, MCQ_MAX_NEW_TOKENS)
    shapes.add_argument("--world", required=True, help="folder written by `llava-hf data shapes`")
    shapes.set_defaults(func=run_shapes)


def load_model(args: argparse.Namespace) -> tuple[Any, Any]:
    """`(model, processor)` of `--model` on `--device` in `--dtype`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..registration import register
    from ..utils import check_model_path, load_pretrained, read_config

    if not args.model:
        raise ValueError("--model is required to generate answers.")
    check_model_path(args.model)
    register()
    if Path(args.model).is_dir():  # a local folder: say what it is before transformers lists every class it knows
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        model_type = read_config(args.model).get("model_type")
        if model_type != "llava_hf" and model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            raise ValueError(
                f"{args.model}: its config.json says model_type {model_type!r}, not an image-text-to-text model; "
                "pass a llava-hf checkpoint (a stage-2 output folder, e.g. outputs/quickstart/stage2)."
            )
    model = load_pretrained(AutoModelForImageTextToText, args.model, device=args.device, dtype=args.dtype)
    if args.vision_feature_cache:
        from ..feature_cache import attach

        attach(model, args.vision_feature_cache)
    return model, AutoProcessor.from_pretrained(args.model)


def ran_with(model: Any) -> dict[str, str]:
    """The precision and device the answers were generated in, for the results record (`--dtype` changes them)."""
    return {"dtype": str(model.dtype).removeprefix("torch."), "device": str(model.device)}


def generation_settings(args: argparse.Namespace):
    from ..generation import GenerationSettings

    return dataclass_from_args(GenerationSettings, args)


def run_scienceqa(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.llava_format import iter_llava_file
    from ..eval.results import make_results, write_results
    from ..eval.runner import SCIENCEQA_SUFFIX, load_questions, run_inference
    from ..eval.scienceqa import load_predictions, score_scienceqa
    from ..utils import read_json

    # Read before any answer is generated: a questions or problems file that cannot be read fails now, naming it.
    records = [record for _, record in iter_llava_file(args.questions)]  # .json or .jsonl, as inference reads them
    problems = read_json(args.problems, dict, "a ScienceQA problems.json") if args.problems else None

    out = Path(args.output_dir)
    answers = Path(args.answers) if args.answers else out / "answers.jsonl"
    suffix = "" if args.no_suffix else SCIENCEQA_SUFFIX
    settings = generation_settings(args)
    asked = settings.to_dict() | {"prompt_suffix": suffix}
    if not args.answers:
        model, processor = load_model(args)
        asked |= ran_with(model)
        questions = load_questions(args.questions, args.image_root)
        run_inference(model, processor, questions, answers, settings, Path(args.model).name, suffix)
    metrics = score_scienceqa(load_predictions(answers), records, problems, source=args.questions)
    data = {"questions": args.questions, "answers": answers} | ({"problems": args.problems} if args.problems else {})
    path = write_results(
        make_results("scienceqa", args.model or "answers-file", data, asked, metrics),
        out / "results.json",
    )
    print(
        f"ScienceQA: {metrics['accuracy']:.2f}% ({metrics['correct']}/{metrics['count']}), image subset "
        f"{metrics['image_accuracy']:.2f}%, failed parses {metrics['failed_parses']} (scored wrong) -> {path}"
    )
    return 0


def run_llava_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..datagen.backend import BackendUnusable
    from ..eval.llava_bench import (
        OpenAIJudge,
        TransformersJudge,
        describe_missing,
        missing_reviews,
        read_verdicts,
        review,
        summarize,
    )
    from ..eval.results import make_results, write_results
    from ..eval.runner import load_questions, run_inference
    from ..utils import rows_by_id

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)  # reviews and results go there, also when the answers come from a file
    answers = Path(args.answers) if args.answers else out / "answers.jsonl"
    settings = generation_settings(args)
    answered_with = {}
    if not args.answers:
        model, processor = load_model(args)
        answered_with = ran_with(model)
        questions = load_questions(args.questions, args.image_root)
        run_inference(model, processor, questions, answers, settings, Path(args.model).name)
    # A results.json of an earlier run would sit beside reviews it no longer describes if this one stops short.
    (out / "results.json").unlink(missing_ok=True)
    if args.judge_local:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..utils import check_model_path

        check_model_path(args.judge_local, "--judge-local")
        judge = TransformersJudge(
            AutoModelForCausalLM.from_pretrained(args.judge_local), AutoTokenizer.from_pretrained(args.judge_local)
        )
    elif args.judge_model:
        judge = OpenAIJudge(
            args.judge_model,
            base_url=args.judge_base_url,
            api_key_env=args.judge_key_env,
            timeout=args.judge_timeout,
            max_retries=args.judge_max_retries,
        )
    else:
        raise ValueError("pass --judge-model (an OpenAI-compatible endpoint) or --judge-local (a local model folder).")
    reviews = out / "reviews.jsonl"
    stopped = None
    try:
        # One question, reference and answer per question_id: a repeated id is refused naming the file and lines.
        review(judge, args.questions, args.context, args.reference, answers, reviews)
    except BackendUnusable as error:  # the judge is down or refuses us: what was judged is kept for the rerun
        stopped = str(error)
    question_ids = list(rows_by_id(args.questions))
    verdicts = read_verdicts(reviews)
    missing = missing_reviews(args.questions, reviews)
    if missing or stopped:
        # A score over the questions that happened to be judged is not the benchmark's: no results.json, and the
        # partial table says how partial it is.
        judged = [verdicts[qid] for qid in question_ids if qid in verdicts]
        if judged:
            print(render_summary(summarize(judged), total=len(question_ids)))
        reason = stopped or (
            f"{reviews}: {len(missing)} of {len(question_ids)} questions have no valid review "
            f"({describe_missing(missing)}); check the judge, then run the same command again: the reviewed "
            "questions are kept and the rest judged again."
        )
        print(f"llava-hf eval: error: {reason}", file=sys.stderr)
        return 1
    metrics = summarize(verdicts[qid] for qid in question_ids)
    data = {"questions": args.questions, "context": args.context, "reference": args.reference, "answers": answers}
    judged_with = settings.to_dict() | answered_with | {"judge": judge.name, "judge_base_url": args.judge_base_url}
    path = write_results(
        make_results("llava-bench", args.model or "answers-file", data, judged_with, metrics), out / "results.json"
    )
    print(render_summary(metrics) + f"\nall {len(question_ids)} questions reviewed -> {path}")
    return 0


def render_summary(summary: dict, total: int | None = None) -> str:
    """LLaVA-Bench's relative scores as a table, one row per category. When fewer than `total` questions (default:
    every row summarised, readable or not) have readable scores, a last line says `k of n reviewed`: the table is
    then not the benchmark's score."""
    lines = ["category   relative  reference  candidate  count"]
    for category, row in summary.items():
        if isinstance(row, dict):
            relative = "-" if row["relative_score"] is None else f"{row['relative_score']:.1f}"
            lines.append(
                f"{category:<10} {relative:>8}  {row['reference_mean_x10']:9.1f}  "
                f"{row['candidate_mean_x10']:9.1f}  {row['count']:5d}"
            )
    reviewed = summary["all"]["count"] if "all" in summary else 0
    total = reviewed + summary.get("excluded_unparseable", 0) if total is None else total
    if reviewed < total:
        lines.append(
            f"partial: {reviewed} of {total} reviewed; not the benchmark's score until every question is (rerun "
            "`llava-hf eval llava-bench` to judge the rest)"
        )
    return "\n".join(lines)


def run_summarize(args: argparse.Namespace) -> int:
    from ..eval.llava_bench import summarize
    from ..utils import read_jsonl

    code = 0
    for path in args.reviews:
        summary = summarize(read_jsonl(path))
        if "all" not in summary:  # an empty file, or no review with readable scores: no score to report
            print(f"llava-hf eval: error: {path}: no review with readable scores.", file=sys.stderr)
            code = 1
            continue
        print(f"{path}\n{render_summary(summary)}")
    return code


def run_shapes(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.shapes import MCQ_PROMPT
    from ..eval.results import make_results, write_results
    from ..eval.shapes import evaluate_shapes

    settings = generation_settings(args)
    model, processor = load_model(args)
    metrics = evaluate_shapes(model, processor, args.world, args.output_dir, settings, Path(args.model).name)
    data = {"questions": Path(args.world) / "mcq_test.json"}
    # What each test question was asked with, and the precision it was answered in.
    asked = settings.to_dict() | {"prompt_suffix": MCQ_PROMPT} | ran_with(model)
    path = write_results(
        make_results("shapes", args.model, data, asked, metrics),
        Path(args.output_dir) / "results.json",
    )
    print(
        f"shapes: {metrics['accuracy']:.2f}% with the image, {metrics['blind_accuracy']:.2f}% with a blank image "
        f"(gap {metrics['gap']:+.2f} points, {metrics['count']} questions) -> {path}"
    )
    return 0
