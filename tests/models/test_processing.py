"""LlavaProcessor: image-token expansion, chat templates with generation markers, pad-to-square, save/load."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, CLIPImageProcessor, CLIPImageProcessorPil

from fixtures.original_llava import LLAVA_V1_SYSTEM, VICUNA_V1_SYSTEM, sep_two_prompt
from fixtures.tester import LlavaModelTester, tiny_tokenizer
from llava_hf import LlavaProcessor, get_chat_template
from llava_hf.processing_llava import expand_to_square

CONVERSATION = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
    {"role": "user", "content": [{"type": "text", "text": "Color?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
]


def _image(height=10, width=14):
    return Image.fromarray((np.random.default_rng(0).random((height, width, 3)) * 255).astype("uint8"))


def test_each_image_expands_to_image_seq_length_tokens():
    processor = LlavaModelTester().get_processor()
    out = processor(images=[_image(), _image()], text="<image> and <image>", return_tensors="pt")
    assert (out["input_ids"] == processor.image_token_id).sum().item() == 2 * 16
    assert out["pixel_values"].shape == (2, 3, 8, 8)


@pytest.mark.parametrize("template,system", [("vicuna_v1", VICUNA_V1_SYSTEM), ("llava_v1", LLAVA_V1_SYSTEM)])
def test_sep_two_templates_give_the_original_prompt(template, system):
    """`vicuna_v1` / `llava_v1` = the original's `conv_vicuna_v1` / `conv_llava_v1` `get_prompt()` (BOS written by
    the template), for a 3-turn conversation with an image, answered and awaiting the answer."""
    processor = LlavaModelTester(chat_template=template).get_processor()
    questions = [" What is it? ", "Color?", "And the mat?"]
    answers = ["A cat.", "Red.", "Blue, with\nstripes."]
    messages = [
        {"role": "user", "content": [{"type": "text", "text": questions[0]}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": answers[0]}]},
    ]
    for question, answer in zip(questions[1:], answers[1:]):
        messages.append({"role": "user", "content": [{"type": "text", "text": question}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    turns = [turn for pair in zip(questions, answers) for turn in pair]
    turns[0] = "<image>" + turns[0]
    assert processor.apply_chat_template(messages) == "<s>" + sep_two_prompt(system, turns, has_image=True)
    prompt = processor.apply_chat_template(messages[:-1], add_generation_prompt=True)
    assert prompt == "<s>" + sep_two_prompt(system, [*turns[:-1], None], has_image=True)


def test_sep_two_system_prompts_are_the_originals():
    assert VICUNA_V1_SYSTEM in get_chat_template("vicuna_v1") and LLAVA_V1_SYSTEM not in get_chat_template("vicuna_v1")
    assert LLAVA_V1_SYSTEM in get_chat_template("llava_v1") and VICUNA_V1_SYSTEM not in get_chat_template("llava_v1")
    # A system message replaces the default, as `conv.system = ...` did.
    processor = LlavaModelTester(chat_template="llava_v1").get_processor()
    own = [{"role": "system", "content": "Be brief."}, *CONVERSATION[:2]]
    assert processor.apply_chat_template(own).startswith("<s>Be brief. USER: <image>\nWhat is it? ASSISTANT:")


def test_vicuna_v1_puts_images_first_like_the_original():
    processor = LlavaModelTester(chat_template="vicuna_v1").get_processor()
    after = [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, {"type": "image"}]}]
    assert "USER: <image>\nWhat is it? " in processor.apply_chat_template(after)


def test_plain_drops_the_instruction():
    processor = LlavaModelTester(chat_template="plain").get_processor()
    caption = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image briefly."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a red bus"}]},
    ]
    assert processor.apply_chat_template(caption) == "<s><image>a red bus\n"


def _supervised_text(processor, conversation, images):
    out = processor.apply_chat_template(
        conversation,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        images=images,
        return_tensors="pt",
    )
    mask = torch.as_tensor(out["assistant_masks"][0]).bool()
    assert not (out["input_ids"][0][mask] == processor.image_token_id).any()
    return processor.tokenizer.decode(out["input_ids"][0][mask])


@pytest.mark.parametrize(
    "template,expected",
    [("vicuna_v1", "A cat.</s>Red.</s>"), ("chatml", "A cat.<|im_end|>Red.<|im_end|>"), ("plain", "A cat.\n")],
)
def test_assistant_mask_marks_exactly_answers_and_end_tokens(template, expected):
    tester = LlavaModelTester(chat_template=template)
    processor = tester.get_processor()
    if template == "chatml":
        processor.tokenizer.add_special_tokens(
            {"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}, replace_extra_special_tokens=False
        )
    conversation = CONVERSATION[:2] if template == "plain" else CONVERSATION
    assert _supervised_text(processor, conversation, [_image()]).replace(" ", "").replace("▁", "") == expected.replace(
        " ", ""
    )


def test_pad_aspect_ratio_pads_with_the_mean_colour():
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    square = expand_to_square(image, (122, 116, 104))
    assert square.size == (20, 20)
    assert square.getpixel((0, 0)) == (122, 116, 104) and square.getpixel((10, 10)) == (255, 0, 0)
    processor = LlavaModelTester(image_aspect_ratio="pad").get_processor()
    padded = processor(images=[image], text="<image>", return_tensors="pt")["pixel_values"]
    squared = LlavaModelTester(image_aspect_ratio="square").get_processor()(
        images=[image], text="<image>", return_tensors="pt"
    )["pixel_values"]
    # Padding adds mean-coloured rows, which normalise to ~0; the centre-cropped version is all red.
    assert padded[0, :, 0, :].abs().max() < 0.05  # red would normalise to ~1.9
    assert not torch.allclose(padded, squared)


def test_save_and_load_round_trip(tmp_path):
    processor = LlavaModelTester(image_aspect_ratio="pad").get_processor()
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is LlavaProcessor
    assert reloaded.image_seq_length == 16 and reloaded.image_aspect_ratio == "pad"
    assert reloaded.chat_template == processor.chat_template
    image = _image()
    a = processor(images=[image], text="<image>\nHi", return_tensors="pt")
    b = reloaded(images=[image], text="<image>\nHi", return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])


def test_image_processor_backend_survives_save_and_load(tmp_path):
    """transformers saves one `image_processor_type` for both backends and loads torchvision by default; the processor
    records its backend so AutoProcessor reloads the same class (and the same pixels). `backend=` still wins."""
    image = _image(30, 14)
    for image_processor_class, other in [(CLIPImageProcessorPil, "torchvision"), (CLIPImageProcessor, "pil")]:
        processor = LlavaModelTester(image_aspect_ratio="pad").get_processor()
        processor.image_processor = image_processor_class(
            size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8}
        )
        folder = tmp_path / image_processor_class.__name__
        processor.save_pretrained(folder)
        reloaded = AutoProcessor.from_pretrained(folder)
        assert type(reloaded.image_processor) is image_processor_class
        a = processor(images=[image], text="<image>", return_tensors="pt")["pixel_values"]
        assert torch.equal(a, reloaded(images=[image], text="<image>", return_tensors="pt")["pixel_values"])
        assert AutoProcessor.from_pretrained(folder, backend=other).image_processor.backend == other


def test_tokenizer_without_image_token_is_a_clear_error():
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match="has no '<im>' token"):
        LlavaProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer, image_token="<im>")


def test_image_count_mismatch_raises():
    processor = LlavaModelTester().get_processor()
    with pytest.raises(ValueError, match="Found total 2 <image> tokens and 1 images"):
        processor(images=[_image()], text="<image><image>")


def test_shipped_templates():
    assert "{% generation %}" in get_chat_template("vicuna_v1").replace("{%-", "{%").replace("-%}", "%}")
    with pytest.raises(ValueError, match="Unknown chat template"):
        get_chat_template("llama_2")
