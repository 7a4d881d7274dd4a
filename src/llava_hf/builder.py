"""The stage-1 starting point: a pretrained vision encoder + a pretrained causal LM + a fresh projector."""

import logging
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionModel,
    PreTrainedModel,
    SiglipVisionModel,
)

from .chat_templates import resolve_chat_template
from .configuration_llava import LlavaConfig
from .modeling_llava import LlavaForConditionalGeneration, LlavaMultiModalProjector, resolve_attn_implementation
from .processing_llava import LlavaHfProcessor

logger = logging.getLogger(__name__)

# Full dual-encoder checkpoints (CLIP, SigLIP) hold a text tower we don't need: keep the vision half.
_VISION_HALVES = {"clip": CLIPVisionModel, "siglip": SiglipVisionModel}


def _load_vision(vision_model: str | PreTrainedModel, dtype: torch.dtype | None) -> PreTrainedModel:
    if isinstance(vision_model, PreTrainedModel):
        return vision_model
    config = AutoConfig.from_pretrained(vision_model)
    model_class = _VISION_HALVES.get(config.model_type, AutoModel)
    return model_class.from_pretrained(vision_model, dtype=dtype)


def build_llava_from_pretrained(
    vision_model: str | PreTrainedModel,
    language_model: str | PreTrainedModel,
    *,
    tokenizer: Any = None,
    image_processor: Any = None,
    image_processor_backend: str | None = None,
    projector_type: str = "mlp2x_gelu",
    vision_feature_layer: int | list[int] = -2,
    vision_feature_select_strategy: str = "default",
    vision_feature_pool_size: int | None = None,
    vision_feature_global_token: bool = False,
    projector_input_norm: str | None = None,
    image_aspect_ratio: str = "pad",
    chat_template: str | None = "vicuna_v1",
    system_prompt: str | None = None,
    image_token: str = "<image>",
    attn_implementation: str | None = "auto",
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> tuple[LlavaForConditionalGeneration, LlavaHfProcessor]:
    """Build a new llava_hf model (and its processor) from a vision encoder and a causal LM.

    Both backbones keep their pretrained weights; the projector is freshly initialised (PyTorch's `nn.Linear` init,
    as the original LLaVA). The tokenizer gains `image_token` as a special token (and `<pad>` when it has no pad
    token) and the LM's embeddings are resized to match.

    Args:
        vision_model: a path / Hub id (CLIP, SigLIP or any `AutoModel` vision checkpoint; a full CLIP/SigLIP keeps
            only its vision half) or a loaded vision model (e.g. a `TimmWrapperModel`).
        language_model: a path / Hub id or a loaded `AutoModelForCausalLM`.
        tokenizer / image_processor: required when the backbones are passed as objects without a path to load from.
        image_processor_backend: transformers' `backend` for the image processor loaded from `vision_model`:
            `"pil"` (the PIL pipeline the original LLaVA used), `"torchvision"` (faster; its bicubic resize differs
            slightly), or `None` for transformers' default (torchvision when installed). Ignored when
            `image_processor` is given. The processor records the backend, so a saved checkpoint reloads with it.
        projector_type: `"linear"` (LLaVA v1) or `"mlp2x_gelu"` (LLaVA-1.5).
        vision_feature_pool_size: average-pool the tower's feature grid to `n x n` tokens (`None`: every patch, as
            LLaVA); see `LlavaConfig`.
        vision_feature_global_token: timm towers: the backbone's pooled feature as a first image token (`False`:
            LLaVA); see `LlavaConfig`.
        projector_input_norm: `None` (LLaVA) or `"standardize"`: per-channel standardisation of the tower's
            features, whose statistics `llava_hf.training.calibrate_projector_input` measures; see `LlavaConfig`.
        image_aspect_ratio: `"pad"` (LLaVA-1.5) or `"square"` (LLaVA v1).
        chat_template: `"plain"`, `"vicuna_v1"`, `"llava_v1"`, `"chatml"`, a `.jinja` file, a Jinja string, or `None`
            for the tokenizer's own (see `llava_hf.chat_templates.resolve_chat_template`).
        system_prompt: with `"chatml"`, the system prompt the template adds to a conversation without one; `None`
            keeps the LM's own template's (SmolLM2: "You are a helpful AI assistant named SmolLM, ..."), `""` adds
            none (21 fewer tokens per SmolLM2 sample). `vicuna_v1` / `llava_v1` always use the paper's.
        attn_implementation: `"auto"` (on CUDA, the first installed FlashAttention the GPU supports, FA4 > FA3 >
            FA2, for the language model, the vision tower keeping sdpa; else sdpa; see `resolve_attn_implementation`),
            `"sdpa"`, `"eager"`, ...
        seed: seeds the projector's initialisation.

    Returns:
        `(model, processor)`, ready for stage 1 (`model.save_pretrained` + `processor.save_pretrained` make a
        complete checkpoint).
    """
    attn_implementation = resolve_attn_implementation(attn_implementation)
    vision = _load_vision(vision_model, dtype)
    if isinstance(language_model, PreTrainedModel):
        lm = language_model
    else:
        lm = AutoModelForCausalLM.from_pretrained(language_model, dtype=dtype)
    if tokenizer is None:
        if isinstance(language_model, PreTrainedModel):
            raise ValueError("Pass `tokenizer=` when `language_model` is a model object.")
        tokenizer = AutoTokenizer.from_pretrained(language_model)
    if image_processor is None:
        if isinstance(vision_model, PreTrainedModel):
            raise ValueError("Pass `image_processor=` when `vision_model` is a model object.")
        image_processor = AutoImageProcessor.from_pretrained(vision_model, backend=image_processor_backend)

    # Tokenizer surgery: `<image>` as a special token so it never merges with text, and a pad token for batching.
    added = tokenizer.add_special_tokens(
        {"additional_special_tokens": [image_token]}, replace_extra_special_tokens=False
    )
    if tokenizer.pad_token is None:
        added += tokenizer.add_special_tokens({"pad_token": "<pad>"})
    if added or lm.get_input_embeddings().weight.shape[0] < len(tokenizer):
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if chat_template is None:
        chat_template = tokenizer.chat_template
    else:
        default_system = _default_system_prompt(tokenizer) if system_prompt is None else system_prompt
        chat_template = resolve_chat_template(chat_template, default_system=default_system)

    config = LlavaConfig(
        vision_config=vision.config,
        text_config=lm.config,
        image_token_id=tokenizer.convert_tokens_to_ids(image_token),
        projector_type=projector_type,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
        vision_feature_pool_size=vision_feature_pool_size,
        vision_feature_global_token=vision_feature_global_token,
        projector_input_norm=projector_input_norm,
        image_aspect_ratio=image_aspect_ratio,
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)),
    )
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation

    # Build the shell on the meta device, then move the pretrained modules in: no second copy of the weights.
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = getattr(lm, lm.base_model_prefix)
    model.lm_head = lm.get_output_embeddings()
    if seed is not None:
        torch.manual_seed(seed)
    projector_dtype = dtype or lm.get_input_embeddings().weight.dtype
    model.model.multi_modal_projector = LlavaMultiModalProjector(config).to(device=lm.device, dtype=projector_dtype)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.language_model.get_input_embeddings().weight
    model.generation_config = lm.generation_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)

    processor = LlavaHfProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=chat_template,
        image_token=image_token,
        image_seq_length=config.image_seq_length,
        image_aspect_ratio=image_aspect_ratio,
    )
    logger.info(
        "built llava_hf: %s -> %s projector -> %s, %d image tokens",
        config.vision_config.model_type,
        projector_type,
        config.text_config.model_type,
        config.image_seq_length,
    )
    return model, processor


def _default_system_prompt(tokenizer: Any) -> str:
    """The system prompt an LM's own ChatML template adds by default (SmolLM2 has one), so ours matches it."""
    import re

    template = tokenizer.chat_template if isinstance(getattr(tokenizer, "chat_template", None), str) else ""
    match = re.search(r"<\|im_start\|>system(?:\\n|\n)(.*?)<\|im_end\|>", template)
    return match.group(1) if match else ""
