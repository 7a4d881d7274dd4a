"""LlavaForConditionalGeneration on tiny random configs."""

import pytest
import torch
from PIL import Image

from fixtures.tester import LlavaModelTester, tiny_llama_config
from llava_hf import LlavaConfig, LlavaForConditionalGeneration, modeling_llava, resolve_attn_implementation
from llava_hf.modeling_llava import describe_attn_implementation


def tiny_timm_config(tester: LlavaModelTester) -> LlavaConfig:
    """The tester's config with timm's tiny test EfficientNet as the tower (64 px -> a 2 x 2 grid, 4 image tokens)."""
    pytest.importorskip("timm")
    from transformers import TimmWrapperConfig

    vision = TimmWrapperConfig(architecture="test_efficientnet", pretrained_cfg={"input_size": [3, 64, 64]})
    return LlavaConfig(
        vision_config=vision,
        text_config=tiny_llama_config(tester.tokenizer),
        image_token_id=tester.tokenizer.convert_tokens_to_ids("<image>"),
        projector_type="mlp2x_gelu",
    )


def output_tensors(output) -> list[torch.Tensor]:
    """The tensors in a module's output (a tensor, a tuple, or a `ModelOutput`)."""
    if torch.is_tensor(output):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [tensor for item in output for tensor in output_tensors(item)]
    return []


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


def test_a_config_naming_another_image_token_id_is_named_as_the_cause():
    tester = LlavaModelTester()
    model = tester.get_model()
    model.config.image_token_id = model.model.config.image_token_id = 7  # config.json and tokenizer disagree
    with pytest.raises(ValueError, match=r"no token in input_ids is config.image_token_id=7.*fix image_token_id"):
        model(**tester.prepare_inputs(batch_size=1))


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


@pytest.fixture
def gpu(monkeypatch):
    """Pretend to run on a CUDA device of a given compute capability, with the given FlashAttention versions."""

    def pretend(capability: tuple[int, int], installed: set[int]) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        for version in (2, 3, 4):
            monkeypatch.setattr(modeling_llava, f"is_flash_attn_{version}_available", lambda v=version: v in installed)

    return pretend


@pytest.mark.parametrize(
    ("capability", "installed", "expected"),
    [
        ((9, 0), {2, 3, 4}, "flash_attention_4"),  # H100
        ((10, 0), {2, 3, 4}, "flash_attention_4"),  # B200
        ((9, 0), {2, 3}, "flash_attention_3"),
        ((10, 0), {2, 3}, "flash_attention_2"),  # flash-attn-3 has no Blackwell kernels
        ((8, 0), {2, 3, 4}, "flash_attention_2"),  # A100: neither FA3 nor FA4
        ((12, 0), {2, 3, 4}, "flash_attention_2"),  # consumer Blackwell (RTX 50xx)
        ((7, 5), {2, 3, 4}, "sdpa"),  # T4: no FlashAttention at all
    ],
)
def test_auto_attention_picks_the_newest_flash_attention_the_gpu_runs(gpu, capability, installed, expected):
    gpu(capability, installed)
    resolved = resolve_attn_implementation("auto")
    if expected == "sdpa":
        assert resolved == "sdpa"
    else:  # the language model gets the kernel, the vision tower keeps sdpa
        assert resolved == {"": expected, "text_config": expected, "vision_config": "sdpa"}


@pytest.mark.parametrize("kernel", ["flash_attention_2", "flash_attention_3", "flash_attention_4"])
def test_explicit_flash_attention_needs_cuda_and_its_package(gpu, monkeypatch, kernel):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=f'"{kernel}" needs a CUDA device'):
        resolve_attn_implementation(kernel)
    gpu((9, 0), set())
    with pytest.raises(ValueError, match=f'"{kernel}" needs its FlashAttention package'):
        resolve_attn_implementation(kernel)
    gpu((9, 0), {int(kernel[-1])})
    assert resolve_attn_implementation(kernel) == {"": kernel, "text_config": kernel, "vision_config": "sdpa"}


def test_auto_attention_through_the_auto_classes(tmp_path):
    """`AutoModelForImageTextToText.from_pretrained(path, attn_implementation="auto")`, as stage 2 loads: `AutoConfig`
    keeps the unresolved value on the config, and it is resolved all the same."""
    from transformers import AutoModelForImageTextToText

    LlavaModelTester().get_model().save_pretrained(tmp_path)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path, attn_implementation="auto")
    assert describe_attn_implementation(model) == {"language_model": "sdpa", "vision_tower": "sdpa"}


def test_attention_record_reads_the_loaded_sub_models():
    """What the training record stores: the implementation each sub-model runs, from a per-sub-config request."""
    config = tiny_timm_config(LlavaModelTester())
    requested = {"": "eager", "text_config": "eager", "vision_config": "sdpa"}  # as "auto" asks, with eager for FA
    model = LlavaForConditionalGeneration._from_config(config, attn_implementation=requested)
    assert describe_attn_implementation(model) == {"language_model": "eager", "vision_tower": "sdpa"}
    model.set_attn_implementation({"text_config": "sdpa"})
    assert describe_attn_implementation(model) == {"language_model": "sdpa", "vision_tower": "sdpa"}


def test_flash_attention_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available; the error path is for machines without it")
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


@pytest.mark.parametrize("tower", ["clip", "timm"])
def test_frozen_vision_tower_runs_without_autograd(tower):
    """Activation checkpointing hooks the tower's patch embedding to require grad (`enable_input_require_grads`); a
    frozen tower still records no autograd graph, so none of it is kept or back-propagated. The projector trains,
    and an unfrozen tower gets its gradients back. (transformers does not hook timm towers, which expose no input
    embeddings; the timm case guards the same path.)"""
    tester = LlavaModelTester()
    if tower == "clip":
        config, image_size = tester.get_config(), tester.image_size
    else:
        config, image_size = tiny_timm_config(tester), 64
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration._from_config(config)
    for name, parameter in model.named_parameters():  # stage 1: only the projector trains
        parameter.requires_grad_("multi_modal_projector" in name)
    model.activation_checkpointing_enable()
    model.train()
    in_graph = []
    for name, module in model.model.vision_tower.named_modules():
        module.register_forward_hook(
            lambda module, args, output, name=name: in_graph.extend(
                name for tensor in output_tensors(output) if tensor.grad_fn is not None
            )
        )
    image_ids = torch.full((2, config.image_seq_length), config.image_token_id)
    input_ids = torch.cat([torch.ones(2, 1, dtype=torch.long), image_ids, torch.randint(4, 60, (2, 5))], dim=1)
    inputs = {"input_ids": input_ids, "pixel_values": torch.randn(2, 3, image_size, image_size)}

    model(**inputs, labels=input_ids).loss.backward()
    assert in_graph == [], f"tower activations in the autograd graph: {sorted(set(in_graph))}"
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0

    model.model.vision_tower.requires_grad_(True)
    model(**inputs, labels=input_ids).loss.backward()
    assert in_graph and any(p.grad is not None for p in model.model.vision_tower.parameters())


def test_forward_compiles_to_one_graph():
    """`_can_compile_fullgraph`: no graph break, no host read of the `<image>` count; the count check survives."""
    tester = LlavaModelTester()
    model = tester.get_model()
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        expected = model(**inputs).logits  # transformers installs its output-capturing hooks on a first, eager call
        # aot_eager: dynamo and AOT autograd trace the whole model, without inductor's minute-long CPU codegen.
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        assert torch.allclose(compiled(**inputs).logits, expected, atol=1e-6)
        inputs["input_ids"] = inputs["input_ids"][:, 3:]  # truncated through the image
        with pytest.raises(RuntimeError, match="Image features and image tokens do not match"):
            compiled(**inputs)


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


def test_pooled_image_features_are_the_averaged_patch_grid(tmp_path):
    # vision_feature_pool_size=2: the 4x4 patch grid of the tiny CLIP averaged to 2x2, then projected.
    from transformers import AutoModelForImageTextToText

    tester = LlavaModelTester()
    config = tester.get_config()
    config.vision_feature_pool_size, config.image_seq_length = 2, None
    config = type(config)(**config.to_dict())
    assert config.image_seq_length == 4
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    pixel_values = torch.randn(3, 3, tester.image_size, tester.image_size)
    with torch.no_grad():
        patches = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
        grid = patches.reshape(3, 4, 4, -1)  # row-major patch grid
        expected = torch.stack(
            [grid[:, r : r + 2, c : c + 2].mean((1, 2)) for r in (0, 2) for c in (0, 2)], dim=1
        )  # (3, 4, hidden)
        features = model.get_image_features(pixel_values)
    torch.testing.assert_close(features, model.model.multi_modal_projector(expected))
    ids = torch.tensor([[1] + [config.image_token_id] * 4 + [5, 6]])
    assert model(input_ids=ids, pixel_values=pixel_values[:1]).logits.shape == (1, 7, config.text_config.vocab_size)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert reloaded.config.vision_feature_pool_size == 2 and reloaded.config.image_seq_length == 4
    with torch.no_grad():
        torch.testing.assert_close(reloaded.get_image_features(pixel_values), features)


@pytest.mark.parametrize(
    "architecture,pool_size,tokens", [("test_vit", None, 16), ("test_vit", 2, 4), ("test_efficientnet", 1, 1)]
)
def test_timm_towers_give_image_seq_length_tokens(architecture, pool_size, tokens):
    # timm ViTs return their CLS token with the patches (dropped); CNN maps are pooled as maps (non-square inputs too).
    pytest.importorskip("timm")
    from transformers import TimmWrapperConfig

    tester = LlavaModelTester()
    vision = TimmWrapperConfig(architecture=architecture, pretrained_cfg={"input_size": [3, 64, 64]})
    config = LlavaConfig(
        vision_config=vision,
        text_config=tiny_llama_config(tester.tokenizer),
        image_token_id=tester.tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_pool_size=pool_size,
    )
    assert config.image_seq_length == tokens
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        assert model.get_image_features(torch.randn(2, 3, 64, 64)).shape[:2] == (2, tokens)
        if architecture == "test_efficientnet":
            assert model.get_image_features(torch.randn(1, 3, 64, 96)).shape[:2] == (1, tokens)


@pytest.mark.parametrize(
    "architecture,pool_size,tokens",
    [("test_efficientnet", None, 5), ("test_efficientnet", 1, 2), ("test_vit", None, 17), ("test_vit", 2, 5)],
)
def test_global_token_puts_the_timm_backbone_pooled_feature_first(tmp_path, architecture, pool_size, tokens):
    # vision_feature_global_token: the timm backbone's own pooled feature (the input of its classifier) before the
    # grid tokens, which stay what they were; saved and reloaded with the config, and run end to end through the
    # processor's placeholders.
    pytest.importorskip("timm")
    from transformers import AutoModelForImageTextToText, TimmWrapperConfig

    tester = LlavaModelTester()
    vision = TimmWrapperConfig(architecture=architecture, pretrained_cfg={"input_size": [3, 64, 64]})
    kwargs = {
        "vision_config": vision,
        "text_config": tiny_llama_config(tester.tokenizer),
        "image_token_id": tester.tokenizer.convert_tokens_to_ids("<image>"),
        "vision_feature_pool_size": pool_size,
    }
    config = LlavaConfig(**kwargs, vision_feature_global_token=True)
    assert config.image_seq_length == tokens
    model = LlavaForConditionalGeneration(config).eval()
    grid_only = LlavaForConditionalGeneration(LlavaConfig(**kwargs)).eval()
    grid_only.load_state_dict(model.state_dict())
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.model._vision_features(pixel_values)
        pooled = model.model.vision_tower(pixel_values).pooler_output
        grid = grid_only.model._vision_features(pixel_values)
    assert features.shape[:2] == (2, tokens)
    torch.testing.assert_close(features[:, 0], pooled)
    torch.testing.assert_close(features[:, 1:], grid)
    if architecture == "test_efficientnet":  # a CNN's global pool is the mean of its whole map
        with torch.no_grad():
            feature_map = model.model.vision_tower(pixel_values, do_pooling=False).last_hidden_state
        torch.testing.assert_close(features[:, 0], feature_map.mean((2, 3)))
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert reloaded.config.vision_feature_global_token and reloaded.config.image_seq_length == tokens
    image = torch.full((1, tokens), config.image_token_id)
    input_ids = torch.cat([torch.ones(1, 1, dtype=torch.long), image, torch.tensor([[5, 6, 7]])], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model._vision_features(pixel_values), features)
        assert reloaded(input_ids=input_ids, pixel_values=pixel_values[:1]).logits.shape[1] == tokens + 4


def test_standardized_projector_reads_standardized_features(tmp_path):
    # projector_input_norm="standardize": (features - feature_mean) / feature_std, then LLaVA's projector; identity
    # until measured; the statistics are saved and reloaded with the weights.
    from transformers import AutoModelForImageTextToText

    config = LlavaModelTester().get_config()
    plain_config = type(config)(**config.to_dict())
    config.projector_input_norm = "standardize"
    config = type(config)(**config.to_dict())
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    plain = LlavaForConditionalGeneration(plain_config).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    projector, plain_projector = model.model.multi_modal_projector, plain.model.multi_modal_projector
    features = torch.randn(2, 16, projector.feature_mean.shape[0]) * 3 + 5
    with torch.no_grad():
        torch.testing.assert_close(projector(features), plain_projector(features))
        mean, std = features.mean((0, 1)), features.std((0, 1))
        projector.set_feature_statistics(mean, std)
        torch.testing.assert_close(projector(features), plain_projector((features - mean) / std))
        assert not torch.allclose(projector(features), plain_projector(features))
    with pytest.raises(ValueError, match="positive standard deviation"):
        projector.set_feature_statistics(mean, torch.zeros_like(std))
    with pytest.raises(ValueError, match="do not match the projector's input width"):
        projector.set_feature_statistics(mean[:3], std[:3])
    with pytest.raises(ValueError, match='projector_input_norm="standardize"'):
        plain_projector.set_feature_statistics(mean, std)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded.model.multi_modal_projector.feature_mean, mean)
    torch.testing.assert_close(reloaded.model.multi_modal_projector.feature_std, std)
    pixel_values = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.get_image_features(pixel_values), model.get_image_features(pixel_values))


def test_no_split_modules_name_only_classes_the_model_builds():
    # FSDP's transformer auto-wrap (accelerate < 1.16) raises on a listed class it cannot find in the model.
    model = LlavaModelTester().get_model()
    present = {type(module).__name__ for module in model.modules()}
    assert {"CLIPEncoderLayer", "LlamaDecoderLayer"} <= model._no_split_modules <= present
    assert "CLIPTextEmbeddings" not in model._no_split_modules


def test_standardized_projector_without_saved_statistics_loads_as_identity(tmp_path):
    # A checkpoint whose config asks for standardisation but whose weights lack the statistics: identity, never
    # uninitialised memory.
    from safetensors.torch import load_file, save_file

    config = LlavaModelTester().get_config()
    config.projector_input_norm = "standardize"
    model = LlavaForConditionalGeneration(type(config)(**config.to_dict()))
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "feature_" not in k}, tmp_path / "model.safetensors")
    projector = LlavaForConditionalGeneration.from_pretrained(tmp_path).model.multi_modal_projector
    assert torch.equal(projector.feature_mean, torch.zeros_like(projector.feature_mean))
    assert torch.equal(projector.feature_std, torch.ones_like(projector.feature_std))


def test_calibration_measures_the_features_and_floors_dead_channels():
    from llava_hf.data import LlavaDataCollator
    from llava_hf.training import calibrate_projector_input

    tester = LlavaModelTester()
    processor = tester.get_processor()
    collator = LlavaDataCollator(processor)
    rows = [
        {
            "id": str(i),
            "images": [Image.new("RGB", (8, 8), (30 * i, 10, 200 - 20 * i))],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
            ],
        }
        for i in range(6)
    ]
    plain = tester.get_model()
    with pytest.raises(ValueError, match='projector_input_norm="standardize"'):
        calibrate_projector_input(plain, collator, rows, progress=False)
    config = tester.get_config()
    config.projector_input_norm = "standardize"
    model = LlavaForConditionalGeneration(type(config)(**config.to_dict())).eval()
    real = model.model._vision_features

    def with_dead_channels(pixel_values):  # the first 3 channels never fire, as a dead ReLU unit
        features = real(pixel_values).clone()
        features[..., :3] = 0.0
        return features

    model.model._vision_features = with_dead_channels
    measured = calibrate_projector_input(model, collator, rows, num_images=4, batch_size=3, progress=False)
    assert measured == {"rows": 4, "feature_tokens": 4 * config.image_seq_length, "channels": 32}
    assert collator.stats["samples"] == 0  # the training collator's counts are left alone
    pixel_values = collator(rows[:4])["pixel_values"]
    with torch.no_grad():
        features = with_dead_channels(pixel_values).flatten(0, 1)
    projector = model.model.multi_modal_projector
    std = features.std(0, unbiased=False)
    torch.testing.assert_close(projector.feature_mean, features.mean(0))
    torch.testing.assert_close(projector.feature_std[3:], std[3:], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(projector.feature_std[:3], std[3:].median().expand(3), rtol=1e-4, atol=1e-6)
