"""What `llava_hf.train` (`llava-hf train`, `recipes/sft.py`) needs beyond TRL: recipe arguments, the stage logic,
and a trainer that refuses NaN.

Stages (LLaVA, Liu et al. 2023, section 4.2):

- **Stage 1, feature alignment**: a new model from a pretrained vision encoder + a pretrained LM + a fresh projector.
  Only the projector trains, on image-caption pairs in the `plain` format.
- **Stage 2, instruction tuning**: starts from the stage-1 checkpoint. The projector and the LM train (the vision
  tower stays frozen), fully or with LoRA on the LM's linear layers (the projector then trains fully, as a
  `modules_to_save` module, with its own learning rate).

Precision: the recipe decides. `bf16` / `fp16` in the YAML choose the autocast (a launcher's `mixed_precision` that
disagrees is overridden, with a warning), and `dtype: auto` loads float32 weights, so that AdamW updates float32
master weights; only under DeepSpeed, whose optimizer keeps its own float32 master copy, does `auto` load in the
autocast dtype.
"""

import json
import logging
import math
import os
import random
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler

from .utils import is_hub_id, parse_dtype

logger = logging.getLogger(__name__)

STAGES = ("1", "2")
OFFLINE_DEFAULT = "offline-default"
DTYPES = ("auto", "float32", "bfloat16", "float16")


class RecipeError(ValueError):
    """A recipe that cannot run; raised before any training step."""


@dataclass
class LlavaModelArguments:
    """Which model to train and what trains (TrlParser fills this from the recipe YAML and the command line).

    The fields TRL's `ModelConfig` also has keep its names (`model_name_or_path`, `dtype`, `attn_implementation`,
    `use_peft`, `lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules`); the defaults are llava-hf's
    (LLaVA-1.5's LoRA). `use_lora` is a deprecated alias of `use_peft`. Values that cannot be right whatever the rest
    of the recipe raise `RecipeError` on construction (`check`); `validate_recipe` checks the recipe as a whole.
    """

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
    vision_feature_global_token: bool = field(
        default=False,
        metadata={
            "help": "Stage 1, timm towers: put the backbone's pooled feature (what its classifier reads) before the "
            "grid tokens, one image-level token (default: off, as LLaVA)."
        },
    )
    vision_feature_pool_size: int | None = field(
        default=None,
        metadata={"help": "Stage 1: average-pool the feature grid to N x N image tokens (default: every patch)."},
    )
    projector_input_norm: str | None = field(
        default=None,
        metadata={
            "help": "Stage 1: 'standardize' standardises the tower's features per channel before the projector, with "
            "statistics measured on projector_norm_images training images (default: none, as LLaVA)."
        },
    )
    projector_norm_images: int = field(
        default=256,
        metadata={"help": "Stage 1: training images whose features give projector_input_norm's statistics."},
    )
    image_aspect_ratio: str = field(default="pad", metadata={"help": "pad (LLaVA-1.5) or square (LLaVA v1)."})
    chat_template: str = field(
        default="vicuna_v1",
        metadata={
            "help": "Stage 1: the checkpoint's chat template: vicuna_v1, llava_v1, chatml, plain or a .jinja path."
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={
            "help": "Stage 1, chatml: the system prompt the chat template adds when a conversation has none; unset: "
            "the LM's own (SmolLM2's), '' for none. vicuna_v1 / llava_v1 keep the paper's."
        },
    )
    vision_feature_cache: str | None = field(
        default=None,
        metadata={
            "help": "A folder where the frozen vision tower's features are stored per image and read back when the "
            "same image is seen again (epochs, stage 1 then stage 2, evaluation); see llava_hf.feature_cache."
        },
    )
    image_processor_backend: str | None = field(
        default=None,
        metadata={
            "help": "Stage 1 with a vision_model path: pil (the original LLaVA's pixels) or torchvision (faster, its "
            "bicubic resize differs slightly); default: transformers' choice (torchvision when installed)."
        },
    )
    attn_implementation: str = field(
        default="auto",
        metadata={
            "help": "auto (on CUDA the first installed FlashAttention the GPU supports, FA4 > FA3 > FA2, for the LM; "
            "the vision tower keeps sdpa; else sdpa), sdpa, eager or flash_attention_2/3/4."
        },
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Dtype the weights load in: auto (float32 master weights; under DeepSpeed the bf16/fp16 of the "
            "recipe, DeepSpeed keeping the float32 copy), float32, bfloat16 (pure bf16 training) or float16 "
            "(DeepSpeed only)."
        },
    )
    use_peft: bool = field(default=False, metadata={"help": "Stage 2: LoRA on the LM's linear layers."})
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
    use_lora: bool | None = field(
        default=None,
        metadata={"help": "Deprecated alias of use_peft (set use_peft instead); unset: use_peft decides."},
    )

    def __post_init__(self):
        if self.use_lora is not None:  # the deprecated alias: its value moves to use_peft
            if self.use_peft and not self.use_lora:
                raise RecipeError(
                    "use_peft: true and use_lora: false disagree; use_lora is an alias: set use_peft only."
                )
            warnings.warn("use_lora is deprecated: use use_peft (TRL's name).", FutureWarning, stacklevel=3)
            self.use_peft, self.use_lora = self.use_lora, None
        self.check()

    def check(self) -> None:
        """Raise `RecipeError` on values that are wrong whatever the rest of the recipe: an unknown stage, dtype or
        backend, an option of the other stage. Whether the recipe is complete (the models or checkpoint to start from
        are set and exist) is `validate_recipe`'s."""
        if self.stage not in STAGES:
            raise RecipeError(f"stage must be one of {list(STAGES)}, got {self.stage!r}.")
        if self.dtype not in DTYPES:
            raise RecipeError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}.")
        if self.image_processor_backend is not None:
            from .processing_llava import IMAGE_PROCESSOR_BACKENDS

            if self.image_processor_backend not in IMAGE_PROCESSOR_BACKENDS:
                raise RecipeError(
                    f"image_processor_backend must be one of {list(IMAGE_PROCESSOR_BACKENDS)} (or unset), got "
                    f"{self.image_processor_backend!r}."
                )
            if self.stage != "1" or self.vision_model == OFFLINE_DEFAULT:
                raise RecipeError(
                    "image_processor_backend applies to stage 1 with a vision_model path or Hub id; stage 2 keeps the "
                    "stage-1 checkpoint's image processor (and the backend it recorded), and the offline default "
                    "builds its own."
                )
        if self.system_prompt is not None and (self.stage != "1" or self.chat_template != "chatml"):
            raise RecipeError(
                "system_prompt applies to stage 1 with chat_template: chatml, which writes the checkpoint's template; "
                "vicuna_v1 / llava_v1 keep the paper's system prompt, and stage 2 keeps the stage-1 checkpoint's."
            )
        # The image tokens' layout is fixed when stage 1 builds the model; stage 2 reads it from the checkpoint.
        for name, unset in (("vision_feature_pool_size", None), ("vision_feature_global_token", False)):
            if getattr(self, name) != unset and self.stage != "1":
                raise RecipeError(
                    f"{name} applies to stage 1, which builds the model; stage 2 keeps the stage-1 checkpoint's (its "
                    "config.json)."
                )
        if self.projector_input_norm is not None:
            if self.stage != "1":
                raise RecipeError(
                    "projector_input_norm applies to stage 1, which builds the projector and measures its statistics; "
                    "stage 2 keeps the stage-1 checkpoint's (its config.json and the projector's feature_mean / "
                    "feature_std)."
                )
            if self.projector_norm_images < 2:
                raise RecipeError(f"projector_norm_images must be at least 2, got {self.projector_norm_images}.")
        if self.stage == "1":
            if self.model_name_or_path:
                raise RecipeError(
                    "stage 1 builds a new model: set vision_model and language_model, not model_name_or_path."
                )
            if self.use_peft:
                raise RecipeError("stage 1 trains only the projector; use_peft (LoRA) applies to stage 2.")
        for target in self.lora_target_modules or []:
            if "vision" in target or "multi_modal_projector" in target:
                raise RecipeError(
                    f"lora_target_modules entry {target!r} reaches the vision tower or the projector; LoRA targets "
                    "the LM's linear layers only (the projector trains fully, the vision tower stays frozen)."
                )


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
    grounding_samples: int = field(
        default=16,
        metadata={
            "help": "Held-out rows with an image for the grounding meter (image_gain in the logs; llava_hf.grounding); "
            "0 turns it off."
        },
    )
    grounding_files: list[str] = field(
        default_factory=list,
        metadata={
            "help": "LLaVA JSON/JSONL file(s) the meter's rows come from (default: the training data's last rows with "
            "an image, which are then not trained on)."
        },
    )
    grounding_steps: int | None = field(
        default=None, metadata={"help": "Measure every N optimizer steps, at a training log (default: logging_steps)."}
    )

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise `RecipeError` on values that are wrong whatever the rest of the recipe (the files are
        `validate_recipe`'s). A single file given as a string (`train_files: data.json`) is read as a list of one."""
        for name in ("train_files", "grounding_files"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, [getattr(self, name)])
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise RecipeError(f"max_train_samples must be at least 1 (or unset: all), got {self.max_train_samples}.")
        if self.truncation not in ("text", "skip"):
            raise RecipeError(f"truncation must be 'text' or 'skip', got {self.truncation!r}.")
        if self.grounding_samples < 0:
            raise RecipeError(f"grounding_samples must be >= 0 (0: no grounding meter), got {self.grounding_samples}.")
        if self.grounding_steps is not None and self.grounding_steps < 1:
            raise RecipeError(f"grounding_steps must be >= 1 (or unset: logging_steps), got {self.grounding_steps}.")


def validate_recipe(
    model_args: LlavaModelArguments, data_args: LlavaDataArguments, training_args: Any | None = None
) -> None:
    """Fail fast, before loading anything heavy, on recipes that cannot be right (`training_args`: the SFTConfig,
    for the checks that depend on how the run is launched). The dataclasses check their own values on construction
    (`check`, again here for fields changed since); this adds completeness, the files, and the checks across them."""
    model_args.check()
    data_args.check()
    if (
        model_args.projector_input_norm is not None
        and training_args is not None
        and uses_deepspeed(training_args)
        and training_args.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage") == 3
    ):
        raise RecipeError(
            "projector_input_norm measures the tower's features before training, which needs the whole tower in "
            "memory; under ZeRO-3 its weights are partitioned. Use ZeRO-2 (recipes/accelerate/zero2.yaml) or DDP for "
            "stage 1."
        )
    if model_args.vision_feature_cache and training_args is not None:
        zero3 = uses_deepspeed(training_args) and (
            training_args.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage") == 3
        )
        if zero3 or training_args.fsdp:
            # A sharded tower is not whole on any process (its weights are part of the cache key), and a rank that
            # reads its features skips the all-gathers the other ranks run: the collectives would not match.
            raise RecipeError(
                "vision_feature_cache needs the whole vision tower on every process; under ZeRO-3 or FSDP it is "
                "sharded. Unset vision_feature_cache, or launch with DDP or ZeRO-2."
            )
    if training_args is not None and model_args.dtype == "float16" and not uses_deepspeed(training_args):
        raise RecipeError(FLOAT16_WITHOUT_MASTER_COPY.format(what="dtype: float16 loads the trainable parameters"))
    if training_args is not None and uses_deepspeed(training_args):
        zero = training_args.deepspeed_plugin.deepspeed_config.get("zero_optimization", {})
        if zero.get("stage") == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save"):
            raise RecipeError(
                "ZeRO-3 without stage3_gather_16bit_weights_on_model_save cannot write the trained weights whole at "
                "the end (only DeepSpeed's partitioned checkpoint); set zero3_save_16bit_model: true in the "
                "accelerate config (recipes/accelerate/zero3.yaml does), or the key in the DeepSpeed JSON."
            )
    if model_args.stage == "1":
        if model_args.vision_model != OFFLINE_DEFAULT and not (model_args.vision_model and model_args.language_model):
            raise RecipeError("stage 1 needs vision_model and language_model (or vision_model: offline-default).")
    else:
        path = model_args.model_name_or_path
        if not path:
            raise RecipeError("stage 2 starts from the stage-1 checkpoint: set model_name_or_path.")
        if not Path(path).exists() and not _looks_like_hub_id(path):
            raise RecipeError(f"stage 2: the stage-1 checkpoint {path!r} does not exist; run stage 1 first.")
    if not data_args.train_files:
        raise RecipeError("set train_files: the LLaVA JSON/JSONL file(s) to train on.")
    for kind, paths in (("train", data_args.train_files), ("grounding", data_args.grounding_files)):
        for path in paths:
            if Path(path).is_dir():
                raise RecipeError(f"{kind} file {path!r} is a folder; give the LLaVA JSON/JSONL file(s) in it.")
            if not Path(path).is_file():
                raise RecipeError(f"{kind} file {path!r} not found.")
    max_length = getattr(training_args, "max_length", None)
    if max_length is not None and max_length < 1:
        raise RecipeError(f"max_length must be a positive number of tokens (or null: no limit), got {max_length}.")


def _looks_like_hub_id(path: str) -> bool:
    # A `namespace/name` whose namespace is not a local folder either (`outputs/stage1` before stage 1 ran is a path).
    return is_hub_id(path) and not Path(path).parent.exists()


FLOAT16_WITHOUT_MASTER_COPY = (
    "{what} in float16, and without DeepSpeed nothing keeps a float32 master copy: AdamW's updates round away and "
    "activations overflow within steps. Use dtype: auto (float32 master weights) with fp16: true or bf16: true for "
    "mixed precision, or launch under DeepSpeed (recipes/accelerate/zero2.yaml or zero3.yaml)."
)


def uses_deepspeed(training_args: Any) -> bool:
    """Whether the run trains under DeepSpeed (a `deepspeed` config in the recipe or an accelerate DeepSpeed launch)."""
    return getattr(training_args, "deepspeed_plugin", None) is not None


def resolve_dtype(model_args: LlavaModelArguments, training_args: Any | None = None) -> torch.dtype:
    """The dtype the weights load in for training.

    `auto` is float32: the optimizer then updates float32 master weights while `bf16` / `fp16` autocast the compute
    (a checkpoint stored in float16, like Vicuna's, is upcast). Under DeepSpeed, which casts the model to the
    autocast dtype itself and keeps float32 master weights in its optimizer, `auto` loads in that dtype instead.
    """
    if model_args.dtype != "auto":
        return parse_dtype(model_args.dtype)
    if training_args is not None and uses_deepspeed(training_args):
        return torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32
    return torch.float32


def check_trainable_dtypes(model: torch.nn.Module, training_args: Any) -> None:
    """Refuse float16 trainable parameters without DeepSpeed's float32 master copy (a checkpoint or backbone that
    forced float16 on a module)."""
    if uses_deepspeed(training_args):
        return
    half = [name for name, p in model.named_parameters() if p.requires_grad and p.dtype == torch.float16]
    if half:
        raise RecipeError(
            FLOAT16_WITHOUT_MASTER_COPY.format(what=f"{len(half)} trainable parameters ({half[0]}, ...) are")
        )


def resolve_precision(training_args: Any) -> str:
    """Make the recipe's `bf16` / `fp16` the mixed precision that runs, and return it ("bf16", "fp16" or "no").

    `accelerate launch` passes its config's `mixed_precision` as ACCELERATE_MIXED_PRECISION, which TrainingArguments
    uses whenever the recipe sets neither `bf16` nor `fp16`: a float32 recipe would silently train under bf16
    autocast. Here the recipe wins, with a warning naming both when the launcher asked for a mixed precision ("no",
    what the setups in recipes/accelerate/ say, leaves the choice to the recipe).
    """
    recipe = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "no"
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launcher != recipe:
        if launcher != "no" and training_args.process_index == 0:
            logger.warning(
                "The launcher asks for mixed_precision %r (ACCELERATE_MIXED_PRECISION, from the accelerate config or "
                "--mixed_precision) but the recipe says bf16: %s, fp16: %s; the recipe wins: training runs with "
                "mixed_precision %r. Set bf16 or fp16 in the recipe (or --bf16 true) to change it.",
                launcher,
                training_args.bf16,
                training_args.fp16,
                recipe,
            )
        os.environ["ACCELERATE_MIXED_PRECISION"] = recipe
    training_args.mixed_precision = recipe  # what the Trainer's Accelerator is built with
    if training_args.deepspeed_plugin is not None:  # its config was filled from the environment at parse time
        config = training_args.deepspeed_plugin.deepspeed_config
        for key in ("bf16", "fp16"):
            config.setdefault(key, {})["enabled"] = key == recipe
    return recipe


def load_model_for_stage(model_args: LlavaModelArguments, training_args: Any | None = None):
    """`(model, processor)` with `requires_grad` set for the stage; the vision tower is always frozen.

    The weights load in `resolve_dtype(model_args, training_args)`; without `training_args`, as for one process
    without DeepSpeed.
    """
    from .builder import build_llava_from_pretrained

    dtype = resolve_dtype(model_args, training_args)

    # A name, a .jinja file or Jinja source: the builder reads it (llava_hf.chat_templates.resolve_chat_template).
    template = model_args.chat_template
    if model_args.stage == "1":
        if model_args.vision_model == OFFLINE_DEFAULT:
            from .backbones import load_offline_default

            model, processor = load_offline_default(
                projector_type=model_args.projector_type,
                chat_template=template,
                system_prompt=model_args.system_prompt,
                image_aspect_ratio=model_args.image_aspect_ratio,
                vision_feature_pool_size=model_args.vision_feature_pool_size,
                vision_feature_global_token=model_args.vision_feature_global_token,
                projector_input_norm=model_args.projector_input_norm,
                attn_implementation=model_args.attn_implementation,
                dtype=dtype,
                seed=model_args.seed_projector,
            )
        else:
            model, processor = build_llava_from_pretrained(
                model_args.vision_model,
                model_args.language_model,
                projector_type=model_args.projector_type,
                vision_feature_layer=model_args.vision_feature_layer,
                vision_feature_pool_size=model_args.vision_feature_pool_size,
                vision_feature_global_token=model_args.vision_feature_global_token,
                projector_input_norm=model_args.projector_input_norm,
                image_aspect_ratio=model_args.image_aspect_ratio,
                chat_template=template,
                system_prompt=model_args.system_prompt,
                image_processor_backend=model_args.image_processor_backend,
                attn_implementation=model_args.attn_implementation,
                dtype=dtype,
                seed=model_args.seed_projector,
            )
    else:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(
            model_args.model_name_or_path, dtype=dtype, attn_implementation=model_args.attn_implementation
        )
        processor = AutoProcessor.from_pretrained(model_args.model_name_or_path)
    set_trainable(model, model_args.stage)
    if model_args.stage == "2" and model_args.use_peft:
        model = apply_lora(model, model_args)
    if training_args is not None:
        check_trainable_dtypes(model, training_args)
    return model, processor


@torch.no_grad()
def calibrate_projector_input(
    model: torch.nn.Module,
    collator: Any,
    dataset: Any,
    num_images: int = 256,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure the per-channel mean and standard deviation of the frozen tower's features on the first `num_images`
    images of `dataset` and store them in the projector (`projector_input_norm="standardize"`).

    The images go through `collator` (the training preprocessing; its counts are left untouched) and the tower as
    training will run them, in the model's dtype, on `device` (default: where the tower is). Returns what was
    measured (rows, feature tokens, channels), for the log.
    """
    from dataclasses import replace

    from tqdm.auto import tqdm

    llava = model.model  # LlavaForConditionalGeneration -> LlavaModel (stage 1: no adapter wraps it yet)
    projector = llava.multi_modal_projector
    if not getattr(projector, "standardize", False):
        raise ValueError(
            'calibrate_projector_input needs a model built with projector_input_norm="standardize" (the projector '
            "has no feature_mean / feature_std to fill)."
        )
    if any(parameter.device.type == "meta" for parameter in llava.vision_tower.parameters()):
        raise ValueError(
            "projector_input_norm: the vision tower's weights are not loaded in this process (FSDP with "
            "fsdp_cpu_ram_efficient_loading loads them on the first process only); set "
            "fsdp_cpu_ram_efficient_loading: false for stage 1, or use DDP."
        )
    rows = []
    for row in dataset:
        if row.get("images"):
            rows.append(row)
        if len(rows) == num_images:
            break
    if len(rows) < 2:
        raise ValueError(
            f"projector_input_norm needs at least 2 training images to measure feature statistics; the dataset has "
            f"{len(rows)}."
        )
    if device is not None:
        llava.vision_tower.to(device)
    device = next(llava.vision_tower.parameters()).device
    collate = replace(collator, stats=collator.stats.__class__(), stats_in_batch=False)
    was_training = llava.vision_tower.training
    llava.vision_tower.eval()  # as training runs the frozen tower: no dropout, no batch-norm statistics updated
    total = total_sq = None
    count = 0
    for start in tqdm(range(0, len(rows), batch_size), desc="projector input statistics", disable=not progress):
        batch = collate(rows[start : start + batch_size])
        pixel_values = batch["pixel_values"].to(device=device, dtype=llava.vision_tower.dtype)
        features = llava._vision_features(pixel_values).double().flatten(0, -2)  # (images * tokens, channels)
        total = features.sum(0) if total is None else total + features.sum(0)
        total_sq = features.square().sum(0) if total_sq is None else total_sq + features.square().sum(0)
        count += features.shape[0]
    llava.vision_tower.train(was_training)
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    varying = std[std > 0]
    if varying.numel() == 0:
        raise ValueError(
            f"projector_input_norm: no feature channel varies over the {len(rows)} images measured ({count} feature "
            "tokens); the images are identical or too few: raise projector_norm_images."
        )
    # A channel constant on these images (a dead ReLU unit) gets the typical channel's scale rather than ~0, which
    # would turn the first image where it fires into an outlier of thousands of standard deviations.
    std = torch.where(std > 0, std, varying.median())
    projector.set_feature_statistics(mean.float().to(projector.feature_mean), std.float().to(projector.feature_std))
    return {"rows": len(rows), "feature_tokens": count, "channels": int(mean.shape[0])}


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


# Supervised positions scored per block by the dense CPU head: the block's float32 log-softmax is
# `_DENSE_HEAD_TOKENS x vocab` (200 MB for a 49,152-word vocabulary); larger batches are checkpointed block by block.
_DENSE_HEAD_TOKENS = 1024


def _dense_logprob_block(hidden, weight, bias, targets, temperature, softcap, logit_scale, outputs):
    logits = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    log_p = (logits / temperature).log_softmax(-1)
    logprobs = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    # The extras feed TRL's metrics (entropy, token accuracy): computed without gradient.
    with torch.no_grad():
        z, p = logits.detach() / temperature, log_p.detach().exp()
        entropy = -(p * log_p.detach()).sum(-1) if "entropy" in outputs else None
        log_sum_sq = torch.logsumexp(2 * log_p.detach(), -1) if "log_sum_sq_probs" in outputs else None
        mean_logits = z.mean(-1) if "mean_logits" in outputs else None
        # `argmax` semantics as TRL's kernel: a tie with an earlier token is not a top-1 prediction.
        is_top1 = (z.argmax(-1) == targets) if "is_top1" in outputs else None
    return logprobs, entropy, log_sum_sq, mean_logits, is_top1


class _DenseLogProb:
    """TRL's `ChunkedLogProbFunction` contract for CPU tensors: the labelled rows through the LM head in one matmul
    (in the autocast dtype, as TRL's kernel) and a float32 log-softmax, differentiated by autograd.

    On a CPU, TRL's kernel folds each `[tokens, 32,768]` tile with a dozen elementwise torch ops forward and again
    backward; the dense form is 3-4.5x faster for the head of a 49,152-word vocabulary at 80-400 labelled tokens
    (bench/RESULTS.md). Only `log_probs` carries a gradient; the other outputs (entropy included, which TRL's kernel
    can differentiate) are metrics here, as in SFT, the one loss this is swapped in for. Other devices keep TRL's
    kernel (`fallback`).
    """

    fallback: Any = None

    @classmethod
    def apply(
        cls,
        hidden,
        weight,
        bias,
        targets,
        temperature,
        chunk_size,
        final_logit_softcapping=None,
        logit_scale=1.0,
        outputs=("entropy", "log_sum_sq_probs", "mean_logits", "is_top1"),
    ):
        if hidden.device.type != "cpu":
            return cls.fallback.apply(
                hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping, logit_scale, outputs
            )
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
        weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
        args = (temperature, final_logit_softcapping, logit_scale, outputs)
        blocks = []
        for start in range(0, max(hidden.shape[0], 1), _DENSE_HEAD_TOKENS):  # no labelled row: one empty block
            block = (hidden[start : start + _DENSE_HEAD_TOKENS].to(dtype), weight, bias)
            block_targets = targets[start : start + _DENSE_HEAD_TOKENS]
            if hidden.shape[0] > _DENSE_HEAD_TOKENS and torch.is_grad_enabled():
                # Keep one block's log-softmax alive at a time: recomputed in the backward.
                from torch.utils.checkpoint import checkpoint

                result = checkpoint(_dense_logprob_block, *block, block_targets, *args, use_reentrant=False)
            else:
                result = _dense_logprob_block(*block, block_targets, *args)
            blocks.append(result)
        return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*blocks))


@contextmanager
def _compact_fused_lm_head():
    """Inside, TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`) scores only the labelled positions on CPUs
    too, as it does on Triton devices, and computes them with `_DenseLogProb` there (same loss, metrics and
    gradients: tested). Other devices keep TRL's choice (compilers such as Neuron's want fixed shapes) and kernel.
    `_use_triton` is read there only to decide whether to compact; the kernel is chosen in `trl.kernels` from its
    own copy. Without the names (another TRL), nothing changes."""
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    kernel = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if original is None or kernel is None or kernel is _DenseLogProb:  # absent, or already swapped (a nested call)
        yield
        return
    _DenseLogProb.fallback = kernel
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    trl_utils._ChunkedLogProbFunction = _DenseLogProb
    try:
        yield
    finally:
        trl_utils._use_triton = original
        trl_utils._ChunkedLogProbFunction = kernel


def make_trainer_class():
    """`LlavaSFTTrainer`: TRL's SFTTrainer + a NaN/inf guard, a projector learning rate, modality grouping, the
    collator's counts summed in the main process, and saving that keeps llava_hf's remote code under FSDP2."""
    from trl import SFTTrainer

    from .data.collator import BATCH_STATS_KEY, STAT_KEYS

    class LlavaSFTTrainer(SFTTrainer):
        def __init__(self, *args, projector_lr: float | None = None, has_image: list[bool] | None = None, **kwargs):
            self.projector_lr = projector_lr
            self.has_image = has_image
            # The collator's counts (`stats_in_batch`), summed over steps and processes: the whole run, and since
            # the last log.
            self.collator_stats: Counter = Counter()
            self._collator_stats_unlogged: Counter = Counter()
            super().__init__(*args, **kwargs)

        def training_step(self, model, inputs, num_items_in_batch=None):
            counts = inputs.pop(BATCH_STATS_KEY, None)  # not a forward argument
            if counts is not None:
                # Every process runs each step, so this small all-reduce cannot leave one process waiting.
                counts = self.accelerator.reduce(counts.to(self.accelerator.device), reduction="sum")
                step = Counter(dict(zip(STAT_KEYS, counts.tolist())))
                self.collator_stats.update(step)
                self._collator_stats_unlogged.update(step)
            loss = super().training_step(model, inputs, num_items_in_batch)
            if not torch.isfinite(loss).all():
                raise FloatingPointError(
                    f"loss is {loss.item()} at step {self.state.global_step + 1}; stopping instead of training on. "
                    "Lower the learning rate, check the data (llava-hf data check), or train in float32/bfloat16."
                )
            return loss

        def compute_loss(self, model, inputs, *args, **kwargs):
            # TRL's fused LM head scores only the supervised positions where Triton runs (CUDA, XPU) and every
            # position elsewhere, so that Neuron-style compilers see fixed shapes; on a CPU it does so in float32,
            # ~45% of a stage-2 step (49,152-word head over every prompt token; bench/RESULTS.md) for the same loss.
            # Score the supervised positions on CPUs too, with a dense head there (faster than TRL's torch tiles).
            with _compact_fused_lm_head():
                return super().compute_loss(model, inputs, *args, **kwargs)

        def prediction_step(self, model, inputs, *args, **kwargs):
            inputs.pop(BATCH_STATS_KEY, None)
            return super().prediction_step(model, inputs, *args, **kwargs)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            # A training log (it has the loss): with it, what the collator cut since the last one.
            if "loss" in logs and self._collator_stats_unlogged:
                counts = self._collator_stats_unlogged
                logs["collator/truncated"] = counts["truncated"]
                logs["collator/skipped"] = sum(v for k, v in counts.items() if k.startswith("skipped"))
                counts.clear()
            super().log(logs, start_time)

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            # FSDP2 turns the model's class into a generated `FSDP<Class>` defined in torch; `save_pretrained` would
            # then copy torch's FSDP files as the checkpoint's remote code and name that class in `auto_map`. Save
            # as the model's own class (the state dict is already gathered).
            model = self.accelerator.unwrap_model(self.model)
            with _own_class(model):
                super()._save(output_dir, state_dict=state_dict)

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


@contextmanager
def _own_class(model: torch.nn.Module):
    """Within the block, an FSDP2-sharded model has its own class back (`FSDPLlavaForConditionalGeneration` ->
    `LlavaForConditionalGeneration`); other models are left alone."""
    from torch.distributed.fsdp import FSDPModule

    cls = type(model)
    if not isinstance(model, FSDPModule):
        yield
        return
    model.__class__ = next(base for base in cls.__bases__ if base is not FSDPModule)
    try:
        yield
    finally:
        model.__class__ = cls


def save_stage_output(
    trainer: Any, model_args: LlavaModelArguments, data_args: LlavaDataArguments, processor: Any
) -> Path:
    """Write a complete llava_hf checkpoint (model, processor, remote code, training record) to `output_dir`.

    With LoRA, the adapter goes to `output_dir/adapter` and, when `merge_lora`, the merged model to `output_dir`.

    Every process must call this. The weights are saved through `trainer.save_model`, which gathers ZeRO-3
    partitions (16-bit, `stage3_gather_16bit_weights_on_model_save`) and FSDP shards, collectives every process joins,
    and writes once, on the main process: the weights, the config with `auto_map` and the modeling code (llava_hf's
    classes are registered for the Auto classes, so `save_pretrained` copies their files). The LoRA merge, the
    processor and the record are written on the main process only; the merge reloads the saved adapter onto a fresh
    copy of the base model, so it never sees partitioned or sharded weights.
    """
    output_dir = Path(trainer.args.output_dir)
    is_peft = hasattr(trainer.accelerator.unwrap_model(trainer.model), "merge_and_unload")
    fsdp_plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if fsdp_plugin is not None:  # the Trainer saves no weights at all from a sharded state dict
        fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    weights_dir = output_dir / "adapter" if is_peft else output_dir
    trainer.save_model(str(weights_dir))  # with the processor, when it is the trainer's `processing_class`
    if trainer.args.should_save:
        if is_peft and model_args.merge_lora:
            merge_lora_adapter(
                model_args.model_name_or_path, weights_dir, output_dir, resolve_dtype(model_args, trainer.args)
            )
        if is_peft or getattr(trainer, "processing_class", None) is not processor:
            processor.save_pretrained(output_dir)
        from .feature_cache import installed_cache
        from .grounding import grounding_record
        from .modeling_llava import describe_attn_implementation
        from .training_record import write_training_record

        cache = installed_cache(trainer.model)

        record = {
            "stage": model_args.stage,
            # `use_lora` keeps use_peft's value under its old name too: records and model cards read it.
            "model_args": asdict(model_args) | {"use_lora": model_args.use_peft},
            "data_args": asdict(data_args),
            "training_args": {k: _jsonable(v) for k, v in trainer.args.to_dict().items()},
            # The Trainer logs `train_runtime` once, at the end of `train()`; its state keeps no copy.
            "train_runtime_s": next(
                (entry["train_runtime"] for entry in reversed(trainer.state.log_history) if "train_runtime" in entry),
                None,
            ),
            "global_step": trainer.state.global_step,
            "log_history": trainer.state.log_history,
            # For the model card's recipe table (llava_hf.hub.cards): what the run ran on.
            "hardware": describe_hardware(trainer.args),
            # What `attn_implementation` (e.g. "auto") became here, as the loaded language model and tower run it.
            "attn_implementation": describe_attn_implementation(trainer.accelerator.unwrap_model(trainer.model)),
            "precision": describe_precision(trainer),
            # Summed over dataloader workers and processes (LlavaSFTTrainer); None from a trainer that does not count.
            "collator": dict(trainer.collator_stats) if hasattr(trainer, "collator_stats") else None,
            # The grounding meter's rows and first / last image_gain (llava_hf.grounding); None without the meter.
            "grounding": grounding_record(trainer),
            # Feature-cache reads and writes of the main process (llava_hf.feature_cache); None without the cache.
            "vision_feature_cache": None if cache is None else cache.stats(),
        }
        write_training_record(output_dir, record)
    trainer.accelerator.wait_for_everyone()  # no process returns before the checkpoint is complete
    return output_dir


def merge_lora_adapter(base: str, adapter_dir: Path, output_dir: Path, dtype: torch.dtype) -> None:
    """Load `base` (the stage-1 checkpoint) and the saved adapter in float32 in this process alone, merge, and save
    the merged model in `dtype` to `output_dir`."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    with _without_zero3_init():  # one process loading alone must not partition (and wait for the others)
        model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model.to(dtype).save_pretrained(output_dir)


@contextmanager
def _without_zero3_init():
    """Within the block, `from_pretrained` loads whole weights even in a ZeRO-3 run (transformers partitions every
    weight it loads while a ZeRO-3 config is registered)."""
    from transformers.integrations import deepspeed

    registered = deepspeed._hf_deepspeed_config_weak_ref  # no public getter; restored below
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        deepspeed._hf_deepspeed_config_weak_ref = registered


def describe_precision(trainer: Any) -> dict[str, Any]:
    """The precision that ran: the mixed precision of the Trainer's accelerator ("no", "bf16", "fp16"; DeepSpeed's
    own under DeepSpeed) and the dtypes the trainable and frozen parameters were kept in."""
    dtypes: dict[bool, set[str]] = {True: set(), False: set()}
    for parameter in trainer.accelerator.unwrap_model(trainer.model).parameters():
        dtypes[parameter.requires_grad].add(str(parameter.dtype).removeprefix("torch."))
    deepspeed = uses_deepspeed(trainer.args)
    return {
        "mixed_precision": trainer.accelerator.state.mixed_precision,
        "trainable_parameters": sorted(dtypes[True]),
        "frozen_parameters": sorted(dtypes[False]),
        # What the optimizer updates: DeepSpeed keeps float32 copies of 16-bit parameters; otherwise the parameters.
        "master_weights": ["float32"] if deepspeed else sorted(dtypes[True]),
        "deepspeed": deepspeed,
    }


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
