"""Checkpoint conversion: `llava-hf convert SRC DST [--to llava_hf|hf-llava]`.

Source layouts, detected from `config.json` and the weight names:

- `hf-llava`: transformers' built-in Llava (`model_type: llava` with `text_config`), in either on-disk key layout
  transformers writes (`model.language_model.*` since v4.52, `language_model.model.*` before).
- `original`: haotian-liu/LLaVA checkpoints (`mm_projector_type`, `mm_vision_tower`, `model.mm_projector.*`).
- `llava_hf`: ours (only as a source for `--to hf-llava`).

Weights are read and written as safetensors. Released original checkpoints are `.bin` shards: `allow_bin=True`
reads them with `torch.load(weights_only=True)`, which refuses pickled code.

Image processor backend: the original LLaVA preprocessed with the PIL-based `CLIPImageProcessor` of transformers 4.x;
in transformers 5 that is `CLIPImageProcessorPil` (`backend="pil"`), while `CLIPImageProcessor` is the torchvision
backend, whose bicubic resize gives different pixels. Original checkpoints therefore convert with the PIL backend by
default; `image_processor_backend="torchvision"` trades exactness for speed. The processor records its backend
(`image_processor_backend` in `processor_config.json`), so reloading keeps it.
"""

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaTokenizer,
)

from .chat_templates import get_chat_template, resolve_chat_template
from .configuration_llava import LlavaConfig, vision_tower_has_cls
from .modeling_llava import LlavaForConditionalGeneration
from .processing_llava import IMAGE_PROCESSOR_BACKENDS, LlavaHfProcessor
from .utils import read_config

logger = logging.getLogger(__name__)

TARGETS = ("llava_hf", "hf-llava")


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file, key or field at fault."""


# -- reading -------------------------------------------------------------------------------------------------------
def detect_layout(src: str | Path) -> str:
    """Return `"hf-llava"`, `"original"` or `"llava_hf"` for a checkpoint folder; raise on anything else."""
    config = read_config(src, ConversionError)
    model_type = config.get("model_type")
    if model_type == "llava_hf":
        return "llava_hf"
    if "mm_vision_tower" in config or "mm_projector_type" in config or "mm_hidden_size" in config:
        return "original"
    if model_type == "llava" and "text_config" in config:
        return "hf-llava"
    raise ConversionError(
        f"{src}/config.json: unknown layout (model_type={model_type!r}). Expected transformers' Llava "
        "(model_type 'llava' with text_config), an original LLaVA checkpoint (mm_vision_tower, mm_projector_type) "
        "or a llava_hf checkpoint."
    )


def load_state_dict(src: Path, allow_bin: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) checkpoint folder."""
    files = sorted(src.glob("*.safetensors"))
    if files:
        state: dict[str, torch.Tensor] = {}
        for file in files:
            try:
                state.update(load_file(file))
            except (SafetensorError, OSError) as error:
                raise ConversionError(
                    f"{file} is not a readable safetensors file ({error}): truncated or corrupted; download or save "
                    "it again."
                ) from error
        return state
    bins = sorted(src.glob("pytorch_model*.bin"))
    if not bins:
        raise ConversionError(f"{src}: no *.safetensors weights found.")
    if not allow_bin:
        raise ConversionError(
            f"{src}: only PyTorch .bin weights ({', '.join(b.name for b in bins)}); llava-hf reads safetensors. "
            "Pass --allow-bin to read them with torch.load(weights_only=True), which refuses pickled code."
        )
    state = {}
    for file in bins:
        state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def _rename(
    state: dict[str, torch.Tensor], rules: list[tuple[str, str]], drop: Callable[[str], bool] = lambda k: False
) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if drop(key):
            continue
        new = key
        for pattern, replacement in rules:
            new, count = re.subn(pattern, replacement, new)
            if count:
                break
        out[new] = value
    return out


def _reconcile_vision_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Checkpoints written before transformers 5 nest CLIP under `vision_model.` (`vision_tower.vision_model.*`);
    transformers 5's CLIPVisionModel does not. Strip the segment where the model expects it stripped."""
    out = {}
    for key, value in state.items():
        if key not in expected and ".vision_model." in key:
            stripped = key.replace("model.vision_tower.vision_model.", "model.vision_tower.", 1)
            if stripped in expected:
                key = stripped
        out[key] = value
    return out


def _save_model(model: LlavaForConditionalGeneration, state: dict[str, torch.Tensor], dst: Path) -> None:
    """Check `state` against the model's keys and shapes, load it, and save `model` to `dst`."""
    expected = model.state_dict()
    state = _reconcile_vision_prefix(state, set(expected))
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    missing = sorted(set(expected) - set(state) - tied)
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConversionError(
            f"converted weights do not match the llava_hf model: missing keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}; unexpected keys {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''}"
        )
    bad = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in state
        if state[key].shape != expected[key].shape
    ]
    if bad:
        raise ConversionError("shape mismatch: " + "; ".join(bad[:10]))
    model.load_state_dict(state, strict=not tied, assign=True)
    if tied:
        model.tie_weights()
    model.save_pretrained(dst)


# -- transformers' built-in Llava -> llava_hf -----------------------------------------------------------------------
_HF_OLD_LAYOUT = [
    (r"^language_model\.model\.", "model.language_model."),
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^vision_tower\.", "model.vision_tower."),
    (r"^multi_modal_projector\.", "model.multi_modal_projector."),
]


def convert_hf_llava_to_llava_hf(src: Path, dst: Path, image_processor_backend: str | None = None) -> None:
    """`image_processor_backend=None` keeps the image processor class transformers loads for `src` (what its own
    `LlavaProcessor.from_pretrained(src)` would use); `"pil"` / `"torchvision"` pick that backend instead."""
    raw = read_config(src, ConversionError)
    hf_config = AutoConfig.from_pretrained(src)
    config = LlavaConfig(
        vision_config=hf_config.vision_config,
        text_config=hf_config.text_config,
        image_token_id=hf_config.image_token_id,
        projector_type="mlp2x_gelu",  # the built-in projector is always Linear-act-Linear
        projector_hidden_act=hf_config.projector_hidden_act,
        multimodal_projector_bias=hf_config.multimodal_projector_bias,
        vision_feature_layer=hf_config.vision_feature_layer,
        vision_feature_select_strategy=hf_config.vision_feature_select_strategy,
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
    )
    state = _rename(load_state_dict(src), _HF_OLD_LAYOUT)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    _save_model(model, state, dst)

    # Processor: keep the tokenizer, image processor and chat template; tokens per image from the config.
    if (src / "tokenizer_config.json").is_file() or (src / "tokenizer.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(src)
        image_processor = AutoImageProcessor.from_pretrained(src, backend=image_processor_backend)
        pads = bool(getattr(image_processor, "do_pad", False))
        if pads:
            model.config.image_aspect_ratio = "pad"
            model.config.save_pretrained(dst)
        processor = LlavaHfProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            chat_template=_read_chat_template(src) or get_chat_template("vicuna_v1"),
            image_token=getattr(tokenizer, "image_token", None) or "<image>",
            image_seq_length=config.image_seq_length,
            image_aspect_ratio="pad" if pads else "square",
        )
        processor.save_pretrained(dst)
    else:
        logger.warning("%s has no tokenizer files: wrote the model only", src)


def _fold_feature_statistics(state: dict[str, torch.Tensor], src: Path) -> dict[str, torch.Tensor]:
    """`projector_input_norm="standardize"` folded into `linear_1`, which transformers' Llava has:
    W((x - mean) / std) + b = (W / std) x + (b - (W / std) mean), exactly, in float64."""
    prefix = next((k[: -len("feature_mean")] for k in state if k.endswith("multi_modal_projector.feature_mean")), None)
    if prefix is None:
        raise ConversionError(
            f"{src}: config.json says projector_input_norm='standardize' but the weights hold no "
            "multi_modal_projector.feature_mean / feature_std; the checkpoint is incomplete."
        )
    if prefix + "linear_1.bias" not in state:
        raise ConversionError(
            f"{src}: the standardisation folds into linear_1's bias, and this projector has none "
            "(multimodal_projector_bias=False); transformers' Llava cannot hold it without one."
        )
    state = dict(state)
    mean, std = state.pop(prefix + "feature_mean").double(), state.pop(prefix + "feature_std").double()
    weight, bias = state[prefix + "linear_1.weight"], state[prefix + "linear_1.bias"]
    folded = weight.double() / std
    state[prefix + "linear_1.weight"] = folded.to(weight.dtype)
    state[prefix + "linear_1.bias"] = (bias.double() - folded @ mean).to(bias.dtype)
    return state


def _read_chat_template(src: Path) -> str | None:
    path = src / "chat_template.jinja"
    if path.is_file():
        return path.read_text()
    path = src / "chat_template.json"
    if path.is_file():
        return json.loads(path.read_text()).get("chat_template")
    return None


# -- llava_hf -> transformers' built-in Llava -----------------------------------------------------------------------
def convert_llava_hf_to_hf_llava(src: Path, dst: Path) -> None:
    from transformers import LlavaConfig as HFLlavaConfig
    from transformers import LlavaImageProcessor
    from transformers import LlavaProcessor as HFLlavaProcessor

    config = LlavaConfig.from_pretrained(src)
    if config.projector_type != "mlp2x_gelu":
        raise ConversionError(
            f"{src}: projector_type={config.projector_type!r}; transformers' Llava holds only the 2-layer "
            "(mlp2x_gelu) projector, so this checkpoint cannot be written in its layout."
        )
    if config.vision_feature_pool_size:
        raise ConversionError(
            f"{src}: vision_feature_pool_size={config.vision_feature_pool_size} pools the feature grid, which "
            "transformers' Llava does not do; this checkpoint cannot be written in its layout."
        )
    if config.vision_config.model_type == "timm_wrapper":
        raise ConversionError(
            f"{src}: a timm vision tower (TimmWrapper) has no hidden_states[vision_feature_layer]; transformers' "
            "Llava cannot run it."
        )
    # transformers' "default" always drops the first token; towers without CLS (SigLIP) keep everything = "full".
    strategy = config.vision_feature_select_strategy
    if not vision_tower_has_cls(config.vision_config):
        strategy = "full"
    hf_config = HFLlavaConfig(
        vision_config=config.vision_config,
        text_config=config.text_config,
        image_token_index=config.image_token_id,
        image_seq_length=config.image_seq_length,
        projector_hidden_act=config.projector_hidden_act,
        multimodal_projector_bias=config.multimodal_projector_bias,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=strategy,
        tie_word_embeddings=config.tie_word_embeddings,
    )
    # Load into transformers' own class (on the meta device, tensors assigned, no copy) and let it save: the
    # files then have exactly the key layout transformers writes and every engine that reads it expects.
    from transformers import LlavaForConditionalGeneration as HFLlava

    with torch.device("meta"):
        hf_model = HFLlava(hf_config)
    state = load_state_dict(src)
    if config.projector_input_norm == "standardize":
        state = _fold_feature_statistics(state, src)
    missing, unexpected = hf_model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ConversionError(
            f"{src}: keys do not fit transformers' Llava: missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    if config.tie_word_embeddings:
        hf_model.tie_weights()
    hf_model.save_pretrained(dst)
    if (src / "generation_config.json").is_file():
        (dst / "generation_config.json").write_text((src / "generation_config.json").read_text())

    if (src / "processor_config.json").is_file():
        processor = LlavaHfProcessor.from_pretrained(src)
        if processor.split_text_at_images:
            logger.warning(
                "%s tokenizes text between images chunk by chunk (original LLaVA); transformers' LlavaProcessor "
                "tokenizes whole prompts, so token ids after an image will differ.",
                src,
            )
        ip = processor.image_processor
        if processor.image_processor_backend == "pil":
            logger.warning(
                "%s uses the PIL image processor backend; transformers' LlavaProcessor.from_pretrained loads the "
                'torchvision backend unless told otherwise: pass backend="pil" to keep the same pixel values.',
                src,
            )
        image_processor = LlavaImageProcessor(
            size=dict(ip.size),
            crop_size=dict(ip.crop_size) if getattr(ip, "crop_size", None) else None,
            do_center_crop=getattr(ip, "do_center_crop", True),
            image_mean=list(ip.image_mean),
            image_std=list(ip.image_std),
            resample=getattr(ip, "resample", 3),
            do_pad=processor.image_aspect_ratio == "pad",
        )
        hf_processor = HFLlavaProcessor(
            image_processor=image_processor,
            tokenizer=processor.tokenizer,
            patch_size=config.vision_config.patch_size,
            vision_feature_select_strategy=strategy,
            chat_template=processor.chat_template,
            image_token=processor.image_token,
            num_additional_image_tokens=1 if vision_tower_has_cls(config.vision_config) else 0,
        )
        hf_processor.save_pretrained(dst)


# -- original LLaVA -> llava_hf -------------------------------------------------------------------------------------
_ORIGINAL_RULES = [
    (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
    (r"^model\.mm_projector\.(weight|bias)$", r"model.multi_modal_projector.linear_1.\1"),
    (r"^model\.vision_tower\.vision_tower\.", "model.vision_tower."),
    (r"^model\.", "model.language_model."),
]


def _original_projector_type(config: dict) -> str:
    projector_type = config.get("mm_projector_type", "linear")
    if projector_type not in ("linear", "mlp2x_gelu"):
        raise ConversionError(
            f"config.json: mm_projector_type={projector_type!r}; llava-hf converts 'linear' and 'mlp2x_gelu'."
        )
    return projector_type


def convert_original_to_llava_hf(
    src: Path,
    dst: Path,
    vision_tower: str | Path | None = None,
    allow_bin: bool = False,
    chat_template: str | None = None,
    image_processor_backend: str | None = None,
) -> None:
    """`chat_template=None` picks the original's conversation mode from the projector: `vicuna_v1` for
    `mlp2x_gelu` (LLaVA-1.5, trained and evaluated with it), `llava_v1` for `linear` (LLaVA v1, evaluated with it).
    `image_processor_backend=None` is `"pil"`, the original's pixels exactly."""
    raw = read_config(src, ConversionError)
    if raw.get("mm_use_im_start_end"):
        raise ConversionError(
            f"{src}/config.json: mm_use_im_start_end=true (<im_start>/<im_end> around images) is not supported."
        )
    aspect = raw.get("image_aspect_ratio", "square")
    if aspect not in ("pad", "square"):
        raise ConversionError(f"{src}/config.json: image_aspect_ratio={aspect!r}; supported: 'pad', 'square'.")
    select_feature = raw.get("mm_vision_select_feature", "patch")
    if select_feature not in ("patch", "cls_patch"):
        raise ConversionError(
            f"{src}/config.json: mm_vision_select_feature={select_feature!r}; supported: 'patch', 'cls_patch'."
        )

    tower = Path(vision_tower) if vision_tower is not None else Path(str(raw.get("mm_vision_tower", "")))
    if not (tower / "config.json").is_file():
        raise ConversionError(
            f"{src}/config.json: mm_vision_tower={raw.get('mm_vision_tower')!r} is not a local folder; pass "
            "--vision-tower /path/to/clip-vit-large-patch14[-336] (its config.json and preprocessor_config.json "
            "are needed, and its weights when the checkpoint does not include them)."
        )
    tower_config = AutoConfig.from_pretrained(tower)
    vision_config = tower_config.vision_config if hasattr(tower_config, "vision_config") else tower_config
    if not isinstance(vision_config, CLIPVisionConfig):
        raise ConversionError(f"{tower}: expected a CLIP vision tower, got model_type {tower_config.model_type!r}.")

    # The LM part of the original config is a LlamaConfig with mm_* extras.
    text_fields = {k: v for k, v in raw.items() if not k.startswith("mm_") and k not in _ORIGINAL_NON_TEXT_FIELDS}
    text_fields["model_type"] = "llama"
    text_config = LlamaConfig(**{k: v for k, v in text_fields.items() if k != "model_type"})

    state = load_state_dict(src, allow_bin=allow_bin)
    state = _rename(state, _ORIGINAL_RULES, drop=lambda k: k.endswith("rotary_emb.inv_freq"))
    if not any(k.startswith("model.vision_tower.") for k in state):
        tower_state = load_state_dict(tower, allow_bin=allow_bin)
        # A full CLIP checkpoint (vision_model.*, text_model.*, ...) or a CLIPVisionModel (embeddings.*, encoder.*).
        vision_keys = {
            k: v
            for k, v in tower_state.items()
            if k.startswith(("vision_model.", "embeddings.", "encoder.", "pre_layrnorm.", "post_layernorm."))
        }
        if not vision_keys:
            raise ConversionError(f"{tower}: no CLIP vision weights (vision_model.* or embeddings.*/encoder.*) found.")
        state.update({f"model.vision_tower.{k}": v for k, v in vision_keys.items()})
    # CLIPVisionModel has no position_ids buffer in its state dict in transformers 5.
    state = {k: v for k, v in state.items() if not k.endswith("embeddings.position_ids")}

    # The original tokenizer has no <image> token (the model used index -200): add it as a new row.
    tokenizer = LlamaTokenizer.from_pretrained(src, legacy=False)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token  # LLaVA-1.5's choice: no new row for padding
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    embed = state["model.language_model.embed_tokens.weight"]
    new_rows = len(tokenizer) - embed.shape[0]
    if new_rows > 0:
        for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            weight = state[key]
            state[key] = torch.cat(
                [weight, weight.float().mean(0, keepdim=True).to(weight.dtype).expand(new_rows, -1)]
            )
        text_config.vocab_size = len(tokenizer)

    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=image_token_id,
        projector_type=_original_projector_type(raw),
        vision_feature_layer=raw.get("mm_vision_select_layer", -2),
        vision_feature_select_strategy=select_feature,
        image_aspect_ratio=aspect,
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    _save_model(model, state, dst)

    if chat_template is None:
        chat_template = "vicuna_v1" if config.projector_type == "mlp2x_gelu" else "llava_v1"
        logger.info("%s: %s projector, using the %s chat template", src, config.projector_type, chat_template)
    processor = LlavaHfProcessor(
        # The original's CLIPImageProcessor was PIL-based: the PIL backend reproduces its pixel values.
        image_processor=AutoImageProcessor.from_pretrained(tower, backend=image_processor_backend or "pil"),
        tokenizer=tokenizer,
        chat_template=resolve_chat_template(chat_template),
        image_seq_length=config.image_seq_length,
        image_aspect_ratio=aspect,
        split_text_at_images=True,  # reproduce the original's token ids exactly
    )
    processor.save_pretrained(dst)


_ORIGINAL_NON_TEXT_FIELDS = {
    "architectures",
    "auto_map",
    "freeze_mm_mlp_adapter",
    "freeze_mm_vision_resampler",
    "image_aspect_ratio",
    "image_grid_pinpoints",
    "tokenizer_model_max_length",
    "tokenizer_padding_side",
    "tune_mm_mlp_adapter",
    "tune_mm_vision_resampler",
    "unfreeze_mm_vision_tower",
    "use_mm_proj",
    "transformers_version",
    "_name_or_path",
}


# -- entry point ----------------------------------------------------------------------------------------------------
def convert(
    src: str | Path,
    dst: str | Path,
    to: str = "llava_hf",
    vision_tower: str | Path | None = None,
    allow_bin: bool = False,
    chat_template: str | None = None,
    image_processor_backend: str | None = None,
) -> str:
    """Convert the checkpoint folder `src` into `dst` (`to`: `"llava_hf"` or `"hf-llava"`). Returns the source layout.

    `chat_template` applies to original LLaVA checkpoints, whose conversation format is not recorded in the
    checkpoint: `None` picks the original's by projector (`"vicuna_v1"` for LLaVA-1.5's `mlp2x_gelu`, `"llava_v1"`
    for LLaVA v1's `linear`); or `"vicuna_v1"`, `"llava_v1"`, `"plain"` (stage-1 projector checkpoints), a `.jinja`
    file or a Jinja string (see `llava_hf.chat_templates.resolve_chat_template`).

    `image_processor_backend` (`"pil"` or `"torchvision"`, transformers' `backend`) applies to conversions to
    llava_hf. `None`: `"pil"` for original checkpoints (their pixels exactly), and for transformers' Llava the
    class transformers itself loads for `src`.
    """
    src, dst = Path(src), Path(dst)
    if to not in TARGETS:
        raise ConversionError(f"--to must be one of {list(TARGETS)}, got {to!r}.")
    if image_processor_backend not in (None, *IMAGE_PROCESSOR_BACKENDS):
        raise ConversionError(
            f"--image-processor-backend must be one of {list(IMAGE_PROCESSOR_BACKENDS)}, got {image_processor_backend!r}."
        )
    layout = detect_layout(src)
    if dst.is_file() or (dst.is_dir() and any(dst.iterdir())):
        # Writing into it would mix two checkpoints' files (a sharded index beside a single weights file loads
        # neither) or overwrite what is there.
        raise ConversionError(f"{dst} exists and is not an empty folder; choose a new (or empty) output folder.")
    # Options that would otherwise be ignored without a word.
    if to == "hf-llava" and image_processor_backend is not None:
        raise ConversionError(
            "--image-processor-backend applies to conversions to llava_hf; --to hf-llava writes transformers' "
            'LlavaImageProcessor (choose its backend when loading, e.g. backend="pil").'
        )
    if chat_template is not None and layout != "original":
        raise ConversionError(
            f"--chat-template applies to original LLaVA checkpoints; {src} is {layout!r} and keeps its own chat "
            "template."
        )
    chat_template = resolve_chat_template(chat_template)  # a name or a .jinja file: read before any writing
    if to == "llava_hf":
        if layout == "hf-llava":
            convert_hf_llava_to_llava_hf(src, dst, image_processor_backend=image_processor_backend)
        elif layout == "original":
            convert_original_to_llava_hf(
                src,
                dst,
                vision_tower=vision_tower,
                allow_bin=allow_bin,
                chat_template=chat_template,
                image_processor_backend=image_processor_backend,
            )
        else:
            raise ConversionError(f"{src} is already a llava_hf checkpoint.")
    else:
        if layout != "llava_hf":
            raise ConversionError(
                f"--to hf-llava converts llava_hf checkpoints; {src} is {layout!r}. Convert it to llava_hf first."
            )
        convert_llava_hf_to_hf_llava(src, dst)
    logger.info("converted %s (%s) -> %s (%s)", src, layout, dst, to)
    return layout
