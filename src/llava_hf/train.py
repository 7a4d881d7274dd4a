"""LLaVA's two-stage training with TRL's SFTTrainer, as a library entry point (`llava-hf train`, `recipes/sft.py`).

Stage 1 (feature alignment, only the projector trains) and stage 2 (instruction tuning, projector + LM, fully or
with LoRA) differ only in their recipe YAML. The options are the fields of `LlavaModelArguments`,
`LlavaDataArguments` (llava_hf.training) and TRL's `SFTConfig`; `--config recipe.yaml` sets them, the command line
overrides them:

    llava-hf train --config recipes/offline/stage1.yaml --use_cpu true          # one process
    accelerate launch recipes/sft.py --config recipes/llava-v1.5/stage1.yaml    # several, through accelerate

As TRL's `trl/scripts/sft.py`: `make_parser()` builds the parser (or registers the `train` command on the
`llava-hf` command line), `main(model_args, data_args, training_args)` trains.
"""

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trl import SFTConfig, TrlParser

from .training import LlavaDataArguments, LlavaModelArguments

if TYPE_CHECKING:
    from .data import LlavaDataCollator

DATACLASS_TYPES = (LlavaModelArguments, LlavaDataArguments, SFTConfig)


def make_collator(
    processor: Any,
    model_args: LlavaModelArguments,
    data_args: LlavaDataArguments,
    training_args: SFTConfig,
    padding_free: bool,
) -> "LlavaDataCollator":
    """The recipe's collator: the stage's template (`plain` in stage 1), the recipe's lengths and padding."""
    from .chat_templates import get_chat_template
    from .data import LlavaDataCollator

    return LlavaDataCollator(
        processor,
        max_length=training_args.max_length,
        truncation=data_args.truncation,
        chat_template=get_chat_template("plain") if model_args.stage == "1" else None,
        stats_in_batch=True,  # counted in dataloader workers, summed by the trainer
        padding_free=padding_free,
        pad_to_multiple_of=training_args.pad_to_multiple_of,  # SFTConfig's, as TRL's own collators take it
    )


def main(model_args: LlavaModelArguments, data_args: LlavaDataArguments, training_args: SFTConfig) -> None:
    """Train one stage: check the recipe, load or build the model, read the LLaVA data, train with LlavaSFTTrainer,
    save a complete checkpoint (and its training record) to `output_dir`, push it when `push_to_hub`. Every process
    of a multi-process launch runs it."""
    from .data import load_llava_dataset
    from .data.collator import format_stats
    from .grounding import ImageGainCallback, hold_out_rows, write_training_curves
    from .training import (
        RecipeError,
        calibrate_projector_input,
        load_model_for_stage,
        make_trainer_class,
        resolve_precision,
        save_stage_output,
        validate_recipe,
    )

    validate_recipe(model_args, data_args, training_args)
    resolve_precision(training_args)  # the recipe's bf16/fp16 run, whatever the launcher's mixed_precision says

    # Dataset first, before the model is loaded: a bad record or an empty file fails in seconds, not after the load.
    # LLaVA JSON -> TRL's conversational format (stage 1 keeps the caption only: `plain`).
    stage = "plain" if model_args.stage == "1" else "chat"
    dataset, report = load_llava_dataset(
        data_args.train_files,
        data_args.image_root,
        stage=stage,
        on_error="skip" if data_args.skip_bad_records else "raise",
    )
    if len(dataset) == 0:
        raise RecipeError(
            f"train_files {', '.join(map(str, data_args.train_files))}: no rows to train on ({report.summary()})."
        )
    # The grounding meter's rows (image_gain in the logs): grounding_files, or the last rows with an image, held out.
    dataset, held_out = hold_out_rows(dataset, data_args, stage, "skip" if data_args.skip_bad_records else "raise")
    if data_args.max_train_samples:
        dataset = dataset.select(range(min(data_args.max_train_samples, len(dataset))))
    # Images are opened by the collator (errors name the sample), not decoded by datasets.
    dataset = dataset.cast_column("images", dataset.features["images"].__class__(_image_feature(decode=False)))

    # Model: stage 1 builds vision encoder + fresh projector + LM; stage 2 loads the stage-1 checkpoint. `dtype: auto`
    # loads float32 master weights (under DeepSpeed: the autocast dtype; DeepSpeed keeps the float32 copy).
    model, processor = load_model_for_stage(model_args, training_args)
    if model_args.vision_feature_cache:  # the frozen tower's features, read back for images seen before
        from .feature_cache import attach

        attach(model, model_args.vision_feature_cache)

    # `padding_free: true`: the batch's samples in one row, images included. TRL refuses the flag for image data (its
    # collator cannot pack images); LlavaDataCollator packs them, so the trainer is built with it off and it is set
    # back for the training record.
    padding_free, training_args.padding_free = training_args.padding_free, False
    collator = make_collator(processor, model_args, data_args, training_args, padding_free=padding_free)

    if model_args.projector_input_norm == "standardize":  # the projector's input statistics, from training images
        measured = calibrate_projector_input(
            model,
            collator,
            dataset,
            model_args.projector_norm_images,
            device=training_args.device,
            progress=training_args.process_index == 0,
        )
        if training_args.process_index == 0:
            print(f"projector input statistics: {measured}")

    # Training: TRL's SFTTrainer with the assistant-only collator; no dataset preparation, columns kept.
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {"skip_prepare_dataset": True}
    # One push at the end, with llava-hf's model card (the Trainer's own push would upload its generic card).
    push, training_args.push_to_hub = training_args.push_to_hub, False
    trainer = make_trainer_class()(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=processor,
        data_collator=collator,
        projector_lr=model_args.projector_lr,
        has_image=[bool(files) for files in dataset["image_files"]] if data_args.group_by_modality_length else None,
    )
    training_args.padding_free = padding_free
    if data_args.grounding_samples:
        ImageGainCallback(held_out, collator, steps=data_args.grounding_steps).attach(trainer)
    trainer.accelerator.print(f"grounding meter: {held_out.describe()}")
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.accelerator.print(f"data: {report.summary()}; collator: {format_stats(trainer.collator_stats)}")
    save_stage_output(trainer, model_args, data_args, processor)
    if trainer.is_world_process_zero():
        write_training_curves(training_args.output_dir)  # training_curves.png, shown in the model card
    if push and trainer.is_world_process_zero():
        from .hub import push_model

        result = push_model(
            training_args.output_dir,
            training_args.hub_model_id or Path(training_args.output_dir).name,
            private=bool(training_args.hub_private_repo),
            branch=training_args.hub_revision,
            commit_message=f"llava-hf stage {model_args.stage}: {Path(training_args.output_dir).name}",
        )
        trainer.accelerator.print(f"pushed to {result.url}: {result.commit_url}")


def _image_feature(decode: bool):
    from datasets import Image

    return Image(decode=decode)


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> TrlParser:
    """A `TrlParser` over the recipe's dataclasses; `parse_args_and_config()` reads `--config` and the command line.

    With `subparsers` (the `llava-hf` command line's), registers the `train` command on them instead and returns its
    parser: its options are the same, `--config` included, and it runs `main` (`func`)."""
    if subparsers is None:
        return TrlParser(DATACLASS_TYPES, prog=prog)
    # argparse builds every subparser with one class; TRL's CLI gives `add_subparsers` TrlParser as `parser_class`,
    # the `llava-hf` one cannot (its other commands are plain parsers), so the class is swapped for this one only.
    parser_class, subparsers._parser_class = subparsers._parser_class, _TrainParser
    try:
        parser = subparsers.add_parser(
            "train",
            help="train a stage from a recipe YAML (recipes/sft.py as a command)",
            description="Train a LLaVA stage with TRL's SFTTrainer: --config recipe.yaml, any option overrides it. "
            "One process; for several, accelerate launch recipes/sft.py --config recipe.yaml.",
            dataclass_types=DATACLASS_TYPES,
        )
    finally:
        subparsers._parser_class = parser_class
    parser.add_argument("--config", help="recipe YAML (recipes/); the options given here override its values")
    parser.set_defaults(func=_run)
    return parser


class _TrainParser(TrlParser):
    """The `llava-hf train` subparser. The command line's parser hands it its arguments through
    `parse_known_args`, so that is where `--config` is read: the YAML's values become the defaults, as
    `TrlParser.parse_args_and_config` does, before the arguments are parsed."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        if "--config" in args:
            index = args.index("--config")
            if index + 1 >= len(args):
                self.error("--config needs a recipe YAML")
            path = args[index + 1]
            del args[index : index + 2]
            self._apply_config(path)
        return super().parse_known_args(args, namespace)

    def _apply_config(self, path: str) -> None:
        import yaml

        try:
            with open(path) as file:
                config = yaml.safe_load(file)
        except (OSError, yaml.YAMLError) as error:
            self.error(f"--config {path}: {error}")
        except UnicodeDecodeError as error:
            self.error(f"--config {path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8.")
        if not isinstance(config, dict):
            self.error(f"--config {path} must contain a YAML mapping.")
        env = config.pop("env", None) or {}
        if not isinstance(env, dict):
            self.error(f"--config {path}: env must be a mapping of environment variables (NAME: value).")
        for key, value in env.items():  # TRL's `env:` section
            os.environ[key] = str(value)
        unknown = self.set_defaults_with_config(**config)
        if unknown:
            self.error(f"--config {path}: unknown options {', '.join(unknown[::2])}")


def _run(args: argparse.Namespace) -> int:
    """`llava-hf train`: the dataclasses from the parsed options, then `main`."""
    values = vars(args)
    instances = [
        dataclass_type(
            **{f.name: values[f.name] for f in dataclasses.fields(dataclass_type) if f.init and f.name in values}
        )
        for dataclass_type in DATACLASS_TYPES
    ]
    main(*instances)
    return 0
