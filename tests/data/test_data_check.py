"""`llava-hf data check`: counts per problem kind, a policy, and a non-zero exit beyond it."""

import json

import numpy as np
from PIL import Image

from fixtures.tester import LlavaModelTester
from llava_hf.cli import main
from llava_hf.data.check import check_llava_files


def _record(record_id, image=None, turns=None):
    record = {
        "id": record_id,
        "conversations": turns or [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}],
    }
    if image is not None:
        record["image"] = image
    return record


def _bad_dataset(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray((np.random.default_rng(0).random((8, 8, 3)) * 255).astype("uint8")).save(images / "ok.png")
    Image.new("L", (8, 8)).save(images / "gray.png")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (400, 400)).save(images / "huge.png")
    records = [
        _record("ok", "ok.png"),
        _record("gray", "gray.png"),
        _record("broken", "broken.jpg"),
        _record("missing", "nowhere.jpg"),
        _record("huge", "huge.png"),
        _record(
            "two-placeholders", "ok.png", [{"from": "human", "value": "<image><image>"}, {"from": "gpt", "value": "x"}]
        ),
        _record("empty", "ok.png", [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "  "}]),
        _record("order", "ok.png", [{"from": "human", "value": "<image>\nQ?"}, {"from": "human", "value": "again"}]),
        _record(
            "long", "ok.png", [{"from": "human", "value": "<image>\n" + "word " * 200}, {"from": "gpt", "value": "A."}]
        ),
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path, images


def test_counts_every_problem_kind(tmp_path):
    path, images = _bad_dataset(tmp_path)
    report = check_llava_files(
        [path],
        images,
        processor=LlavaModelTester().get_processor(),
        max_length=400,
        max_pixels=100_000,
        progress=False,
    )
    assert report.records == 9
    assert dict(report.counts) == {
        "non-RGB image (converted)": 1,
        "corrupt image": 1,
        "missing image": 1,
        "huge image": 1,
        "image placeholder count": 1,
        "empty turn": 1,
        "turns out of human/gpt order": 1,
        "over max_length after tokenization": 1,
    }
    assert report.problems == 7  # the grayscale image is a note: it converts safely
    assert any("id 'missing'" in e for e in report.examples["missing image"])
    assert not report.passes(max_problems=6) and report.passes(max_problems=7)
    assert report.passes(max_fraction=0.8) and not report.passes(max_fraction=0.5)


def test_cli_exit_codes(tmp_path, capsys):
    path, images = _bad_dataset(tmp_path)
    assert main(["data", "check", str(path), "--image-root", str(images), "--report", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert "missing image (problem)" in out and "FAIL" in out
    assert json.loads((tmp_path / "r.json").read_text())["counts"]["missing image"] == 1
    assert main(["data", "check", str(path), "--image-root", str(images), "--max-problems", "50"]) == 0
    good = tmp_path / "good.json"
    good.write_text(json.dumps([_record("ok", "ok.png")]))
    assert main(["data", "check", str(good), "--image-root", str(images)]) == 0
