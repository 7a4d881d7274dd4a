"""The grounding meter: image_gain grows when the answer is in the image and stays near zero when it is not, reaches
the trainer's log history and the logged line, is the training loss on the same tokens, and is drawn in the card."""

import json
import logging
import random
import types
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from PIL import Image

from conftest import single_thread
from fixtures.tester import LlavaModelTester
from llava_hf.data.collator import LlavaDataCollator
from llava_hf.data.images import blank_like
from llava_hf.grounding import (
    CURVES_FILE,
    HeldOut,
    ImageGainCallback,
    blank_rows,
    hold_out_rows,
    plot_training_curves,
    shuffled_rows,
)
from llava_hf.training import (
    LlavaDataArguments,
    LlavaModelArguments,
    make_trainer_class,
    save_stage_output,
    set_trainable,
)

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
STEPS, LOGGING_STEPS = 60, 20


one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)


def _row(tmp: Path, index: int, colour: str, question: str, answer: str) -> dict:
    path = tmp / f"{index}-{colour}.png"
    if not path.exists():
        Image.new("RGB", (12, 10), COLOURS[colour]).save(path)
    return {
        "id": f"{colour}-{index}",
        "images": [{"bytes": None, "path": str(path)}],
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
    }


def _rows(tmp: Path, count: int, in_image: bool, seed: int) -> list[dict]:
    """Alternating red / blue images; the answer is the image's colour (`in_image`) or the colour the question names,
    drawn independently of the image."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        colour = ("red", "blue")[index % 2]
        if in_image:
            rows.append(_row(tmp, seed * 1000 + index, colour, "Colour?", colour))
        else:
            said = rng.choice(["red", "blue"])
            rows.append(_row(tmp, seed * 1000 + index, colour, f"Say {said}.", said))
    return rows


def _trainer(tmp: Path, train: list[dict], held_out, callbacks=(), max_steps: int = STEPS, **meter):
    from trl import SFTConfig

    tester = LlavaModelTester()
    model, processor = tester.get_model(seed=0), tester.get_processor()
    set_trainable(model, "2")  # projector + LM; the vision tower stays frozen
    args = SFTConfig(
        output_dir=str(tmp / "out"),
        max_steps=max_steps,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        logging_steps=LOGGING_STEPS,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        disable_tqdm=True,
    )
    collator = LlavaDataCollator(processor, stats_in_batch=True)
    trainer = make_trainer_class()(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train),
        processing_class=processor,
        data_collator=collator,
        callbacks=list(callbacks),
    )
    meter = ImageGainCallback(held_out, collator, **meter).attach(trainer)
    return trainer, meter


class Spy:
    """A callback after the meter: what the integrations and the progress bar receive."""

    def __init__(self):
        from transformers import TrainerCallback

        self.logs: list[dict] = []
        spy = self

        class _Spy(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                spy.logs.append(dict(logs))

        self.callback = _Spy()


def _measurements(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "image_gain" in entry]


@pytest.fixture(scope="module")
def grounded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grounded")
    spy = Spy()
    trainer, meter = _trainer(tmp, _rows(tmp, 64, True, seed=1), _rows(tmp, 8, True, seed=2), [spy.callback])
    trainer.train()
    return trainer, meter, spy


@pytest.fixture(scope="module")
def irrelevant(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("irrelevant")
    trainer, meter = _trainer(tmp, _rows(tmp, 64, False, seed=1), _rows(tmp, 8, False, seed=2))
    trainer.train()
    return trainer, meter


def test_image_gain_grows_when_the_answer_is_in_the_image(grounded):
    trainer, _, _ = grounded
    first, last = _measurements(trainer)[0], _measurements(trainer)[-1]
    assert first["step"] == 0 and last["step"] == STEPS
    assert last["image_gain"] > 0.1 and last["image_gain_shuffled"] > 0.1, last
    assert last["image_gain"] > first["image_gain"] + 0.1, (first, last)


def test_image_gain_stays_near_zero_when_the_image_is_irrelevant(irrelevant):
    trainer, _ = irrelevant
    first, last = _measurements(trainer)[0], _measurements(trainer)[-1]
    assert last["grounding_loss"] < first["grounding_loss"] - 0.2, (first, last)  # it did learn, from the text
    assert abs(last["image_gain"]) < 0.05 and abs(last["image_gain_shuffled"]) < 0.05, last


def test_values_reach_the_log_history_in_the_training_log_lines(grounded):
    trainer, meter, spy = grounded
    steps = [entry["step"] for entry in _measurements(trainer)]
    assert steps == list(range(0, STEPS + 1, LOGGING_STEPS))  # train begin, every log; the last log is the end
    for entry in trainer.state.log_history:
        if "loss" in entry:  # the same line as the training loss
            assert {"image_gain", "image_gain_shuffled", "grounding_loss"} <= set(entry), entry
    logged = [logs for logs in spy.logs if "loss" in logs]
    assert logged and all("image_gain" in logs for logs in logged)
    assert [m["step"] for m in meter.history] == steps


def test_measurements_follow_grounding_steps_and_train_end(tmp_path):
    trainer, meter = _trainer(
        tmp_path, _rows(tmp_path, 16, True, 1), _rows(tmp_path, 4, True, 2), max_steps=50, steps=40
    )
    trainer.train()
    # Logs at 20, 40: measured at 0, at the log 40 steps on, and at the end (50, no log there).
    assert [entry["step"] for entry in _measurements(trainer)] == [0, 40, 50]
    assert "image_gain" not in next(e for e in trainer.state.log_history if e.get("step") == 20 and "loss" in e)


def test_grounding_loss_is_the_model_loss_on_the_same_tokens(grounded):
    trainer, meter, _ = grounded
    (batch,) = meter._batches["real"]  # 8 rows, one batch of 8
    with torch.no_grad():
        expected = trainer.model(**batch).loss.item()
    assert meter.measure()["grounding_loss"] == pytest.approx(expected, rel=1e-5)
    assert trainer.model.training  # restored after measuring
    assert not trainer.model.model.vision_tower.training  # the frozen tower stays in eval mode


def test_the_meter_does_not_count_in_the_collator_statistics(grounded):
    trainer, meter, _ = grounded
    assert trainer.collator_stats["samples"] == STEPS * 8  # training batches only
    before = dict(trainer.data_collator.stats)
    meter._build(trainer.args)  # collates the 3 x 8 held-out rows again
    assert dict(trainer.data_collator.stats) == before


def test_blank_images_are_the_blind_baselines_grey(tmp_path):
    from llava_hf.eval import runner

    (row,) = _rows(tmp_path, 1, True, 0)
    (blank,) = blank_rows([row])
    image = blank["images"][0]
    assert image.size == (12, 10) and set(image.getdata()) == {(128, 128, 128)}
    assert runner.blank_like is blank_like  # one home: the evaluation's blind baseline uses the same blank
    assert row["images"][0]["path"].endswith(".png")  # the original row is untouched


def test_shuffled_images_are_a_derangement(tmp_path):
    rows = _rows(tmp_path, 5, True, 0)
    text_only = {"id": "text", "images": [], "messages": rows[0]["messages"]}
    two = dict(rows[4], id="two", images=[rows[4]["images"][0], rows[3]["images"][0]])
    same = dict(rows[0], id="same-file")  # another conversation about rows[0]'s image
    given = [rows[0], text_only, same, rows[1], rows[2], rows[3], two]
    shuffled = shuffled_rows(given)
    for before, after in zip(given, shuffled):
        assert len(after["images"]) == len(before["images"])  # as many images as placeholders
        if before["images"]:
            assert after["images"] != before["images"], before["id"]
    assert shuffled[1]["images"] == []
    assert shuffled[2]["images"] == two["images"][:1]  # rows[0], the same file, is passed over: the next donor
    assert shuffled_rows([rows[0], same]) is None  # no two different images to swap


def _llava_file(tmp_path: Path, count: int = 40) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    records = []
    for index in range(count):
        if index % 4 == 3:  # text-only
            conversation = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]
            records.append({"id": f"t{index}", "conversations": conversation})
            continue
        Image.new("RGB", (12, 10), COLOURS["red"]).save(tmp_path / "images" / f"{index}.png")
        conversation = [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}]
        records.append({"id": f"i{index}", "image": f"{index}.png", "conversations": conversation})
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    return path


def test_held_out_rows_are_removed_from_training_and_reported(tmp_path):
    from llava_hf.data import load_llava_dataset

    path = _llava_file(tmp_path)
    dataset, _ = load_llava_dataset(path, tmp_path / "images", progress=False)
    args = LlavaDataArguments(train_files=[str(path)], grounding_samples=4)
    train, held_out = hold_out_rows(dataset, args)
    held_ids = [row["id"] for row in held_out.rows]
    assert held_ids == ["i34", "i36", "i37", "i38"]  # the last 4 rows with an image
    assert len(train) == 36 and not set(held_ids) & set(train["id"])
    assert "t39" in train["id"]  # text-only rows stay
    assert held_out.removed_from_training == 4 and held_out.describe() == (
        "4 rows with an image, held out from the end of the training data (not trained on)"
    )
    assert held_out.rows[0]["images"] == [{"bytes": None, "path": str(tmp_path / "images" / "34.png")}]


def test_a_small_dataset_holds_out_at_most_a_quarter(tmp_path, caplog):
    from llava_hf.data import load_llava_dataset

    path = _llava_file(tmp_path)  # 30 rows with an image
    dataset, _ = load_llava_dataset(path, tmp_path / "images", progress=False)
    with caplog.at_level(logging.WARNING, logger="llava_hf.grounding"):
        train, held_out = hold_out_rows(dataset, LlavaDataArguments(grounding_samples=16))
    assert len(held_out.rows) == 7 and len(train) == 33
    assert "holding out 7" in caplog.text


def test_grounding_files_leave_the_training_data_whole(tmp_path):
    from llava_hf.data import load_llava_dataset

    path = _llava_file(tmp_path)
    dataset, _ = load_llava_dataset(path, tmp_path / "images", progress=False)
    other = tmp_path / "other"
    other.mkdir()
    held_path = _llava_file(other, count=8)
    args = LlavaDataArguments(grounding_samples=16, grounding_files=[str(held_path)], image_root=str(other / "images"))
    train, held_out = hold_out_rows(dataset, args)
    assert len(train) == 40 and held_out.removed_from_training == 0
    assert [row["id"] for row in held_out.rows] == ["i0", "i1", "i2", "i4", "i5", "i6"]
    assert held_out.source == "train.json"


def test_grounding_samples_0_turns_the_meter_off(tmp_path):
    from llava_hf.data import load_llava_dataset

    path = _llava_file(tmp_path)
    dataset, _ = load_llava_dataset(path, tmp_path / "images", progress=False)
    train, held_out = hold_out_rows(dataset, LlavaDataArguments(grounding_samples=0))
    assert train is dataset and held_out.rows == [] and held_out.off == "grounding_samples: 0"


def test_no_held_out_image_logs_nothing_and_says_why_once(tmp_path, caplog):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
    ]
    text_only = [{"id": "t0", "images": [], "messages": messages}]
    trainer, meter = _trainer(tmp_path, _rows(tmp_path, 16, True, 1), text_only, max_steps=LOGGING_STEPS * 2)
    with caplog.at_level(logging.WARNING, logger="llava_hf.grounding"):
        trainer.train()
    assert _measurements(trainer) == [] and meter.history == []
    messages = [r.getMessage() for r in caplog.records if r.name == "llava_hf.grounding"]
    assert messages == ["grounding meter: nothing is logged: none of the 1 held-out rows has an image."]
    assert meter.summary()["off"] == "none of the 1 held-out rows has an image"


def test_an_unreadable_held_out_image_turns_the_meter_off_not_the_run(tmp_path, caplog):
    """The held-out rows are not trained on, so an image the run would never open must not stop it."""
    held_out = _rows(tmp_path, 4, True, seed=2)
    Path(held_out[1]["images"][0]["path"]).unlink()
    trainer, meter = _trainer(tmp_path, _rows(tmp_path, 16, True, 1), held_out, max_steps=2)
    with caplog.at_level(logging.WARNING, logger="llava_hf.grounding"):
        trainer.train()
    assert trainer.state.global_step == 2 and meter.history == []
    assert meter.off.startswith("the held-out batch cannot be collated:") and "image 0" in meter.off


# -- the record and the model card --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(grounded):
    trainer, _, _ = grounded
    model_args = LlavaModelArguments(stage="2", model_name_or_path="me/stage1")
    save_stage_output(
        trainer, model_args, LlavaDataArguments(train_files=["/data/colours.json"]), trainer.processing_class
    )
    return Path(trainer.args.output_dir)


def test_the_record_has_the_meter_and_its_summary(checkpoint):
    record = json.loads((checkpoint / "llava_hf_training.json").read_text())
    assert [e["step"] for e in record["log_history"] if "image_gain" in e] == [0, 20, 40, 60]
    summary = record["grounding"]
    assert summary["samples"] == 8 and summary["steps"] == LOGGING_STEPS and summary["off"] is None
    assert summary["first"]["step"] == 0 and summary["last"]["step"] == STEPS
    assert summary["last"]["image_gain"] > 0.1


def test_the_card_shows_the_curves_and_the_final_image_gain(checkpoint):
    from llava_hf.hub import render_model_card
    from llava_hf.hub.push import MODEL_IGNORE, _files

    assert not (checkpoint / CURVES_FILE).exists()  # the recipe did not draw it here: the card renderer does
    card = render_model_card(checkpoint, "me/colours")
    with Image.open(checkpoint / CURVES_FILE) as image:
        assert image.format == "PNG" and image.size == (800, 300)
    assert f"![training curves]({CURVES_FILE})" in card
    assert "image_gain near zero: the projector learned nothing from the images" in card
    record = json.loads((checkpoint / "llava_hf_training.json").read_text())
    gain = record["grounding"]["last"]["image_gain"]
    row = next(line for line in card.splitlines() if line.startswith("| image gain"))
    assert f"{gain:+.3f} blank" in row and "at step 60" in row and "(step 0:" in row
    assert CURVES_FILE in [p.name for p in _files(checkpoint, MODEL_IGNORE)]  # `llava-hf push` uploads it


def test_a_card_without_a_meter_says_not_measured_and_draws_the_loss(tmp_path):
    from llava_hf.hub import render_model_card

    folder = LlavaModelTester().save(tmp_path / "old")
    record = {
        "stage": "1",
        "model_args": {"stage": "1", "vision_model": "a/b", "language_model": "c/d"},
        "log_history": [{"loss": 3.0, "step": 1}, {"loss": 2.0, "step": 2}],
        "global_step": 2,
    }
    (folder / "llava_hf_training.json").write_text(json.dumps(record))
    card = render_model_card(folder, "me/old")
    assert "| image gain (nats / token) | not measured |" in card
    assert (folder / CURVES_FILE).is_file() and f"![training curves]({CURVES_FILE})" in card


def test_curves_of_two_stages_share_one_step_axis(tmp_path):
    first = {
        "stage": "1",
        "global_step": 10,
        "log_history": [{"loss": 3.0, "step": 5}, {"image_gain": 0.1, "step": 10}],
    }
    second = {
        "stage": "2",
        "global_step": 4,
        "log_history": [{"loss": 1.0, "step": 2}, {"image_gain": 0.3, "step": 4}],
    }
    assert plot_training_curves([first, second], tmp_path / "two.png") == tmp_path / "two.png"
    assert plot_training_curves([{"stage": "1", "log_history": []}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_the_meter_needs_its_trainer():
    meter = ImageGainCallback(HeldOut([]), collator=None)
    state = types.SimpleNamespace(logging_steps=5)
    with pytest.raises(RuntimeError, match="attach"):
        meter.on_train_begin(types.SimpleNamespace(logging_steps=5), state, None)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"grounding_samples": -1}, "grounding_samples must be >= 0"),
        ({"grounding_steps": 0}, "grounding_steps must be >= 1"),
        ({"grounding_files": ["/nowhere/held_out.json"]}, "grounding file '/nowhere/held_out.json' not found"),
    ],
)
def test_bad_grounding_fields_fail_before_training(tmp_path, fields, message):
    from llava_hf.training import RecipeError, validate_recipe

    train = _llava_file(tmp_path, count=4)
    model_args = LlavaModelArguments(stage="1", vision_model="a/b", language_model="c/d")
    with pytest.raises(RecipeError, match=message):
        validate_recipe(model_args, LlavaDataArguments(train_files=[str(train)], **fields))
