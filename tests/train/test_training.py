"""recipes/sft.py through `accelerate launch`: stages, freezing, LoRA, bad recipes, NaN, resume, DDP, saving under
ZeRO-3 and FSDP2, precision, the collator's counts."""

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fixtures.backbones import save_backbones
from fixtures.recipes import PROBE, ROOT, launch, launch_command, write_recipe
from llava_hf.data.shapes import build_shapes_world
from llava_hf.training import LlavaDataArguments, LlavaModelArguments, RecipeError, validate_recipe


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    path = tmp_path_factory.mktemp("train")
    save_backbones(path)  # tiny CLIP (8 px) + tiny Llama, saved like pretrained checkpoints
    build_shapes_world(path / "world", num_images=16, seed=0, progress=False)
    return path


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _group(state: dict, part: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if part in k}


@pytest.fixture(scope="module")
def stage1(workspace):
    launch(write_recipe(workspace, "stage1"))
    return workspace / "stage1"


def test_stage1_trains_only_the_projector(workspace, stage1):
    from transformers import AutoModelForCausalLM, CLIPVisionModel

    trained = _weights(stage1)
    for file in (
        "config.json",
        "processor_config.json",
        "modeling_llava.py",
        "chat_template.jinja",
        "llava_hf_training.json",
    ):
        assert (stage1 / file).is_file(), file
    vision = CLIPVisionModel.from_pretrained(workspace / "clip").state_dict()
    for key, value in vision.items():
        assert torch.equal(trained[f"model.vision_tower.{key}"], value), key
    lm = AutoModelForCausalLM.from_pretrained(workspace / "lm").state_dict()
    for key, value in lm.items():
        ours = trained[f"model.language_model.{key[len('model.') :]}"] if key.startswith("model.") else trained[key]
        rows = value.shape[0]
        assert torch.equal(ours[:rows] if ours.shape != value.shape else ours, value), (
            key
        )  # embeddings grew by <image>/<pad>
    # The projector moved away from its fresh initialisation (same seed, rebuilt here).
    from llava_hf.builder import build_llava_from_pretrained

    fresh, _ = build_llava_from_pretrained(
        str(workspace / "clip"), str(workspace / "lm"), seed=0, attn_implementation="sdpa"
    )
    assert not torch.equal(
        fresh.model.multi_modal_projector.linear_1.weight, trained["model.multi_modal_projector.linear_1.weight"]
    )
    log = json.loads((stage1 / "llava_hf_training.json").read_text())
    assert log["stage"] == "1" and log["global_step"] == 2 and log["train_runtime_s"] > 0
    # The grounding meter, on by default: at train begin and with each training log, on rows held out of training
    # (14 caption pairs: a quarter, 3, held out), drawn for the model card.
    assert [e["step"] for e in log["log_history"] if "image_gain" in e] == [0, 1, 2]
    assert all("image_gain_shuffled" in e for e in log["log_history"] if "loss" in e)
    assert log["grounding"]["samples"] == 3 and log["grounding"]["removed_from_training"] == 3
    assert (stage1 / "training_curves.png").is_file()


def test_stage2_keeps_the_vision_tower_and_trains_the_lm(workspace, stage1):
    recipe = write_recipe(
        workspace,
        "stage2",
        stage="2",
        model_name_or_path=str(stage1),
        vision_model=None,
        language_model=None,
        train_files=[str(workspace / "world" / "instruct.json")],
        learning_rate=1e-3,
        grounding_samples=0,
    )
    launch(recipe)
    record = json.loads((workspace / "stage2" / "llava_hf_training.json").read_text())
    assert record["grounding"] is None and not any("image_gain" in e for e in record["log_history"])  # meter off
    before, after = _weights(stage1), _weights(workspace / "stage2")
    for key in _group(before, "vision_tower"):
        assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in _group(before, "language_model.layers"))
    assert any(not torch.equal(before[k], after[k]) for k in _group(before, "multi_modal_projector"))
    # The result loads through the Auto classes and generates.
    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.from_pretrained(workspace / "stage2")


def test_standardized_projector_input_is_measured_in_stage1_and_kept_in_stage2(workspace):
    # projector_input_norm: standardize measures the tower's features on the first projector_norm_images training
    # images before stage 1 trains; the buffers are saved, and stage 2 (LoRA, merged) keeps them as they are.
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    recipe = write_recipe(workspace, "stage1_std", projector_input_norm="standardize", projector_norm_images=4)
    result = launch(recipe)
    assert "projector input statistics: {'rows': 4, 'feature_tokens': 64" in result.stdout
    out = workspace / "stage1_std"
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    records = json.loads((workspace / "world" / "stage1.json").read_text())[:4]
    images = [Image.open(workspace / "world" / "images" / r["image"]).convert("RGB") for r in records]
    pixel_values = processor(images=images, text=["<image>"] * 4, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        features = model.model._vision_features(pixel_values).flatten(0, 1)
    projector = model.model.multi_modal_projector
    torch.testing.assert_close(projector.feature_mean, features.mean(0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(projector.feature_std, features.std(0, unbiased=False), atol=1e-5, rtol=1e-4)
    assert (
        json.loads((out / "llava_hf_training.json").read_text())["model_args"]["projector_input_norm"] == "standardize"
    )

    stage2 = write_recipe(
        workspace,
        "stage2_std",
        stage="2",
        model_name_or_path=str(out),
        vision_model=None,
        language_model=None,
        train_files=[str(workspace / "world" / "mcq_train.json")],
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        grounding_samples=0,
    )
    launch(stage2)
    before, after = _weights(out), _weights(workspace / "stage2_std")
    for key in ("model.multi_modal_projector.feature_mean", "model.multi_modal_projector.feature_std"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(
        before["model.multi_modal_projector.linear_1.weight"], after["model.multi_modal_projector.linear_1.weight"]
    )


def test_lora_saves_the_adapter_and_merges(workspace, stage1):
    recipe = write_recipe(
        workspace,
        "lora",
        stage="2",
        model_name_or_path=str(stage1),
        vision_model=None,
        language_model=None,
        train_files=[str(workspace / "world" / "mcq_train.json")],
        use_lora=True,  # the deprecated alias of use_peft, still accepted
        lora_r=4,
        lora_alpha=8,
        learning_rate=1e-2,
        projector_lr=1e-3,
    )
    launch(recipe)
    adapter = workspace / "lora" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert "language_model" in str(config["target_modules"]) and "multi_modal_projector" in config["modules_to_save"]
    adapter_keys = load_file(adapter / "adapter_model.safetensors")
    assert adapter_keys and not any("vision_tower" in k for k in adapter_keys)
    before, merged = _weights(stage1), _weights(workspace / "lora")
    assert set(before) == set(merged)  # a plain llava_hf checkpoint, no lora_* keys
    for key in _group(before, "vision_tower"):
        assert torch.equal(before[key], merged[key]), key
    assert any(not torch.equal(before[k], merged[k]) for k in _group(before, "self_attn.q_proj.weight"))
    assert any(not torch.equal(before[k], merged[k]) for k in _group(before, "multi_modal_projector"))


@pytest.mark.parametrize(
    "model_overrides,message",
    [
        ({"stage": "3"}, "stage must be one of"),
        ({"stage": "2", "model_name_or_path": "/nonexistent/stage1"}, "does not exist; run stage 1 first"),
        ({"stage": "2", "model_name_or_path": None}, "set model_name_or_path"),
        (
            {"stage": "2", "model_name_or_path": ".", "lora_target_modules": ["vision_tower.encoder.*q_proj"]},
            "reaches the vision tower",
        ),
        ({"stage": "1", "vision_model": None}, "stage 1 needs vision_model and language_model"),
        ({"image_processor_backend": "fast"}, "image_processor_backend must be one of"),
        ({"stage": "2", "model_name_or_path": ".", "image_processor_backend": "pil"}, "applies to stage 1 with a"),
        ({"vision_model": "offline-default", "image_processor_backend": "pil"}, "applies to stage 1 with a"),
        ({"stage": "2", "model_name_or_path": ".", "vision_feature_pool_size": 3}, "vision_feature_pool_size applies"),
        (
            {"stage": "2", "model_name_or_path": ".", "vision_feature_global_token": True},
            "vision_feature_global_token applies",
        ),
        (
            {"stage": "2", "model_name_or_path": ".", "projector_input_norm": "standardize"},
            "projector_input_norm applies",
        ),
        (
            {"projector_input_norm": "standardize", "projector_norm_images": 1},
            "projector_norm_images must be at least",
        ),
    ],
)
def test_bad_recipes_fail_before_training(tmp_path, model_overrides, message):
    train = tmp_path / "t.json"
    train.write_text("[]")
    # Values wrong in themselves fail as the dataclass is built (`__post_init__`), the rest in validate_recipe.
    with pytest.raises(RecipeError, match=message):
        model_args = LlavaModelArguments(**({"vision_model": "v", "language_model": "l"} | model_overrides))
        validate_recipe(model_args, LlavaDataArguments(train_files=[str(train)]))


def test_bad_recipe_exits_with_the_message(workspace):
    result = launch(
        write_recipe(workspace, "bad", stage="2", model_name_or_path=str(workspace / "missing")), check=False
    )
    assert result.returncode != 0
    assert "does not exist; run stage 1 first" in result.stderr
    assert not (workspace / "bad").exists()


def test_nan_loss_stops_with_the_step(workspace, stage1):
    # A NaN in the projector makes the very first loss NaN.
    broken = workspace / "broken"
    subprocess.run(["cp", "-r", str(stage1), str(broken)], check=True)
    state = _weights(broken)
    state["model.multi_modal_projector.linear_1.weight"][0, 0] = float("nan")
    from safetensors.torch import save_file

    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    result = launch(
        write_recipe(
            workspace,
            "nan",
            stage="2",
            model_name_or_path=str(broken),
            vision_model=None,
            language_model=None,
            train_files=[str(workspace / "world" / "mcq_train.json")],
        ),
        check=False,
    )
    assert result.returncode != 0
    assert "loss is nan at step 1" in result.stderr


def test_resume_after_sigkill_gives_the_same_weights(workspace, stage1):
    common = dict(
        stage="2",
        model_name_or_path=str(stage1),
        vision_model=None,
        language_model=None,
        train_files=[str(workspace / "world" / "mcq_train.json")],
        max_steps=12,
        save_strategy="steps",
        save_steps=2,
        learning_rate=1e-3,
        lr_scheduler_type="cosine",
    )
    launch(write_recipe(workspace, "straight", **common))
    killed = write_recipe(workspace, "killed", **common)
    command = launch_command(killed)
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    # Kill right after the first checkpoint (trainer_state.json is the last file a checkpoint writes): ten more
    # steps remain, so the run cannot finish first.
    checkpoint = workspace / "killed" / "checkpoint-2"
    marker = checkpoint / "trainer_state.json"
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # SIGKILL: no cleanup, no final save
    process.wait()
    assert marker.exists() and not (workspace / "killed" / "model.safetensors").exists()
    launch(killed, "--resume_from_checkpoint", str(checkpoint))
    straight, resumed = _weights(workspace / "straight"), _weights(workspace / "killed")
    for key in straight:
        assert torch.allclose(straight[key], resumed[key], atol=1e-6), key


def test_ddp_two_processes_match_one(workspace, stage1):
    common = dict(
        stage="2",
        model_name_or_path=str(stage1),
        vision_model=None,
        language_model=None,
        train_files=[str(workspace / "world" / "mcq_train.json")],
        max_steps=3,
        learning_rate=1e-3,
        # One seeded sample order for both runs (llava-hf's sampler), so each global batch holds the same samples.
        group_by_modality_length=True,
    )
    launch(write_recipe(workspace, "one", per_device_train_batch_size=4, **common))
    launch(write_recipe(workspace, "two", per_device_train_batch_size=2, **common), num_processes=2)
    losses = []
    for name in ("one", "two"):
        log = json.loads((workspace / name / "llava_hf_training.json").read_text())["log_history"]
        losses.append([row["loss"] for row in log if "loss" in row])
    assert len(losses[0]) == len(losses[1]) == 3
    record = json.loads((workspace / "two" / "llava_hf_training.json").read_text())["hardware"]
    assert record["distributed_type"] == "MULTI_CPU" and record["num_processes"] == 2, record  # really 2 processes
    # Same samples, same global batch: the losses agree to ~3e-4 relative (per-process padding changes the float
    # summation order); a different global batch or a per-device loss mean would be off by far more.
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    # The weights too: DDP averages the 2 processes' gradients into the 1-process gradient of the same global batch.
    one, two, start = _weights(workspace / "one"), _weights(workspace / "two"), _weights(stage1)
    for key in _group(one, "projector"):
        moved = (one[key] - start[key]).abs().max().item()
        assert moved > 1e-4, key  # the projector trained...
        assert (one[key] - two[key]).abs().max().item() < 0.01 * moved, key  # ...and both runs moved it alike


@pytest.mark.parametrize(
    "recipe",
    sorted(str(p.relative_to(ROOT)) for p in (ROOT / "recipes").glob("*/*.yaml") if p.parent.name != "accelerate"),
)
def test_every_recipe_parses(recipe):
    from trl import SFTConfig, TrlParser

    parser = TrlParser((LlavaModelArguments, LlavaDataArguments, SFTConfig))
    # bf16 is switched off only because this CPU has none; every other value is the recipe's own.
    model_args, data_args, training_args = parser.parse_args_and_config(
        args=["--config", str(ROOT / recipe), "--bf16", "false", "--output_dir", "/tmp/unused"]
    )
    assert model_args.stage in ("1", "2") and data_args.train_files
    assert training_args.lr_scheduler_type == "cosine" and training_args.weight_decay == 0.0


# -- saving from 2 processes: DDP, DeepSpeed ZeRO-3 and FSDP2, all on the CPU over gloo ---------------------------------

ZERO3 = {
    "zero_optimization": {
        "stage": 3,
        # Partition every weight, however small. By default ZeRO-3 keeps parameters under 100k elements whole on
        # every process, which is all of a tiny model's: a save that forgot to gather would still look right.
        "stage3_param_persistence_threshold": 0,
        "stage3_gather_16bit_weights_on_model_save": True,
    },
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "train_batch_size": "auto",
    "gradient_clipping": "auto",
}


def _distributed_setup(workspace: Path, setup: str) -> tuple[dict, dict]:
    """`(recipe overrides, environment)` for 2 CPU processes under `setup`."""
    if setup == "ddp":
        return {}, {}
    if setup == "zero3":
        from conftest import require

        require("deepspeed", import_it=False)
        config = workspace / "zero3.json"
        config.write_text(json.dumps(ZERO3))
        # What `accelerate launch --config_file` passes for a DeepSpeed config (zero3.yaml with a config file), for
        # DeepSpeed's CPU accelerator over gloo. accelerate skips DeepSpeed under ACCELERATE_USE_CPU, and a recipe's
        # `deepspeed:` file does not work without an accelerator (accelerate then counts one process).
        env = {
            "ACCELERATE_USE_CPU": None,
            "ACCELERATE_USE_DEEPSPEED": "true",
            "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true",
        }
        return {"ddp_backend": "gloo"}, env | {"ACCELERATE_DEEPSPEED_CONFIG_FILE": str(config)}
    if setup == "fsdp2":
        fsdp_config = {"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}
        fsdp_config["state_dict_type"] = "FULL_STATE_DICT"
        return {"fsdp": "full_shard", "fsdp_config": fsdp_config}, {"LLAVA_HF_PROBE_FSDP_ON_CPU": "1"}
    raise ValueError(setup)


def _merged_by_hand(peft_state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """A PeftModel's state dict merged: W + scaling * B @ A for each LoRA layer, the `modules_to_save` copy for the
    projector, names as in the plain model."""
    merged = {}
    for key, value in peft_state.items():
        if any(part in key for part in (".lora_A.", ".lora_B.", ".original_module.")):
            continue
        if key.endswith(".base_layer.weight"):
            layer = key.removesuffix(".base_layer.weight")
            value = value + scaling * (
                peft_state[f"{layer}.lora_B.default.weight"] @ peft_state[f"{layer}.lora_A.default.weight"]
            )
        name = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
        merged[name.replace(".modules_to_save.default.", ".")] = value
    return merged


@pytest.mark.parametrize(
    "setup,lora",
    # DDP without LoRA is test_ddp_two_processes_match_one.
    [("ddp", True), ("zero3", False), ("zero3", True), ("fsdp2", False), ("fsdp2", True)],
)
def test_two_processes_save_the_trained_weights_once(workspace, stage1, setup, lora):
    from transformers import AutoModelForImageTextToText

    name = f"save-{setup}-{'lora' if lora else 'full'}"
    probe = workspace / f"{name}-probe"
    probe.mkdir()
    overrides, env = _distributed_setup(workspace, setup)
    overrides |= dict(
        stage="2",
        model_name_or_path=str(stage1),
        vision_model=None,
        language_model=None,
        train_files=[str(workspace / "world" / "mcq_train.json")],
        learning_rate=1e-2,
    )
    if lora:
        overrides |= dict(use_peft=True, lora_r=4, lora_alpha=8, projector_lr=1e-2)
    env["LLAVA_HF_PROBE_DIR"] = str(probe)
    launch(write_recipe(workspace, name, **overrides), num_processes=2, script=PROBE, env=env)
    output = workspace / name
    record = json.loads((output / "llava_hf_training.json").read_text())
    kind = {"ddp": "MULTI_CPU", "zero3": "DEEPSPEED", "fsdp2": "FSDP"}[setup]
    assert record["hardware"]["distributed_type"] == kind and record["hardware"]["num_processes"] == 2
    # The grounding meter measured in every process, in step (a ZeRO-3 or FSDP forward needs them all).
    assert [e["step"] for e in record["log_history"] if "image_gain" in e] == [0, 1, 2]

    # What each process held when training ended (gathered by the probe), merged by hand for LoRA.
    trained = [load_file(probe / f"trained-rank{rank}.safetensors") for rank in (0, 1)]
    for key in trained[0]:
        assert torch.equal(trained[0][key], trained[1][key]), key
    expected = _merged_by_hand(trained[0], scaling=8 / 4) if lora else trained[0]

    # The file: every tensor whole (ZeRO-3 leaves empty placeholders in a partitioned model).
    saved = _weights(output)
    assert all(tensor.numel() > 0 for tensor in saved.values()), [k for k, t in saved.items() if t.numel() == 0]
    # Through the Auto classes (they map the file's names to the modules'): exactly the trained weights.
    loaded = AutoModelForImageTextToText.from_pretrained(output).state_dict()
    assert set(loaded) == set(expected)
    start = AutoModelForImageTextToText.from_pretrained(stage1).state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=1e-6, msg=key)
    moved = [key for key in expected if not torch.allclose(start[key], expected[key], rtol=0, atol=1e-5)]
    assert any("language_model" in key for key in moved) and any("projector" in key for key in moved), moved

    # Side files from the main process only, each once; the other process only joins the gathers. The remote code is
    # llava_hf's (FSDP2 must not leave torch's files).
    writes = [(probe / f"writes-rank{rank}.txt").read_text().splitlines() for rank in (0, 1)]
    assert writes[1] == [], writes[1]
    once = ["config.json", "processor_config.json", "llava_hf_training.json"]
    once += ["adapter/adapter_config.json"] if lora else []
    assert {file: writes[0].count(file) for file in once} == dict.fromkeys(once, 1), writes[0]
    assert {"modeling_llava.py", "configuration_llava.py", "processing_llava.py"} <= set(writes[0]), writes[0]
    config = json.loads((output / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_llava.LlavaForConditionalGeneration"
    assert sorted(p.name for p in output.glob("*.py")) == [
        "configuration_llava.py",
        "modeling_llava.py",
        "processing_llava.py",
    ]


# -- precision ---------------------------------------------------------------------------------------------------------


def test_launch_configs_leave_precision_to_the_recipe():
    paths = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))
    assert paths, ROOT / "recipes" / "accelerate"
    for path in paths:
        assert yaml.safe_load(path.read_text())["mixed_precision"] == "no", path.name


def test_launcher_mixed_precision_does_not_override_the_recipe(workspace):
    # single_gpu.yaml used to say bf16, which reached a float32 recipe as ACCELERATE_MIXED_PRECISION.
    result = launch(write_recipe(workspace, "launcher-bf16"), mixed_precision="bf16")
    assert "the recipe wins: training runs with mixed_precision 'no'" in result.stderr
    record = json.loads((workspace / "launcher-bf16" / "llava_hf_training.json").read_text())
    assert record["precision"]["mixed_precision"] == "no"
    assert record["precision"]["trainable_parameters"] == ["float32"]


@pytest.mark.parametrize(
    ("launcher", "bf16", "warned"),
    [("bf16", False, True), ("fp16", True, True), ("no", True, False), (None, True, False), ("bf16", True, False)],
)
def test_only_a_launcher_asking_for_another_precision_is_warned_about(monkeypatch, caplog, launcher, bf16, warned):
    """The shipped launch configs say `mixed_precision: "no"`: they leave the choice to the recipe, no warning."""
    import types

    from llava_hf.training import resolve_precision

    if launcher is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    args = types.SimpleNamespace(bf16=bf16, fp16=False, process_index=0, deepspeed_plugin=None)
    with caplog.at_level(logging.WARNING, logger="llava_hf.training"):
        assert resolve_precision(args) == ("bf16" if bf16 else "no")
    assert args.mixed_precision == os.environ["ACCELERATE_MIXED_PRECISION"] == ("bf16" if bf16 else "no")
    assert any("the recipe wins" in r.getMessage() for r in caplog.records) == warned


def test_bf16_recipe_trains_float32_master_weights(workspace):
    from transformers import AutoModelForCausalLM

    # An LM stored in float16, like Vicuna: `dtype: auto` used to load it, and build the projector, in float16.
    lm16 = workspace / "lm-fp16"
    shutil.copytree(workspace / "lm", lm16, dirs_exist_ok=True)
    AutoModelForCausalLM.from_pretrained(workspace / "lm", dtype=torch.float16).save_pretrained(lm16)
    recipe = write_recipe(workspace, "bf16", language_model=str(lm16), bf16=True, use_cpu=True)
    launch(recipe, mixed_precision="bf16")
    precision = json.loads((workspace / "bf16" / "llava_hf_training.json").read_text())["precision"]
    assert precision["mixed_precision"] == "bf16"
    assert precision["trainable_parameters"] == precision["master_weights"] == ["float32"]
    assert _weights(workspace / "bf16")["model.multi_modal_projector.linear_1.weight"].dtype == torch.float32


def test_float16_weights_without_deepspeed_fail_before_training(workspace):
    result = launch(write_recipe(workspace, "fp16-weights", dtype="float16"), check=False)
    assert result.returncode != 0
    assert "dtype: float16 loads the trainable parameters in float16, and without DeepSpeed" in result.stderr
    assert "Use dtype: auto (float32 master weights)" in result.stderr
    assert not (workspace / "fp16-weights").exists()


def test_zero3_without_whole_weights_at_save_fails_before_training(tmp_path):
    import types

    train = tmp_path / "t.json"
    train.write_text("[]")
    # What TrainingArguments holds for zero3.yaml without `zero3_save_16bit_model: true`.
    plugin = types.SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": 3}})
    training_args = types.SimpleNamespace(deepspeed_plugin=plugin, bf16=True, fp16=False)
    model_args = LlavaModelArguments(vision_model="v", language_model="l")
    with pytest.raises(RecipeError, match="set zero3_save_16bit_model: true in the accelerate config"):
        validate_recipe(model_args, LlavaDataArguments(train_files=[str(train)]), training_args)


GPU_RECIPES = sorted(
    str(p.relative_to(ROOT))
    for folder in ("llava-v1", "llava-v1.5")
    for p in (ROOT / "recipes" / folder).glob("*.yaml")
)


@pytest.mark.parametrize("recipe", GPU_RECIPES)
def test_gpu_recipes_train_float32_master_weights_under_bf16(recipe):
    from trl import SFTConfig, TrlParser

    from llava_hf.training import resolve_dtype

    parser = TrlParser((LlavaModelArguments, LlavaDataArguments, SFTConfig))
    # use_cpu only lets TrainingArguments accept bf16 here.
    model_args, data_args, training_args = parser.parse_args_and_config(
        args=["--config", str(ROOT / recipe), "--use_cpu", "true", "--output_dir", "/tmp/unused"]
    )
    assert training_args.bf16 and not training_args.fp16
    # DDP / FSDP / one GPU: float32 weights under bf16 autocast (DeepSpeed keeps its own float32 copy).
    assert resolve_dtype(model_args, training_args) == torch.float32


# -- the collator's counts with dataloader workers -------------------------------------------------------------------


def test_collator_counts_from_dataloader_workers_reach_the_record(workspace, stage1):
    from transformers import AutoProcessor

    from llava_hf.data import LlavaDataCollator, load_llava_dataset

    # 8 samples, each once: 2 processes x 2 per device x 2 steps, each process with 2 dataloader workers.
    train = workspace / "world" / "instruct.json"  # multi-turn: a cut keeps the first answers
    dataset, _ = load_llava_dataset([str(train)], str(workspace / "world" / "images"), stage="chat")
    rows = list(dataset.select(range(8)))
    processor = AutoProcessor.from_pretrained(stage1)
    lengths = sorted(len(LlavaDataCollator(processor).encode(row)["input_ids"]) for row in rows)
    max_length = lengths[3]  # the 4 longest samples (or more, on ties) are cut
    expected = LlavaDataCollator(processor, max_length=max_length)
    for row in rows:
        expected.encode(row)
    assert 0 < expected.stats["truncated"] < 8, expected.stats

    recipe = write_recipe(
        workspace,
        "workers",
        stage="2",
        model_name_or_path=str(stage1),
        vision_model=None,
        language_model=None,
        train_files=[str(train)],
        max_train_samples=8,
        max_steps=-1,
        num_train_epochs=1,
        max_length=max_length,
        dataloader_num_workers=2,
    )
    result = launch(recipe, num_processes=2)
    record = json.loads((workspace / "workers" / "llava_hf_training.json").read_text())
    assert {key: value for key, value in record["collator"].items() if value} == dict(expected.stats)
    logged = sum(row.get("collator/truncated", 0) for row in record["log_history"])
    assert logged == expected.stats["truncated"]
    assert f"truncated: {expected.stats['truncated']}" in result.stdout


def test_fused_lm_head_scores_only_supervised_positions_with_the_same_result(tester):
    # LlavaSFTTrainer.compute_loss runs TRL's fused head compacted to the labelled positions on CPUs as well, through
    # the dense CPU head: same loss, metrics and gradients as TRL's kernel scoring every position.
    import trl.kernels.chunked_logprob as kernels
    from trl.trainer.utils import add_fused_lm_head

    from llava_hf.training import _compact_fused_lm_head, _DenseLogProb

    inputs = tester.prepare_inputs(batch_size=3)
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -4:] = inputs["input_ids"][:, -4:]  # the answer: the last 4 tokens of each row
    labels[2, -4:-2] = -100
    rows = []
    kernel_apply, dense_apply = kernels.ChunkedLogProbFunction.apply, _DenseLogProb.apply

    def counting(apply, name):
        def wrapped(hidden, *args):
            rows.append((name, hidden.shape[0]))
            return apply(hidden, *args)

        return wrapped

    results = []
    for compact in (False, True):
        model = tester.get_model().train()
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
        with (
            mock.patch.object(kernels.ChunkedLogProbFunction, "apply", counting(kernel_apply, "trl")),
            mock.patch.object(_DenseLogProb, "apply", counting(dense_apply, "dense")),
            _compact_fused_lm_head() if compact else contextlib.nullcontext(),
        ):
            out = model(**inputs, labels=labels, fused_lm_head=True)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (full, full_grads), (compact, compact_grads) = results
    n_labelled = int((labels[:, 1:] != -100).sum())
    assert rows == [("trl", 3 * (labels.shape[1] - 1)), ("dense", n_labelled)] and n_labelled == 10
    torch.testing.assert_close(compact.loss, full.loss)
    for field in ("log_probs", "entropy", "is_top1", "label_mask"):
        torch.testing.assert_close(getattr(compact, field), getattr(full, field))
    assert compact_grads.keys() == full_grads.keys() and compact_grads
    for name, grad in full_grads.items():
        torch.testing.assert_close(compact_grads[name], grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("softcap, logit_scale, temperature", [(None, 1.0, 1.0), (30.0, 0.5, 0.7)])
def test_dense_cpu_head_matches_trls_kernel(monkeypatch, softcap, logit_scale, temperature):
    # Every output of TRL's kernel, and the gradients of the log-probabilities, in float32, over several token blocks
    # (checkpointed, as a large batch is) and with no labelled token at all; bf16 autocast agrees to bf16 rounding.
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    import llava_hf.training as training

    monkeypatch.setattr(training, "_DENSE_HEAD_TOKENS", 8)
    torch.manual_seed(0)
    weight = torch.randn(500, 32, requires_grad=True)
    hidden = torch.randn(37, 32, requires_grad=True)
    targets = torch.randint(0, 500, (37,))
    outputs = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
    for autocast, tol in ((False, 1e-5), (True, 2e-2)):
        results = []
        for function in (ChunkedLogProbFunction, training._DenseLogProb):
            weight.grad = hidden.grad = None
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = function.apply(hidden, weight, None, targets, temperature, 128, softcap, logit_scale, outputs)
            (-out[0].square().sum()).backward()
            results.append((out, weight.grad.clone(), hidden.grad.clone()))
        (expected, *expected_grads), (got, *got_grads) = results
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)
        for a, b in zip(got_grads, expected_grads):
            # Relative to the largest gradient: summation order differs (fp32); bf16: TRL accumulates the head's
            # gradient GEMMs in float32, autograd in bf16.
            assert (a - b).abs().max() <= (1e-5 if not autocast else 0.02) * b.abs().max()
    empty = training._DenseLogProb.apply(hidden[:0], weight, None, targets[:0], 1.0, 128, None, 1.0, outputs)
    assert [tuple(x.shape) for x in empty] == [(0,)] * 5


def test_the_trainer_compacts_the_fused_head_on_cpus_only_while_computing_the_loss(monkeypatch):
    import trl.trainer.utils as trl_utils
    from trl import SFTTrainer

    from llava_hf.training import _DenseLogProb, make_trainer_class

    original, kernel = trl_utils._use_triton, trl_utils._ChunkedLogProbFunction
    seen = {}

    def fake_compute_loss(self, model, inputs, *args, **kwargs):
        seen["cpu"] = trl_utils._use_triton(torch.device("cpu"))
        seen["meta"] = trl_utils._use_triton(torch.device("meta"))
        seen["dense"] = trl_utils._ChunkedLogProbFunction is _DenseLogProb and _DenseLogProb.fallback is kernel
        raise RuntimeError("boom")

    monkeypatch.setattr(SFTTrainer, "compute_loss", fake_compute_loss)
    trainer_class = make_trainer_class()
    with pytest.raises(RuntimeError, match="boom"):
        trainer_class.compute_loss(object.__new__(trainer_class), None, {})
    assert seen == {"cpu": True, "meta": False, "dense": True}  # other devices keep TRL's choice and kernel
    from llava_hf.training import _compact_fused_lm_head

    with _compact_fused_lm_head(), _compact_fused_lm_head():  # nested: the fallback stays TRL's kernel
        assert _DenseLogProb.fallback is kernel and trl_utils._ChunkedLogProbFunction is _DenseLogProb
    assert trl_utils._use_triton is original and trl_utils._ChunkedLogProbFunction is kernel  # restored after errors
