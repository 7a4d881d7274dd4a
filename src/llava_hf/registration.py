"""Registration with transformers' Auto classes and the Hub's remote-code mechanism."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    AutoProcessor,
)

from .configuration_llava import LlavaConfig
from .modeling_llava import LlavaForConditionalGeneration, LlavaModel
from .processing_llava import LlavaHfProcessor

_registered = False


def register() -> None:
    """Register llava_hf with AutoConfig, AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM and
    AutoProcessor, and mark the classes for `auto_map` so that `save_pretrained` copies the code files next to the
    weights. Safe to call more than once.
    """
    global _registered
    if _registered:
        return
    AutoConfig.register(LlavaConfig.model_type, LlavaConfig, exist_ok=True)
    # `exist_ok=True` is needed: transformers maps config classes by name, and its own Llava is `LlavaConfig` too.
    AutoModel.register(LlavaConfig, LlavaModel, exist_ok=True)
    AutoModelForImageTextToText.register(LlavaConfig, LlavaForConditionalGeneration, exist_ok=True)
    AutoModelForMultimodalLM.register(LlavaConfig, LlavaForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(LlavaConfig, LlavaHfProcessor, exist_ok=True)

    LlavaConfig.register_for_auto_class("AutoConfig")
    LlavaModel.register_for_auto_class("AutoModel")
    LlavaForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    LlavaHfProcessor.register_for_auto_class("AutoProcessor")
    _registered = True
