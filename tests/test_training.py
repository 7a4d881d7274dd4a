"""recipes/sft.py through `accelerate launch`: stages, freezing, LoRA, bad recipes, NaN, resume, DDP."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from llava_hf.data.shapes import build_shapes_world
from llava_hf.training import LlavaDataArguments, LlavaModelArguments, RecipeError, validate_recipe

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).parent / "accelerate")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from test_builder import _save_backbones

    path = tmp_path_factory.mktemp("train")
    _save_backbones(path)  # tiny CLIP (8 px) + tiny Llama, saved like pretrained checkpoints
    build_shapes_world(path / "world", num_images=16, seed=0, progress=False)
    return path


def _recipe(workspace: Path, name: str, **overrides) -> Path:
    recipe = {
        "stage": "1",
        "vision_model": str(workspace / "clip"),
        "language_model": str(workspace / "lm"),
        "projector_type": "mlp2x_gelu",
        "chat_template": "vicuna_v1",
        "attn_implementation": "sdpa",
        "train_files": [str(workspace / "world" / "stage1.json")],
        "image_root": str(workspace / "world" / "images"),
        "output_dir": str(workspace / name),
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "learning_rate": 1.0e-3,
        "lr_scheduler_type": "constant",
        "weight_decay": 0.0,
        "max_length": 512,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "bf16": False,
        "gradient_checkpointing": False,
        "dataloader_num_workers": 0,
        "seed": 0,
    }
    recipe.update(overrides)
    path = workspace / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _command(config: Path, *extra: str, num_processes: int = 1) -> list[str]:
    """`accelerate launch ... recipes/sft.py --config CONFIG` on the CPU; several processes: DDP over gloo.

    On a machine without GPUs `accelerate launch --cpu --num_processes N` starts ONE process unless mpirun is set
    up (its simple launcher), so N > 1 goes through torchrun, the launcher accelerate itself uses for multi-GPU runs,
    with `ACCELERATE_USE_CPU` set (see `_launch`): accelerate then builds the same MULTI_CPU gloo state.
    """
    script = [str(ROOT / "recipes" / "sft.py"), "--config", str(config), *extra]
    if num_processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(num_processes)] + script
    launch = [ACCELERATE, "launch", "--num_processes", "1", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--cpu"]
    return launch + script


def _launch(config: Path, *extra: str, num_processes: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    command = _command(config, *extra, num_processes=num_processes)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env |= {"ACCELERATE_USE_CPU": "true", "ACCELERATE_MIXED_PRECISION": "no"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _group(state: dict, part: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if part in k}


@pytest.fixture(scope="module")
def stage1(workspace):
    _launch(_recipe(workspace, "stage1"))
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
    assert log["stage"] == "1" and log["global_step"] == 2


def test_stage2_keeps_the_vision_tower_and_trains_the_lm(workspace, stage1):
    recipe = _recipe(
        workspace,
        "stage2",
        stage="2",
        model_name_or_path=str(stage1),
        vision_model=None,
        language_model=None,
        train_files=[str(workspace / "world" / "instruct.json")],
        learning_rate=1e-3,
    )
    _launch(recipe)
    before, after = _weights(stage1), _weights(workspace / "stage2")
    for key in _group(before, "vision_tower"):
        assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in _group(before, "language_model.layers"))
    assert any(not torch.equal(before[k], after[k]) for k in _group(before, "multi_modal_projector"))
    # The result loads through the Auto classes and generates.
    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.from_pretrained(workspace / "stage2")


def test_lora_saves_the_adapter_and_merges(workspace, stage1):
    recipe = _recipe(
        workspace,
        "lora",
        stage="2",
        model_name_or_path=str(stage1),
        vision_model=None,
        language_model=None,
        train_files=[str(workspace / "world" / "mcq_train.json")],
        use_lora=True,
        lora_r=4,
        lora_alpha=8,
        learning_rate=1e-2,
        projector_lr=1e-3,
    )
    _launch(recipe)
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
    ],
)
def test_bad_recipes_fail_before_training(tmp_path, model_overrides, message):
    train = tmp_path / "t.json"
    train.write_text("[]")
    model_args = LlavaModelArguments(**({"vision_model": "v", "language_model": "l"} | model_overrides))
    with pytest.raises(RecipeError, match=message):
        validate_recipe(model_args, LlavaDataArguments(train_files=[str(train)]))


def test_bad_recipe_exits_with_the_message(workspace):
    result = _launch(_recipe(workspace, "bad", stage="2", model_name_or_path=str(workspace / "missing")), check=False)
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
    result = _launch(
        _recipe(
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
    _launch(_recipe(workspace, "straight", **common))
    killed = _recipe(workspace, "killed", **common)
    command = _command(killed)
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
    _launch(killed, "--resume_from_checkpoint", str(checkpoint))
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
    _launch(_recipe(workspace, "one", per_device_train_batch_size=4, **common))
    _launch(_recipe(workspace, "two", per_device_train_batch_size=2, **common), num_processes=2)
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
