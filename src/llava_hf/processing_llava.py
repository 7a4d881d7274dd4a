# Copyright 2026 The llava-hf authors. Licensed under the Apache License, Version 2.0.
"""llava_hf processor: image processor + tokenizer.

Each `<image>` in the text expands to `image_seq_length` `<image>` tokens, the number of features the vision tower
yields (computed from the model config, see `compute_image_seq_length`). Prompts come from the processor's Jinja chat
template (`plain`, `vicuna_v1`, or the LM's own), whose `{% generation %}` markers give the assistant-token mask used
for the loss.
"""

from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_transforms import to_pil_image
from transformers.image_utils import make_flat_list_of_images
from transformers.processing_utils import MultiModalData, ProcessorMixin


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
    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> BatchFeature:
        if not self.split_text_at_images or text is None:
            return super().__call__(images=images, text=text, **kwargs)
        return self._call_split_at_images(images=images, text=text, **kwargs)

    def _call_split_at_images(self, images: Any, text: Any, **kwargs: Any) -> BatchFeature:
        """Original-LLaVA tokenization: each text chunk between images is tokenized on its own (see class doc)."""
        texts = [text] if isinstance(text, str) else list(text)
        return_tensors = kwargs.pop("return_tensors", None)
        padding = kwargs.pop("padding", False)
        padding_side = kwargs.pop("padding_side", None)
        self.validate_inputs(images=images, text=texts)
        data: dict[str, Any] = {}
        if images is not None:
            processed, _ = self._process_images(images, return_tensors="pt")
            data.update(processed)
        # BOS once at the start, exactly when the tokenizer itself adds one.
        bos = self.tokenizer.bos_token_id
        add_bos = bos is not None and self.tokenizer("a")["input_ids"][:1] == [bos]
        image_ids = [self.image_token_id] * self.image_seq_length
        all_ids = []
        for sample in texts:
            ids: list[int] = [self.tokenizer.bos_token_id] if add_bos else []
            for index, chunk in enumerate(sample.split(self.image_token)):
                if index > 0:
                    ids += image_ids
                if chunk:
                    ids += self.tokenizer(chunk, add_special_tokens=False)["input_ids"]
            all_ids.append(ids)
        encoded = self.tokenizer.pad(
            {"input_ids": all_ids}, padding=padding or (len(all_ids) > 1), padding_side=padding_side
        )
        data.update(encoded)
        return BatchFeature(data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


def _as_rgb_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.cpu().numpy()
    if isinstance(image, np.ndarray):
        return to_pil_image(image).convert("RGB")
    raise TypeError(f"Unsupported image type {type(image).__name__}; pass PIL images, numpy arrays or tensors.")


# The design card's name for it.
LlavaProcessor = LlavaHfProcessor

__all__ = ["LlavaHfProcessor", "LlavaProcessor", "expand_to_square"]
