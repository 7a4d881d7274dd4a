"""`llava-hf push`, `push-dataset` and `space create|push`: the Hub (`llava_hf.hub`)."""

import argparse
import logging

from ._args import add_command, add_dataclass_arguments, dataclass_from_args
from .demo import LIMIT_FIELDS  # a Space's demo takes the limits `llava-hf demo` takes


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    _push_parser(subparsers)
    _push_dataset_parser(subparsers)
    _space_parser(subparsers)


def quiet_http_logs(args: argparse.Namespace) -> None:
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
    parser.add_argument("--license", default="other", help="licence id for the card")
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


def _pushed(result) -> str:
    return f"pushed {len(result.files)} files to {result.url} ({result.revision}): {result.commit_url}"


def _push_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
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
    )
    parser.add_argument("model_dir", help="checkpoint folder (recipes/sft.py output or save_pretrained)")
    parser.add_argument("repo_id", help="namespace/name (or name: your namespace)")
    _hub_target_args(parser)
    _card_args(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the model card and send nothing")
    parser.set_defaults(func=run_push)


def run_push(args: argparse.Namespace) -> int:
    from ..hub import push_model

    quiet_http_logs(args)
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
        print(_pushed(result))
    return 0


def _push_dataset_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..data.llava_format import STAGES

    parser = add_command(
        subparsers,
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
    )
    parser.add_argument("data", nargs="+", help="[SPLIT=]PATH: a LLaVA .json/.jsonl file or a datasets folder")
    parser.add_argument("repo_id", help="namespace/name of the dataset repo")
    parser.add_argument("--image-root", default=None, help="folder the records' image paths are relative to")
    parser.add_argument(
        "--stage", choices=STAGES, default="chat", help="chat: conversations; plain: caption pairs (stage 1)"
    )
    parser.add_argument("--config-name", default="default", help="the dataset config these splits form")
    parser.add_argument("--license", default="other", help="licence id for the dataset card")
    parser.add_argument("--source", default=None, help="where the images and annotations come from")
    parser.add_argument("--engine", default=None, help="what generated the text (e.g. llava-hf generate-instructions)")
    parser.add_argument("--llm", default=None, help="the LLM that wrote the instructions")
    parser.add_argument("--prompt-types", default=None, help="e.g. 'conversation, detail, complex' (default: counted)")
    parser.add_argument("--tag", action="append", default=[])
    parser.add_argument("--language", action="append", default=None)
    parser.add_argument("--skip-bad", action="store_true", help="skip and count bad records instead of stopping")
    parser.add_argument("--dry-run", action="store_true", help="print the dataset card and send nothing")
    _hub_target_args(parser)
    parser.set_defaults(func=run_push_dataset)


def run_push_dataset(args: argparse.Namespace) -> int:
    from ..hub import push_dataset

    quiet_http_logs(args)
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
        print(_pushed(result))
    return 0


def _space_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..demo.chat import DEMO_GENERATION, Limits
    from ..generation import GenerationSettings

    space = add_command(subparsers, "space", help="write and push a Gradio Space for a model")
    verbs = space.add_subparsers(dest="verb", required=True)
    create = add_command(
        verbs,
        "create",
        help="write a Space folder: app.py, requirements.txt, README front matter, the llava_hf package",
        description=(
            "Write a Gradio Space folder that runs `llava-hf demo` on a Hub model.\n\nexample:\n"
            "  llava-hf space create outputs/space --model me/llava-smollm2 --dataset me/shapes"
        ),
    )
    create.add_argument("space_dir", help="folder to write")
    create.add_argument("--model", required=True, help="Hub id of the model the Space serves")
    create.add_argument("--title", default=None)
    create.add_argument("--dataset", action="append", default=[], help="Hub id of a dataset to list (repeatable)")
    create.add_argument("--license", default="other", help="licence id for the Space's README")
    create.add_argument("--hardware", default=None, help="suggested hardware (e.g. t4-small); default: CPU")
    create.add_argument("--requirement", action="append", default=[], help="extra requirements.txt line")
    create.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    add_dataclass_arguments(create, Limits, LIMIT_FIELDS)
    add_dataclass_arguments(
        create,
        GenerationSettings,
        ["max_new_tokens"],
        defaults=DEMO_GENERATION,
        help_text={"max_new_tokens": "the app's max new tokens setting, at start"},
    )
    create.set_defaults(func=run_space_create)

    push = add_command(
        verbs,
        "push",
        help="push a Space folder (creates the gradio Space)",
        description="example:\n  llava-hf space push outputs/space me/llava-smollm2-demo",
    )
    push.add_argument("space_dir")
    push.add_argument("space_id", help="namespace/name of the Space")
    _hub_target_args(push)
    push.set_defaults(func=run_space_push)


def run_space_create(args: argparse.Namespace) -> int:
    from ..demo.chat import Limits
    from ..hub import create_space

    folder = create_space(
        args.space_dir,
        args.model,
        title=args.title,
        datasets=args.dataset,
        license=args.license,
        hardware=args.hardware,
        requirements=args.requirement,
        demo_config={
            "limits": dataclass_from_args(Limits, args, LIMIT_FIELDS).to_dict(),
            "generation": {"max_new_tokens": args.max_new_tokens},
        },
        overwrite=args.overwrite,
    )
    print(f"wrote the Space for {args.model} to {folder}; push it with: llava-hf space push {folder} SPACE_ID")
    return 0


def run_space_push(args: argparse.Namespace) -> int:
    from ..hub import push_space

    quiet_http_logs(args)
    result = push_space(
        args.space_dir, args.space_id, private=args.private, branch=args.branch, commit_message=args.commit_message
    )
    print(_pushed(result))
    return 0
