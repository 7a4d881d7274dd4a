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
        default=None,
        help=(
            "conversation format for original LLaVA checkpoints: vicuna_v1, llava_v1, plain, or a .jinja file "
            "(default: vicuna_v1 for an mlp2x_gelu projector (LLaVA-1.5), llava_v1 for a linear one (LLaVA v1))"
        ),
    )
    parser.add_argument(
        "--image-processor-backend",
        choices=["pil", "torchvision"],
        default=None,
        help=(
            "transformers' image processor backend for the llava_hf processor (default: pil for original LLaVA "
            "checkpoints, the original's pixels exactly; for transformers' Llava, the class transformers loads). "
            "torchvision is faster but its bicubic resize differs from the original's"
        ),
    )
    parser.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .convert import convert

    template = args.chat_template
    if template is not None and template.endswith(".jinja"):
        template = Path(template).read_text()
    layout = convert(
        args.src,
        args.dst,
        to=args.to,
        vision_tower=args.vision_tower,
        allow_bin=args.allow_bin,
        chat_template=template,
        image_processor_backend=args.image_processor_backend,
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
    from .data.shapes import MCQ_MAX_NEW_TOKENS  # the default length of `eval shapes` answers

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
    sqa.add_argument(
        "--questions",
        required=True,
        help="LLaVA-format questions (gpt turn = the gold letter, or ends with 'The answer is X.')",
    )
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
    generation_args(shapes, MCQ_MAX_NEW_TOKENS)
    shapes.add_argument("--world", required=True, help="folder written by `llava-hf data shapes`")
    shapes.set_defaults(func=_run_eval_shapes)


def _load_model(args: argparse.Namespace):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import llava_hf  # noqa: F401  (registers the Auto classes)

    from .utils import parse_dtype, resolve_device

    if not args.model:
        raise ValueError("--model is required to generate answers.")
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=parse_dtype(args.dtype))
    model = model.to(resolve_device(args.device))
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

    from .eval.llava_bench import OpenAIJudge, TransformersJudge, review, summarize
    from .eval.results import make_results, write_results
    from .eval.runner import load_questions, run_inference
    from .utils import read_jsonl

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
    from .eval.llava_bench import summarize
    from .utils import read_jsonl

    for path in args.reviews:
        print(f"{path}\n{_render_summary(summarize(read_jsonl(path)))}")
    return 0


def _run_eval_shapes(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from .data.shapes import MCQ_PROMPT
    from .eval.results import make_results, write_results
    from .eval.shapes import evaluate_shapes

    model, processor = _load_model(args)
    metrics = evaluate_shapes(model, processor, args.world, args.output_dir, _settings(args), Path(args.model).name)
    data = {"questions": Path(args.world) / "mcq_test.json"}
    settings = asdict(_settings(args)) | {"prompt_suffix": MCQ_PROMPT}  # what each test question was asked with
    path = write_results(
        make_results("shapes", args.model, data, settings, metrics),
        Path(args.output_dir) / "results.json",
    )
    print(
        f"shapes: {metrics['accuracy']:.2f}% with the image, {metrics['blind_accuracy']:.2f}% with a blank image "
        f"(gap {metrics['gap']:+.2f} points, {metrics['count']} questions) -> {path}"
    )
    return 0


def _generate_instructions_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate-instructions",
        help="the paper's data engine: an LLM writes instruction data from captions + boxes",
        description=(
            "Generate conversation / detailed-description / complex-reasoning data for your images with any "
            "OpenAI-compatible endpoint or an in-process model. Output: <out>/instructions.jsonl (append-only; a "
            "rerun resumes), rejected.jsonl, failed.jsonl, report.json and llava_instruct.json (LLaVA JSON).\n\n"
            "examples:\n"
            "  OPENAI_API_KEY=... llava-hf generate-instructions --annotations instances_train2017.json "
            "--captions captions_train2017.json --model gpt-4o-mini --out out/instruct --price-input 0.15 "
            "--price-output 0.6\n"
            "  llava-hf generate-instructions --annotations outputs/shapes --base-url http://localhost:8000/v1 "
            "--model Qwen/Qwen2.5-7B-Instruct --types conversation,detail,complex --concurrency 64 --out out/shapes-instruct\n"
            "  llava-hf generate-instructions --annotations caps_boxes.jsonl --backend transformers "
            "--model HuggingFaceTB/SmolLM2-1.7B-Instruct --out out/local"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_argument_group("images")
    source.add_argument(
        "--annotations",
        nargs="+",
        required=True,
        help="COCO instances .json file(s), caps_boxes .jsonl file(s), or a shapes-world folder",
    )
    source.add_argument("--captions", nargs="+", default=None, help="COCO captions .json, one per instances file")
    source.add_argument(
        "--image-prefix", default="", help="prefix for the records' image paths (e.g. coco/train2017/)"
    )
    source.add_argument("--limit", type=int, default=None, help="only the first N images")
    request = parser.add_argument_group("requests")
    request.add_argument("--types", default="conversation,detail,complex", help="comma-separated instruction types")
    request.add_argument("--samples-per-image", type=int, default=1, help="requests per image and type")
    request.add_argument("--prompts", default=None, help="folder of your own system prompts and few-shot examples")
    request.add_argument("--seed", type=int, default=0, help="few-shot order, detail instruction, <image> position")
    request.add_argument("--temperature", type=float, default=0.7)
    request.add_argument("--max-tokens", type=int, default=1024, help="completion token limit per request")
    backend = parser.add_argument_group("backend")
    backend.add_argument("--backend", choices=["openai", "transformers"], default="openai")
    backend.add_argument("--model", required=True, help="model name on the endpoint, or a local folder/Hub id")
    backend.add_argument(
        "--base-url", default=None, help="OpenAI-compatible base URL (default: $OPENAI_BASE_URL or OpenAI)"
    )
    backend.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    backend.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    backend.add_argument(
        "--extra-body", default=None, help="JSON merged into each request body, e.g. '{\"top_p\": 0.9}'"
    )
    backend.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="transformers backend: generation batch size (keep --concurrency at least this)",
    )
    backend.add_argument("--device", default=None, help="transformers backend: cuda, cpu, ...")
    backend.add_argument("--dtype", default="auto", help="transformers backend: auto, float32, bfloat16, float16")
    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    run.add_argument("--concurrency", type=int, default=32, help="requests in flight at most")
    run.add_argument("--max-retries", type=int, default=6, help="retries per request on 429/5xx/timeouts/resets")
    run.add_argument("--initial-backoff", type=float, default=1.0, help="seconds before the first retry")
    run.add_argument("--max-backoff", type=float, default=60.0, help="longest backoff between retries")
    run.add_argument("--price-input", type=float, default=0.0, help="price per 1M prompt tokens, for the cost")
    run.add_argument("--price-output", type=float, default=0.0, help="price per 1M completion tokens")
    run.add_argument("--llava-json", default=None, help="LLaVA JSON to write (default <out>/llava_instruct.json)")
    run.add_argument("--dataset", default=None, help="also save a datasets folder here (images by path)")
    run.add_argument("--image-root", default=None, help="folder the image paths are relative to, for --dataset")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_generate_instructions)


def _run_generate_instructions(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from .datagen import (
        BackendUnusable,
        EngineSettings,
        InstructionEngine,
        OpenAICompatibleBackend,
        TransformersBackend,
        load_contexts,
        load_instruction_dataset,
        load_prompts,
        write_llava_instruct,
    )

    settings = EngineSettings(
        kinds=tuple(kind for kind in args.types.split(",") if kind.strip()),
        samples_per_image=args.samples_per_image,
        seed=args.seed,
        concurrency=args.concurrency,
        max_retries=args.max_retries,
        initial_backoff=args.initial_backoff,
        max_backoff=args.max_backoff,
        input_price=args.price_input,
        output_price=args.price_output,
        progress=not args.no_progress,
    )
    contexts = load_contexts(args.annotations, args.captions, args.image_prefix)
    if args.limit is not None:
        contexts = contexts[: args.limit]
    prompts = load_prompts(settings.kinds, args.prompts)
    if args.backend == "transformers":
        backend = TransformersBackend.from_pretrained(
            args.model,
            device=args.device,
            dtype=args.dtype,
            max_new_tokens=args.max_tokens,
            temperature=args.temperature,
            batch_size=args.batch_size,
            seed=args.seed,
        )
    else:
        backend = OpenAICompatibleBackend(
            args.model,
            base_url=args.base_url,
            api_key_env=args.api_key_env,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            timeout=args.timeout,
            max_connections=args.concurrency,
            extra_body=json.loads(args.extra_body) if args.extra_body else None,
        )
    print(f"{len(contexts)} images x {len(settings.kinds)} types x {settings.samples_per_image} -> {args.out}")
    try:
        report = asyncio.run(InstructionEngine(backend, args.out, settings, prompts).run(contexts))
    except (BackendUnusable, RuntimeError) as error:
        print(f"llava-hf generate-instructions: error: {error}", file=sys.stderr)
        return 1
    print(report.render())
    path, count = write_llava_instruct(args.out, args.llava_json)
    print(f"{count} records -> {path}")
    if args.dataset:
        dataset, _ = load_instruction_dataset(args.out, args.image_root, progress=False)
        dataset.save_to_disk(args.dataset)
        print(f"dataset ({len(dataset)} rows) -> {args.dataset}")
    return 1 if report.failed_total else 0


def _quiet_http_logs(args: argparse.Namespace) -> None:
    """The Hub client's HTTP library logs every request at INFO; keep that for --verbose."""
    if not args.verbose:
        for name in ("httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _card_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-model",
        action="append",
        default=None,
        help="Hub id of a base model (repeat for the vision encoder and the LM); default: the recorded stage-1 ones",
    )
    parser.add_argument("--dataset", action="append", default=[], help="Hub id of a training dataset (repeatable)")
    parser.add_argument("--license", default="other", help="licence id for the card (default: other)")
    parser.add_argument("--tag", action="append", default=[], help="extra tag (repeatable)")
    parser.add_argument("--language", action="append", default=None, help="language code (repeatable)")
    parser.add_argument(
        "--eval-results", action="append", default=[], help="`llava-hf eval` results.json for model-index (repeatable)"
    )
    parser.add_argument("--card-template", default=None, help="a Jinja template to use instead of llava-hf's")


def _hub_target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its)")
    parser.add_argument(
        "--branch", "--revision", dest="branch", default=None, help="push to this branch (created from main)"
    )
    parser.add_argument("--commit-message", default=None)


def _push_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="push a checkpoint (model, processor, remote code) with its model card",
        description=(
            "Push a llava_hf checkpoint folder to the Hub in one commit, with a model card rendered from its config, "
            "its training record and evaluation results. The token comes from HF_TOKEN or `hf auth login`.\n\n"
            "examples:\n"
            "  llava-hf push outputs/stage2 me/llava-smollm2 --eval-results out/eval/shapes/results.json\n"
            "  llava-hf push outputs/stage2 me/llava-smollm2 --branch stage2 --private\n"
            "  llava-hf push outputs/stage2 me/llava-smollm2 --dry-run   # print the card, send nothing"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", help="checkpoint folder (recipes/sft.py output or save_pretrained)")
    parser.add_argument("repo_id", help="namespace/name (or name: your namespace)")
    _hub_target_args(parser)
    _card_args(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the model card and send nothing")
    parser.set_defaults(func=_run_push)


def _run_push(args: argparse.Namespace) -> int:
    from .hub import push_model

    _quiet_http_logs(args)

    result = push_model(
        args.model_dir,
        args.repo_id,
        private=args.private,
        branch=args.branch,
        commit_message=args.commit_message,
        dry_run=args.dry_run,
        base_models=args.base_model,
        datasets=args.dataset,
        license=args.license,
        tags=args.tag,
        language=args.language,
        eval_results=args.eval_results,
        template=args.card_template,
    )
    if args.dry_run:
        print(result, end="")
    else:
        print(f"pushed {len(result.files)} files to {result.url} ({result.revision}): {result.commit_url}")
    return 0


def _push_dataset_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push-dataset",
        help="push LLaVA data (JSON/JSONL + images, or a datasets folder) as a Hub dataset with its card",
        description=(
            "Convert LLaVA JSON/JSONL files (images embedded) or `llava-hf data convert` folders to Parquet and push "
            "them as one config of a Hub dataset, with a dataset card; `datasets.load_dataset(REPO_ID)` reads it.\n\n"
            "examples:\n"
            "  llava-hf push-dataset train=outputs/shapes/mcq_train.json test=outputs/shapes/mcq_test.json \\\n"
            "      me/shapes --image-root outputs/shapes/images --config-name mcq --license cc0-1.0\n"
            "  llava-hf push-dataset instruct.json me/my-instruct --image-root images/ --llm gpt-4o \\\n"
            "      --engine 'llava-hf generate-instructions' --license cc-by-4.0"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", nargs="+", help="[SPLIT=]PATH: a LLaVA .json/.jsonl file or a datasets folder")
    parser.add_argument("repo_id", help="namespace/name of the dataset repo")
    parser.add_argument("--image-root", default=None, help="folder the records' image paths are relative to")
    parser.add_argument("--stage", choices=["chat", "plain"], default="chat", help="plain: caption pairs (stage 1)")
    parser.add_argument("--config-name", default="default", help="the dataset config these splits form")
    parser.add_argument("--license", default="other")
    parser.add_argument("--source", default=None, help="where the images and annotations come from")
    parser.add_argument("--engine", default=None, help="what generated the text (e.g. llava-hf generate-instructions)")
    parser.add_argument("--llm", default=None, help="the LLM that wrote the instructions")
    parser.add_argument("--prompt-types", default=None, help="e.g. 'conversation, detail, complex' (default: counted)")
    parser.add_argument("--tag", action="append", default=[])
    parser.add_argument("--language", action="append", default=None)
    parser.add_argument("--skip-bad", action="store_true", help="skip and count bad records instead of stopping")
    parser.add_argument("--dry-run", action="store_true", help="print the dataset card and send nothing")
    _hub_target_args(parser)
    parser.set_defaults(func=_run_push_dataset)


def _run_push_dataset(args: argparse.Namespace) -> int:
    from .hub import push_dataset

    _quiet_http_logs(args)

    result = push_dataset(
        args.data,
        args.repo_id,
        image_root=args.image_root,
        stage=args.stage,
        config_name=args.config_name,
        license=args.license,
        source=args.source,
        engine=args.engine,
        llm=args.llm,
        prompt_types=args.prompt_types,
        tags=args.tag,
        language=args.language,
        private=args.private,
        branch=args.branch,
        commit_message=args.commit_message,
        skip_bad=args.skip_bad,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        print(result, end="")
    else:
        print(f"pushed {len(result.files)} files to {result.url} ({result.revision}): {result.commit_url}")
    return 0


def _limit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-image-megabytes", type=float, default=10.0)
    parser.add_argument("--max-image-megapixels", type=float, default=16.0)
    parser.add_argument("--max-text-chars", type=int, default=2000)
    parser.add_argument("--max-images", type=int, default=4, help="images per conversation")


def _limits(args: argparse.Namespace):
    from .demo import Limits

    return Limits(args.max_image_megabytes, args.max_image_megapixels, args.max_text_chars, args.max_images)


def _generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")


def _generation(args: argparse.Namespace):
    from .demo import GenerationSettings

    return GenerationSettings(args.max_new_tokens, args.do_sample, args.temperature, args.top_p)


def _space_parser(subparsers: argparse._SubParsersAction) -> None:
    space = subparsers.add_parser("space", help="write and push a Gradio Space for a model")
    verbs = space.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser(
        "create",
        help="write a Space folder: app.py, requirements.txt, README front matter, the llava_hf package",
        description=(
            "Write a Gradio Space folder that runs `llava-hf demo` on a Hub model.\n\nexample:\n"
            "  llava-hf space create outputs/space --model me/llava-smollm2 --dataset me/shapes"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    create.add_argument("space_dir", help="folder to write")
    create.add_argument("--model", required=True, help="Hub id of the model the Space serves")
    create.add_argument("--title", default=None)
    create.add_argument("--dataset", action="append", default=[], help="Hub id of a dataset to list (repeatable)")
    create.add_argument("--license", default="other")
    create.add_argument("--hardware", default=None, help="suggested hardware (e.g. t4-small); default: CPU")
    create.add_argument("--requirement", action="append", default=[], help="extra requirements.txt line")
    create.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    _limit_args(create)
    create.add_argument("--max-new-tokens", type=int, default=256, help="the app's default")
    create.set_defaults(func=_run_space_create)

    push = verbs.add_parser(
        "push",
        help="push a Space folder (creates the gradio Space)",
        description="example:\n  llava-hf space push outputs/space me/llava-smollm2-demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("space_dir")
    push.add_argument("space_id", help="namespace/name of the Space")
    _hub_target_args(push)
    push.set_defaults(func=_run_space_push)


def _run_space_create(args: argparse.Namespace) -> int:
    from .hub import create_space

    folder = create_space(
        args.space_dir,
        args.model,
        title=args.title,
        datasets=args.dataset,
        license=args.license,
        hardware=args.hardware,
        requirements=args.requirement,
        demo_config={"limits": _limits(args).to_dict(), "generation": {"max_new_tokens": args.max_new_tokens}},
        overwrite=args.overwrite,
    )
    print(f"wrote the Space for {args.model} to {folder}; push it with: llava-hf space push {folder} SPACE_ID")
    return 0


def _run_space_push(args: argparse.Namespace) -> int:
    from .hub import push_space

    _quiet_http_logs(args)

    result = push_space(
        args.space_dir, args.space_id, private=args.private, branch=args.branch, commit_message=args.commit_message
    )
    print(f"pushed {len(result.files)} files to {result.url} ({result.revision}): {result.commit_url}")
    return 0


def _demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="a Gradio multimodal chat with a checkpoint (the Space's app, locally)",
        description="examples:\n  llava-hf demo outputs/stage2\n  llava-hf demo me/llava-smollm2 --port 7861 --share",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="checkpoint folder or Hub id")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve the network")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="a public gradio.live link")
    parser.add_argument("--title", default=None)
    parser.add_argument("--no-examples", action="store_true", help="no example images")
    _generation_args(parser)
    _limit_args(parser)
    parser.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from .demo.app import DemoConfig, build_demo_from_pretrained
    from .demo.examples import write_example_images

    examples = [] if args.no_examples else write_example_images(Path(tempfile.gettempdir()) / "llava-hf-examples")
    config = DemoConfig(
        model=args.model,
        title=args.title or f"{Path(args.model).name} (llava-hf)",
        limits=_limits(args),
        generation=_generation(args),
        examples=examples,
        device=args.device,
        dtype=args.dtype,
    )
    config.generation.check(config.limits)
    demo = build_demo_from_pretrained(config)
    print(f"serving {args.model} on http://{args.host}:{args.port}", flush=True)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


def _chat_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="chat with a checkpoint in the terminal (questions from standard input)",
        description=(
            "Answers stream as they are generated. Commands: /image PATH, /reset, /quit.\n\nexamples:\n"
            "  llava-hf chat outputs/stage2 --image photo.jpg\n"
            "  echo 'What is in the image?' | llava-hf chat outputs/stage2 --image photo.jpg"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="checkpoint folder or Hub id")
    parser.add_argument("--image", action="append", default=[], help="image for the first question (repeatable)")
    _generation_args(parser)
    _limit_args(parser)
    parser.set_defaults(func=_run_chat)


def _run_chat(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .demo import ChatModel
    from .demo.terminal import run_terminal_chat

    limits, settings = _limits(args), _generation(args)
    settings.check(limits)
    for image in args.image:  # before loading the model: a wrong path fails at once
        if not Path(image).is_file():
            raise FileNotFoundError(f"image {image} not found.")
    chat = ChatModel.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    run_terminal_chat(chat, args.image, settings, sys.stdin, sys.stdout, limits)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-hf", description="llava-hf: a Hugging Face-native LLaVA")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _convert_parser(subparsers)
    _data_parser(subparsers)
    _eval_parser(subparsers)
    _generate_instructions_parser(subparsers)
    _push_parser(subparsers)
    _push_dataset_parser(subparsers)
    _space_parser(subparsers)
    _demo_parser(subparsers)
    _chat_parser(subparsers)
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
