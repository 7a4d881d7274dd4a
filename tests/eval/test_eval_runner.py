"""The batched inference runner: the original answer layout, batched = one at a time, resumable."""

import json

import numpy as np
from PIL import Image

from fixtures.tester import LlavaModelTester
from llava_hf.eval.runner import GenerationSettings, load_questions, read_answers, run_inference


def _question_file(tmp_path, n=5):
    (tmp_path / "images").mkdir()
    records = []
    for i in range(n):
        size = (10 + i, 14 - i)
        Image.fromarray((np.random.default_rng(i).random((*size, 3)) * 255).astype("uint8")).save(
            tmp_path / "images" / f"{i}.png"
        )
        question = "What is it?" + " Look closely." * i  # different lengths: real left padding
        records.append({"question_id": i, "image": f"{i}.png", "text": question, "category": "conv"})
    records.append({"question_id": "text-only", "text": "Say hi."})
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_answers_have_the_original_layout(tmp_path):
    tester = LlavaModelTester()
    questions = load_questions(_question_file(tmp_path), tmp_path / "images")
    out = run_inference(
        tester.get_model(),
        tester.get_processor(),
        questions,
        tmp_path / "answers.jsonl",
        GenerationSettings(max_new_tokens=4, batch_size=3),
        model_id="tiny",
        progress=False,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == ["0", "1", "2", "3", "4", "text-only"]
    assert set(rows[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert rows[0]["model_id"] == "tiny" and rows[0]["prompt"] == "<image>What is it?"
    assert rows[0]["metadata"]["max_new_tokens"] == 4 and rows[0]["metadata"]["do_sample"] is False
    assert len({r["answer_id"] for r in rows}) == 6


def test_batched_answers_equal_one_at_a_time(tmp_path):
    tester = LlavaModelTester()
    model, processor = tester.get_model(), tester.get_processor()
    questions = load_questions(_question_file(tmp_path), tmp_path / "images")
    batched = run_inference(
        model,
        processor,
        questions,
        tmp_path / "batched.jsonl",
        GenerationSettings(max_new_tokens=6, batch_size=6),
        progress=False,
    )
    single = run_inference(
        model,
        processor,
        questions,
        tmp_path / "single.jsonl",
        GenerationSettings(max_new_tokens=6, batch_size=1),
        progress=False,
    )
    a, b = read_answers(batched), read_answers(single)
    assert {k: v["text"] for k, v in a.items()} == {k: v["text"] for k, v in b.items()}


def test_rerun_skips_answered_ids_and_recovers_a_cut_line(tmp_path):
    tester = LlavaModelTester()
    model, processor = tester.get_model(), tester.get_processor()
    questions = load_questions(_question_file(tmp_path), tmp_path / "images")
    answers = tmp_path / "answers.jsonl"
    run_inference(model, processor, questions[:3], answers, GenerationSettings(max_new_tokens=3), progress=False)
    first = read_answers(answers)
    with answers.open("a") as handle:  # a kill in the middle of writing the next line
        handle.write('{"question_id": "3", "prom')
    run_inference(model, processor, questions, answers, GenerationSettings(max_new_tokens=3), progress=False)
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["question_id"] for r in lines] == ["0", "1", "2", "3", "4", "text-only"]  # no duplicate, none lost
    assert all(read_answers(answers)[k]["answer_id"] == v["answer_id"] for k, v in first.items())  # not re-asked


def test_llava_records_as_questions(tmp_path):
    records = [
        {
            "id": "7",
            "image": "a.png",
            "conversations": [{"from": "human", "value": "<image>\nQ?\nA. x\nB. y"}, {"from": "gpt", "value": "B"}],
            "subject": "NAT",
        }
    ]
    (tmp_path / "q.json").write_text(json.dumps(records))
    (question,) = load_questions(tmp_path / "q.json")
    assert question.question_id == "7" and question.metadata == {"subject": "NAT", "answer": "B"}
    assert [p["type"] for p in question.parts] == ["image", "text"] and question.images[0].endswith("a.png")


def test_a_dataset_as_questions(tmp_path):
    from llava_hf.data import load_llava_dataset

    records = [
        {
            "id": "q1",
            "image": "a.png",
            "conversations": [{"from": "human", "value": "Q?\n<image>"}, {"from": "gpt", "value": "A"}],
            "kind": "color",
        }
    ]
    (tmp_path / "q.json").write_text(json.dumps(records))
    dataset, _ = load_llava_dataset(tmp_path / "q.json")
    (question,) = load_questions(dataset.select_columns(["id", "image_files", "messages", "metadata"]), tmp_path)
    assert question.question_id == "q1" and question.prompt == "Q?\n<image>"
    assert question.metadata == {"kind": "color", "answer": "A"} and question.images == [str(tmp_path / "a.png")]
