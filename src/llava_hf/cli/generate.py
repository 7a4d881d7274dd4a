"""`llava-hf generate-instructions`: the paper's data engine (`llava_hf.datagen`)."""

import argparse
import sys

from ._args import (
    add_command,
    add_dataclass_arguments,
    add_device_arguments,
    at_least,
    bounded,
    dataclass_from_args,
    default_of,
)

# EngineSettings fields named otherwise on the command line.
ENGINE_RENAME = {"kinds": "--types", "input_price": "--price-input", "output_price": "--price-output"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..datagen import EngineSettings, OpenAICompatibleBackend, TransformersBackend

    parser = add_command(
        subparsers,
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
    source.add_argument("--limit", type=at_least(int, 1), default=None, help="only the first N images")

    request = parser.add_argument_group("requests")
    add_dataclass_arguments(request, EngineSettings, ["kinds", "samples_per_image"], rename=ENGINE_RENAME)
    request.add_argument("--prompts", default=None, help="folder of your own system prompts and few-shot examples")
    add_dataclass_arguments(request, EngineSettings, ["seed"])
    request.add_argument(
        "--temperature",
        type=at_least(float, 0),
        default=default_of(OpenAICompatibleBackend, "temperature"),
        help="sampling temperature",
    )
    request.add_argument(
        "--max-tokens",
        type=at_least(int, 1),
        default=default_of(OpenAICompatibleBackend, "max_tokens"),
        help="completion token limit per request",
    )

    backend = parser.add_argument_group("backend")
    backend.add_argument(
        "--backend",
        choices=["openai", "transformers"],
        default="openai",
        help="openai: an OpenAI-compatible endpoint; transformers: a causal LM run in this process",
    )
    backend.add_argument("--model", required=True, help="model name on the endpoint, or a local folder/Hub id")
    backend.add_argument(
        "--base-url", default=None, help="OpenAI-compatible base URL (default: $OPENAI_BASE_URL or OpenAI)"
    )
    backend.add_argument(
        "--api-key-env",
        default=default_of(OpenAICompatibleBackend, "api_key_env"),
        help="environment variable holding the key",
    )
    backend.add_argument(
        "--timeout",
        type=bounded(float, above=0),
        default=default_of(OpenAICompatibleBackend, "timeout"),
        help="seconds per request",
    )
    backend.add_argument(
        "--extra-body", default=None, help="JSON merged into each request body, e.g. '{\"top_p\": 0.9}'"
    )
    backend.add_argument(
        "--batch-size",
        type=at_least(int, 1),
        default=default_of(TransformersBackend, "batch_size"),
        help="transformers backend: generation batch size (keep --concurrency at least this)",
    )
    add_device_arguments(backend, "transformers backend: ")

    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    add_dataclass_arguments(
        run,
        EngineSettings,
        ["concurrency", "max_retries", "initial_backoff", "max_backoff", "input_price", "output_price"],
        rename=ENGINE_RENAME,
    )
    run.add_argument("--llava-json", default=None, help="LLaVA JSON to write (default: <out>/llava_instruct.json)")
    run.add_argument("--dataset", default=None, help="also save a datasets folder here (images by path)")
    run.add_argument("--image-root", default=None, help="folder the image paths are relative to, for --dataset")
    add_dataclass_arguments(run, EngineSettings, ["progress"])
    parser.set_defaults(func=run_generate_instructions)


def _extra_body(text: str | None) -> dict | None:
    """`--extra-body` as the JSON object it must be, or a `ValueError` naming the option."""
    import json

    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--extra-body is not valid JSON ({error.msg} at column {error.colno}): {text!r}") from error
    if not isinstance(value, dict):
        raise ValueError(f"--extra-body must be a JSON object ({{...}}) of request fields, got {text!r}.")
    return value


def run_generate_instructions(args: argparse.Namespace) -> int:
    import asyncio

    from ..datagen import (
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

    settings = dataclass_from_args(EngineSettings, args)
    extra_body = _extra_body(args.extra_body)
    contexts = load_contexts(args.annotations, args.captions, args.image_prefix)
    if not contexts:  # nothing to ask for: an empty file, or images without captions
        raise ValueError(f"{', '.join(args.annotations)}: no image with captions to write instructions for.")
    if args.limit is not None:
        contexts = contexts[: args.limit]
    prompts = load_prompts(settings.kinds, args.prompts)
    if args.backend == "transformers":
        from ..utils import check_model_path

        check_model_path(args.model)
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
            extra_body=extra_body,
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
