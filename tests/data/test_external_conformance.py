"""The real files in ../shared/external load with the right counts of rows, turns and images."""

import collections
import json

from fixtures.external import external
from llava_hf.data import load_llava_dataset, write_llava_json
from llava_hf.data.check import check_llava_files

COLUMNS = ["id", "image_files", "messages", "metadata"]


def test_lcs558k_first_rows():
    path = external("llava-pretrain", "blip_laion_cc_sbu_558k.first10.json")
    dataset, report = load_llava_dataset(path)
    rows = dataset.select_columns(COLUMNS)
    assert report.rows_written == 10 and len(rows) == 10
    assert all(len(r["messages"]) == 2 and len(r["image_files"]) == 1 for r in rows)
    plain, _ = load_llava_dataset(path, stage="plain")
    assert all(
        r["messages"][0]["content"] == [{"type": "image", "text": None}] for r in plain.select_columns(["messages"])
    )


def test_lcs558k_round_trip(tmp_path):
    path = external("llava-pretrain", "blip_laion_cc_sbu_558k.first10.json")
    dataset, _ = load_llava_dataset(path)
    write_llava_json(dataset.select_columns(COLUMNS), tmp_path / "back.json")
    assert json.loads((tmp_path / "back.json").read_text()) == json.loads(path.read_text())


def test_llava_instruct_90_rows():
    dataset, report = load_llava_dataset(external("llava-instruct", "coco2014_val_gpt4_qa_30x3.jsonl"))
    rows = dataset.select_columns(COLUMNS)
    assert report.rows_written == 90
    assert collections.Counter(json.loads(r["metadata"])["type"] for r in rows) == {
        "conv": 30,
        "detail": 30,
        "complex": 30,
    }
    assert all(len(r["messages"]) == 2 and len(r["image_files"]) == 1 for r in rows)


def test_scienceqa_test_file():
    dataset, report = load_llava_dataset(external("scienceqa", "llava_test_CQM-A.json"))
    rows = dataset.select_columns(COLUMNS)
    assert report.rows_written == 4241
    assert sum(1 for r in rows["image_files"] if r) == 2017
    assert all(len(m) == 2 for m in rows["messages"])


def test_data_check_reports_the_missing_images():
    report = check_llava_files([external("llava-pretrain", "blip_laion_cc_sbu_558k.first10.json")], progress=False)
    assert report.records == 10 and report.counts == {"missing image": 10}
