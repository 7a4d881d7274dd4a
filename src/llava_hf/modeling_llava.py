# Copyright 2026 The llava-hf authors. Licensed under the Apache License, Version 2.0.
"""llava_hf model: vision tower -> projector -> causal LM.

Layering follows transformers' Llava so that weights convert 1:1 (`model.vision_tower.*`,
`model.multi_modal_projector.linear_1/linear_2.*`, `model.language_model.*`, `lm_head.*`):

- [`LlavaMultiModalProjector`]: `linear` (LLaVA v1) or `mlp2x_gelu` (LLaVA-1.5).
- [`LlavaModel`]: no head. `get_image_features` runs the tower and the projector; `forward` scatters the features
  into the `<image>` token embeddings and runs the LM. Used by TRL's fused LM-head loss as the backbone.
- [`LlavaForConditionalGeneration`]: adds `lm_head`, the loss and `generate`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_outputs import BaseModelOutputWithPast, ModelOutput
from transformers.utils import (
    is_flash_attn_2_available,
    is_flash_attn_3_available,
    is_flash_attn_4_available,
    is_tracing,
    logging,
)

from .configuration_llava import LlavaConfig, vision_feature_size, vision_tower_has_cls

logger = logging.get_logger(__name__)


class _FlashAttentionKernel(NamedTuple):
    is_available: Callable[[], bool]  # transformers' check: the package imports and CUDA is there
    min_capability: int  # lowest CUDA compute capability (major) the package has kernels for
    max_capability: int | None  # highest, or None for "and newer"
    install: str


# The FlashAttention kernels transformers dispatches to, in the order `"auto"` prefers them. The lambdas look the
# availability checks up when called, so tests can stand in for them.
_FLASH_ATTENTION_KERNELS = {
    # flash-attn-4 (CuTe DSL): Hopper (9.x) and Blackwell (10.x).
    "flash_attention_4": _FlashAttentionKernel(
        lambda: is_flash_attn_4_available(), 9, 10, "`pip install flash-attn-4`"
    ),
    # flash-attn-3: Hopper (9.x) only (its kernels use Hopper's wgmma).
    "flash_attention_3": _FlashAttentionKernel(
        lambda: is_flash_attn_3_available(), 9, 9, "the `flash-attn-3` package (flash-attention's `hopper/` build)"
    ),
    # flash-attn 2: Ampere (8.x) and newer.
    "flash_attention_2": _FlashAttentionKernel(
        lambda: is_flash_attn_2_available(), 8, None, "`pip install flash-attn --no-build-isolation`"
    ),
}


def _best_flash_attention() -> str | None:
    """The first kernel of `_FLASH_ATTENTION_KERNELS` that is installed and has kernels for this CUDA device."""
    if not torch.cuda.is_available():
        return None
    major, _ = torch.cuda.get_device_capability()
    for name, kernel in _FLASH_ATTENTION_KERNELS.items():
        fits = kernel.min_capability <= major and (kernel.max_capability is None or major <= kernel.max_capability)
        if fits and kernel.is_available():
            return name
    return None


def resolve_attn_implementation(attn_implementation: str | dict | None) -> str | dict | None:
    """Map `"auto"` to the fastest attention the current device can run, and check explicit FlashAttention requests early.

    `"auto"` picks, on a CUDA device, the first FlashAttention kernel that is installed and supports the device:
    `flash_attention_4` (`flash-attn-4`, Hopper / Blackwell), then `flash_attention_3` (`flash-attn-3`, Hopper), then
    `flash_attention_2` (`flash-attn`, Ampere and newer); without any of them it picks `"sdpa"`.

    A FlashAttention kernel (chosen by `"auto"` or named) goes to the language model only, as the per-sub-config
    `dict` transformers accepts (`{"": kernel, "text_config": kernel, "vision_config": "sdpa"}`): the vision tower
    keeps sdpa. timm towers support nothing else, and images carry no padding, so sdpa already runs a fused kernel
    there. Pass your own `dict` to choose differently.

    An explicit `"flash_attention_2"` / `"_3"` / `"_4"` without CUDA or without its package raises here, with the
    reason, rather than deep inside `from_pretrained`. Other values (`"sdpa"`, `"eager"`, a `dict`, ...) pass through.
    """
    if attn_implementation == "auto":
        best = _best_flash_attention()
        return "sdpa" if best is None else _flash_attention_for_language_model(best)
    if isinstance(attn_implementation, str) and attn_implementation in _FLASH_ATTENTION_KERNELS:
        if not torch.cuda.is_available():
            raise ValueError(
                f'attn_implementation="{attn_implementation}" needs a CUDA device, and none is available; use "sdpa" '
                '(or "auto", which picks a FlashAttention kernel only where it can run).'
            )
        kernel = _FLASH_ATTENTION_KERNELS[attn_implementation]
        if not kernel.is_available():
            raise ValueError(
                f'attn_implementation="{attn_implementation}" needs its FlashAttention package, which is not '
                f'importable; install {kernel.install} or use "sdpa" / "auto".'
            )
        return _flash_attention_for_language_model(attn_implementation)
    return attn_implementation


def _flash_attention_for_language_model(kernel: str) -> dict[str, str]:
    return {"": kernel, "text_config": kernel, "vision_config": "sdpa"}


@dataclass
class LlavaModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    image_features (`torch.FloatTensor` of shape `(num_images, image_seq_length, text_hidden_size)`, *optional*):
        Projected image features that replaced the `<image>` token embeddings.
    """

    image_features: torch.FloatTensor | None = None


@dataclass
class LlavaCausalLMOutputWithPast(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*):
        Next-token cross-entropy over the positions whose label is not -100.
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
        LM head scores.
    cache (`Cache`, *optional*):
        The KV cache, to continue decoding.
    image_features (`torch.FloatTensor` of shape `(num_images, image_seq_length, text_hidden_size)`, *optional*):
        Projected image features.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_features: torch.FloatTensor | None = None


class LlavaMultiModalProjector(nn.Module):
    """Maps vision features `(num_images, image_seq_length, vision_hidden_size * num_layers)` to the LM's width.

    `linear`: one `nn.Linear` (LLaVA v1). `mlp2x_gelu`: Linear -> GELU -> Linear (LLaVA-1.5). Module names match
    transformers' Llava (`linear_1`, `linear_2`) so weights convert by name. With `projector_input_norm="standardize"`
    the features are first standardised per channel by the `feature_mean` / `feature_std` buffers
    (`set_feature_statistics`).
    """

    def __init__(self, config: LlavaConfig):
        super().__init__()
        in_features = vision_feature_size(config.vision_config) * config.num_vision_feature_layers
        out_features = config.text_config.hidden_size
        self.projector_type = config.projector_type
        self.linear_1 = nn.Linear(in_features, out_features, bias=config.multimodal_projector_bias)
        if config.projector_type == "mlp2x_gelu":
            self.act = ACT2FN[config.projector_hidden_act]
            self.linear_2 = nn.Linear(out_features, out_features, bias=config.multimodal_projector_bias)
        self.standardize = config.projector_input_norm == "standardize"
        if self.standardize:
            # Identity until measured: persistent, so the statistics travel with the checkpoint.
            self.register_buffer("feature_mean", torch.zeros(in_features))
            self.register_buffer("feature_std", torch.ones(in_features))

    @torch.no_grad()
    def set_feature_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the per-channel mean and standard deviation of the features this projector will read."""
        if not self.standardize:
            raise ValueError('set_feature_statistics needs a projector built with projector_input_norm="standardize".')
        if mean.shape != self.feature_mean.shape or std.shape != self.feature_std.shape:
            raise ValueError(
                f"feature statistics of shape {tuple(mean.shape)} / {tuple(std.shape)} do not match the projector's "
                f"input width {self.feature_mean.shape[0]}."
            )
        if not torch.isfinite(mean).all() or not (std > 0).all():
            raise ValueError("feature statistics must be finite with a positive standard deviation.")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        if self.standardize:
            # In float32 whatever the features' dtype: a bf16 subtraction of a large mean loses the small differences
            # between images that standardising is for.
            standardized = (image_features.float() - self.feature_mean.float()) / self.feature_std.float()
            image_features = standardized.to(image_features.dtype)
        hidden_states = self.linear_1(image_features)
        if self.projector_type == "mlp2x_gelu":
            hidden_states = self.linear_2(self.act(hidden_states))
        return hidden_states


class LlavaPreTrainedModel(PreTrainedModel):
    config: LlavaConfig
    config_class = LlavaConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = "cache"
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # Statistics absent from a checkpoint start as the identity (transformers names them as missing keys), never
        # as uninitialised memory; init.* leaves loaded tensors alone.
        if isinstance(module, LlavaMultiModalProjector) and module.standardize:
            init.zeros_(module.feature_mean)
            init.ones_(module.feature_std)

    def post_init(self) -> None:
        super().post_init()
        # The towers' `_no_split_modules` name classes this model never builds (CLIPVisionModel lists
        # CLIPTextEmbeddings); accelerate < 1.16's FSDP auto-wrap raises on a listed class it cannot find.
        present = {type(module).__name__ for module in self.modules()}
        self._no_split_modules = {name for name in self._no_split_modules if name in present}

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`; `auto_map` also names every Auto class llava_hf registers with, so the
        folder loads with `trust_remote_code=True` where `llava_hf` is not installed."""
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.update(
            {
                "AutoConfig": "configuration_llava.LlavaConfig",
                "AutoModel": "modeling_llava.LlavaModel",
                "AutoModelForImageTextToText": "modeling_llava.LlavaForConditionalGeneration",
                "AutoModelForMultimodalLM": "modeling_llava.LlavaForConditionalGeneration",
            }
        )
        # transformers 5 removed AutoModelForVision2Seq (AutoModelForImageTextToText replaces it), and the remote code
        # needs transformers 5: a checkpoint saved by an older llava-hf drops the entry.
        auto_map.pop("AutoModelForVision2Seq", None)
        self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus `attn_implementation="auto"` (see `resolve_attn_implementation`).

        The Auto classes hand `attn_implementation` to `AutoConfig`, which stores it as given on the config and every
        sub-config; such a request is resolved the same way.
        """
        config = kwargs.get("config")
        if "attn_implementation" not in kwargs and isinstance(config, PreTrainedConfig):
            requested = config._attn_implementation
            sub_configs = [getattr(config, key) for key in config.sub_configs if getattr(config, key) is not None]
            if (requested == "auto" or requested in _FLASH_ATTENTION_KERNELS) and all(
                sub_config._attn_implementation == requested for sub_config in sub_configs
            ):
                kwargs["attn_implementation"] = requested
        if "attn_implementation" in kwargs:
            kwargs["attn_implementation"] = resolve_attn_implementation(kwargs["attn_implementation"])
        return super().from_pretrained(*args, **kwargs)

    @classmethod
    def _from_config(cls, config, **kwargs):
        if "attn_implementation" in kwargs:
            kwargs["attn_implementation"] = resolve_attn_implementation(kwargs["attn_implementation"])
        return super()._from_config(config, **kwargs)


class LlavaModel(LlavaPreTrainedModel):
    """Vision tower, projector and the LM body, without the LM head."""

    # A `llava_hf.feature_cache.VisionFeatureCache` installed by `feature_cache.attach` (a runtime option, never saved):
    # a frozen tower's features are then read from disk for images computed before.
    vision_feature_cache = None

    def __init__(self, config: LlavaConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LlavaMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def train(self, mode: bool = True) -> "LlavaModel":
        super().train(mode)
        if mode and not self.vision_tower_is_trainable():
            # A frozen tower stays in eval mode: no dropout, and no batch-norm statistics drifting (timm CNNs).
            self.vision_tower.eval()
        return self

    def vision_tower_is_trainable(self) -> bool:
        """Whether any vision tower parameter requires grad (LLaVA keeps the tower frozen in both stages)."""
        return any(parameter.requires_grad for parameter in self.vision_tower.parameters())

    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """Run the vision tower and the projector.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_images, num_channels, height, width)`):
                Images in the order their `<image>` placeholders appear in the batch.

        Returns:
            image_features (`torch.FloatTensor` of shape `(num_images, image_seq_length, text_hidden_size)`).
        """
        pixel_values = pixel_values.to(dtype=self.vision_tower.dtype)
        # A frozen tower runs without autograd, as LLaVA's `torch.no_grad()` tower does. Without this, gradient
        # checkpointing's `enable_input_require_grads` hook on the tower's patch embedding would make every tower
        # activation require grad: kept for backward, recomputed, and back-propagated for nothing.
        needs_grad = pixel_values.requires_grad or self.vision_tower_is_trainable()
        grad = torch.is_grad_enabled() and needs_grad
        with torch.set_grad_enabled(grad):
            if self.vision_feature_cache is not None and not grad:  # features that need no autograd graph
                selected = self.vision_feature_cache(pixel_values, self._vision_features)
            else:
                selected = self._vision_features(pixel_values)
        return self.multi_modal_projector(selected)  # (num_images, image_seq_length, text_hidden_size)

    def _vision_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """The tower's selected feature tokens `(num_images, image_seq_length, vision_hidden * num_layers)`."""
        if self.config.vision_config.model_type == "timm_wrapper":
            # CNN / timm backbones: the final feature map `(num_images, channels, h, w)` flattened row-major to tokens.
            outputs = self.vision_tower(pixel_values, do_pooling=self.config.vision_feature_global_token)
            feature_map = outputs.last_hidden_state
            if feature_map.ndim == 4:
                if self.config.vision_feature_pool_size:  # pooled on the map itself: any h x w
                    feature_map = nn.functional.adaptive_avg_pool2d(feature_map, self.config.vision_feature_pool_size)
                return self._with_global_token(feature_map.flatten(2).transpose(1, 2), outputs.pooler_output)
            # timm ViTs return (num_images, tokens, channels): drop CLS / register tokens, as image_seq_length counts
            # the patch grid only.
            selected = feature_map[:, getattr(self.vision_tower.timm_model, "num_prefix_tokens", 0) :]
            pooled_output = outputs.pooler_output
        else:
            pooled_output = None
            hidden_states = self.vision_tower(pixel_values, output_hidden_states=True).hidden_states
            layers = self.config.vision_feature_layer
            layers = [layers] if isinstance(layers, int) else layers
            selected_layers = [hidden_states[layer] for layer in layers]
            if self.config.vision_feature_select_strategy == "default" and vision_tower_has_cls(
                self.config.vision_config
            ):
                selected_layers = [layer[:, 1:] for layer in selected_layers]  # drop CLS
            selected = torch.cat(selected_layers, dim=-1)  # (num_images, image_seq_length, vision_hidden * layers)
        pool_size = self.config.vision_feature_pool_size
        if pool_size:
            num_images, num_tokens, channels = selected.shape
            side = math.isqrt(num_tokens)
            if side * side != num_tokens:
                raise ValueError(
                    f"vision_feature_pool_size={pool_size} pools a square feature grid, but the vision tower gave "
                    f"{num_tokens} tokens per image; use square images (image_aspect_ratio, the image processor's "
                    "crop) or vision_feature_pool_size=None."
                )
            grid = selected.transpose(1, 2).reshape(num_images, channels, side, side)
            grid = nn.functional.adaptive_avg_pool2d(grid, pool_size)  # (num_images, channels, pool, pool)
            selected = grid.flatten(2).transpose(1, 2)  # (num_images, pool_size ** 2, channels)
        return self._with_global_token(selected, pooled_output)

    def _with_global_token(self, tokens: torch.Tensor, pooled_output: torch.Tensor | None) -> torch.Tensor:
        """`tokens` with the tower's pooled feature first when `config.vision_feature_global_token` asks for it.

        The pooled feature is what a timm backbone's classifier reads: one token about the whole image, where each grid
        token describes one region.
        """
        if not self.config.vision_feature_global_token:
            return tokens
        if pooled_output is None or pooled_output.shape != (tokens.shape[0], tokens.shape[-1]):
            shape = None if pooled_output is None else tuple(pooled_output.shape)
            raise ValueError(
                f"vision_feature_global_token needs the tower's pooled feature as one vector per image of the grid "
                f"tokens' width {tokens.shape[-1]}, got {shape} (a timm model built with global_pool='' or a head that "
                "changes the width); set vision_feature_global_token=False."
            )
        return torch.cat([pooled_output[:, None], tokens], dim=1)

    def get_placeholder_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Boolean mask `(batch_size, sequence_length)` of the `<image>` positions."""
        if input_ids is not None:
            return input_ids == self.config.image_token_id
        image_embed = self.get_input_embeddings()(
            torch.tensor(self.config.image_token_id, dtype=torch.long, device=inputs_embeds.device)
        )
        return (inputs_embeds == image_embed).all(-1)

    def check_image_token_count(self, special_image_mask: torch.Tensor, image_features: torch.Tensor | None) -> None:
        """Raise when the `<image>` positions of `special_image_mask` do not match `image_features` one to one.

        Eager: a `ValueError` with both counts (reading the count is one scalar copy to the host). Compiled or
        exported: a device-side assertion (`torch._assert_async`), so the graph stays whole and the host never waits.
        """
        n_image_features = 0 if image_features is None else image_features.shape[0] * image_features.shape[1]
        n_image_tokens = special_image_mask.sum()
        if is_tracing(special_image_mask):
            torch._assert_async(
                n_image_tokens == n_image_features,
                "Image features and image tokens do not match; run the model uncompiled to see both counts.",
            )
            return
        n_image_tokens = int(n_image_tokens)
        if n_image_tokens == n_image_features:
            return
        if image_features is None:
            detail = "no pixel_values were passed"
        elif n_image_tokens == 0:
            # Pixels but not one image token: the ids were not made with this checkpoint's tokenizer, or its config
            # names another id for <image> than its tokenizer does.
            detail = (
                f"{image_features.shape[0]} image(s), but no token in input_ids is config.image_token_id="
                f"{self.config.image_token_id}; the tokenizer's <image> id must be config.image_token_id: build inputs "
                "with this checkpoint's processor, or fix image_token_id in config.json"
            )
        else:
            detail = (
                f"{image_features.shape[0]} image(s) x {image_features.shape[1]} tokens). Each <image> must expand "
                f"to config.image_seq_length={self.config.image_seq_length} tokens; build inputs with LlavaProcessor "
                "and never truncate through an image"
            )
        raise ValueError(
            f"Image features and image tokens do not match: tokens: {n_image_tokens}, features: {n_image_features} "
            f"({detail})."
        )

    def merge_image_features(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """Write `image_features` into the `<image>` positions of `inputs_embeds`, image by image in reading order.

        Raises a `ValueError` that gives both counts when the number of `<image>` tokens differs from the number of
        image feature vectors (a wrong `image_seq_length`, a truncated prompt, or a missing image).
        """
        special_image_mask = self.get_placeholder_mask(input_ids, inputs_embeds)  # (batch_size, sequence_length)
        self.check_image_token_count(special_image_mask, image_features)
        image_features = image_features.reshape(-1, inputs_embeds.shape[-1]).to(
            inputs_embeds.device, inputs_embeds.dtype
        )
        mask = special_image_mask.unsqueeze(-1).expand_as(inputs_embeds).to(inputs_embeds.device)
        return inputs_embeds.masked_scatter(mask, image_features)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> LlavaModelOutputWithPast:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            Token ids, each image already expanded to `image_seq_length` `<image>` tokens by [`LlavaProcessor`].
        pixel_values (`torch.FloatTensor` of shape `(num_images, num_channels, height, width)`, *optional*):
            All images of the batch, in reading order. Omit for text-only inputs.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (batch_size, sequence_length, hidden)

        image_features = None
        if pixel_values is not None and pixel_values.shape[0] > 0:
            image_features = self.get_image_features(pixel_values)
            inputs_embeds = self.merge_image_features(input_ids, inputs_embeds, image_features)
        # Text only: no `<image>` token may be left. Decoding steps (a filled cache) carry no images: no check.
        elif input_ids is not None and (cache is None or (not is_tracing(input_ids) and cache.get_seq_length() == 0)):
            self.check_image_token_count(input_ids == self.config.image_token_id, None)

        packed = attention_mask is None and position_ids is not None and cache is None
        if use_cache is None and (self.training or packed):
            # A training forward has no use for a cache, and with one transformers does not mask a padding-free
            # batch to each sample (it infers the packing from `position_ids` only without a cache). TRL passes
            # use_cache=False itself; this covers a plain `model(**packed_batch)`, in eval mode too. generate()
            # passes its own cache, so decoding keeps one.
            use_cache = False
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return LlavaModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_features=image_features,
        )


class LlavaForConditionalGeneration(LlavaPreTrainedModel, GenerationMixin):
    """LLaVA with its LM head: loss for training, `generate` for inference.

    Example:

    ```python
    >>> import torch
    >>> from llava_hf import LlavaForConditionalGeneration
    >>> model = LlavaForConditionalGeneration(config)  # a LlavaConfig, see its docstring
    >>> input_ids = torch.tensor([[1] + [config.image_token_id] * config.image_seq_length + [5, 6]])
    >>> pixel_values = torch.randn(1, 3, 8, 8)
    >>> out = model(input_ids=input_ids, pixel_values=pixel_values, labels=input_ids)
    >>> out.logits.shape  # (1, 1 + 16 + 2, 99)
    ```
    """

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: LlavaConfig):
        super().__init__(config)
        self.model = LlavaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    @property
    def vision_tower(self) -> nn.Module:
        return self.model.vision_tower

    @property
    def multi_modal_projector(self) -> nn.Module:
        return self.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        return self.model.get_image_features(pixel_values)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> LlavaCausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Targets for the next-token loss; -100 masks a position (prompt, image tokens, padding). Shifted inside.
        logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
            Compute logits for only the last `logits_to_keep` positions (0: all), as in transformers' LMs.
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices, :])

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return LlavaCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_features=outputs.image_features,
        )


def describe_attn_implementation(model: nn.Module) -> dict[str, str | None]:
    """The attention implementation the language model and the vision tower of `model` actually run.

    Read off the loaded sub-models' configs (after `"auto"`, transformers' fallbacks and any
    `set_attn_implementation`), e.g. `{"language_model": "flash_attention_3", "vision_tower": "sdpa"}`. `model` may
    be wrapped (PEFT); a model that is not llava_hf gives `{"model": ...}`.
    """
    llava = next((module for module in model.modules() if isinstance(module, LlavaModel)), None)
    if llava is None:
        return {"model": getattr(getattr(model, "config", None), "_attn_implementation", None)}
    return {
        "language_model": llava.language_model.config._attn_implementation,
        "vision_tower": llava.vision_tower.config._attn_implementation,
    }


__all__ = ["LlavaForConditionalGeneration", "LlavaModel", "LlavaPreTrainedModel", "LlavaMultiModalProjector"]
