"""build_llava_from_pretrained: pretrained vision encoder + pretrained LM + fresh projector."""

import pytest
import torch
from transformers import (
    AutoTokenizer,
)

from fixtures.backbones import save_backbones
from llava_hf import LlavaForConditionalGeneration, build_llava_from_pretrained


@pytest.mark.parametrize("projector_type", ["linear", "mlp2x_gelu"])
def test_build_from_paths(tmp_path, projector_type):
    clip, lm = save_backbones(tmp_path)
    model, processor = build_llava_from_pretrained(
        str(tmp_path / "clip"), str(tmp_path / "lm"), projector_type=projector_type, seed=0
    )
    assert isinstance(model, LlavaForConditionalGeneration)
    assert model.config.projector_type == projector_type
    # Tokenizer surgery: <image> and <pad> added, embeddings resized to match.
    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_id == 30
    assert tokenizer.pad_token == "<pad>"
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == 32
    assert model.lm_head.weight.shape[0] == 32
    # Pretrained weights are kept (the vision half of the full CLIP checkpoint; the LM's original rows).
    assert torch.equal(
        model.model.vision_tower.embeddings.patch_embedding.weight, clip.vision_model.embeddings.patch_embedding.weight
    )
    assert torch.equal(model.get_input_embeddings().weight[:30], lm.get_input_embeddings().weight)
    assert not any(p.is_meta for p in model.parameters())
    # The processor agrees with the model on the number of image tokens, and the model runs.
    assert processor.image_seq_length == model.config.image_seq_length == 16
    image = torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8)
    inputs = processor(images=[image], text="<image>\nabc", return_tensors="pt")
    out = model(**inputs, labels=inputs["input_ids"])
    assert torch.isfinite(out.loss)


def test_build_saves_a_complete_checkpoint(tmp_path):
    save_backbones(tmp_path)
    model, processor = build_llava_from_pretrained(str(tmp_path / "clip"), str(tmp_path / "lm"), seed=0)
    model.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    reloaded = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava")
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    assert "<image>" in AutoTokenizer.from_pretrained(tmp_path / "llava").get_vocab()


def test_image_processor_backend_is_chosen_and_kept(tmp_path):
    """`image_processor_backend="pil"` loads the vision model's image processor with the PIL backend (the original
    LLaVA's pixels), and the saved checkpoint reloads it."""
    from transformers import AutoProcessor

    save_backbones(tmp_path)
    model, processor = build_llava_from_pretrained(
        str(tmp_path / "clip"), str(tmp_path / "lm"), image_processor_backend="pil", seed=0
    )
    assert processor.image_processor.backend == "pil"
    processor.save_pretrained(tmp_path / "llava")
    assert AutoProcessor.from_pretrained(tmp_path / "llava").image_processor.backend == "pil"


@pytest.mark.parametrize("backend", ["pil", "torchvision"])
def test_stage_1_recipe_chooses_the_image_processor_backend(tmp_path, backend):
    """A recipe's `image_processor_backend` (the paper recipes say `pil`) reaches the stage-1 processor."""
    from llava_hf.training import LlavaModelArguments, load_model_for_stage

    save_backbones(tmp_path)
    model_args = LlavaModelArguments(
        vision_model=str(tmp_path / "clip"), language_model=str(tmp_path / "lm"), image_processor_backend=backend
    )
    _, processor = load_model_for_stage(model_args)
    assert processor.image_processor.backend == backend


def test_objects_without_tokenizer_raise(tmp_path):
    clip, lm = save_backbones(tmp_path)
    with pytest.raises(ValueError, match="Pass `tokenizer=`"):
        build_llava_from_pretrained(str(tmp_path / "clip"), lm)


def test_chatml_system_prompt_is_the_lms_own_unless_the_recipe_sets_one(tmp_path):
    save_backbones(tmp_path)
    lm_template = (
        "{% for m in messages %}<|im_start|>system\nYou are SmolTest<|im_end|>\n{{ m['content'] }}{% endfor %}"
    )
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "lm")
    tokenizer.chat_template = lm_template  # an LM whose own ChatML template has a default system prompt
    tokenizer.save_pretrained(tmp_path / "lm")
    messages = [{"role": "user", "content": "Hi"}]

    def rendered(**kwargs) -> str:
        _, processor = build_llava_from_pretrained(
            str(tmp_path / "clip"), str(tmp_path / "lm"), chat_template="chatml", seed=0, **kwargs
        )
        return processor.apply_chat_template(messages, tokenize=False)

    assert rendered().startswith("<|im_start|>system\nYou are SmolTest<|im_end|>\n<|im_start|>user\nHi")
    assert rendered(system_prompt="").startswith("<|im_start|>user\nHi")  # 21 tokens fewer per SmolLM2 sample
    assert rendered(system_prompt="Be brief.").startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
