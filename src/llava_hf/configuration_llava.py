# Copyright 2026 The llava-hf authors. Licensed under the Apache License, Version 2.0.
"""llava_hf model configuration.

One config holds the three parts of LLaVA (Liu et al., 2023, "Visual Instruction Tuning"):

    vision encoder (`vision_config`) -> projector (`projector_*`) -> causal LM (`text_config`)

Field names follow transformers' built-in `LlavaConfig` where it has one (`image_token_id`, `image_seq_length`,
`vision_feature_layer`, `vision_feature_select_strategy`, `projector_hidden_act`, `multimodal_projector_bias`), so
checkpoints convert both ways; LLaVA's own knobs (`projector_type`, `image_aspect_ratio`) keep LLaVA's names.
"""

import functools
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

PROJECTOR_TYPES = ("linear", "mlp2x_gelu")
PROJECTOR_INPUT_NORMS = (None, "standardize")
# transformers' names first; LLaVA's `mm_vision_select_feature` values map onto them.
FEATURE_SELECT_STRATEGIES = {"default": "default", "full": "full", "patch": "default", "cls_patch": "full"}
IMAGE_ASPECT_RATIOS = ("square", "pad")
# Vision towers whose sequence starts with a CLS token (dropped by the `default` strategy).
_TOWERS_WITH_CLS = ("clip_vision_model", "clip", "vit", "dinov2")
_TIMM = "timm_wrapper"


@functools.lru_cache(maxsize=32)
def _timm_geometry(architecture: str, model_args: tuple) -> tuple[int, int, int]:
    """`(num_features, reduction, pooled_features)` of a timm backbone: its final feature map's channels and stride,
    and the width of its pooled (pre-classifier) feature, read off a meta-device instance."""
    import torch

    try:  # in a try block so that transformers' remote-code import check does not require timm for ViT models
        import timm
    except ImportError as error:
        raise ImportError(f"vision tower {architecture!r} is a timm model: pip install timm") from error

    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False, num_classes=0, **dict(model_args))
    # A head that widens the pooled feature (MobileNetV3's conv_head, ConvNeXt's head_hidden_size) says so here.
    pooled = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return int(model.num_features), int(model.feature_info[-1]["reduction"]), pooled


def timm_image_size(vision_config: PreTrainedConfig) -> int:
    """Input side (px) a timm backbone was trained at, from its `pretrained_cfg` (224 when it has none)."""
    pretrained_cfg = getattr(vision_config, "pretrained_cfg", None) or {}
    input_size = pretrained_cfg.get("test_input_size") or pretrained_cfg.get("input_size") or (3, 224, 224)
    return int(input_size[-1])


def vision_feature_size(vision_config: PreTrainedConfig) -> int:
    """Channel size of one image token as the vision tower emits it (before the projector)."""
    if vision_config.model_type == _TIMM:
        return _timm_geometry(vision_config.architecture, _timm_args(vision_config))[0]
    return int(vision_config.hidden_size)


def _timm_args(vision_config: PreTrainedConfig) -> tuple:
    return tuple(sorted((vision_config.model_args or {}).items()))


def vision_tower_has_cls(vision_config: PreTrainedConfig) -> bool:
    return vision_config.model_type in _TOWERS_WITH_CLS


def vision_feature_grid_side(vision_config: PreTrainedConfig, image_size: int | None = None) -> int:
    """Side of the tower's square feature grid: `image_size // patch_size` (ViTs) or `// reduction` (timm)."""
    if vision_config.model_type == _TIMM:
        side = image_size or timm_image_size(vision_config)
        _, reduction, _ = _timm_geometry(vision_config.architecture, _timm_args(vision_config))
        return side // reduction
    return (image_size or vision_config.image_size) // vision_config.patch_size


def compute_image_seq_length(
    vision_config: PreTrainedConfig,
    vision_feature_select_strategy: str,
    image_size: int | None = None,
    vision_feature_pool_size: int | None = None,
    vision_feature_global_token: bool = False,
) -> int:
    """Number of `<image>` tokens one image becomes.

    ViTs: `(image_size // patch_size) ** 2`, plus the CLS token when it is kept (`full`). CLIP ViT-L/14 at 336 px
    gives 576 (`default`) or 577 (`full`); at 224 px, 256. SigLIP has no CLS token, so both strategies give the grid.
    timm backbones: the final feature grid, `(image_size // reduction) ** 2` (EfficientNet-Lite0 at 224 px: 49).
    With `vision_feature_pool_size=n` the grid is average-pooled to `n x n`: `n ** 2` tokens. With
    `vision_feature_global_token` (timm) one token more: the backbone's pooled feature, first.
    """
    global_token = int(vision_feature_global_token)
    if vision_feature_pool_size:
        return vision_feature_pool_size**2 + global_token
    if vision_config.model_type == _TIMM:
        side = image_size or timm_image_size(vision_config)
        _, reduction, _ = _timm_geometry(vision_config.architecture, _timm_args(vision_config))
        return (side // reduction) ** 2 + global_token
    side = image_size or vision_config.image_size
    num = (side // vision_config.patch_size) ** 2
    if vision_tower_has_cls(vision_config) and vision_feature_select_strategy == "full":
        num += 1
    return num


@strict
class LlavaConfig(PreTrainedConfig):
    r"""
    Configuration of a llava_hf [`LlavaForConditionalGeneration`].

    vision_config (`dict` or `PreTrainedConfig`, *optional*):
        Any registered vision config: `clip_vision_model`, `siglip_vision_model`, `timm_wrapper`, ... Defaults to
        CLIP ViT-L/14 at 224 px, the paper's encoder.
    text_config (`dict` or `PreTrainedConfig`, *optional*):
        Any causal LM config (`llama`, ...). Defaults to a Llama-7B shape (Vicuna-7B in the paper).
    image_token_id (`int`, *optional*, defaults to 32000):
        Id of the `<image>` placeholder token; its embeddings are replaced by image features.
    image_seq_length (`int`, *optional*):
        Number of `<image>` tokens per image. Computed from `vision_config` and the select strategy when omitted.
    projector_type (`str`, *optional*, defaults to `"linear"`):
        `"linear"` (LLaVA v1) or `"mlp2x_gelu"` (LLaVA-1.5: Linear -> GELU -> Linear).
    projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
        Activation between the two layers of `mlp2x_gelu`.
    multimodal_projector_bias (`bool`, *optional*, defaults to `True`):
        Whether the projector's linear layers have a bias.
    projector_input_norm (`str`, *optional*):
        `None` (LLaVA): the projector reads the tower's features as they are. `"standardize"`: it first subtracts a
        per-channel mean and divides by a per-channel standard deviation, buffers measured on training images
        before stage 1 (`llava_hf.training.calibrate_projector_input`) and saved with the checkpoint. For towers
        whose features are far from centred (a CNN's post-activation maps), this lets the projector learn from
        what differs between images instead of a large shared offset.
    vision_feature_layer (`int` or `list[int]`, *optional*, defaults to -2):
        Hidden state of the ViT used as image features (LLaVA: the penultimate layer). A list concatenates layers.
        timm backbones always use their final feature grid.
    vision_feature_select_strategy (`str`, *optional*, defaults to `"default"`):
        `"default"` drops the CLS token, `"full"` keeps it. LLaVA's `"patch"` / `"cls_patch"` are accepted and
        stored as `"default"` / `"full"`.
    vision_feature_global_token (`bool`, *optional*, defaults to `False`):
        timm backbones: put the backbone's own pooled feature (`TimmWrapperModel`'s `pooler_output`: a CNN's global
        average pool, what its classifier reads) before the grid tokens, one token that describes the whole image, as a
        ViT's CLS does. Needs a pooled feature as wide as the feature map (not MobileNetV3's widened head). LLaVA's
        CLIP keeps its CLS with `vision_feature_select_strategy="full"` instead.
    vision_feature_pool_size (`int`, *optional*):
        Average-pool the tower's square feature grid to `vision_feature_pool_size x vision_feature_pool_size` tokens
        before the projector (`None`, LLaVA's behaviour: keep every patch). Fewer image tokens make sequences shorter
        and each token a summary of a region; EfficientNet-Lite0's 7x7 grid pooled to 3x3 gives 9 tokens.
    image_aspect_ratio (`str`, *optional*, defaults to `"square"`):
        `"pad"` (LLaVA-1.5): pad to a square filled with the image processor's mean colour, then resize.
        `"square"` (LLaVA v1): the image processor's own resize / center crop.

    Example:

    ```python
    >>> from transformers import CLIPVisionConfig, LlamaConfig
    >>> from llava_hf import LlavaConfig, LlavaForConditionalGeneration

    >>> config = LlavaConfig(
    ...     vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
    ...                                    num_attention_heads=4, image_size=8, patch_size=2),
    ...     text_config=LlamaConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
    ...                             num_attention_heads=4, num_key_value_heads=2, vocab_size=99),
    ...     image_token_id=98, projector_type="mlp2x_gelu",
    ... )
    >>> config.image_seq_length  # (8 // 2) ** 2, CLS dropped
    16
    >>> model = LlavaForConditionalGeneration(config)
    ```
    """

    model_type = "llava_hf"
    attribute_map = {"image_token_index": "image_token_id", "mm_projector_type": "projector_type"}

    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="clip_vision_model",
            init_kwargs={
                "intermediate_size": 4096,
                "hidden_size": 1024,
                "patch_size": 14,
                "image_size": 224,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "projection_dim": 768,
            },
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 32000
    image_seq_length: int | None = None
    projector_type: str = "linear"
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    projector_input_norm: str | None = None
    vision_feature_layer: int | list[int] = -2
    vision_feature_select_strategy: str = "default"
    vision_feature_pool_size: int | None = None
    vision_feature_global_token: bool = False
    image_aspect_ratio: str = "square"
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(
                f"LlavaConfig.projector_type must be one of {list(PROJECTOR_TYPES)}, got {self.projector_type!r}; "
                'use "linear" (LLaVA v1) or "mlp2x_gelu" (LLaVA-1.5).'
            )
        if self.projector_input_norm not in PROJECTOR_INPUT_NORMS:
            raise ValueError(
                f"LlavaConfig.projector_input_norm must be one of {list(PROJECTOR_INPUT_NORMS)}, got "
                f'{self.projector_input_norm!r}; use None (LLaVA) or "standardize".'
            )
        if self.vision_feature_select_strategy not in FEATURE_SELECT_STRATEGIES:
            raise ValueError(
                'LlavaConfig.vision_feature_select_strategy must be "default" or "full" (LLaVA\'s "patch" / '
                f'"cls_patch"), got {self.vision_feature_select_strategy!r}; use "full" to keep CLS.'
            )
        self.vision_feature_select_strategy = FEATURE_SELECT_STRATEGIES[self.vision_feature_select_strategy]
        if self.image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
            raise ValueError(
                f"LlavaConfig.image_aspect_ratio must be one of {list(IMAGE_ASPECT_RATIOS)}, got "
                f'{self.image_aspect_ratio!r}; "pad" pads to a square (LLaVA-1.5), "square" lets the image '
                "processor resize/crop (LLaVA v1)."
            )
        layers = (
            [self.vision_feature_layer] if isinstance(self.vision_feature_layer, int) else self.vision_feature_layer
        )
        if not layers or not all(isinstance(layer, int) for layer in layers):
            raise ValueError(
                f"LlavaConfig.vision_feature_layer must be an int or a non-empty list of ints, got "
                f"{self.vision_feature_layer!r}."
            )
        if self.vision_feature_global_token:
            if self.vision_config.model_type != _TIMM:
                raise ValueError(
                    "LlavaConfig.vision_feature_global_token reads a timm backbone's pooled feature, but the vision "
                    f"tower is {self.vision_config.model_type!r}; to keep a ViT's CLS token use "
                    'vision_feature_select_strategy="full".'
                )
            channels, _, pooled = _timm_geometry(self.vision_config.architecture, _timm_args(self.vision_config))
            if pooled != channels:
                raise ValueError(
                    f"LlavaConfig.vision_feature_global_token: {self.vision_config.architecture}'s pooled feature is "
                    f"{pooled} wide but its feature map {channels}, so one projector cannot read both; set "
                    "vision_feature_global_token=False."
                )
        if self.vision_feature_pool_size is not None:
            side = vision_feature_grid_side(self.vision_config)
            if not isinstance(self.vision_feature_pool_size, int) or not 1 <= self.vision_feature_pool_size <= side:
                raise ValueError(
                    f"LlavaConfig.vision_feature_pool_size must be an int from 1 to the tower's grid side ({side}), got "
                    f"{self.vision_feature_pool_size!r}; use None to keep every patch."
                )
            if self.vision_feature_select_strategy == "full" and vision_tower_has_cls(self.vision_config):
                raise ValueError(
                    "LlavaConfig.vision_feature_pool_size pools the patch grid and cannot keep the CLS token; use "
                    'vision_feature_select_strategy="default" with it.'
                )
            pooled = compute_image_seq_length(
                self.vision_config,
                self.vision_feature_select_strategy,
                vision_feature_pool_size=self.vision_feature_pool_size,
                vision_feature_global_token=self.vision_feature_global_token,
            )
            if self.image_seq_length is not None and self.image_seq_length != pooled:
                raise ValueError(
                    f"LlavaConfig.image_seq_length={self.image_seq_length} disagrees with vision_feature_pool_size="
                    f"{self.vision_feature_pool_size} ({pooled} tokens per image); leave image_seq_length unset "
                    "(None) to have it computed."
                )
        if self.image_seq_length is None:
            self.image_seq_length = compute_image_seq_length(
                self.vision_config,
                self.vision_feature_select_strategy,
                vision_feature_pool_size=self.vision_feature_pool_size,
                vision_feature_global_token=self.vision_feature_global_token,
            )
        # Like transformers' Llava: some LMs store tying in their own config only.
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True

    @property
    def num_vision_feature_layers(self) -> int:
        return 1 if isinstance(self.vision_feature_layer, int) else len(self.vision_feature_layer)


__all__ = ["LlavaConfig"]
