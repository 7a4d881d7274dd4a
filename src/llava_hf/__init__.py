"""llava-hf: a Hugging Face-native LLaVA.

Importing the package registers `LlavaConfig` (model_type `llava_hf`), `LlavaModel`, `LlavaForConditionalGeneration`
and `LlavaProcessor` with the Auto classes, so `AutoModelForImageTextToText`, `AutoProcessor` and
`pipeline("image-text-to-text")` work without `trust_remote_code`.
"""

from .chat_templates import TEMPLATE_NAMES, get_chat_template
from .configuration_llava import LlavaConfig, compute_image_seq_length
from .modeling_llava import (
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaMultiModalProjector,
    LlavaPreTrainedModel,
    resolve_attn_implementation,
)
from .processing_llava import LlavaHfProcessor, LlavaProcessor
from .registration import register
from .version import __version__ as __version__

register()

__all__ = [
    "TEMPLATE_NAMES",
    "LlavaConfig",
    "LlavaForConditionalGeneration",
    "LlavaModel",
    "LlavaMultiModalProjector",
    "LlavaPreTrainedModel",
    "LlavaHfProcessor",
    "LlavaProcessor",
    "build_llava_from_pretrained",
    "compute_image_seq_length",
    "get_chat_template",
    "load_offline_default",
    "register",
    "resolve_attn_implementation",
]


def __getattr__(name: str):
    # Builders pull in timm/gguf lazily; keep `import llava_hf` light.
    if name == "build_llava_from_pretrained":
        from .builder import build_llava_from_pretrained

        return build_llava_from_pretrained
    if name == "load_offline_default":
        from .backbones import load_offline_default

        return load_offline_default
    raise AttributeError(f"module 'llava_hf' has no attribute {name!r}")
