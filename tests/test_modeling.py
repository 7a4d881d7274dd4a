"""LlavaForConditionalGeneration on tiny random configs."""

import pytest
import torch

from llava_hf import LlavaForConditionalGeneration, resolve_attn_implementation
from tester import LlavaModelTester


@pytest.mark.parametrize("projector_type", ["linear", "mlp2x_gelu"])
def test_projector_shapes_and_layers(projector_type):
    model = LlavaModelTester(projector_type=projector_type).get_model()
    projector = model.model.multi_modal_projector
    assert hasattr(projector, "linear_2") == (projector_type == "mlp2x_gelu")
    features = model.get_image_features(torch.randn(3, 3, 8, 8))
    assert features.shape == (3, 16, 32)  # (num_images, image_seq_length, text_hidden_size)


def test_features_come_from_the_chosen_layer_without_cls():
    tester = LlavaModelTester(projector_type="linear")
    model = tester.get_model()
    pixel_values = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        hidden = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states[-2]
        expected = model.model.multi_modal_projector(hidden[:, 1:])
        assert torch.allclose(model.get_image_features(pixel_values), expected)
    full = LlavaModelTester(vision_feature_select_strategy="full").get_model()
    assert full.get_image_features(pixel_values).shape[1] == 17


def test_image_features_replace_image_token_embeddings():
    tester = LlavaModelTester()
    model = tester.get_model()
    inputs = tester.prepare_inputs(batch_size=1)
    with torch.no_grad():
        out = model.model(**inputs)
        features = model.get_image_features(inputs["pixel_values"])
        # Feeding the merged embeddings directly gives the same hidden states.
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        mask = inputs["input_ids"] == model.config.image_token_id
        embeds[mask] = features.reshape(-1, 32)
        direct = model.model.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    assert torch.allclose(out.last_hidden_state, direct.last_hidden_state, atol=1e-6)


def test_mismatched_image_tokens_raises():
    tester = LlavaModelTester()
    model = tester.get_model()
    inputs = tester.prepare_inputs(batch_size=1)
    inputs["input_ids"] = inputs["input_ids"][:, 3:]  # truncated through the image
    with pytest.raises(ValueError, match=r"tokens: 14, features: 16"):
        model(**inputs)


def test_image_tokens_without_pixel_values_raises():
    tester = LlavaModelTester()
    inputs = tester.prepare_inputs(batch_size=1)
    inputs.pop("pixel_values")
    with pytest.raises(ValueError, match=r"tokens: 16, features: 0"):
        tester.get_model()(**inputs)


def test_empty_pixel_values_with_image_tokens_raises():
    tester = LlavaModelTester()
    inputs = tester.prepare_inputs(batch_size=1)
    inputs["pixel_values"] = inputs["pixel_values"][:0]
    with pytest.raises(ValueError, match=r"tokens: 16, features: 0"):
        tester.get_model()(**inputs)


def test_loss_ignores_masked_labels():
    tester = LlavaModelTester()
    model = tester.get_model()
    inputs = tester.prepare_inputs()
    labels = inputs["input_ids"].clone()
    labels[labels == model.config.image_token_id] = -100
    out = model(**inputs, labels=labels)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1])
    expected = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, expected, atol=1e-6)
    out.loss.backward()
    assert model.model.multi_modal_projector.linear_1.weight.grad is not None


def test_text_only_inputs():
    tester = LlavaModelTester()
    model = tester.get_model()
    input_ids = torch.tensor([[1, 5, 6, 7]])
    out = model(input_ids=input_ids)
    assert out.logits.shape == (1, 4, 160) and out.image_features is None
    generated = model.generate(input_ids=input_ids, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == 7


def test_several_images_per_sample_in_order():
    tester = LlavaModelTester()
    model = tester.get_model()
    image_ids = torch.full((16,), model.config.image_token_id)
    input_ids = torch.cat([torch.tensor([1]), image_ids, torch.tensor([5, 6]), image_ids, torch.tensor([7])])[None]
    pixel_values = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values).logits
        swapped = model(input_ids=input_ids, pixel_values=pixel_values.flip(0)).logits
    assert not torch.allclose(out[0, -1], swapped[0, -1])  # order matters: image i fills placeholder i


def test_generate_with_cache_equals_without():
    tester = LlavaModelTester()
    model = tester.get_model()
    inputs = tester.prepare_inputs(batch_size=1)
    cached = model.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = model.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached), f"{cached} vs {uncached}"


def test_batched_left_padded_generation_equals_single():
    tester = LlavaModelTester()
    model = tester.get_model()
    processor = tester.get_processor()
    processor.tokenizer.padding_side = "left"
    images = [torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8) for _ in range(2)]
    prompts = ["<image>\nWhat is it?", "<image>\nDescribe the picture in detail please."]
    batch = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # really padded
    batched = model.generate(**batch, max_new_tokens=5, do_sample=False)[:, batch["input_ids"].shape[1] :]
    for index, (image, prompt) in enumerate(zip(images, prompts)):
        single_inputs = processor(images=[image], text=prompt, return_tensors="pt")
        single = model.generate(**single_inputs, max_new_tokens=5, do_sample=False)[
            :, single_inputs["input_ids"].shape[1] :
        ]
        assert torch.equal(batched[index], single[0]), f"sample {index}: {batched[index]} vs {single[0]}"


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_attention_implementations_agree(attn_implementation):
    tester = LlavaModelTester()
    reference = tester.get_model(attn_implementation="eager")
    model = tester.get_model(attn_implementation=attn_implementation)
    assert model.config._attn_implementation == attn_implementation
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits, reference(**inputs).logits, atol=1e-5)


def test_flash_attention_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error path is for machines without it")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_attn_implementation("flash_attention_2")
    assert resolve_attn_implementation("auto") == "sdpa"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        LlavaModelTester().get_model(attn_implementation="flash_attention_2")


def test_gradient_checkpointing_gives_same_gradients():
    tester = LlavaModelTester()
    inputs = tester.prepare_inputs()
    grads = []
    for checkpointing in (False, True):
        model = tester.get_model().train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert model.model.language_model.gradient_checkpointing
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        grads.append(model.model.multi_modal_projector.linear_1.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_trl_fused_lm_head_backbone_contract():
    """TRL's chunked/fused LM-head loss calls `getattr(model, model.base_model_prefix)` then `get_output_embeddings`."""
    tester = LlavaModelTester()
    model = tester.get_model()
    inputs = tester.prepare_inputs()
    backbone = getattr(model, model.base_model_prefix)
    out = backbone(
        input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"], attention_mask=inputs["attention_mask"]
    )
    assert out.last_hidden_state.shape == (2, 22, 32)
    assert model.get_output_embeddings() is model.lm_head
    with torch.no_grad():
        assert torch.allclose(model.lm_head(out.last_hidden_state), model(**inputs).logits, atol=1e-6)


def test_save_and_load_round_trip(tmp_path):
    tester = LlavaModelTester(projector_type="linear")
    model = tester.get_model()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = LlavaForConditionalGeneration.from_pretrained(tmp_path)
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)
