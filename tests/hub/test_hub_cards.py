"""Model, dataset and Space cards: metadata validated with huggingface_hub's card classes, tables from the recorded
training config and the evaluation results, and clear errors for what cannot be published. No server needed."""

import fnmatch
import json
import logging
import types
from pathlib import Path

import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard, SpaceCard

from fixtures.tester import LlavaModelTester
from llava_hf.eval.results import make_results, to_model_index, write_results
from llava_hf.hub import CardError, render_dataset_card, render_model_card, render_space_readme
from llava_hf.hub.model_card import load_training_history
from llava_hf.hub.push import check_model_folder, parse_sources
from llava_hf.hub.rendering import TEMPLATES
from llava_hf.training import LlavaDataArguments, LlavaModelArguments, save_stage_output

ROOT = Path(__file__).resolve().parents[2]


def save_trained(folder: Path, model_args: LlavaModelArguments, train_file: str, **training) -> Path:
    """A tiny checkpoint with a training record written by the real `save_stage_output` (the trainer is a stub
    holding real `SFTConfig` arguments and a logged history)."""
    from trl import SFTConfig

    tester = LlavaModelTester()
    args = SFTConfig(output_dir=str(folder), report_to="none", use_cpu=True, bf16=False, **training)
    history = [{"loss": 3.0, "step": 1}, {"loss": 2.5, "step": 2}, {"train_runtime": 330.0, "train_loss": 2.75}]
    model = tester.get_model()
    trainer = types.SimpleNamespace(
        args=args,
        model=model,
        state=types.SimpleNamespace(global_step=2, log_history=history),
        accelerator=types.SimpleNamespace(
            unwrap_model=lambda model: model,
            state=types.SimpleNamespace(mixed_precision="no"),
            wait_for_everyone=lambda: None,
        ),
        save_model=model.save_pretrained,
        is_world_process_zero=lambda: True,
    )
    save_stage_output(trainer, model_args, LlavaDataArguments(train_files=[train_file]), tester.get_processor())
    return folder


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cards")
    stage1 = save_trained(
        root / "stage1",
        LlavaModelArguments(
            stage="1", vision_model="openai/clip-vit-large-patch14-336", language_model="lmsys/vicuna-7b-v1.5"
        ),
        "/data/blip_laion_cc_sbu_558k.json",
        learning_rate=1e-3,
        per_device_train_batch_size=32,
        gradient_accumulation_steps=1,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        num_train_epochs=1,
    )
    stage2 = save_trained(
        root / "stage2",
        LlavaModelArguments(
            stage="2", model_name_or_path=str(stage1), use_lora=True, lora_r=128, lora_alpha=256, projector_lr=2e-5
        ),
        "/data/llava_v1_5_mix665k.json",
        learning_rate=2e-4,
        per_device_train_batch_size=16,
        gradient_accumulation_steps=2,
        max_steps=2,
    )
    return stage1, stage2


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("results")
    questions = folder / "mcq_test.json"
    questions.write_text("[]")
    metrics = {"accuracy": 71.234, "blind_accuracy": 68.0, "gap": 3.234, "count": 189}
    shapes = make_results("shapes", "stage2", {"questions": questions}, {"max_new_tokens": 8}, metrics)
    sqa = make_results(
        "scienceqa", "stage2", {"questions": questions}, {}, {"accuracy": 70.0, "image_accuracy": 66.61, "count": 9}
    )
    return [write_results(shapes, folder / "shapes.json"), write_results(sqa, folder / "sqa.json")]


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def test_training_history_follows_stage2_back_to_stage1(stages):
    history = load_training_history(stages[1])
    assert [record["stage"] for record in history] == ["1", "2"]
    assert history[1]["hardware"]["num_processes"] == 1


def test_model_card_metadata(stages, results):
    card = render_model_card(stages[1], "me/llava-tiny", license="apache-2.0", eval_results=results, datasets=["me/x"])
    data = ModelCard(card).data
    assert data.pipeline_tag == "image-text-to-text"
    assert data.library_name == "transformers"
    assert data.license == "apache-2.0"
    # The base models come from the stage-1 record that the stage-2 record points to.
    assert data.base_model == ["lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336"]
    assert data.datasets == ["me/x"]
    assert {"llava", "image-text-to-text", "custom_code", "trl"} <= set(data.tags)
    # model-index is exactly what the evaluation issue's converter gives, and the Hub's parser reads it.
    loaded = [json.loads(p.read_text()) for p in results]
    assert front_matter(card)["model-index"] == to_model_index("llava-tiny", loaded)
    assert {(r.dataset_name, r.metric_name, r.metric_value) for r in data.eval_results} >= {
        ("llava-hf shapes world (held-out MCQ)", "Accuracy", 71.23),
        ("llava-hf shapes world (held-out MCQ)", "Accuracy, blank image", 68.0),
        ("ScienceQA (test)", "Accuracy (image subset)", 66.61),
    }


def _table_row(card: str, label: str) -> list[str]:
    for line in card.splitlines():
        if line.startswith(f"| {label} |"):
            return [cell.strip() for cell in line.strip("|").split(" | ")][1:]
    raise AssertionError(f"no {label!r} row in:\n{card}")


def test_model_card_body_has_architecture_recipe_evaluation_usage(stages, results):
    card = render_model_card(stages[1], "me/llava-tiny", eval_results=results)
    assert _table_row(card, "projector")[0].startswith("`mlp2x_gelu` (Linear -> GELU -> Linear), 32 -> 32")
    assert _table_row(card, "image tokens") == ["16 per image, `<image>` (id 107)"]
    assert "stage 1 | stage 2" in card
    assert _table_row(card, "learning rate") == ["0.001", "0.0002 (projector 2e-05)"]
    assert _table_row(card, "global batch") == ["32 (32 x 1 accumulation x 1)", "32 (16 x 2 accumulation x 1)"]
    assert _table_row(card, "trains")[1].startswith("LoRA r 128, alpha 256 on the LM's linear layers")
    assert _table_row(card, "data") == ["`blip_laion_cc_sbu_558k.json`", "`llava_v1_5_mix665k.json`"]
    assert _table_row(card, "schedule")[0] == "cosine, 3% warmup"
    assert _table_row(card, "length") == ["1 epoch(s), 2 optimizer steps", "2 of 2 optimizer steps"]
    assert _table_row(card, "training time") == ["5.5 min", "5.5 min"]
    # Stage 2 trains with the stage-1 checkpoint's template, whatever its own chat_template argument says.
    assert _table_row(card, "prompt format") == ["`plain` (image + caption)", "`vicuna_v1`"]
    # TRL's default `gradient_checkpointing=True` is recorded under transformers 5's name, `activation_checkpointing`.
    assert _table_row(card, "precision") == ["fp32, activation checkpointing"] * 2
    assert _table_row(card, "attention")[0].startswith("`auto`: language model `")
    assert _table_row(card, "hardware")[0].startswith("1 x ") and "CPU" in _table_row(card, "hardware")[0]
    assert _table_row(card, "starting point") == [
        "`openai/clip-vit-large-patch14-336` + `lmsys/vicuna-7b-v1.5`",
        f"`{stages[0].parent.name}/stage1` (local)",
    ]
    assert (
        "| llava-hf shapes world (held-out MCQ) | Accuracy | 71.23 | 189 questions, greedy, max 8 new tokens |" in card
    )
    assert 'AutoModelForImageTextToText.from_pretrained("me/llava-tiny", trust_remote_code=True)' in card
    assert 'pipeline("image-text-to-text", model="me/llava-tiny", trust_remote_code=True)' in card
    # The blank-image baseline is 3 points away: the limitations say the model barely uses the image.
    assert "barely uses the image" in card


def test_local_base_models_are_left_out_of_the_metadata(tmp_path, caplog):
    folder = save_trained(
        tmp_path / "ckpt",
        LlavaModelArguments(stage="1", vision_model=str(tmp_path), language_model=str(tmp_path)),
        "train.json",
    )
    with caplog.at_level(logging.WARNING, logger="llava_hf.hub.model_card"):
        card = render_model_card(folder, "me/x")
    assert "base_model" not in front_matter(card)
    assert "is a local path, not a Hub id" in caplog.text
    named = render_model_card(folder, "me/x", base_models=["openai/clip-vit-base-patch32", "gpt2/gpt2"])
    assert front_matter(named)["base_model"] == ["openai/clip-vit-base-patch32", "gpt2/gpt2"]


def test_card_without_training_record_says_so(tmp_path):
    folder = LlavaModelTester().save(tmp_path / "converted")
    card = render_model_card(folder, "me/converted")
    assert "No training record (`llava_hf_training.json`)" in card
    assert "No evaluation results were attached" in card
    ModelCard(card)  # still valid


def test_bad_card_inputs_raise_naming_the_problem(stages, tmp_path):
    with pytest.raises(CardError, match="base_model 'not a hub id' is not a Hub id"):
        render_model_card(stages[1], "me/x", base_models=["not a hub id"])
    with pytest.raises(CardError, match="results file .*missing.json not found"):
        render_model_card(stages[1], "me/x", eval_results=[tmp_path / "missing.json"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"task": "mmlu", "metrics": {}}))
    with pytest.raises(CardError, match="unknown task 'mmlu'"):
        render_model_card(stages[1], "me/x", eval_results=[bad])


def test_only_complete_checkpoints_are_pushable(tmp_path, stages):
    assert check_model_folder(stages[1]) == stages[1]
    with pytest.raises(FileNotFoundError, match="not found"):
        check_model_folder(tmp_path / "nothing")
    folder = LlavaModelTester().save(tmp_path / "no-code")
    (folder / "modeling_llava.py").unlink()
    with pytest.raises(CardError, match="lacks the remote code \\(modeling_llava.py\\)"):
        check_model_folder(folder)
    lora = tmp_path / "lora"
    (lora / "adapter").mkdir(parents=True)
    (lora / "config.json").write_text(json.dumps({"model_type": "llava_hf"}))
    with pytest.raises(CardError, match="only a LoRA adapter"):
        check_model_folder(lora)
    (lora / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(CardError, match="model_type is 'llava', not 'llava_hf'; convert it first"):
        check_model_folder(lora)


def test_dataset_card_keeps_the_configs_already_pushed():
    first = render_dataset_card(
        "me/shapes", "captions", {"train": {"rows": 100, "bytes": 10, "files": []}}, license="cc0-1.0"
    )
    previous = DatasetCard(first).data.to_dict()
    second = render_dataset_card(
        "me/shapes",
        "mcq",
        {"train": {"rows": 800, "bytes": 5, "files": []}, "test": {"rows": 200, "bytes": 2, "files": []}},
        license="cc0-1.0",
        generation={"engine": "`llava-hf data shapes`", "llm": "none", "prompt_types": "`colour` (3)"},
        previous=previous,
    )
    data = DatasetCard(second).data.to_dict()
    assert [c["config_name"] for c in data["configs"]] == ["captions", "mcq"]
    assert data["configs"][1]["data_files"] == [
        {"split": "train", "path": "data/mcq/train-*.parquet"},
        {"split": "test", "path": "data/mcq/test-*.parquet"},
    ]
    assert data["size_categories"] == ["1K<n<10K"]  # 100 + 800 + 200 rows
    assert "| `captions` | `train` | 100 |" in second and "| `mcq` | `test` | 200 |" in second
    assert "| engine | `llava-hf data shapes` |" in second and "| language model | none |" in second
    assert "`cc0-1.0`" in second


def test_space_readme_front_matter():
    readme = render_space_readme(
        "me/llava-tiny",
        "Tiny LLaVA",
        {"max_image_megabytes": 10, "max_image_megapixels": 16, "max_text_chars": 2000, "max_images": 4},
        sdk_version="6.0.0",
        datasets=["me/shapes"],
    )
    data = SpaceCard(readme).data
    assert (data.sdk, data.app_file, data.sdk_version) == ("gradio", "app.py", "6.0.0")
    assert data.models == ["me/llava-tiny"] and data.datasets == ["me/shapes"]


def test_split_arguments_parse_and_fail_clearly(tmp_path):
    (tmp_path / "a.json").write_text("[]")
    (tmp_path / "b.json").write_text("[]")
    splits = parse_sources([str(tmp_path / "a.json"), f"test={tmp_path / 'b.json'}"])
    assert splits == {"train": [tmp_path / "a.json"], "test": [tmp_path / "b.json"]}
    with pytest.raises(FileNotFoundError, match="nope.json not found"):
        parse_sources([f"train={tmp_path / 'nope.json'}"])
    with pytest.raises(ValueError, match="split name 'bad split'"):
        parse_sources([f"bad split={tmp_path / 'a.json'}"])


def test_templates_have_one_home_shipped_with_the_package():
    """The templates live only in the package (a wheel cannot reach outside it), declared as package data;
    `model_cards/` points there and holds no copy or link that could drift."""
    names = {path.name for path in TEMPLATES.glob("*.jinja")}
    assert names == {"model_card.md.jinja", "dataset_card.md.jinja", "space_readme.md.jinja", "space_app.py.jinja"}
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["llava_hf"]
    package = TEMPLATES.parents[1]
    for name in sorted(names):
        relative = (TEMPLATES / name).relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), f"{relative} is not package data"
    assert sorted(path.name for path in (ROOT / "model_cards").iterdir()) == ["README.md"]


def test_old_cards_module_still_exports_its_names():
    """`llava_hf.hub.cards` was the single card module; what it exported still imports from there."""
    from llava_hf.hub import cards, dataset_card, model_card, space_card

    assert cards.load_training_history is model_card.load_training_history
    assert cards.render_dataset_card is dataset_card.render_dataset_card
    assert cards.render_space_readme is space_card.render_space_readme
    assert all(hasattr(cards, name) for name in cards.__all__)


def test_dataset_dry_run_from_a_datasets_folder(tmp_path):
    """`llava-hf data convert` output pushes like the JSON it came from; the card counts its rows and prompt types."""
    from llava_hf.data import load_llava_dataset
    from llava_hf.data.shapes import build_shapes_world
    from llava_hf.hub import push_dataset

    build_shapes_world(tmp_path / "world", num_images=4, seed=0, progress=False)
    dataset, _ = load_llava_dataset(
        tmp_path / "world" / "instruct.json", tmp_path / "world" / "images", progress=False
    )
    dataset.save_to_disk(str(tmp_path / "converted"))
    card = push_dataset([f"train={tmp_path / 'converted'}"], "me/x", config_name="instruct", dry_run=True)
    data = DatasetCard(card).data.to_dict()
    assert data["configs"] == [
        {"config_name": "instruct", "data_files": [{"split": "train", "path": "data/instruct/train-*.parquet"}]}
    ]
    assert f"| `instruct` | `train` | {len(dataset)} |" in card
    assert "`conv` (" in card and "`detail` (" in card and "`complex` (" in card
    with pytest.raises(ValueError, match="mix of folders and files"):
        push_dataset([str(tmp_path / "converted"), str(tmp_path / "world" / "instruct.json")], "me/x", dry_run=True)
