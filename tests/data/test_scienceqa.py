"""ScienceQA -> LLaVA records in the paper's prompt formats, with per-problem metadata."""

import json
import re

import pytest

from fixtures.external import external
from llava_hf.cli import main
from llava_hf.data.scienceqa import convert_scienceqa, format_cqm, scienceqa_to_llava

PROBLEMS = {
    "1": {
        "question": "Which of these states is farthest north?",
        "choices": ["West Virginia", "Louisiana", "Arizona", "Oklahoma"],
        "answer": 0,
        "hint": "",
        "image": "image.png",
        "task": "closed choice",
        "grade": "grade2",
        "subject": "social science",
        "topic": "geography",
        "category": "Geography",
        "skill": "Read a map: cardinal directions",
        "lecture": "Maps have four cardinal directions.",
        "solution": "To find the answer, look at the compass rose.",
        "split": "train",
    },
    "2": {
        "question": "Which tense does the sentence use?\nMona will print her name with care.",
        "choices": ["present tense", "future tense", "past tense"],
        "answer": 1,
        "hint": "",
        "image": None,
        "grade": "grade8",
        "subject": "language science",
        "lecture": "",
        "solution": "The sentence is in future tense.",
        "split": "train",
    },
    "3": {
        "question": "Which animal's feet are also adapted for swimming?",
        "choices": ["duck", "tiger"],
        "answer": 0,
        "hint": "Ducks live near water.\nTheir feet are webbed.",
        "image": None,
        "grade": "grade4",
        "subject": "natural science",
        "lecture": "An adaptation is an inherited trait.",
        "solution": "Look at the picture.",
        "split": "test",
    },
}


def test_cqm_a_format():
    records = scienceqa_to_llava(PROBLEMS, ["1", "2", "3"], "CQM-A")
    assert records[0]["image"] == "1/image.png"
    assert records[0]["conversations"] == [
        {
            "from": "human",
            "value": "<image>\nWhich of these states is farthest north?\nA. West Virginia\nB. Louisiana\nC. Arizona\nD. Oklahoma",
        },
        {"from": "gpt", "value": "A"},
    ]
    assert "image" not in records[1]
    assert records[2]["conversations"][0]["value"] == (
        "Context: Ducks live near water.\nTheir feet are webbed.\nWhich animal's feet are also adapted for swimming?\nA. duck\nB. tiger"
    )
    assert records[1]["conversations"][1]["value"] == "B"


def test_qcm_lea_format():
    records = scienceqa_to_llava(PROBLEMS, ["1", "2"], "QCM-LEA")
    human, answer = (turn["value"] for turn in records[0]["conversations"])
    assert human == (
        "Which of these states is farthest north?\nContext: N/A\nOptions: (A) West Virginia (B) Louisiana (C) Arizona "
        "(D) Oklahoma\n<image>"
    )
    assert answer == (
        "Maps have four cardinal directions. To find the answer, look at the compass rose. The answer is A."
    )
    # An empty lecture leaves no double space.
    assert records[1]["conversations"][1]["value"] == "The sentence is in future tense. The answer is B."
    assert not records[1]["conversations"][0]["value"].endswith("<image>")


def test_metadata_for_per_category_scoring():
    first, second, third = scienceqa_to_llava(PROBLEMS, ["1", "2", "3"])
    assert (first["subject"], first["context_modality"], first["grade_band"]) == ("SOC", "IMG", "G1-6")
    assert (second["subject"], second["context_modality"], second["grade_band"]) == ("LAN", "NO", "G7-12")
    assert (third["subject"], third["context_modality"], third["has_text_context"]) == ("NAT", "TXT", True)


def test_bad_answer_index_is_named():
    broken = {"9": {**PROBLEMS["2"], "answer": 5}}
    with pytest.raises(ValueError, match="problem 9: answer index 5 outside its 3 choices"):
        scienceqa_to_llava(broken, ["9"])


def test_convert_from_files_and_cli(tmp_path):
    (tmp_path / "problems.json").write_text(json.dumps(PROBLEMS))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"train": ["1", "2"], "test": ["3"]}))
    assert [r["id"] for r in convert_scienceqa(tmp_path, "train")] == ["1", "2"]
    assert main(["data", "scienceqa", str(tmp_path), str(tmp_path / "out.json"), "--split", "test"]) == 0
    assert json.loads((tmp_path / "out.json").read_text())[0]["id"] == "3"
    with pytest.raises(ValueError, match="split 'val' not in pid_splits.json"):
        convert_scienceqa(tmp_path, "val")


def test_cqm_a_matches_the_official_test_file_structure():
    """Every record of the official LLaVA-1.5 CQM-A test file re-renders exactly through our formatter."""
    records = json.loads(external("scienceqa", "llava_test_CQM-A.json").read_text())
    splits = json.loads(external("scienceqa", "pid_splits.json").read_text())
    assert len(records) == 4241 and sum("image" in r for r in records) == 2017
    assert {r["id"] for r in records} == set(splits["test"])
    for record in records:
        human, answer = (turn["value"] for turn in record["conversations"])
        # Options start at the last "\nA. "; a choice may itself contain a newline ("Your friend,\nJanet").
        start = human.rindex("\nA. ")
        parts = re.split(r"\n(?=[B-E]\. )", human[start + 1 :])
        assert [part[:3] for part in parts] == [f"{letter}. " for letter in "ABCDE"[: len(parts)]], record["id"]
        choices = [part[3:] for part in parts]
        has_image = "image" in record
        body = human[len("<image>\n") if has_image else 0 : start]
        assert human.startswith("<image>\n") == has_image
        assert human == format_cqm(body, "", choices, has_image), record["id"]
        assert answer in "ABCDE"[: len(choices)] and len(answer) == 1
        if has_image:
            assert record["image"] == f"{record['id']}/image.png"
