"""LLaVA JSON/JSONL <-> datasets: layouts, lossless write-back, stage-1 plain, clear errors, counted skips."""

import json

import pytest
from datasets import Image as ImageFeature

from llava_hf.data import RecordError, llava_record_to_row, load_llava_dataset, row_to_llava_record, write_llava_json

RECORDS = [
    {
        "id": "coco-1",
        "image": "coco/train2017/000000000001.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is on the table?"},
            {"from": "gpt", "value": "A red cup."},
            {"from": "human", "value": "Is it full?"},
            {"from": "gpt", "value": "No, it is empty."},
        ],
    },
    {
        "id": "cap-2",
        "image": "00453/004539375.jpg",
        "conversations": [
            {"from": "human", "value": "Summarize the photo.\n<image>"},
            {"from": "gpt", "value": "a dog on a beach"},
        ],
    },
    {"id": "text-3", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
    {
        "id": "multi-4",
        "image": ["a.png", "b.png"],
        "conversations": [
            {"from": "human", "value": "<image> vs <image>: which is bigger?"},
            {"from": "gpt", "value": "The first."},
        ],
        "source": "custom",
    },
]


def _write(tmp_path, records, name="data.json"):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def _text_columns(dataset):
    return dataset.select_columns(["id", "image_files", "messages", "metadata"])


@pytest.mark.parametrize("name", ["data.json", "data.jsonl"])
def test_round_trip_is_lossless(tmp_path, name):
    path = _write(tmp_path, RECORDS, name)
    dataset, report = load_llava_dataset(path, image_root=tmp_path / "images")
    assert report.rows_read == report.rows_written == 4 and not report.skipped
    out = tmp_path / f"back{path.suffix}"
    assert write_llava_json(_text_columns(dataset), out) == 4
    back = (
        json.loads(out.read_text())
        if name.endswith(".json")
        else [json.loads(line) for line in out.read_text().splitlines()]
    )
    assert back == RECORDS


def test_trl_conversational_layout_keeps_image_position(tmp_path):
    dataset, _ = load_llava_dataset(_write(tmp_path, RECORDS), image_root=tmp_path / "images")
    assert isinstance(dataset.features["images"].feature, ImageFeature)
    rows = _text_columns(dataset)
    before = rows[0]["messages"][0]["content"]
    after = rows[1]["messages"][0]["content"]
    assert [p["type"] for p in before] == ["image", "text"]
    assert [p["type"] for p in after] == ["text", "image"]
    assert rows[0]["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "A cry." if False else "A red cup."}],
    }
    assert rows[2]["image_files"] == [] and rows[3]["image_files"] == ["a.png", "b.png"]
    # Paths are recorded, never decoded: the image files do not even exist.
    paths = dataset.cast_column("images", dataset.features["images"].__class__(ImageFeature(decode=False)))["images"]
    assert paths[0][0]["path"].endswith("images/coco/train2017/000000000001.jpg")


def test_instruction_output_layout_converts(tmp_path):
    record = {"id": "9", "image": "x.jpg", "instruction": "What is it?", "output": "A cat.", "type": "conv"}
    row = llava_record_to_row(record)
    assert [p["type"] for p in row["messages"][0]["content"]] == ["image", "text"]
    assert json.loads(row["metadata"]) == {"type": "conv"}
    assert row_to_llava_record(row)["conversations"][0]["value"] == "<image>\nWhat is it?"


def test_stage1_plain_drops_the_instruction(tmp_path):
    dataset, _ = load_llava_dataset(_write(tmp_path, [RECORDS[1]]), stage="plain")
    messages = _text_columns(dataset)[0]["messages"]
    assert messages[0]["content"] == [{"type": "image", "text": None}]
    assert messages[1]["content"][0]["text"] == "a dog on a beach"


@pytest.mark.parametrize(
    "record,message",
    [
        (
            {
                "id": "a",
                "image": "x.jpg",
                "conversations": [{"from": "human", "value": "no placeholder"}, {"from": "gpt", "value": "x"}],
            },
            r"row 1 \(id 'a'\): the conversations have 0 <image> placeholder\(s\) but 'image' has 1",
        ),
        (
            {
                "id": "b",
                "conversations": [{"from": "human", "value": "<image><image>"}, {"from": "gpt", "value": "x"}],
            },
            r"id 'b'\): the conversations have 2 <image> placeholder\(s\) but 'image' has 0; remove one or add an image",
        ),
        (
            {"id": "c", "conversations": [{"from": "robot", "value": "hi"}]},
            r"id 'c'\): conversations\[0\] has from='robot'",
        ),
        ({"id": "d", "conversations": []}, r"id 'd'\): 'conversations' is missing or empty"),
    ],
)
def test_bad_records_name_the_record_and_problem(tmp_path, record, message):
    path = _write(tmp_path, [record])
    with pytest.raises(RecordError, match=message):
        load_llava_dataset(path)


def test_skip_mode_counts_every_skip(tmp_path):
    bad = {
        "id": "bad",
        "image": "x.jpg",
        "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
    }
    path = _write(tmp_path, [RECORDS[0], bad, RECORDS[2], bad])
    dataset, report = load_llava_dataset(path, on_error="skip")
    assert len(dataset) == 2
    assert report.rows_read == 4 and report.rows_written == 2
    assert report.skipped == {"image placeholder count": 2}
    assert "2 image placeholder count" in report.summary()


def test_invalid_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(RECORDS[2]) + "\n{not json\n")
    with pytest.raises(RecordError, match="bad.jsonl line 2: not valid JSON"):
        load_llava_dataset(path)
