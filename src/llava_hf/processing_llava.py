# Copyright 2026 The llava-hf authors. Licensed under the Apache License, Version 2.0.
"""llava_hf processor: image processor + tokenizer.

Each `<image>` in the text expands to `image_seq_length` `<image>` tokens, the number of features the vision tower
yields (computed from the model config, see `compute_image_seq_length`). Prompts come from the processor's Jinja chat
template (`plain`, `vicuna_v1` / `llava_v1`, or the LM's own), whose `{% generation %}` markers give the
assistant-token mask used for the loss.
"""

from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_transforms import to_pil_image
from transformers.image_utils import make_flat_list_of_images
from transformers.processing_utils import MultiModalData, ProcessorMixin
from transformers.utils import logging

logger = logging.get_logger(__name__)

# transformers 5's image processor backends (`backend=`), as `image_processor_backend` records them.
IMAGE_PROCESSOR_BACKENDS = ("pil", "torchvision")


def expand_to_square(image: Image.Image, background_color: tuple[int, ...]) -> Image.Image:
    """LLaVA-1.5's `expand2square`: paste the image centred on a square canvas of `background_color`."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background_color)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class LlavaHfProcessor(ProcessorMixin):
    r"""
    Constructs a llava_hf processor from an image processor and a tokenizer. Exported as `llava_hf.LlavaProcessor`.

    The class is named `LlavaHfProcessor` on disk (`processor_class` in `processor_config.json`) because
    `AutoProcessor` resolves that field by class name first, and `LlavaProcessor` is transformers' own.

    Args:
        image_processor ([`BaseImageProcessor`]):
            Any image processor (CLIP, SigLIP, ...) that returns `pixel_values` of shape
            `(num_images, num_channels, height, width)`.
        tokenizer ([`PreTrainedTokenizerBase`]):
            The LM's tokenizer, with `image_token` added as a special token.
        chat_template (`str`, *optional*):
            Jinja template with `{% generation %}` markers (see `llava_hf.get_chat_template`).
        image_token (`str`, *optional*, defaults to `"<image>"`):
            The placeholder token.
        image_seq_length (`int`, *optional*, defaults to 576):
            Tokens per image; must equal the model's `config.image_seq_length`.
        image_aspect_ratio (`str`, *optional*, defaults to `"square"`):
            `"pad"`: pad each image to a square filled with the image processor's mean colour before resizing
            (LLaVA-1.5). `"square"`: the image processor's own resize / crop (LLaVA v1).
        split_text_at_images (`bool`, *optional*, defaults to `False`):
            Tokenize the text between `<image>` placeholders chunk by chunk, as the original LLaVA code did
            (`tokenizer_image_token`). With a SentencePiece Llama tokenizer this keeps the lone `▁` piece after each
            image that checkpoints converted from the original were trained with. Off for new models.

    Image processor backend: transformers 5 saves the same `image_processor_type` for both backends of an image
    processor (`CLIPImageProcessor` is the torchvision one, `CLIPImageProcessorPil` the PIL one) and
    `AutoImageProcessor` loads torchvision unless told otherwise. Their pixels differ (bicubic resizing is not the
    same), so `save_pretrained` records the image processor's backend as `image_processor_backend` in
    `processor_config.json` and `from_pretrained` loads that backend again. An explicit `backend=` (or `use_fast=`)
    passed to `from_pretrained` wins.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        image_token: str = "<image>",
        image_seq_length: int = 576,
        image_aspect_ratio: str = "square",
        split_text_at_images: bool = False,
        **kwargs: Any,
    ):
        if image_aspect_ratio not in ("square", "pad"):
            raise ValueError(
                f'LlavaProcessor.image_aspect_ratio must be "square" or "pad", got {image_aspect_ratio!r}.'
            )
        if image_seq_length < 1:
            raise ValueError(f"LlavaProcessor.image_seq_length must be >= 1, got {image_seq_length}.")
        self.image_token = image_token
        self.image_seq_length = int(image_seq_length)
        self.image_aspect_ratio = image_aspect_ratio
        self.split_text_at_images = split_text_at_images
        image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if image_token_id is None or image_token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"The tokenizer has no {image_token!r} token; add it with "
                f"`tokenizer.add_special_tokens({{'additional_special_tokens': [{image_token!r}]}})` and resize the "
                "model's embeddings (llava_hf.build_llava_from_pretrained does both)."
            )
        self.image_token_id = image_token_id
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)

    # -- saving and loading ------------------------------------------------------------------------------------------
    @property
    def image_processor_backend(self) -> str | None:
        """`"pil"` or `"torchvision"` (transformers' `backend` of the image processor), `None` when it has none."""
        return getattr(self.image_processor, "backend", None)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        if self.image_processor_backend is not None:
            output["image_processor_backend"] = self.image_processor_backend
        return output

    @classmethod
    def _get_arguments_from_pretrained(
        cls, pretrained_model_name_or_path: Any, processor_dict: dict | None = None, **kwargs: Any
    ) -> list[Any]:
        saved = (processor_dict or {}).get("image_processor_backend")
        args = super()._get_arguments_from_pretrained(pretrained_model_name_or_path, processor_dict, **kwargs)
        if saved is None or kwargs.get("backend") is not None or kwargs.get("use_fast") is not None:
            return args
        index = cls.get_attributes().index("image_processor")
        if getattr(args[index], "backend", saved) != saved:
            # Reload only the image processor: `backend=` would also reach the tokenizer's init kwargs.
            args[index] = AutoImageProcessor.from_pretrained(pretrained_model_name_or_path, backend=saved, **kwargs)
        return args

    # -- images ------------------------------------------------------------------------------------------------------
    def _background_color(self) -> tuple[int, int, int]:
        mean = getattr(self.image_processor, "image_mean", None) or (0.0, 0.0, 0.0)
        if isinstance(mean, (int, float)):
            mean = (mean, mean, mean)
        return tuple(int(x * 255) for x in mean)

    def _process_images(self, images: Any, **kwargs: Any) -> tuple[BatchFeature, list[str]]:
        images = make_flat_list_of_images(images)
        if self.image_aspect_ratio == "pad":
            background = self._background_color()
            images = [expand_to_square(_as_rgb_pil(image), background) for image in images]
        processed = self.image_processor(images, **kwargs)
        return processed, [self.replace_image_token(processed, idx) for idx in range(len(images))]

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs: Any) -> str:
        return self.image_token * self.image_seq_length

    def _get_num_multimodal_tokens(self, image_sizes: list | None = None, **kwargs: Any) -> MultiModalData:
        """Number of placeholder tokens per image (every image gives `image_seq_length`, whatever its size)."""
        data = {}
        if image_sizes is not None:
            data = {
                "num_image_tokens": [self.image_seq_length] * len(image_sizes),
                "num_image_patches": [1] * len(image_sizes),
            }
        return MultiModalData(**data)

    # -- text --------------------------------------------------------------------------------------------------------
    def __call__(
        self, images: Any = None, text: Any = None, videos: Any = None, audio: Any = None, **kwargs: Any
    ) -> BatchFeature:
        """Process `images` and tokenize `text`, expanding each `<image>` to `image_seq_length` tokens.

        Tokenization (`_tokenize`) is LLaVA's: a BOS the template wrote as text (`<s>...`) becomes the BOS token and
        the first word keeps its leading `▁`, as when the original tokenized `"A chat ..."` with special tokens; with
        `split_text_at_images`, the text between images is tokenized chunk by chunk. Keyword arguments:
        `return_tensors`, `padding`, `padding_side`, `pad_to_multiple_of`, `add_special_tokens`,
        `return_offsets_mapping` (offsets index the text as given, so assistant masks line up). Image-processor
        keywords go to the image processor.
        """
        if videos is not None or audio is not None:
            raise ValueError("LlavaProcessor takes images and text only; got videos or audio.")
        if text is None or kwargs.get("sanitize_control_tokens"):
            return super().__call__(images=images, text=text, **kwargs)
        texts = [text] if isinstance(text, str) else list(text)
        return_tensors = kwargs.pop("return_tensors", None)
        padding = kwargs.pop("padding", False)
        padding_side = kwargs.pop("padding_side", None)
        pad_to_multiple_of = kwargs.pop("pad_to_multiple_of", None)
        add_special_tokens = kwargs.pop("add_special_tokens", True)
        return_offsets = kwargs.pop("return_offsets_mapping", False)
        if kwargs.pop("truncation", False) and kwargs.get("max_length"):
            raise ValueError(
                "LlavaProcessor does not truncate: a cut could fall inside an image's tokens. Use "
                "llava_hf.data.LlavaDataCollator(max_length=...), which truncates text only and counts what it cuts."
            )
        images_kwargs = dict(kwargs.pop("images_kwargs", None) or {})
        # Image-processor options may also come flat, as transformers' processors accept them.
        valid = getattr(getattr(self.image_processor, "valid_kwargs", None), "__annotations__", {})
        for key in [k for k in kwargs if k in valid]:
            images_kwargs[key] = kwargs.pop(key)
        ignored = sorted(k for k, v in kwargs.items() if v is not None and k not in _IGNORED_KWARGS)
        if ignored:
            logger.warning_once(f"LlavaProcessor ignores these arguments: {ignored}")
        self.validate_inputs(images=images, text=texts)
        data: dict[str, Any] = {}
        if images is not None:
            processed, _ = self._process_images(images, return_tensors="pt", **images_kwargs)
            data.update(processed)
        encoded = [self._tokenize(sample, add_special_tokens) for sample in texts]
        ids = [e[0] for e in encoded]
        batch = self.tokenizer.pad(
            {"input_ids": ids},
            padding=padding or (len(ids) > 1 and return_tensors is not None),
            padding_side=padding_side,
            pad_to_multiple_of=pad_to_multiple_of,
        )
        data["input_ids"] = batch["input_ids"]
        data["attention_mask"] = batch["attention_mask"]
        if return_offsets:
            offsets = []
            for (sample_ids, sample_offsets), padded in zip(encoded, batch["input_ids"]):
                pad = [(0, 0)] * (len(padded) - len(sample_ids))
                left = (padding_side or self.tokenizer.padding_side) == "left"
                offsets.append(pad + sample_offsets if left else sample_offsets + pad)
            data["offset_mapping"] = offsets
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion=["offset_mapping"])

    def _tokenizer_adds_bos(self) -> bool:
        """Whether the tokenizer puts BOS first by itself; probed once per tokenizer, not once per prompt."""
        tokenizer = self.tokenizer
        cached = getattr(self, "_adds_bos_cache", None)
        if cached is None or cached[0] is not tokenizer:
            bos = tokenizer.bos_token_id
            cached = (tokenizer, bos is not None and tokenizer("a")["input_ids"][:1] == [bos])
            self._adds_bos_cache = cached
        return cached[1]

    def _tokenize(self, text: str, add_special_tokens: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of one prompt with each `<image>` expanded, and each token's `(start, end)` in `text`."""
        tokenizer = self.tokenizer
        bos = tokenizer.bos_token
        adds_bos = self._tokenizer_adds_bos()
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        position = 0
        if adds_bos and bos and text.startswith(bos):
            ids, offsets, position = [tokenizer.bos_token_id], [(0, len(bos))], len(bos)
        elif adds_bos and add_special_tokens:
            ids, offsets = [tokenizer.bos_token_id], [(0, 0)]
        image_ids = [self.image_token_id] * self.image_seq_length

        def encode(chunk: str, start: int) -> None:
            if not chunk:
                return
            out = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
            for token, (a, b) in zip(out["input_ids"], out["offset_mapping"]):
                if token == self.image_token_id:
                    ids.extend(image_ids)
                    offsets.extend([(start + a, start + b)] * self.image_seq_length)
                else:
                    ids.append(token)
                    offsets.append((start + a, start + b))

        if not self.split_text_at_images:
            encode(text[position:], position)
            return ids, offsets
        for index, chunk in enumerate(text[position:].split(self.image_token)):
            if index:
                ids.extend(image_ids)
                offsets.extend([(position - len(self.image_token), position)] * self.image_seq_length)
            encode(chunk, position)
            position += len(chunk) + len(self.image_token)
        return ids, offsets

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


# Arguments transformers' pipelines and chat templates pass that have no effect here.
_IGNORED_KWARGS = {
    "max_length",
    "return_text_replacement_offsets",
    "return_mm_token_type_ids",
    "processor_kwargs",
    "text_kwargs",
    "return_attention_mask",
    "return_token_type_ids",
    "verbose",
    "do_sample_frames",
    "return_metadata",
}


def _as_rgb_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.cpu().numpy()
    if isinstance(image, np.ndarray):
        return to_pil_image(image).convert("RGB")
    raise TypeError(f"Unsupported image type {type(image).__name__}; pass PIL images, numpy arrays or tensors.")


# The name users import (transformers' own `LlavaProcessor` keeps its name on disk: see the class docstring).
LlavaProcessor = LlavaHfProcessor

__all__ = ["LlavaHfProcessor", "LlavaProcessor", "expand_to_square"]
