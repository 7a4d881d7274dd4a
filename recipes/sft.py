# /// script
# dependencies = ["llava-hf[train]"]
# ///
"""LLaVA's two-stage recipe with TRL's SFTTrainer.

Stage 1 (feature alignment, only the projector trains) and stage 2 (instruction tuning, projector + LM, fully or
with LoRA) differ only in their YAML. Examples:

    # the offline quickstart's stages, on 2 CPU cores (bf16 autocast on a CPU needs --use_cpu true)
    accelerate launch --config_file recipes/accelerate/cpu.yaml recipes/sft.py --config recipes/offline/stage1.yaml --use_cpu true
    accelerate launch --config_file recipes/accelerate/cpu.yaml recipes/sft.py --config recipes/offline/stage2.yaml --use_cpu true

    # LLaVA-1.5-7B on 8 GPUs (ZeRO-3)
    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/sft.py --config recipes/llava-v1.5/stage1.yaml
    accelerate launch --config_file recipes/accelerate/zero3.yaml recipes/sft.py --config recipes/llava-v1.5/stage2.yaml

Any YAML value can be overridden on the command line (`--learning_rate 1e-4`). With `push_to_hub: true` the finished
checkpoint is pushed with its model card (`llava-hf push`) to `hub_model_id` (default: the output folder's name).
"""

from pathlib import Path

from trl import SFTConfig, TrlParser

from llava_hf.training import LlavaDataArguments, LlavaModelArguments


def main(model_args: LlavaModelArguments, data_args: LlavaDataArguments, training_args: SFTConfig) -> None:
    from llava_hf.chat_templates import get_chat_template
    from llava_hf.data import LlavaDataCollator, load_llava_dataset
    from llava_hf.data.collator import format_stats
    from llava_hf.grounding import ImageGainCallback, hold_out_rows, write_training_curves
    from llava_hf.training import (
        calibrate_projector_input,
        load_model_for_stage,
        make_trainer_class,
        resolve_precision,
        save_stage_output,
        validate_recipe,
    )

    validate_recipe(model_args, data_args, training_args)
    resolve_precision(training_args)  # the recipe's bf16/fp16 run, whatever the launcher's mixed_precision says

    # Model: stage 1 builds vision encoder + fresh projector + LM; stage 2 loads the stage-1 checkpoint. `dtype: auto`
    # loads float32 master weights (under DeepSpeed: the autocast dtype; DeepSpeed keeps the float32 copy).
    model, processor = load_model_for_stage(model_args, training_args)

    # Dataset: LLaVA JSON -> TRL's conversational format (stage 1 keeps the caption only: `plain`).
    stage = "plain" if model_args.stage == "1" else "chat"
    dataset, report = load_llava_dataset(
        data_args.train_files,
        data_args.image_root,
        stage=stage,
        on_error="skip" if data_args.skip_bad_records else "raise",
    )
    # The grounding meter's rows (image_gain in the logs): grounding_files, or the last rows with an image, held out.
    dataset, held_out = hold_out_rows(dataset, data_args, stage, "skip" if data_args.skip_bad_records else "raise")
    if data_args.max_train_samples:
        dataset = dataset.select(range(min(data_args.max_train_samples, len(dataset))))
    # Images are opened by the collator (errors name the sample), not decoded by datasets.
    dataset = dataset.cast_column("images", dataset.features["images"].__class__(_image_feature(decode=False)))
    # `padding_free: true`: the batch's samples in one row, images included. TRL refuses the flag for image data (its
    # collator cannot pack images); LlavaDataCollator packs them, so the trainer is built with it off and it is set
    # back for the training record.
    padding_free, training_args.padding_free = training_args.padding_free, False
    collator = LlavaDataCollator(
        processor,
        max_length=training_args.max_length,
        truncation=data_args.truncation,
        chat_template=get_chat_template("plain") if model_args.stage == "1" else None,
        stats_in_batch=True,  # counted in dataloader workers, summed by the trainer
        padding_free=padding_free,
    )

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
        from llava_hf.hub import push_model

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


if __name__ == "__main__":
    parser = TrlParser((LlavaModelArguments, LlavaDataArguments, SFTConfig))
    model_args, data_args, training_args = parser.parse_args_and_config()
    main(model_args, data_args, training_args)
