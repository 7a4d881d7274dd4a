"""`llava-hf eval ...`: results JSON (model, data hashes, settings, metrics), model-index, the shapes blind baseline."""

import json

import pytest

from fixtures.external import external
from fixtures.llava_bench import CONTEXTS, QUESTIONS, REFERENCES, ScriptedServer
from fixtures.tester import LlavaModelTester
from llava_hf.cli import main
from llava_hf.data.shapes import build_shapes_world
from llava_hf.eval.results import sha256, to_model_index


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return LlavaModelTester().save(tmp_path_factory.mktemp("ckpt"))


def test_scienceqa_from_an_answers_file(tmp_path, capsys):
    questions = external("scienceqa", "llava_test_CQM-A.json")
    answers = external("scienceqa", "llava-v1.5-13b_result.json")
    assert (
        main(
            [
                "eval",
                "scienceqa",
                "--answers",
                str(answers),
                "--questions",
                str(questions),
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "74.39%" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["task"] == "scienceqa" and results["data"]["questions"]["sha256"] == sha256(questions)
    assert round(results["metrics"]["image_accuracy"], 2) == 71.64
    (index,) = to_model_index("my-llava", [results])
    assert index["results"][0]["metrics"][0] == {"type": "accuracy", "name": "Accuracy", "value": 74.39}


def test_shapes_with_the_blind_baseline(tmp_path, checkpoint, capsys):
    build_shapes_world(tmp_path / "world", num_images=6, seed=2, test_fraction=0.5, progress=False)
    code = main(
        [
            "eval",
            "shapes",
            "--model",
            str(checkpoint),
            "--world",
            str(tmp_path / "world"),
            "--output-dir",
            str(tmp_path / "out"),
            "--max-new-tokens",
            "2",
            "--batch-size",
            "4",
        ]
    )
    assert code == 0 and "with a blank image" in capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    metrics = results["metrics"]
    n_questions = len(json.loads((tmp_path / "world" / "mcq_test.json").read_text()))
    assert metrics["count"] == n_questions > 0
    assert metrics["gap"] == pytest.approx(metrics["accuracy"] - metrics["blind_accuracy"])
    records = json.loads((tmp_path / "world" / "mcq_test.json").read_text())
    assert metrics["chance"] == pytest.approx(100 * sum(1 / r["num_choices"] for r in records) / len(records))
    for name in ("answers.jsonl", "answers_blind.jsonl"):
        rows = [json.loads(line) for line in (tmp_path / "out" / name).read_text().splitlines()]
        assert len(rows) == n_questions
    from llava_hf.data.shapes import MCQ_PROMPT

    assert results["settings"]["prompt_suffix"] == MCQ_PROMPT  # each test question is asked as training asked it
    blind = json.loads((tmp_path / "out" / "answers_blind.jsonl").read_text().splitlines()[0])
    assert blind["metadata"]["blank_images"] is True
    assert to_model_index("m", [results])[0]["results"][0]["metrics"][1]["name"] == "Accuracy, blank image"


def test_shapes_warns_when_the_world_was_trained_with_another_instruction(tmp_path, caplog):
    # A world written by another version asks its training questions otherwise than the test questions are asked now.
    from llava_hf.data.shapes import MCQ_PROMPT
    from llava_hf.eval.shapes import _check_world_prompt

    build_shapes_world(tmp_path, num_images=4, seed=2, test_fraction=0.0, progress=False)
    with caplog.at_level("WARNING", logger="llava_hf.eval.shapes"):
        _check_world_prompt(tmp_path)
    assert not caplog.records
    train = json.loads((tmp_path / "mcq_train.json").read_text())
    for record in train:
        turn = record["conversations"][0]
        turn["value"] = (
            turn["value"].removesuffix(MCQ_PROMPT) + "\nAnswer with a short reason, then the option's letter."
        )
    (tmp_path / "mcq_train.json").write_text(json.dumps(train))
    with caplog.at_level("WARNING", logger="llava_hf.eval.shapes"):
        _check_world_prompt(tmp_path)
    assert "do not end with 'Reason first, then the letter.'" in caplog.text and "mcq_train.json" in caplog.text


def test_llava_bench_end_to_end_with_a_loopback_judge(tmp_path, checkpoint, monkeypatch):
    import numpy as np
    from PIL import Image

    (tmp_path / "images").mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray((np.random.default_rng(0).random((9, 9, 3)) * 255).astype("uint8")).save(
            tmp_path / "images" / name
        )
    files = {}
    for name, rows in (("questions", QUESTIONS), ("context", CONTEXTS), ("reference", REFERENCES)):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-secret-123")
    with ScriptedServer([("ok", "8 4\n"), ("ok", "6 6\n"), ("ok", "10 5\n")]) as base_url:
        code = main(
            [
                "eval",
                "llava-bench",
                "--model",
                str(checkpoint),
                "--questions",
                str(files["questions"]),
                "--context",
                str(files["context"]),
                "--reference",
                str(files["reference"]),
                "--image-root",
                str(tmp_path / "images"),
                "--max-new-tokens",
                "3",
                "--judge-base-url",
                base_url,
                "--judge-model",
                "judge",
                "--judge-key-env",
                "MY_JUDGE_KEY",
                "--output-dir",
                str(tmp_path / "out"),
            ]
        )
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["metrics"]["all"]["relative_score"] == pytest.approx(100 * (4 + 6 + 5) / (8 + 6 + 10))
    assert results["metrics"]["conv"]["relative_score"] == pytest.approx(50.0)
    assert results["settings"]["judge"] == "judge"
    for name in ("results.json", "reviews.jsonl", "answers.jsonl"):  # the key never lands in a file
        assert "sk-test-secret-123" not in (tmp_path / "out" / name).read_text()
    assert len((tmp_path / "out" / "answers.jsonl").read_text().splitlines()) == 3
