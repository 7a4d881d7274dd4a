"""Tiny checkpoints in the original haotian-liu/LLaVA layout, and a re-implementation of its forward pass.

The reference follows the original code path: `tokenizer_image_token` (each text chunk between images tokenized on
its own by a SentencePiece Llama tokenizer, -200 marking the image), CLIP `hidden_states[mm_vision_select_layer]`
with CLS dropped for `patch`, `mm_projector`, features spliced in place of -200, then Llama. Prompts follow its
`Conversation.get_prompt` (`sep_two_prompt`), pixels its PIL preprocessing (`original_pixel_values`).
"""

import io
import json
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

IMAGE_TOKEN_INDEX = -200
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The system prompts of the original's llava/conversation.py: `conv_vicuna_v1` ("vicuna_v1", also "v1", the
# `--version` LLaVA v1 and 1.5 trained with) and `conv_llava_v1` ("llava_v1"). Both are SeparatorStyle.TWO with
# roles USER / ASSISTANT, sep " " and sep2 "</s>".
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
CORPUS = [
    "What is in the image? A cat sits on a red mat.",
    "Describe the picture in detail. The photo shows two dogs playing in the park.",
    "How many people are there? There are three people standing near the bus.",
    "USER: ASSISTANT: A chat between a curious human and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
] * 20


def train_sentencepiece(path: Path) -> spm.SentencePieceProcessor:
    """A Llama-like SentencePiece model: BPE, byte fallback, identity normalisation, dummy prefix."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (path / "tokenizer.model").write_bytes(model.getvalue())
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "LlamaTokenizer", "legacy": False, "add_bos_token": True, "model_max_length": 2048}
        )
    )
    (path / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def make_clip_tower(path: Path, image_size: int = 8, patch_size: int = 2) -> CLIPVisionModel:
    """A tiny CLIP vision tower; `image_size=336, patch_size=84` keeps 16 patches at the real input size."""
    torch.manual_seed(1)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )
    tower = CLIPVisionModel(config).eval()
    tower.save_pretrained(path)
    # As openai/clip-vit-large-patch14(-336) ships it: the pre-`image_processor_type` feature-extractor format.
    preprocessor = {
        "crop_size": image_size,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
        "resample": 3,
        "size": image_size,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return tower


def make_original_checkpoint(
    path: Path,
    tower_path: Path,
    projector_type: str = "mlp2x_gelu",
    include_vision: bool = False,
    image_aspect_ratio: str = "pad",
    as_bin: bool = False,
    mm_vision_tower: str | None = None,
) -> tuple[LlamaForCausalLM, dict[str, torch.Tensor]]:
    path.mkdir(parents=True, exist_ok=True)
    sp = train_sentencepiece(path)
    torch.manual_seed(2)
    text_config = LlamaConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=sp.get_piece_size(),
        max_position_embeddings=512,
    )
    lm = LlamaForCausalLM(text_config).eval()
    state = {k: v for k, v in lm.state_dict().items()}
    projector = {}
    if projector_type == "linear":
        projector = {
            "model.mm_projector.weight": torch.randn(32, 32) * 0.1,
            "model.mm_projector.bias": torch.randn(32) * 0.1,
        }
    else:
        projector = {
            "model.mm_projector.0.weight": torch.randn(32, 32) * 0.1,
            "model.mm_projector.0.bias": torch.randn(32) * 0.1,
            "model.mm_projector.2.weight": torch.randn(32, 32) * 0.1,
            "model.mm_projector.2.bias": torch.randn(32) * 0.1,
        }
    state.update(projector)
    # Released checkpoints carry the rotary buffers; conversion must drop them.
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    if include_vision:
        tower = CLIPVisionModel.from_pretrained(tower_path)
        state.update({f"model.vision_tower.vision_tower.{k}": v for k, v in tower.state_dict().items()})
    config = text_config.to_dict()
    config.update(
        {
            "architectures": ["LlavaLlamaForCausalLM"],
            "model_type": "llava",
            "mm_vision_tower": mm_vision_tower or str(tower_path),
            "mm_projector_type": projector_type,
            "mm_hidden_size": 32,
            "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch",
            "mm_use_im_start_end": False,
            "mm_use_im_patch_token": False,
            "image_aspect_ratio": image_aspect_ratio,
            "tune_mm_mlp_adapter": False,
            "use_mm_proj": True,
        }
    )
    (path / "config.json").write_text(json.dumps(config))
    if as_bin:
        torch.save(state, path / "pytorch_model.bin")
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, path / "model.safetensors", metadata={"format": "pt"})
    return lm, projector


def tokenizer_image_token(sp: spm.SentencePieceProcessor, prompt: str) -> list[int]:
    """The original's tokenization: chunks around <image> tokenized separately, BOS once, -200 for the image."""
    chunks = [sp.encode(chunk) for chunk in prompt.split("<image>")]
    ids = [sp.bos_id()]
    for index, chunk in enumerate(chunks):
        if index:
            ids.append(IMAGE_TOKEN_INDEX)
        ids += chunk
    return ids


def expand2square(image: Image.Image, background) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    if width > height:
        result = Image.new(image.mode, (width, width), background)
        result.paste(image, (0, (width - height) // 2))
        return result
    result = Image.new(image.mode, (height, height), background)
    result.paste(image, ((height - width) // 2, 0))
    return result


def original_pixel_values(image: Image.Image, aspect: str, image_size: int) -> torch.Tensor:
    """`pixel_values` `(1, 3, image_size, image_size)` as the original computed them with transformers 4.x's PIL-based
    `CLIPImageProcessor`: for `pad`, `expand2square` with the mean colour as ints (truncated); then PIL bicubic resize of
    the shortest edge (the long edge truncated to int), centre crop, rescale by 1/255 and normalise in float32."""
    image = image.convert("RGB")
    if aspect == "pad":
        image = expand2square(image, tuple(int(x * 255) for x in CLIP_MEAN))
    width, height = image.size
    short, long = min(width, height), max(width, height)
    resized_long = int(image_size * long / short)
    size = (image_size, resized_long) if width <= height else (resized_long, image_size)
    array = np.asarray(image.resize(size, resample=Image.Resampling.BICUBIC))  # (height, width, 3) uint8
    top, left = (array.shape[0] - image_size) // 2, (array.shape[1] - image_size) // 2
    array = array[top : top + image_size, left : left + image_size]
    array = (array.astype(np.float64) * (1 / 255)).astype(np.float32)
    array = (array - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def sep_two_prompt(system: str, turns: list[str | None], has_image: bool = False) -> str:
    """The original's `Conversation.get_prompt` for SeparatorStyle.TWO (roles USER / ASSISTANT, seps " " and
    "</s>"). `turns` alternate user / assistant; a final `None` asks for the answer. With an image, the first user
    turn becomes "<image>\n" + its text without the placeholder, stripped."""
    if has_image:
        turns = ["<image>\n" + turns[0].replace("<image>", "").strip(), *turns[1:]]
    prompt = system + " "
    for index, message in enumerate(turns):
        role = ("USER", "ASSISTANT")[index % 2]
        prompt += f"{role}:" if message is None else f"{role}: {message}" + (" ", "</s>")[index % 2]
    return prompt


@torch.no_grad()
def original_forward(lm, projector, tower, sp, prompt, image, projector_type, aspect):
    """Logits of the original LLaVA on `prompt` (one image)."""
    pixel_values = original_pixel_values(image, aspect, tower.config.image_size)
    features = tower(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
    if projector_type == "linear":
        features = features @ projector["model.mm_projector.weight"].T + projector["model.mm_projector.bias"]
    else:
        hidden = features @ projector["model.mm_projector.0.weight"].T + projector["model.mm_projector.0.bias"]
        hidden = torch.nn.functional.gelu(hidden)
        features = hidden @ projector["model.mm_projector.2.weight"].T + projector["model.mm_projector.2.bias"]
    ids = tokenizer_image_token(sp, prompt)
    pos = ids.index(IMAGE_TOKEN_INDEX)
    embed = lm.get_input_embeddings()
    before = embed(torch.tensor(ids[:pos]))
    after = embed(torch.tensor(ids[pos + 1 :]))
    inputs_embeds = torch.cat([before, features[0], after])[None]
    return ids, lm(inputs_embeds=inputs_embeds).logits
