"""Training as a library entry point: `llava_hf.train.make_parser` / `main`, the `llava-hf train` command, and the
recipe dataclasses' TRL names (`use_peft`, with `use_lora` as a deprecated alias) and own checks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llava_hf.cli import build_parser
from llava_hf.cli import main as cli_main
from llava_hf.train import make_parser
from llava_hf.training import LlavaDataArguments, LlavaModelArguments, RecipeError

ROOT = Path(__file__).resolve().parents[2]
LLAVA_HF = str(Path(sys.executable).parent / "llava-hf")
# bf16 only because this CPU may have none; the output folder is never written by a parse.
NO_BF16 = ["--bf16", "false", "--output_dir", "/tmp/unused"]


def _write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def _stage2(tmp_path: Path, **fields) -> Path:
    train = tmp_path / "t.json"
    train.write_text("[]")
    recipe = {"stage": "2", "model_name_or_path": str(tmp_path), "train_files": [str(train)], "lora_r": 4} | fields
    return _write(tmp_path / "recipe.yaml", recipe)


def test_make_parser_maps_the_use_lora_alias_to_use_peft(tmp_path):
    config = _stage2(tmp_path, use_lora=True)
    with pytest.warns(FutureWarning, match="use_lora is deprecated: use use_peft"):
        model_args, data_args, training_args = make_parser().parse_args_and_config(
            args=["--config", str(config), *NO_BF16]
        )
    assert model_args.use_peft is True and model_args.use_lora is None and model_args.lora_r == 4
    assert data_args.train_files == [str(tmp_path / "t.json")] and training_args.output_dir == "/tmp/unused"

    # TRL's name, from the YAML or the command line.
    model_args, _, _ = make_parser().parse_args_and_config(
        args=["--config", str(_stage2(tmp_path, use_peft=True)), *NO_BF16]
    )
    assert model_args.use_peft is True
    model_args, _, _ = make_parser().parse_args_and_config(
        args=["--config", str(_stage2(tmp_path, use_peft=True)), "--use_peft", "false", *NO_BF16]
    )
    assert model_args.use_peft is False


def test_the_alias_and_use_peft_cannot_disagree():
    with pytest.raises(RecipeError, match="use_peft: true and use_lora: false disagree"):
        LlavaModelArguments(stage="2", model_name_or_path="me/stage1", use_peft=True, use_lora=False)
    with pytest.warns(FutureWarning):
        assert LlavaModelArguments(stage="2", model_name_or_path="me/stage1", use_lora=False).use_peft is False


def test_the_shipped_lora_recipes_use_trls_name():
    for recipe in ("recipes/offline/stage2.yaml", "recipes/llava-v1.5/lora.yaml"):
        values = yaml.safe_load((ROOT / recipe).read_text())
        assert values["use_peft"] is True and "use_lora" not in values, recipe


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"stage": "3"}, "stage must be one of"),
        ({"dtype": "float8"}, "dtype must be one of"),
        ({"use_peft": True}, "use_peft \\(LoRA\\) applies to stage 2"),
        ({"model_name_or_path": "me/stage1"}, "stage 1 builds a new model"),
        ({"lora_target_modules": ["multi_modal_projector.linear_1"]}, "reaches the vision tower or the projector"),
        (
            {"system_prompt": ""},
            "system_prompt applies to stage 1 with chat_template: chatml",
        ),  # vicuna_v1: the paper's
        ({"system_prompt": "", "chat_template": "chatml", "stage": "2"}, "system_prompt applies to stage 1"),
    ],
)
def test_model_arguments_check_their_own_values_on_construction(fields, message):
    with pytest.raises(RecipeError, match=message):
        LlavaModelArguments(**({"vision_model": "v", "language_model": "l"} | fields))


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"truncation": "left"}, "truncation must be"),
        ({"grounding_samples": -1}, "grounding_samples must be >= 0"),
        ({"grounding_steps": 0}, "grounding_steps must be >= 1"),
    ],
)
def test_data_arguments_check_their_own_values_on_construction(fields, message):
    with pytest.raises(RecipeError, match=message):
        LlavaDataArguments(**fields)


def test_incomplete_arguments_still_construct():
    # Completeness (the models to start from, train_files) is validate_recipe's: partial arguments can be built.
    assert LlavaModelArguments().stage == "1" and LlavaDataArguments().train_files == []


def test_llava_hf_train_help_lists_the_recipe_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--config", "--stage", "--train_files", "--use_peft", "--use_lora", "--lora_r", "--learning_rate"):
        assert option in help_text, option


def test_llava_hf_train_reads_the_config_and_the_overrides(tmp_path, monkeypatch):
    import llava_hf.train

    calls = []
    monkeypatch.setattr(llava_hf.train, "main", lambda *args: calls.append(args))
    config = _stage2(tmp_path, use_peft=True, learning_rate=1.0e-3, max_steps=2)
    assert cli_main(["train", "--config", str(config), "--lora_r", "8", *NO_BF16]) == 0
    [(model_args, data_args, training_args)] = calls
    assert type(model_args) is LlavaModelArguments and type(data_args) is LlavaDataArguments
    assert model_args.stage == "2" and model_args.use_peft and model_args.lora_r == 8  # the command line wins
    assert training_args.learning_rate == 1.0e-3 and training_args.max_steps == 2
    assert data_args.train_files == [str(tmp_path / "t.json")]


def test_llava_hf_train_reports_bad_recipes(tmp_path, capsys):
    config = _stage2(tmp_path, dtype="float8")
    assert cli_main(["train", "--config", str(config), *NO_BF16]) == 1
    assert "llava-hf train: error: dtype must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--config", str(_stage2(tmp_path, not_an_option=1))])
    assert exit_info.value.code == 2
    assert "unknown options --not_an_option" in capsys.readouterr().err


def test_llava_hf_train_runs_a_stage(tmp_path):
    """`llava-hf train --config ...` (the installed command, one process) trains and saves a stage, as
    `accelerate launch recipes/sft.py --config ...` does (tests/train/test_training.py)."""
    from fixtures.backbones import save_backbones
    from llava_hf.data.shapes import build_shapes_world

    save_backbones(tmp_path)
    build_shapes_world(tmp_path / "world", num_images=8, seed=0, progress=False)
    config = _write(
        tmp_path / "stage1.yaml",
        {
            "stage": "1",
            "vision_model": str(tmp_path / "clip"),
            "language_model": str(tmp_path / "lm"),
            "attn_implementation": "sdpa",
            "train_files": [str(tmp_path / "world" / "stage1.json")],
            "image_root": str(tmp_path / "world" / "images"),
            "output_dir": str(tmp_path / "stage1"),
            "max_steps": 1,
            "per_device_train_batch_size": 2,
            "max_length": 512,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "bf16": True,  # allowed on a CPU with --use_cpu true, as the offline recipes run
            "grounding_samples": 0,
            "dataloader_num_workers": 0,
        },
    )
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [LLAVA_HF, "train", "--config", str(config), "--use_cpu", "true"],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads((tmp_path / "stage1" / "llava_hf_training.json").read_text())
    assert record["stage"] == "1" and record["global_step"] == 1
    assert record["model_args"]["use_peft"] is False and record["model_args"]["use_lora"] is False
    assert (tmp_path / "stage1" / "model.safetensors").is_file()


@pytest.mark.parametrize("padding_free", [False, True])
def test_the_recipes_pad_to_multiple_of_reaches_the_collator(tmp_path, padding_free):
    """`pad_to_multiple_of` (SFTConfig's) pads the batches the recipe trains on, padded or padding-free."""
    from trl import SFTConfig

    from fixtures.tester import LlavaModelTester
    from llava_hf.train import make_collator

    processor = LlavaModelTester().get_processor()
    args = SFTConfig(output_dir=str(tmp_path), pad_to_multiple_of=16, max_length=1024, report_to="none", bf16=False)
    collator = make_collator(
        processor, LlavaModelArguments(stage="2"), LlavaDataArguments(), args, padding_free=padding_free
    )
    sample = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}], "images": []}
    batch = collator([sample, sample])
    assert batch["input_ids"].shape[-1] % 16 == 0
    assert (batch["labels"] != -100).any()


@pytest.mark.parametrize("launch", [{"fsdp": "full_shard"}, {"zero": 3}])
def test_the_feature_cache_is_refused_where_the_tower_is_sharded(tmp_path, launch):
    from types import SimpleNamespace

    from llava_hf.training import validate_recipe

    zero = {"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}}
    plugin = SimpleNamespace(deepspeed_config=zero) if "zero" in launch else None
    training_args = SimpleNamespace(fsdp=launch.get("fsdp", ""), deepspeed_plugin=plugin)
    model_args = LlavaModelArguments(vision_model="v", language_model="l", vision_feature_cache=str(tmp_path))
    with pytest.raises(RecipeError, match="vision_feature_cache needs the whole vision tower"):
        validate_recipe(model_args, LlavaDataArguments(), training_args)
