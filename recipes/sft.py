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

The training itself is the library's `llava_hf.train.main` (also `llava-hf train --config ...`, one process); this
script is what `accelerate launch` starts in each process. Any YAML value can be overridden on the command line
(`--learning_rate 1e-4`). With `push_to_hub: true` the finished checkpoint is pushed with its model card
(`llava-hf push`) to `hub_model_id` (default: the output folder's name). `use_lora` is a deprecated alias of TRL's
`use_peft`.
"""

from llava_hf.train import main, make_parser

if __name__ == "__main__":
    parser = make_parser()  # a TrlParser over LlavaModelArguments, LlavaDataArguments and TRL's SFTConfig
    model_args, data_args, training_args = parser.parse_args_and_config()
    main(model_args, data_args, training_args)
