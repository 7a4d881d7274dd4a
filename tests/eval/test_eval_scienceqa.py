"""ScienceQA scoring: the official parse, failed parses counted and wrong (never guessed), per-category accuracy."""

import json

import pytest

from fixtures.external import external
from llava_hf.eval.scienceqa import FAILED, load_predictions, parse_prediction, score_scienceqa


@pytest.mark.parametrize(
    "text,expected",
    [
        ("B", "B"),
        ("B. apostrophe", "B"),
        ("The lecture says so. The answer is C.", "C"),
        ("The answer is A. The answer is B.", FAILED),  # ambiguous: two answers
        ("b", FAILED),
        ("AB", FAILED),  # not a bare option letter
        ("", FAILED),
        ("I think it is apostrophe", FAILED),
        (" B", FAILED),  # the official scorer does not strip
    ],
)
def test_parse_order(text, expected):
    assert parse_prediction(text) == expected


def _record(qid, n_options, gold, image=False, **metadata):
    options = "\n".join(f"{chr(65 + i)}. option {i}" for i in range(n_options))
    record = {
        "id": qid,
        "conversations": [{"from": "human", "value": f"Q?\n{options}"}, {"from": "gpt", "value": gold}],
    }
    if image:
        record["image"] = f"{qid}/image.png"
    return {**record, **metadata}


def test_failed_parses_are_counted_and_wrong():
    questions = [
        _record("1", 2, "A", image=True, subject="NAT", context_modality="IMG", grade_band="G1-6"),
        _record("2", 2, "B", subject="LAN", context_modality="NO", grade_band="G7-12"),
        _record("3", 3, "C", subject="NAT", context_modality="TXT", grade_band="G1-6"),
        _record("4", 2, "A", image=True, subject="SOC", context_modality="IMG", grade_band="G7-12"),
    ]
    result = score_scienceqa({"1": "A", "2": "no idea", "3": "The answer is C.", "4": "C"}, questions)
    assert result["count"] == 4 and result["correct"] == 2 and result["accuracy"] == 50.0
    assert result["image_count"] == 2 and result["image_accuracy"] == 50.0
    assert result["failed_parses"] == 1 and result["failed_ids"] == ["2"]
    assert result["out_of_range"] == 1 and result["out_of_range_ids"] == ["4"]  # "C" with two options: wrong
    assert result["categories"]["NAT"] == {"accuracy": 100.0, "count": 2}
    assert result["categories"]["LAN"]["accuracy"] == 0.0 and result["categories"]["G7-12"]["count"] == 2


def test_missing_predictions_are_an_error():
    with pytest.raises(ValueError, match="1 question\\(s\\) have no prediction"):
        score_scienceqa({}, [_record("1", 2, "A")])


def test_official_llava_15_13b_run():
    """Rebuilt from the official run's raw outputs: the official parse of every question, FAILED exactly where it
    is, and 74.39% / 71.64% less what the official scorer got right by guessing on its failed parses."""
    predictions = load_predictions(external("scienceqa", "llava-v1.5-13b_result.json"))
    questions = json.loads(external("scienceqa", "llava_test_CQM-A.json").read_text())
    official_output = json.loads(external("scienceqa", "llava-v1.5-13b_output.json").read_text())
    official = {row["question_id"]: row for rows in official_output.values() for row in rows}
    official_results = json.loads(external("scienceqa", "llava-v1.5-13b_result.json").read_text())["results"]

    result = score_scienceqa(predictions, questions)
    assert len(result["parsed"]) == len(official) == 4241
    assert {qid: row["parsed_ans"] for qid, row in official.items()} == result["parsed"]
    assert sorted(result["failed_ids"]) == sorted(q for q, row in official.items() if row["parsed_ans"] == FAILED)
    assert result["failed_parses"] == 5

    guessed_right = [q for q in result["failed_ids"] if official_results[q] == 1]
    image_guessed_right = [q for q in guessed_right if official[q]["is_multimodal"]]
    assert result["correct"] == 3155 - len(guessed_right)
    assert round(result["accuracy"], 2) == round(100 * (3155 - len(guessed_right)) / 4241, 2) == 74.39
    assert result["image_count"] == 2017
    assert round(result["image_accuracy"], 2) == round(100 * (1445 - len(image_guessed_right)) / 2017, 2) == 71.64
