"""The frozen vision tower's features computed once (llava_hf.feature_cache): same loss, fewer tower calls."""

import pytest
import torch

from fixtures.tester import LlavaModelTester
from llava_hf.feature_cache import VisionFeatureCache, attach, installed_cache, tower_key
from llava_hf.training import set_trainable


def stage1_model(seed: int = 0):
    model = LlavaModelTester().get_model(seed=seed).train()
    set_trainable(model, "1")  # the projector trains, the tower is frozen
    return model


def loss_and_grads(model, inputs) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad()
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    return out.loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def count_tower_calls(model) -> list[int]:
    calls = [0]
    model.model.vision_tower.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + len(_[1][0])))
    return calls


def test_cached_features_give_the_same_loss_and_gradients(tmp_path):
    inputs = LlavaModelTester().prepare_inputs(batch_size=3)
    reference = loss_and_grads(stage1_model(), inputs)

    model = stage1_model()
    cache = attach(model, tmp_path / "cache")
    tower_images = count_tower_calls(model)
    cold = loss_and_grads(model, inputs)  # computes and stores the three images
    warm = loss_and_grads(model, inputs)  # reads them back: the tower does not run
    for loss, grads in (cold, warm):
        assert loss == pytest.approx(reference[0], rel=1e-6)
        for grad, expected in zip(grads, reference[1]):
            torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)
    assert tower_images == [3]
    assert (cache.hits, cache.misses) == (3, 3)
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 3
    assert cache.stats()["bytes_per_image"] == model.config.image_seq_length * 32 * 4  # tokens x channels x fp32


def test_only_new_images_run_through_the_tower_in_their_order(tmp_path):
    tester = LlavaModelTester()
    first = tester.prepare_inputs(batch_size=2, seed=0)
    model = stage1_model()
    attach(model, tmp_path)
    model(**first)
    tower_images = count_tower_calls(model)
    # One image seen before, one new, in swapped order: only the new one is computed, and the features follow the
    # order of the pixels (the swapped batch's features are the uncached model's on the same batch).
    mixed = torch.stack([tester.prepare_inputs(batch_size=1, seed=5)["pixel_values"][0], first["pixel_values"][0]])
    features = model.model.get_image_features(mixed)
    assert tower_images == [1]
    torch.testing.assert_close(features, stage1_model().model.get_image_features(mixed), rtol=1e-6, atol=1e-6)


def test_another_tower_or_precision_is_another_entry(tmp_path):
    model, other = stage1_model(seed=0), stage1_model(seed=1)
    assert tower_key(model.model) != tower_key(other.model)  # other weights
    pooled = LlavaModelTester().get_model()
    pooled.config.vision_feature_pool_size = 2
    assert tower_key(pooled.model) != tower_key(model.model)  # other feature selection
    global_token = LlavaModelTester().get_model()
    global_token.config.vision_feature_global_token = True
    assert tower_key(global_token.model) != tower_key(LlavaModelTester().get_model().model)  # one token more

    pixels = LlavaModelTester().prepare_inputs(batch_size=1)["pixel_values"]
    cache = attach(model, tmp_path)
    with torch.no_grad():
        model.model.get_image_features(pixels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.model.get_image_features(pixels)
    assert cache.misses == 2 and cache.hits == 0  # float32 and bf16-autocast features are not mixed
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{cache.tower_key}-cpu-bfloat16",
        f"{cache.tower_key}-cpu-nocast",
    ]


def test_a_saved_and_reloaded_checkpoint_finds_the_same_entries(tmp_path):
    from llava_hf import LlavaForConditionalGeneration

    model = stage1_model()
    model.save_pretrained(tmp_path / "checkpoint")
    reloaded = LlavaForConditionalGeneration.from_pretrained(tmp_path / "checkpoint")
    assert tower_key(reloaded.model) == tower_key(model.model)  # stage 2 reads what stage 1 stored
    # Another attention kernel rounds the tower's features differently: another entry.
    eager = LlavaForConditionalGeneration.from_pretrained(tmp_path / "checkpoint", attn_implementation="eager")
    assert tower_key(eager.model) != tower_key(model.model)


def test_a_training_tower_is_never_cached(tmp_path):
    model = stage1_model()
    cache = attach(model, tmp_path)
    for parameter in model.model.vision_tower.parameters():
        parameter.requires_grad_(True)
    model(**LlavaModelTester().prepare_inputs(batch_size=1), labels=None)
    assert cache.hits == cache.misses == 0 and not any(tmp_path.iterdir())


def test_attach_finds_the_model_inside_a_peft_wrapper(tmp_path):
    peft = pytest.importorskip("peft")
    model = stage1_model()
    wrapped = peft.get_peft_model(
        model, peft.LoraConfig(r=2, target_modules=r".*language_model.*\.q_proj", modules_to_save=None)
    )
    cache = attach(wrapped, tmp_path)
    assert isinstance(cache, VisionFeatureCache) and installed_cache(wrapped) is cache
    with pytest.raises(ValueError, match="needs a llava_hf model"):
        attach(torch.nn.Linear(2, 2), tmp_path)


def test_inference_reads_the_cache_whatever_requires_grad_says(tmp_path):
    """A checkpoint loaded for evaluation keeps requires_grad=True on every weight; under no_grad the features need no
    graph, so they are cached all the same (`llava-hf eval --vision-feature-cache`)."""
    model = LlavaModelTester().get_model()
    assert model.model.vision_tower_is_trainable()
    cache = attach(model, tmp_path)
    pixels = LlavaModelTester().prepare_inputs(batch_size=1)["pixel_values"]
    same_twice = torch.cat([pixels, pixels])  # a batch of blanks: one computation, one entry
    with torch.no_grad():
        first = model.model.get_image_features(same_twice)
        again = model.model.get_image_features(same_twice)
    assert (cache.misses, cache.hits) == (1, 2) and len(list(tmp_path.rglob("*.safetensors"))) == 1
    torch.testing.assert_close(first, again)


def test_a_damaged_entry_is_computed_again(tmp_path, caplog):
    model = stage1_model()
    cache = attach(model, tmp_path)
    pixels = LlavaModelTester().prepare_inputs(batch_size=1)["pixel_values"]
    with torch.no_grad():
        expected = model.model.get_image_features(pixels)
        (entry,) = tmp_path.rglob("*.safetensors")
        entry.write_bytes(b"")  # a full disk, a killed copy
        got = model.model.get_image_features(pixels)
    torch.testing.assert_close(got, expected)
    assert cache.misses == 2 and str(entry) in caplog.text
