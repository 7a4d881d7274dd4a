"""`llava-hf convert`: transformers' Llava <-> llava_hf, and original LLaVA checkpoints -> llava_hf."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPImageProcessor
from transformers import LlavaConfig as HFLlavaConfig
from transformers import LlavaForConditionalGeneration as HFLlava
from transformers import LlavaProcessor as HFLlavaProcessor

from fixtures.tester import LlavaModelTester, tiny_tokenizer
from llava_hf import LlavaForConditionalGeneration, LlavaProcessor
from llava_hf.convert import ConversionError, convert, detect_layout


def _hf_llava_config(tokenizer) -> HFLlavaConfig:
    tester = LlavaModelTester()
    ours = tester.get_config()
    return HFLlavaConfig(
        vision_config=ours.vision_config,
        text_config=ours.text_config,
        image_token_index=ours.image_token_id,
        image_seq_length=ours.image_seq_length,
    )


def _save_hf_llava(path: Path, module_layout: bool) -> HFLlava:
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    model = HFLlava(_hf_llava_config(tokenizer)).eval()
    model.save_pretrained(path)
    HFLlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8}),
        tokenizer=tokenizer,
        patch_size=2,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    ).save_pretrained(path)
    state = load_file(path / "model.safetensors")
    # transformers writes the legacy layout (language_model.model.*, vision_tower.*, ...); check we read it.
    assert "language_model.lm_head.weight" in state
    if module_layout:  # the module-path layout (model.language_model.*, lm_head.*) other writers produce
        renamed = {}
        for key, value in state.items():
            if key.startswith("language_model.model."):
                key = "model.language_model." + key[len("language_model.model.") :]
            elif key.startswith("language_model.lm_head."):
                key = key[len("language_model.") :]
            else:
                key = "model." + key
            renamed[key] = value
        save_file(renamed, path / "model.safetensors", metadata={"format": "pt"})
    return model


@pytest.mark.parametrize("module_layout", [False, True], ids=["legacy-keys", "module-keys"])
def test_hf_llava_to_llava_hf_logits_match(tmp_path, module_layout):
    reference = _save_hf_llava(tmp_path / "hf", module_layout)
    assert detect_layout(tmp_path / "hf") == "hf-llava"
    convert(tmp_path / "hf", tmp_path / "ours")
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    processor = LlavaProcessor.from_pretrained(tmp_path / "ours")
    hf_processor = HFLlavaProcessor.from_pretrained(tmp_path / "hf")
    image = torch.randint(0, 255, (3, 12, 9), dtype=torch.uint8)
    prompt = "USER: <image>\nWhat is it? ASSISTANT:"
    ours_inputs = processor(images=[image], text=prompt, return_tensors="pt")
    hf_inputs = hf_processor(images=[image], text=prompt, return_tensors="pt")
    assert torch.equal(ours_inputs["input_ids"], hf_inputs["input_ids"])
    with torch.no_grad():
        ours = model(**ours_inputs).logits
        theirs = reference(**hf_inputs).logits
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_hf_llava_keeps_the_source_image_processor_class(tmp_path):
    """By default the converted processor holds the image processor class transformers' own LlavaProcessor loads for
    the source; `image_processor_backend="pil"` switches backend, and either choice survives reloading."""
    from transformers import AutoProcessor

    _save_hf_llava(tmp_path / "hf", module_layout=False)
    source_class = type(HFLlavaProcessor.from_pretrained(tmp_path / "hf").image_processor)
    convert(tmp_path / "hf", tmp_path / "ours")
    assert type(AutoProcessor.from_pretrained(tmp_path / "ours").image_processor) is source_class
    convert(tmp_path / "hf", tmp_path / "pil", image_processor_backend="pil")
    assert AutoProcessor.from_pretrained(tmp_path / "pil").image_processor.backend == "pil"


def test_llava_hf_to_hf_llava_round_trip(tmp_path):
    tester = LlavaModelTester()
    tester.save(tmp_path / "ours")
    convert(tmp_path / "ours", tmp_path / "hf", to="hf-llava")
    assert detect_layout(tmp_path / "hf") == "hf-llava"
    reference = HFLlava.from_pretrained(tmp_path / "hf").eval()
    hf_processor = HFLlavaProcessor.from_pretrained(tmp_path / "hf")
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    processor = LlavaProcessor.from_pretrained(tmp_path / "ours")
    image = torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8)
    prompt = "USER: <image>\nHi ASSISTANT:"
    ours_inputs = processor(images=[image], text=prompt, return_tensors="pt")
    hf_inputs = hf_processor(images=[image], text=prompt, return_tensors="pt")
    assert torch.equal(ours_inputs["input_ids"], hf_inputs["input_ids"])
    assert torch.allclose(ours_inputs["pixel_values"], hf_inputs["pixel_values"])
    with torch.no_grad():
        diff = (model(**ours_inputs).logits - reference(**hf_inputs).logits).abs().max().item()
    assert diff <= 1e-5
    # ... and back again gives the same weights.
    convert(tmp_path / "hf", tmp_path / "back")
    back = LlavaForConditionalGeneration.from_pretrained(tmp_path / "back")
    for key, value in model.state_dict().items():
        assert torch.equal(value, back.state_dict()[key]), key


def test_standardized_projector_folds_into_hf_llava(tmp_path):
    # projector_input_norm="standardize" has no place in transformers' Llava; folded into linear_1, the converted
    # model gives the same logits.
    tester = LlavaModelTester()
    config = tester.get_config()
    config.projector_input_norm = "standardize"
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(type(config)(**config.to_dict())).eval()
    width = model.model.multi_modal_projector.feature_mean.shape[0]
    model.model.multi_modal_projector.set_feature_statistics(torch.randn(width), torch.rand(width) + 0.5)
    model.save_pretrained(tmp_path / "ours")
    tester.get_processor().save_pretrained(tmp_path / "ours")
    convert(tmp_path / "ours", tmp_path / "hf", to="hf-llava")
    reference = HFLlava.from_pretrained(tmp_path / "hf").eval()
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        torch.testing.assert_close(reference(**inputs).logits, model(**inputs).logits, atol=1e-5, rtol=1e-5)
    assert not any("feature_" in key for key in load_file(tmp_path / "hf" / "model.safetensors"))
    # Without a linear_1 bias there is nowhere to fold the mean: refused, naming the flag.
    config.multimodal_projector_bias = False
    LlavaForConditionalGeneration(type(config)(**config.to_dict())).save_pretrained(tmp_path / "nobias")
    tester.get_processor().save_pretrained(tmp_path / "nobias")
    with pytest.raises(ConversionError, match="multimodal_projector_bias=False"):
        convert(tmp_path / "nobias", tmp_path / "hf_nobias", to="hf-llava")


def test_options_a_conversion_would_ignore_are_refused(tmp_path):
    """`--chat-template` only for original checkpoints, `--image-processor-backend` only towards llava_hf."""
    _save_hf_llava(tmp_path / "hf", module_layout=True)
    with pytest.raises(ConversionError, match="--chat-template applies to original LLaVA checkpoints"):
        convert(tmp_path / "hf", tmp_path / "out", chat_template="llava_v1")
    LlavaModelTester().save(tmp_path / "ours")
    with pytest.raises(ConversionError, match="--image-processor-backend applies to conversions to llava_hf"):
        convert(tmp_path / "ours", tmp_path / "back", to="hf-llava", image_processor_backend="pil")
    assert not (tmp_path / "out").exists() and not (tmp_path / "back").exists()


def test_linear_projector_cannot_go_to_hf_llava(tmp_path):
    LlavaModelTester(projector_type="linear").save(tmp_path / "ours")
    with pytest.raises(ConversionError, match="mlp2x_gelu"):
        convert(tmp_path / "ours", tmp_path / "hf", to="hf-llava")


def test_unknown_layout_raises(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConversionError, match="unknown layout"):
        detect_layout(tmp_path)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    _save_hf_llava(tmp_path / "hf", module_layout=True)
    state = load_file(tmp_path / "hf" / "model.safetensors")
    state.pop("model.multi_modal_projector.linear_2.bias")
    state["model.extra.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        ConversionError, match=r"missing keys \['model.multi_modal_projector.linear_2.bias'\].*model.extra.weight"
    ):
        convert(tmp_path / "hf", tmp_path / "ours")


def test_shape_mismatch_is_named(tmp_path):
    _save_hf_llava(tmp_path / "hf", module_layout=True)
    state = load_file(tmp_path / "hf" / "model.safetensors")
    state["model.multi_modal_projector.linear_2.bias"] = torch.zeros(7)
    save_file(state, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConversionError, match=r"linear_2.bias: checkpoint \(7,\) vs model \(32,\)"):
        convert(tmp_path / "hf", tmp_path / "ours")


# -- original LLaVA checkpoints --------------------------------------------------------------------------------------
PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions. USER: <image>\nWhat is in the image? ASSISTANT:"
)


def _noise_image(height: int, width: int, seed: int = 0):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "projector_type,include_vision,aspect",
    [("linear", False, "square"), ("mlp2x_gelu", True, "pad"), ("mlp2x_gelu", False, "pad")],
    ids=["v1-linear-tower-from-clip", "v1.5-mlp-tower-inside", "v1.5-mlp-tower-from-clip"],
)
def test_original_checkpoint_matches_original_forward(tmp_path, projector_type, include_vision, aspect):
    from fixtures.original_llava import make_clip_tower, make_original_checkpoint, original_forward

    # 336 px input (as LLaVA-1.5) in 16 patches: a 72x48 image is upscaled, where the image processor backends differ.
    tower = make_clip_tower(tmp_path / "clip", image_size=336, patch_size=84)
    lm, projector = make_original_checkpoint(
        tmp_path / "orig", tmp_path / "clip", projector_type, include_vision=include_vision, image_aspect_ratio=aspect
    )
    assert detect_layout(tmp_path / "orig") == "original"
    convert(tmp_path / "orig", tmp_path / "ours")

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "orig" / "tokenizer.model"))
    image = _noise_image(48, 72)
    ref_ids, ref_logits = original_forward(lm, projector, tower, sp, PROMPT, image, projector_type, aspect)

    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    processor = LlavaProcessor.from_pretrained(tmp_path / "ours")
    assert model.config.projector_type == projector_type
    inputs = processor(images=[image], text=PROMPT, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    # Token ids: the original's, with -200 expanded to image_seq_length <image> tokens. The lone "▁" after the image
    # (the chunk "\nWhat..." tokenized on its own) must be there.
    pos = ref_ids.index(-200)
    expected = ref_ids[:pos] + [model.config.image_token_id] * model.config.image_seq_length + ref_ids[pos + 1 :]
    assert ids == expected
    assert sp.id_to_piece(ref_ids[pos + 1]) == "▁"
    with torch.no_grad():
        logits = model(**inputs).logits
    # Image positions in the original are features, identical here; compare every position.
    assert (logits[0, :, : ref_logits.shape[-1]] - ref_logits[0]).abs().max().item() <= 1e-5


def test_whole_prompt_tokenization_drops_the_lone_piece(tmp_path):
    """Why `split_text_at_images` exists: tokenizing the whole prompt loses the "▁" after <image>."""
    from fixtures.original_llava import make_clip_tower, make_original_checkpoint

    make_clip_tower(tmp_path / "clip")
    make_original_checkpoint(tmp_path / "orig", tmp_path / "clip")
    convert(tmp_path / "orig", tmp_path / "ours")
    processor = LlavaProcessor.from_pretrained(tmp_path / "ours")
    assert processor.split_text_at_images
    image = torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8)
    split = processor(images=[image], text=PROMPT)["input_ids"][0]
    processor.split_text_at_images = False
    whole = processor(images=[image], text=PROMPT)["input_ids"][0]
    assert len(split) == len(whole) + 1


def test_original_bin_needs_allow_bin(tmp_path):
    from fixtures.original_llava import make_clip_tower, make_original_checkpoint

    make_clip_tower(tmp_path / "clip")
    make_original_checkpoint(tmp_path / "orig", tmp_path / "clip", as_bin=True)
    with pytest.raises(ConversionError, match="--allow-bin"):
        convert(tmp_path / "orig", tmp_path / "ours")
    convert(tmp_path / "orig", tmp_path / "ours", allow_bin=True)
    assert (tmp_path / "ours" / "model.safetensors").is_file()


def test_original_hub_id_vision_tower_needs_local_path(tmp_path):
    from fixtures.original_llava import make_clip_tower, make_original_checkpoint

    make_clip_tower(tmp_path / "clip")
    make_original_checkpoint(tmp_path / "orig", tmp_path / "clip", mm_vision_tower="openai/clip-vit-large-patch14-336")
    with pytest.raises(ConversionError, match="--vision-tower"):
        convert(tmp_path / "orig", tmp_path / "ours")
    convert(tmp_path / "orig", tmp_path / "ours", vision_tower=tmp_path / "clip")
    assert LlavaForConditionalGeneration.from_pretrained(tmp_path / "ours").config.vision_feature_layer == -2


def test_converted_chat_template_gives_the_original_token_ids(tmp_path):
    """apply_chat_template on a converted checkpoint = the original's tokenizer_image_token on its prompt:
    one BOS, the first word's "▁" kept, the lone "▁" after the image; and the assistant mask still works."""
    import sentencepiece as spm
    from PIL import Image

    from fixtures.original_llava import (
        VICUNA_V1_SYSTEM,
        make_clip_tower,
        make_original_checkpoint,
        sep_two_prompt,
        tokenizer_image_token,
    )

    make_clip_tower(tmp_path / "clip")
    make_original_checkpoint(tmp_path / "orig", tmp_path / "clip")  # mlp2x_gelu: LLaVA-1.5, vicuna_v1
    convert(tmp_path / "orig", tmp_path / "ours")
    processor = LlavaProcessor.from_pretrained(tmp_path / "ours")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "orig" / "tokenizer.model"))
    image = Image.fromarray(torch.randint(0, 255, (8, 8, 3), dtype=torch.uint8).numpy())
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is in the image?"}],
        }
    ]
    original_prompt = sep_two_prompt(VICUNA_V1_SYSTEM, ["<image>\nWhat is in the image?", None], has_image=True)
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == "<s>" + original_prompt
    ids = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ][0]
    reference = tokenizer_image_token(sp, original_prompt)
    pos = reference.index(-200)
    image_id = processor.image_token_id
    assert list(ids) == reference[:pos] + [image_id] * processor.image_seq_length + reference[pos + 1 :]

    answered = messages + [{"role": "assistant", "content": [{"type": "text", "text": "A cat on a mat."}]}]
    out = processor.apply_chat_template(answered, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    mask = torch.as_tensor(out["assistant_masks"][0]).bool()
    assert processor.tokenizer.decode(torch.as_tensor(out["input_ids"][0])[mask]) == "A cat on a mat.</s>"


@pytest.mark.parametrize("projector_type,expected", [("mlp2x_gelu", "vicuna_v1"), ("linear", "llava_v1")])
def test_original_chat_template_follows_the_checkpoint_generation(tmp_path, projector_type, expected):
    """LLaVA-1.5 (mlp2x_gelu) trained and is evaluated with `vicuna_v1`; LLaVA v1 (linear) was evaluated with
    `llava_v1`. An explicit choice wins."""
    from fixtures.original_llava import (
        LLAVA_V1_SYSTEM,
        VICUNA_V1_SYSTEM,
        make_clip_tower,
        make_original_checkpoint,
        sep_two_prompt,
    )
    from llava_hf import get_chat_template

    make_clip_tower(tmp_path / "clip")
    make_original_checkpoint(tmp_path / "orig", tmp_path / "clip", projector_type)
    convert(tmp_path / "orig", tmp_path / "ours")
    processor = LlavaProcessor.from_pretrained(tmp_path / "ours")
    assert processor.chat_template == get_chat_template(expected)
    system = {"vicuna_v1": VICUNA_V1_SYSTEM, "llava_v1": LLAVA_V1_SYSTEM}[expected]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == "<s>" + sep_two_prompt(system, ["<image>\nHi?", None], has_image=True)
    convert(tmp_path / "orig", tmp_path / "plain", chat_template="plain")
    assert LlavaProcessor.from_pretrained(tmp_path / "plain").chat_template == get_chat_template("plain")


@pytest.mark.parametrize("aspect", ["pad", "square"])
@pytest.mark.parametrize("height,width", [(48, 72), (72, 48)], ids=["72x48", "48x72"])
def test_original_conversion_reproduces_the_original_pixels(tmp_path, aspect, height, width):
    """The converted processor, saved and reloaded through AutoProcessor, gives the original's pixel_values."""
    from transformers import AutoProcessor

    from fixtures.original_llava import make_clip_tower, make_original_checkpoint, original_pixel_values

    make_clip_tower(tmp_path / "clip", image_size=336, patch_size=84)
    make_original_checkpoint(tmp_path / "orig", tmp_path / "clip", image_aspect_ratio=aspect)
    convert(tmp_path / "orig", tmp_path / "ours")
    processor = AutoProcessor.from_pretrained(tmp_path / "ours")
    assert processor.image_processor.backend == "pil"
    image = _noise_image(height, width)
    pixel_values = processor(images=[image], text="<image>", return_tensors="pt")["pixel_values"]
    expected = original_pixel_values(image, aspect, 336)
    assert (pixel_values - expected).abs().max().item() <= 1e-6


def test_torchvision_backend_is_an_explicit_choice(tmp_path):
    """`image_processor_backend="torchvision"` is faster and kept on reload, but its bicubic resize is not the
    original's; an unknown backend names the option."""
    from transformers import AutoProcessor

    from fixtures.original_llava import make_clip_tower, make_original_checkpoint, original_pixel_values

    make_clip_tower(tmp_path / "clip", image_size=336, patch_size=84)
    make_original_checkpoint(tmp_path / "orig", tmp_path / "clip")
    with pytest.raises(ConversionError, match="--image-processor-backend must be one of"):
        convert(tmp_path / "orig", tmp_path / "bad", image_processor_backend="fast")
    convert(tmp_path / "orig", tmp_path / "ours", image_processor_backend="torchvision")
    processor = AutoProcessor.from_pretrained(tmp_path / "ours")
    assert processor.image_processor.backend == "torchvision"
    image = _noise_image(48, 72)
    pixel_values = processor(images=[image], text="<image>", return_tensors="pt")["pixel_values"]
    assert (pixel_values - original_pixel_values(image, "pad", 336)).abs().max().item() > 1e-3


REMOTE_PIXELS = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class BlockLlavaHf(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "llava_hf" or name.startswith("llava_hf."):
                raise ImportError("llava_hf is blocked in this process")
    sys.meta_path.insert(0, BlockLlavaHf())
    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 72, 3), dtype=np.uint8))
    pixel_values = processor(images=[image], text="<image>", return_tensors="np")["pixel_values"]
    assert "llava_hf" not in sys.modules
    print(json.dumps({"processor": type(processor).__module__, "backend": processor.image_processor.backend,
                      "pixel_values": pixel_values.tolist()}))
    """
)


def test_original_pixels_survive_remote_code(tmp_path):
    """Loaded with trust_remote_code where llava_hf cannot be imported, the converted processor keeps the PIL
    backend and the original's pixel_values."""
    from fixtures.original_llava import make_clip_tower, make_original_checkpoint, original_pixel_values

    make_clip_tower(tmp_path / "clip", image_size=336, patch_size=84)
    make_original_checkpoint(tmp_path / "orig", tmp_path / "clip", image_aspect_ratio="pad")
    convert(tmp_path / "orig", tmp_path / "ours")
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_PIXELS)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ours")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["processor"].startswith("transformers_modules.") and report["backend"] == "pil", report
    expected = original_pixel_values(_noise_image(48, 72), "pad", 336)
    assert (torch.tensor(report["pixel_values"]) - expected).abs().max().item() <= 1e-6


def test_hf_llava_output_uses_transformers_own_key_layout(tmp_path):
    LlavaModelTester().save(tmp_path / "ours")
    convert(tmp_path / "ours", tmp_path / "hf", to="hf-llava")
    keys = set(load_file(tmp_path / "hf" / "model.safetensors"))
    reference = tmp_path / "reference"
    HFLlava.from_pretrained(tmp_path / "hf").save_pretrained(reference)
    assert keys == set(load_file(reference / "model.safetensors"))
    assert any(k.startswith("language_model.model.") for k in keys)


def test_original_with_bin_vision_tower(tmp_path):
    """Full CLIP checkpoint (vision_model.*, text_model.*) as .bin, e.g. openai/clip-vit-large-patch14-336."""
    from transformers import CLIPConfig, CLIPModel

    from fixtures.original_llava import make_clip_tower, make_original_checkpoint

    tower = make_clip_tower(tmp_path / "vision-only")
    full = CLIPModel(
        CLIPConfig(
            vision_config=tower.config.to_dict(),
            text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4},
            projection_dim=32,
        )
    )
    full.vision_model.load_state_dict(tower.state_dict(), strict=False)
    (tmp_path / "clip").mkdir()
    full.config.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8}).save_pretrained(
        tmp_path / "clip"
    )
    state = {f"vision_model.{k}": v for k, v in tower.state_dict().items()}
    state.update({f"text_model.{k}": v for k, v in full.text_model.state_dict().items()})
    state["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    torch.save(state, tmp_path / "clip" / "pytorch_model.bin")
    make_original_checkpoint(tmp_path / "orig", tmp_path / "clip", as_bin=True)
    convert(tmp_path / "orig", tmp_path / "ours", allow_bin=True)
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "ours")
    assert torch.equal(
        model.model.vision_tower.embeddings.patch_embedding.weight, tower.embeddings.patch_embedding.weight
    )
