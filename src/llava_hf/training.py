"""What `recipes/sft.py` needs beyond TRL: recipe arguments, the stage logic, and a trainer that refuses NaN.

Stages (LLaVA, Liu et al. 2023, section 4.2):

- **Stage 1, feature alignment**: a new model from a pretrained vision encoder + a pretrained LM + a fresh projector.
  Only the projector trains, on image-caption pairs in the `plain` format.
- **Stage 2, instruction tuning**: starts from the stage-1 checkpoint. The projector and the LM train (the vision
  tower stays frozen), fully or with LoRA on the LM's linear layers (the projector then trains fully, as a
  `modules_to_save` module, with its own learning rate).
"""

import json
import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)

STAGES = ("1", "2")
OFFLINE_DEFAULT = "offline-default"


@dataclass
class LlavaModelArguments:
    """Which model to train and what trains (TrlParser fills this from the recipe YAML and the command line)."""

    stage: str = field(default="1", metadata={"help": "1 (feature alignment) or 2 (instruction tuning)."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Stage 2: the stage-1 checkpoint to start from."}
    )
    vision_model: str | None = field(
        default=None,
        metadata={
            "help": "Stage 1: vision encoder path / Hub id, or 'offline-default' (EfficientNet-Lite0 + SmolLM2)."
        },
    )
    language_model: str | None = field(default=None, metadata={"help": "Stage 1: causal LM path / Hub id."})
    projector_type: str = field(default="mlp2x_gelu", metadata={"help": "linear (LLaVA v1) or mlp2x_gelu (1.5)."})
    vision_feature_layer: int = field(default=-2, metadata={"help": "ViT hidden state used as image features."})
    image_aspect_ratio: str = field(default="pad", metadata={"help": "pad (LLaVA-1.5) or square (LLaVA v1)."})
    chat_template: str = field(
        default="vicuna_v1", metadata={"help": "The checkpoint's chat template: vicuna_v1, chatml or a .jinja path."}
    )
    attn_implementation: str = field(default="auto", metadata={"help": "auto (FA2 on CUDA if installed, else sdpa)."})
    dtype: str = field(default="auto", metadata={"help": "auto, bfloat16, float16 or float32 for loading."})
    use_lora: bool = field(default=False, metadata={"help": "Stage 2: LoRA on the LM's linear layers."})
    lora_r: int = field(default=128, metadata={"help": "LoRA rank (LLaVA-1.5: 128)."})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha (LLaVA-1.5: 256)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (LLaVA-1.5: 0.05)."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "LoRA targets (default: every linear layer of the LM)."}
    )
    projector_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the projector (LLaVA-1.5 LoRA: 2e-5); default: the LR."}
    )
    merge_lora: bool = field(default=True, metadata={"help": "Also write the merged full checkpoint after LoRA."})
    seed_projector: int = field(default=0, metadata={"help": "Seed of the fresh projector's initialisation."})


@dataclass
class LlavaDataArguments:
    """What to train on."""

    train_files: list[str] = field(default_factory=list, metadata={"help": "LLaVA JSON/JSONL file(s)."})
    image_root: str | None = field(default=None, metadata={"help": "Folder the records' image paths are relative to."})
    truncation: str = field(default="text", metadata={"help": "Over-long samples: 'text' (cut text) or 'skip'."})
    skip_bad_records: bool = field(
        default=False, metadata={"help": "Skip (and count) bad records instead of stopping at the first one."}
    )
    group_by_modality_length: bool = field(
        default=False, metadata={"help": "Batches of image samples and of text-only samples, as LLaVA-1.5."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N samples."})


class RecipeError(ValueError):
    """A recipe that cannot run; raised before any training step."""


def validate_recipe(model_args: LlavaModelArguments, data_args: LlavaDataArguments) -> None:
    """Fail fast, before loading anything heavy, on recipes that cannot be right."""
    if model_args.stage not in STAGES:
        raise RecipeError(f"stage must be one of {list(STAGES)}, got {model_args.stage!r}.")
    if model_args.stage == "1":
        if model_args.model_name_or_path:
            raise RecipeError(
                "stage 1 builds a new model: set vision_model and language_model, not model_name_or_path."
            )
        if model_args.vision_model != OFFLINE_DEFAULT and not (model_args.vision_model and model_args.language_model):
            raise RecipeError("stage 1 needs vision_model and language_model (or vision_model: offline-default).")
        if model_args.use_lora:
            raise RecipeError("stage 1 trains only the projector; use_lora applies to stage 2.")
    else:
        path = model_args.model_name_or_path
        if not path:
            raise RecipeError("stage 2 starts from the stage-1 checkpoint: set model_name_or_path.")
        if not Path(path).exists() and not _looks_like_hub_id(path):
            raise RecipeError(f"stage 2: the stage-1 checkpoint {path!r} does not exist; run stage 1 first.")
        for target in model_args.lora_target_modules or []:
            if "vision" in target or "multi_modal_projector" in target:
                raise RecipeError(
                    f"lora_target_modules entry {target!r} reaches the vision tower or the projector; LoRA targets "
                    "the LM's linear layers only (the projector trains fully, the vision tower stays frozen)."
                )
    if not data_args.train_files:
        raise RecipeError("set train_files: the LLaVA JSON/JSONL file(s) to train on.")
    for path in data_args.train_files:
        if not Path(path).is_file():
            raise RecipeError(f"train file {path!r} not found.")
    if data_args.truncation not in ("text", "skip"):
        raise RecipeError(f"truncation must be 'text' or 'skip', got {data_args.truncation!r}.")


def _looks_like_hub_id(path: str) -> bool:
    return path.count("/") == 1 and not path.startswith((".", "/")) and not Path(path).parent.exists()


def _dtype(name: str) -> torch.dtype | str:
    return name if name == "auto" else getattr(torch, name)


def load_model_for_stage(model_args: LlavaModelArguments):
    """`(model, processor)` with `requires_grad` set for the stage; the vision tower is always frozen."""
    from .builder import build_llava_from_pretrained
    from .chat_templates import TEMPLATE_NAMES

    template = model_args.chat_template
    if template not in TEMPLATE_NAMES and template.endswith(".jinja"):
        template = Path(template).read_text()
    if model_args.stage == "1":
        if model_args.vision_model == OFFLINE_DEFAULT:
            from .backbones import load_offline_default

            model, processor = load_offline_default(
                projector_type=model_args.projector_type,
                chat_template=template,
                image_aspect_ratio=model_args.image_aspect_ratio,
                attn_implementation=model_args.attn_implementation,
                seed=model_args.seed_projector,
            )
        else:
            dtype = None if model_args.dtype == "auto" else _dtype(model_args.dtype)
            model, processor = build_llava_from_pretrained(
                model_args.vision_model,
                model_args.language_model,
                projector_type=model_args.projector_type,
                vision_feature_layer=model_args.vision_feature_layer,
                image_aspect_ratio=model_args.image_aspect_ratio,
                chat_template=template,
                attn_implementation=model_args.attn_implementation,
                dtype=dtype,
                seed=model_args.seed_projector,
            )
    else:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(
            model_args.model_name_or_path,
            dtype=_dtype(model_args.dtype),
            attn_implementation=model_args.attn_implementation,
        )
        processor = AutoProcessor.from_pretrained(model_args.model_name_or_path)
    set_trainable(model, model_args.stage)
    if model_args.stage == "2" and model_args.use_lora:
        model = apply_lora(model, model_args)
    return model, processor


def set_trainable(model: torch.nn.Module, stage: str) -> None:
    """Stage 1: projector only. Stage 2: projector + LM. The vision tower never trains."""
    for name, parameter in model.named_parameters():
        if ".vision_tower." in f".{name}":
            parameter.requires_grad_(False)
        elif "multi_modal_projector" in name:
            parameter.requires_grad_(True)
        else:
            parameter.requires_grad_(stage == "2")
    # LlavaModel.train() keeps a frozen vision tower in eval mode (no dropout, no batch-norm statistic updates).
    model.train(model.training)


def lm_linear_layer_names(model: torch.nn.Module) -> list[str]:
    """Names (last component) of the LM's `nn.Linear` layers, the default LoRA targets."""
    names = set()
    for name, module in model.model.language_model.named_modules():
        if isinstance(module, torch.nn.Linear):
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def apply_lora(model: torch.nn.Module, model_args: LlavaModelArguments):
    from peft import LoraConfig, get_peft_model

    targets = model_args.lora_target_modules or lm_linear_layer_names(model)
    # A regex limited to the LM: a name shared with the vision tower (q_proj, fc1, ...) is never adapted there.
    pattern = r"model\.language_model\..*\.(" + "|".join(targets) + r")$"
    config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=pattern,
        modules_to_save=["multi_modal_projector"],
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    adapted = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and "vision_tower" in n]
    if adapted:
        raise RecipeError(f"LoRA reached the vision tower ({adapted[:3]}); this is a bug, please report it.")
    return peft_model


class ModalityGroupedSampler(Sampler[int]):
    """LLaVA-1.5's `group_by_modality_length`: each batch holds only image samples or only text-only samples, so a
    batch never mixes sequence shapes that waste padding; the order of batches is shuffled (seeded per epoch)."""

    def __init__(self, has_image: list[bool], batch_size: int, seed: int = 0):
        self.has_image, self.batch_size, self.seed, self.epoch = has_image, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.has_image)

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        batches = []
        for flag in (True, False):
            indices = [i for i, has in enumerate(self.has_image) if has == flag]
            rng.shuffle(indices)
            batches += [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        rng.shuffle(batches)
        return iter([i for batch in batches for i in batch])


def make_trainer_class():
    """`LlavaSFTTrainer`: TRL's SFTTrainer + a NaN/inf guard, a projector learning rate and modality grouping."""
    from trl import SFTTrainer

    class LlavaSFTTrainer(SFTTrainer):
        def __init__(self, *args, projector_lr: float | None = None, has_image: list[bool] | None = None, **kwargs):
            self.projector_lr = projector_lr
            self.has_image = has_image
            super().__init__(*args, **kwargs)

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            if not torch.isfinite(loss).all():
                raise FloatingPointError(
                    f"loss is {loss.item()} at step {self.state.global_step + 1}; stopping instead of training on. "
                    "Lower the learning rate, check the data (llava-hf data check), or train in float32/bfloat16."
                )
            return loss

        def _get_train_sampler(self, *args, **kwargs):
            if self.has_image is not None:
                return ModalityGroupedSampler(
                    self.has_image,
                    self.args.per_device_train_batch_size
                    * self.args.world_size
                    * self.args.gradient_accumulation_steps,
                    self.args.seed,
                )
            return super()._get_train_sampler(*args, **kwargs)

        def create_optimizer(self, *args, **kwargs):
            if self.optimizer is None and self.projector_lr is not None:
                decay, projector, rest = self.args.weight_decay, [], []
                for name, parameter in self.model.named_parameters():
                    if parameter.requires_grad:
                        (projector if "multi_modal_projector" in name else rest).append(parameter)
                groups = [
                    {"params": rest, "weight_decay": decay},
                    {"params": projector, "weight_decay": decay, "lr": self.projector_lr},
                ]
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
                self.optimizer = optimizer_cls([g for g in groups if g["params"]], **optimizer_kwargs)
                return self.optimizer
            return super().create_optimizer(*args, **kwargs)

    return LlavaSFTTrainer


def save_stage_output(
    trainer: Any, model_args: LlavaModelArguments, data_args: LlavaDataArguments, processor: Any
) -> Path:
    """Write a complete llava_hf checkpoint (model, processor, remote code, training config) to `output_dir`.

    With LoRA, the adapter goes to `output_dir/adapter` and, when `merge_lora`, the merged model to `output_dir`.
    """
    output_dir = Path(trainer.args.output_dir)
    model = trainer.model
    is_peft = hasattr(model, "merge_and_unload")
    if is_peft:
        model.save_pretrained(output_dir / "adapter")
        if model_args.merge_lora:
            model = model.merge_and_unload()
    if trainer.is_world_process_zero():
        if not (is_peft and not model_args.merge_lora):  # an unmerged LoRA run keeps only its adapter
            trainer.accelerator.unwrap_model(model).save_pretrained(output_dir, safe_serialization=True)
        processor.save_pretrained(output_dir)
        from .modeling_llava import describe_attn_implementation

        config = {
            "stage": model_args.stage,
            "model_args": asdict(model_args),
            "data_args": asdict(data_args),
            "training_args": {k: _jsonable(v) for k, v in trainer.args.to_dict().items()},
            "train_runtime_s": getattr(trainer.state, "train_runtime", None),
            "global_step": trainer.state.global_step,
            "log_history": trainer.state.log_history,
            # For the model card's recipe table (llava_hf.hub.cards): what the run ran on.
            "hardware": describe_hardware(trainer.args),
            # What `attn_implementation` (e.g. "auto") became here, as the loaded language model and tower run it.
            "attn_implementation": describe_attn_implementation(trainer.accelerator.unwrap_model(trainer.model)),
        }
        (output_dir / "llava_hf_training.json").write_text(json.dumps(config, indent=1, default=str))
    return output_dir


def describe_hardware(args: Any) -> dict[str, Any]:
    """The device kind and name and the number of processes of a run (`args`: its TrainingArguments)."""
    import platform

    device = args.device.type
    if device == "cuda":
        name = torch.cuda.get_device_name(args.device)
    else:
        name = platform.processor() or platform.machine()
        try:  # the CPU's model name, where Linux tells it
            with open("/proc/cpuinfo") as cpuinfo:
                name = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        name = f"{name} (CPU, {torch.get_num_threads()} threads)"
    state = getattr(args, "distributed_state", None)  # set up by `args.device` above
    return {
        "device": device,
        "device_name": name,
        "num_processes": args.world_size,
        # DDP on CPU shows as MULTI_CPU, on GPUs MULTI_GPU; FSDP / DEEPSPEED as such; NO for one process.
        "distributed_type": str(state.distributed_type.value) if state is not None else "NO",
        "torch": torch.__version__,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)
