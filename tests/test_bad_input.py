"""Bad input gets a clear error or a counted result, never a crash or a silent success."""

import json
from pathlib import Path

import pytest

from llava_hf.cli import main
from llava_hf.eval.llava_bench import summarize
from llava_hf.eval.scienceqa import score_scienceqa

pytestmark = pytest.mark.fuzz


def _question(qid: str, gold: str = "A") -> dict:
    return {
        "id": qid,
        "conversations": [
            {"from": "human", "value": "Which is it?\nA. cat\nB. dog"},
            {"from": "gpt", "value": gold},
        ],
    }


def test_scienceqa_an_answer_naming_no_option_letter_is_out_of_range_not_a_crash():
    report = score_scienceqa({"q1": "The answer is Yes.", "q2": "A"}, [_question("q1"), _question("q2")])
    assert report["out_of_range"] == 1 and report["out_of_range_ids"] == ["q1"]
    assert report["accuracy"] == pytest.approx(50.0)


def test_llava_bench_a_reference_scored_zero_has_no_relative_score(tmp_path, capsys):
    reviews = [{"question_id": 0, "category": "conv", "tuple": [0.0, 5.0]}]
    assert summarize(reviews)["all"]["relative_score"] is None
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reviews))
    assert main(["eval", "summarize", str(path)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("all"))
    assert row.split()[1] == "-"


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--num-images", "-5", "num_images must be at least 1, got -5"),
        ("--num-images", "0", "num_images must be at least 1, got 0"),
        ("--test-fraction", "1.5", r"test_fraction must be in \[0, 1\)"),
        ("--test-fraction", "-0.1", r"test_fraction must be in \[0, 1\)"),
        ("--max-objects", "0", "max_objects must be at least 1"),
    ],
)
def test_shapes_world_refuses_bad_sizes_before_writing(tmp_path, capsys, flag, value, message):
    out = tmp_path / "world"
    assert main(["data", "shapes", str(out), flag, value]) == 1
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()  # nothing half-written


def test_llava_bench_from_an_answers_file_creates_the_output_folder(tmp_path):
    from fixtures.llava_bench import ScriptedServer, bench_command, write_inputs

    files = write_inputs(tmp_path)
    out = tmp_path / "new" / "folder"
    with ScriptedServer([("ok", "8 4\n"), ("ok", "6 6\n"), ("ok", "10 5\n")]) as base_url:
        code = main(bench_command(files, base_url, out))
    assert code == 0 and (out / "results.json").exists() and (out / "reviews.jsonl").exists()


@pytest.mark.parametrize("command", ["convert", "check"])
def test_a_json_object_at_the_top_level_is_an_error_not_zero_rows(tmp_path, capsys, command):
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"data": [{"id": "1", "conversations": []}]}))
    args = ["data", command, str(path)]
    args += [str(tmp_path / "out"), "--image-root", str(tmp_path), "--skip-bad"] if command == "convert" else []
    assert main(args) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "JSON object, not an array" in err and ".jsonl" in err
    assert not (tmp_path / "out").exists()


def test_a_record_that_would_train_on_nothing_is_an_error_naming_it_or_a_counted_skip(tmp_path):
    from llava_hf.data import load_llava_dataset
    from llava_hf.data.llava_format import RecordError

    good = {"id": "good", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}
    question_only = {"id": "lonely", "conversations": [{"from": "human", "value": "Anyone?"}]}
    empty_answer = {"id": "mute", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": " "}]}
    path = tmp_path / "data.json"
    path.write_text(json.dumps([good, question_only, empty_answer]))
    with pytest.raises(RecordError, match=r"'lonely'.*turns out of human/gpt order \(roles \['user'\]\)"):
        load_llava_dataset(path, tmp_path)
    dataset, report = load_llava_dataset(path, tmp_path, on_error="skip")
    assert len(dataset) == 1 and report.skipped == {"turns out of human/gpt order": 1, "empty turn": 1}


def test_a_complete_last_answer_without_its_newline_counts_as_answered_and_is_kept(tmp_path):
    from llava_hf.eval.runner import answered_ids
    from llava_hf.utils import repair_torn_tail

    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": "q1", "text": "A"}\n{"question_id": "q2", "text": "B"}')  # no final newline
    assert answered_ids(path) == {"q1", "q2"}
    assert not repair_torn_tail(path)  # nothing cut: the line is ended instead
    assert path.read_text().endswith('"B"}\n') and answered_ids(path) == {"q1", "q2"}
    path.write_text('{"question_id": "q1", "text": "A"}\n{"question_id": "q2", "te')  # a kill mid-write
    assert answered_ids(path) == {"q1"}
    assert repair_torn_tail(path) and path.read_text() == '{"question_id": "q1", "text": "A"}\n'


def test_data_convert_never_replaces_a_dataset_unasked_and_swaps_it_whole(tmp_path, capsys):
    from datasets import load_from_disk

    path = tmp_path / "data.json"
    record = {"id": "1", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}
    path.write_text(json.dumps([record]))
    out = tmp_path / "out"
    assert main(["data", "convert", str(path), str(out)]) == 0
    assert main(["data", "convert", str(path), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err and len(load_from_disk(str(out))) == 1
    path.write_text(json.dumps([record, {**record, "id": "2"}]))
    assert main(["data", "convert", str(path), str(out), "--overwrite"]) == 0
    assert len(load_from_disk(str(out))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json", "out"]  # no staging folder left behind


def test_every_error_is_one_line_naming_the_file_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "a_folder.json"
    folder.mkdir()
    assert main(["data", "check", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(folder) in err and "llava-hf data: error:" in err
    with pytest.raises(IsADirectoryError):
        main(["--debug", "data", "check", str(folder)])
    monkeypatch.setenv("LLAVA_HF_DEBUG", "1")
    with pytest.raises(IsADirectoryError):
        main(["data", "check", str(folder)])


def test_a_json_syntax_error_is_named_as_such(tmp_path, capsys):
    path = tmp_path / "data.json"
    path.write_text('[{"id": "1", "conversations": [}')
    assert main(["data", "convert", str(path), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"{path}: not valid JSON after record 0" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "value, message", [("0", "below the minimum 1"), ("-1", "below the minimum 1"), ("x", "not an integer")]
)
def test_bad_numbers_stop_at_the_parser(tmp_path, capsys, value, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "shapes", "--model", str(tmp_path), "--world", str(tmp_path), "--batch-size", value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_summarize_with_nothing_to_score_exits_non_zero(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    unreadable = tmp_path / "unreadable.jsonl"
    unreadable.write_text(json.dumps({"question_id": 0, "category": "conv", "tuple": [-1, -1]}) + "\n")
    assert main(["eval", "summarize", str(empty)]) == 1
    assert main(["eval", "summarize", str(unreadable)]) == 1
    assert "no review with readable scores" in capsys.readouterr().err


def test_a_leading_gpt_turn_is_dropped_as_the_original_does():
    from llava_hf.data.llava_format import llava_record_to_row

    record = {
        "id": "sharegpt",
        "conversations": [
            {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "How can I help?"},
        ],
    }
    row = llava_record_to_row(record)
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert len(record["conversations"]) == 3  # the record itself is left whole


def test_an_answer_id_on_two_lines_is_an_error_naming_both(tmp_path):
    from llava_hf.eval.runner import read_answers
    from llava_hf.eval.scienceqa import load_predictions

    path = tmp_path / "answers.jsonl"
    rows = [{"question_id": "q1", "text": "A"}, {"question_id": "q2", "text": "B"}, {"question_id": "q1", "text": "C"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for read in (read_answers, load_predictions):
        with pytest.raises(ValueError, match=r"answers\.jsonl lines 1 and 3: question_id 'q1' appears twice"):
            read(path)
    path.write_text(json.dumps({"text": "A"}) + "\n")
    with pytest.raises(ValueError, match=r"answers\.jsonl line 1: a row without 'question_id'"):
        read_answers(path)


def test_llava_bench_refuses_two_answers_to_one_question_before_judging(tmp_path, capsys):
    from fixtures.llava_bench import CANDIDATES, ScriptedServer, bench_command, write_inputs

    files = write_inputs(tmp_path, candidates=CANDIDATES + [CANDIDATES[0]])
    with ScriptedServer([]) as base_url:
        code = main(bench_command(files, base_url, tmp_path / "out"))
    assert code == 1
    assert "answers.jsonl lines 1 and 4: question_id '0' appears twice" in capsys.readouterr().err
    assert not (tmp_path / "out" / "reviews.jsonl").exists()


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    from fixtures.tester import LlavaModelTester

    return LlavaModelTester().save(tmp_path_factory.mktemp("push-ckpt"))


def _copy(checkpoint, tmp_path):
    import shutil

    return Path(shutil.copytree(checkpoint, tmp_path / "ckpt"))


def test_push_dry_run_refuses_a_bad_repo_id_before_rendering(saved_checkpoint, capsys):
    assert main(["push", str(saved_checkpoint), "bad id!!/x y", "--dry-run"]) == 1
    assert "'bad id!!/x y' is not a Hub repo id" in capsys.readouterr().err


def test_push_dry_run_validates_the_weights_against_the_config(saved_checkpoint, tmp_path, capsys):
    assert main(["push", str(saved_checkpoint), "me/ok", "--dry-run"]) == 0
    capsys.readouterr()

    folder = _copy(saved_checkpoint, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a download or copy cut short
    assert main(["push", str(folder), "me/x", "--dry-run"]) == 1
    assert f"{weights} is not a readable safetensors file" in capsys.readouterr().err

    for field, value, message in (
        ("vocab_size", None, "model.language_model.embed_tokens.weight: [{n}, "),  # not the file's vocabulary
        ("projector_type", "mlp9x_relu", "the checkpoint does not load (ValueError: LlavaConfig.projector_type"),
    ):
        folder = _copy(saved_checkpoint, tmp_path / field)
        config = json.loads((folder / "config.json").read_text())
        n = config["text_config"]["vocab_size"]
        if field == "vocab_size":
            config["text_config"]["vocab_size"] = n + 7
        else:
            config[field] = value
        (folder / "config.json").write_text(json.dumps(config))
        assert main(["push", str(folder), "me/x", "--dry-run"]) == 1
        err = capsys.readouterr().err
        assert message.format(n=n) in err, err


def test_one_image_path_rule_in_check_convert_training_and_evaluation(tmp_path, capsys):
    """Relative paths are read under the image root, absolute ones as they are, and a `..` that leads out of the
    root is refused naming the record, the same way in every command."""
    from datasets import load_from_disk
    from PIL import Image

    from llava_hf.data import load_llava_dataset
    from llava_hf.data.llava_format import RecordError
    from llava_hf.eval.runner import load_questions

    root, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    root.mkdir(), elsewhere.mkdir()
    Image.new("RGB", (8, 8), "red").save(root / "inside.png")
    Image.new("RGB", (8, 8), "blue").save(elsewhere / "outside.png")

    def record(rid: str, image: str) -> dict:
        turns = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."}]
        return {"id": rid, "image": image, "conversations": turns}

    absolute = str(elsewhere / "outside.png")
    good = [record("relative", "inside.png"), record("absolute", absolute)]
    escaping = record("escaping", "../elsewhere/outside.png")
    path = tmp_path / "data.json"
    path.write_text(json.dumps([*good, escaping]))

    # data check: the escape is a problem of its own kind, naming the record; the absolute path is read.
    assert main(["data", "check", str(path), "--image-root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "image path outside the image root" in out and "'escaping'" in out and "'absolute'" not in out

    # training and convert (load_llava_dataset): refused naming the record, or skipped and counted.
    with pytest.raises(RecordError, match=r"'escaping'.*leads out of the image root"):
        load_llava_dataset(path, root)
    dataset, report = load_llava_dataset(path, root, on_error="skip")
    assert report.skipped == {"image path outside the image root": 1}
    assert [images[0]["path"] for images in dataset.data.column("images").to_pylist()] == [
        f"{root}/inside.png",
        absolute,
    ]
    assert main(["data", "convert", str(path), str(tmp_path / "out"), "--image-root", str(root), "--skip-bad"]) == 0
    converted = load_from_disk(str(tmp_path / "out"))
    assert [row["images"][0].getpixel((0, 0)) for row in converted] == [(255, 0, 0), (0, 0, 255)]

    # evaluation questions follow the same rule.
    assert [q.images[0] for q in load_questions(good, root)] == [f"{root}/inside.png", absolute]
    with pytest.raises(RecordError, match=r"'escaping'.*leads out of the image root"):
        load_questions([escaping], root)


def test_data_convert_finds_unreadable_images_per_record_before_saving(tmp_path, capsys):
    from datasets import load_from_disk
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "ok.png")
    (tmp_path / "a_folder.png").mkdir()
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")

    def record(rid: str, image: str) -> dict:
        turns = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."}]
        return {"id": rid, "image": image, "conversations": turns}

    names = {"ok": "ok.png", "gone": "missing.png", "folder": "a_folder.png", "loop": "loop.png"}
    path = tmp_path / "data.json"
    path.write_text(json.dumps([record(rid, name) for rid, name in names.items()]))
    out = tmp_path / "out"
    assert main(["data", "convert", str(path), str(out), "--image-root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "(id 'gone') image 0: image file not found" in err and not out.exists()
    assert main(["data", "convert", str(path), str(out), "--image-root", str(tmp_path), "--skip-bad"]) == 0
    printed = capsys.readouterr()
    assert "missing image" in printed.out + printed.err and [r["id"] for r in load_from_disk(str(out))] == ["ok"]


def test_converting_the_same_files_again_leaves_one_cached_copy(tmp_path):
    from llava_hf.data import load_llava_dataset

    record = {"id": "1", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}
    path = tmp_path / "data.json"
    path.write_text(json.dumps([record]))
    cache = tmp_path / "cache"
    for _ in range(3):
        dataset, _ = load_llava_dataset(path, cache_dir=str(cache), progress=False)
    assert len(dataset) == 1 and len(list((cache / "llava_hf").iterdir())) == 1
    path.write_text(json.dumps([record, {**record, "id": "2"}]))  # an edited file is another conversion
    dataset, _ = load_llava_dataset(path, cache_dir=str(cache), progress=False)
    assert len(dataset) == 2 and len(list((cache / "llava_hf").iterdir())) == 2


def test_eval_names_a_folder_that_is_not_an_image_text_model(tmp_path, capsys):
    folder = tmp_path / "a_text_model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    questions = tmp_path / "q.json"
    questions.write_text("[]")
    assert (
        main(
            [
                "eval",
                "scienceqa",
                "--model",
                str(folder),
                "--questions",
                str(questions),
                "--output-dir",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert f"{folder}: its config.json says model_type 'bert'" in err and "Config, " not in err  # no list of classes
