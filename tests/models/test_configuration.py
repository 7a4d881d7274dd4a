"""LlavaConfig: LLaVA's defaults, validation with clear messages, save -> reload equality."""

import pytest
from transformers import AutoConfig, SiglipVisionConfig

from fixtures.tester import LlavaModelTester
from llava_hf import LlavaConfig, compute_image_seq_length


def test_defaults_are_llava_v1():
    config = LlavaConfig()
    assert config.model_type == "llava_hf"
    assert config.projector_type == "linear"
    assert config.vision_feature_layer == -2
    assert config.vision_feature_select_strategy == "default"
    assert config.vision_config.model_type == "clip_vision_model"
    assert config.text_config.model_type == "llama"
    assert config.image_seq_length == 256  # CLIP ViT-L/14 at 224 px, CLS dropped


@pytest.mark.parametrize(
    "image_size,strategy,expected",
    [(336, "default", 576), (336, "full", 577), (224, "default", 256), (224, "full", 257)],
)
def test_image_seq_length_for_clip_vit_l14(image_size, strategy, expected):
    config = LlavaConfig(vision_config={"model_type": "clip_vision_model", "image_size": image_size, "patch_size": 14})
    assert compute_image_seq_length(config.vision_config, strategy) == expected
    assert (
        LlavaConfig(vision_config=config.vision_config, vision_feature_select_strategy=strategy).image_seq_length
        == expected
    )


def test_siglip_has_no_cls_token():
    vision = SiglipVisionConfig(image_size=384, patch_size=14)
    assert LlavaConfig(vision_config=vision, vision_feature_select_strategy="default").image_seq_length == 729
    assert LlavaConfig(vision_config=vision, vision_feature_select_strategy="full").image_seq_length == 729


@pytest.mark.parametrize("legacy,canonical", [("patch", "default"), ("cls_patch", "full")])
def test_llava_select_feature_names_are_accepted(legacy, canonical):
    assert LlavaConfig(vision_feature_select_strategy=legacy).vision_feature_select_strategy == canonical


@pytest.mark.parametrize(
    "field,value,message",
    [
        (
            "projector_type",
            "mlp3x_gelu",
            r"projector_type must be one of \['linear', 'mlp2x_gelu'\], got 'mlp3x_gelu'",
        ),
        ("vision_feature_select_strategy", "cls", r'must be "default" or "full".*got \'cls\''),
        ("image_aspect_ratio", "anyres", r"image_aspect_ratio must be one of \['square', 'pad'\], got 'anyres'"),
    ],
)
def test_invalid_values_fail_at_construction(field, value, message):
    with pytest.raises(ValueError, match=message):
        LlavaConfig(**{field: value})


def test_save_and_reload_are_equal(tmp_path):
    config = LlavaModelTester(projector_type="linear", vision_feature_layer=[-2, -1]).get_config()
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert type(reloaded) is LlavaConfig
    assert reloaded.to_diff_dict() | {"_name_or_path": ""} == config.to_diff_dict() | {"_name_or_path": ""}
    assert reloaded.image_token_index == config.image_token_id  # transformers' old name still reads


def test_timm_backbone_token_count():
    pytest.importorskip("timm")
    from transformers import TimmWrapperConfig

    vision = TimmWrapperConfig(architecture="tf_efficientnet_lite0", pretrained_cfg={"input_size": [3, 224, 224]})
    config = LlavaConfig(vision_config=vision)
    assert config.image_seq_length == 49  # 7 x 7 grid


def test_pooled_feature_grid_sets_the_token_count():
    pytest.importorskip("timm")
    from transformers import TimmWrapperConfig

    vision = TimmWrapperConfig(architecture="tf_efficientnet_lite0", pretrained_cfg={"input_size": [3, 224, 224]})
    assert LlavaConfig(vision_config=vision, vision_feature_pool_size=3).image_seq_length == 9
    # vision_feature_global_token: the backbone's pooled feature as one more token, pooled grid or not
    assert (
        LlavaConfig(
            vision_config=vision, vision_feature_pool_size=3, vision_feature_global_token=True
        ).image_seq_length
        == 10
    )
    assert LlavaConfig(vision_config=vision, vision_feature_global_token=True).image_seq_length == 50
    # LLaVA's "full" keeps a ViT's CLS; a CNN has none, so it changes nothing there
    assert LlavaConfig(vision_config=vision, vision_feature_select_strategy="full").image_seq_length == 49


def test_global_token_needs_a_timm_tower_whose_pooled_feature_fits_the_projector():
    pytest.importorskip("timm")
    from transformers import TimmWrapperConfig

    with pytest.raises(ValueError, match='to keep a ViT\'s CLS token use vision_feature_select_strategy="full"'):
        LlavaConfig(vision_feature_global_token=True)  # CLIP
    # MobileNetV3's head widens the pooled feature (960 -> 1280 channels): one projector cannot read both
    mobilenet = TimmWrapperConfig(architecture="mobilenetv3_small_050", pretrained_cfg={"input_size": [3, 224, 224]})
    with pytest.raises(ValueError, match="pooled feature is 1024 wide but its feature map 288"):
        LlavaConfig(vision_config=mobilenet, vision_feature_global_token=True)
    assert LlavaConfig(vision_config=mobilenet).image_seq_length == 49
    assert LlavaConfig(vision_feature_pool_size=8).image_seq_length == 64  # CLIP-L/14 at 224 px: 16 x 16 -> 8 x 8


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"vision_feature_pool_size": 0}, r"vision_feature_pool_size must be an int from 1 to the tower's grid side"),
        ({"vision_feature_pool_size": 17}, r"grid side \(16\), got 17"),
        ({"vision_feature_pool_size": 4, "vision_feature_select_strategy": "full"}, r"cannot keep the CLS token"),
        ({"vision_feature_pool_size": 4, "image_seq_length": 256}, r"image_seq_length=256 disagrees"),
    ],
)
def test_invalid_pool_sizes_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LlavaConfig(**kwargs)


def test_projector_input_norm_is_validated_and_saved(tmp_path):
    with pytest.raises(ValueError, match=r"projector_input_norm must be one of \[None, 'standardize'\]"):
        LlavaConfig(projector_input_norm="batchnorm")
    config = LlavaConfig(projector_input_norm="standardize")
    config.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).projector_input_norm == "standardize"
    assert LlavaConfig().projector_input_norm is None  # LLaVA's projector reads the features as they are
