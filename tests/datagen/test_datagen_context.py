"""The symbolic context: the paper's layout, from COCO-style annotations, caps_boxes files and the shapes world."""

import json
import re

import pytest

from fixtures.external import external
from llava_hf.data.shapes import build_shapes_world, generate_scene, symbolic_context
from llava_hf.datagen.context import (
    ImageContext,
    load_caps_boxes,
    load_coco,
    load_contexts,
    normalize_coco_box,
    shapes_contexts,
)

BOX_LINE = re.compile(
    r"^[^:\n]+: \[(0(\.\d{1,3})?|1\.0), (0(\.\d{1,3})?|1\.0), (0(\.\d{1,3})?|1\.0), (0(\.\d{1,3})?|1\.0)\]$"
)


def _parse_caps_file(text: str) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """A `*_caps.txt` file: caption lines, then (after a blank line) `category: [x1, y1, x2, y2]` lines."""
    captions_part, _, boxes_part = text.partition("\n\n")
    boxes = []
    for line in boxes_part.splitlines():
        category, _, box = line.rpartition(": ")
        boxes.append((category, json.loads(box)))
    return captions_part.splitlines(), boxes


def _coco_files(tmp_path, images: list[tuple[str, list[str], list[tuple[str, list[float]]]]], size=(1000, 1000)):
    """COCO instances + captions JSON whose pixel boxes normalise back to the given 0-1 boxes (1000-px images)."""
    width, height = size
    categories: dict[str, int] = {}
    instances = {"images": [], "annotations": [], "categories": []}
    caption_rows = []
    for image_id, (stem, image_captions, boxes) in enumerate(images, start=1):
        instances["images"].append({"id": image_id, "file_name": f"{stem}.jpg", "width": width, "height": height})
        for category, (x1, y1, x2, y2) in boxes:
            category_id = categories.setdefault(category, len(categories) + 1)
            px1, py1 = round(x1 * width), round(y1 * height)
            bbox = [px1, py1, round(x2 * width) - px1, round(y2 * height) - py1]
            instances["annotations"].append(
                {
                    "id": len(instances["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": bbox,
                }
            )
        for caption in image_captions:
            caption_rows.append({"id": len(caption_rows) + 1, "image_id": image_id, "caption": caption})
    instances["categories"] = [{"id": i, "name": name} for name, i in categories.items()]
    (tmp_path / "instances_val.json").write_text(json.dumps(instances))
    (tmp_path / "captions_val.json").write_text(
        json.dumps({"images": instances["images"], "annotations": caption_rows})
    )
    return tmp_path / "instances_val.json", tmp_path / "captions_val.json"


@pytest.mark.parametrize("folder", ["conversation", "detail_description", "complex_reasoning"])
def test_coco_context_renders_exactly_like_the_papers_caps_files(tmp_path, folder):
    caps_files = sorted(external("datagen-examples", folder).glob("*_caps.txt"))
    parsed = [_parse_caps_file(path.read_text()) for path in caps_files]
    instances, captions = _coco_files(tmp_path, [(f"img{i}", c, b) for i, (c, b) in enumerate(parsed)])
    contexts = load_coco(instances, captions)
    assert [c.image_id for c in contexts] == [f"img{i}" for i in range(len(parsed))]
    for path, context in zip(caps_files, contexts):
        with_boxes = folder != "conversation"  # the paper's conversations saw captions only
        assert context.render(with_boxes=with_boxes) == path.read_text().strip("\n"), path


def test_caps_boxes_rows_render_in_the_paper_layout_and_match_coco():
    path = external("llava-bench-coco", "caps_boxes_coco2014_val_80.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    contexts = load_caps_boxes(path)
    assert len(contexts) == len(rows) == 80
    for row, context in zip(rows, contexts):
        assert context.image_id == row["id"] and context.image == row["image"]
        caption_part, _, box_part = context.render().partition("\n\n")
        assert caption_part.splitlines() == [c.strip() for c in row["captions"]]
        box_lines = box_part.splitlines()
        assert len(box_lines) == len(row["instances"])
        assert all(BOX_LINE.match(line) for line in box_lines), box_lines
        assert [json.loads(line.rpartition(": ")[2]) for line in box_lines] == [i["bbox"] for i in row["instances"]]
        assert context.render(with_boxes=False) == caption_part


def test_caps_boxes_and_coco_files_give_the_same_contexts(tmp_path):
    path = external("llava-bench-coco", "caps_boxes_coco2014_val_80.jsonl")
    from_caps = load_caps_boxes(path)[:10]
    images = [(c.image_id, list(c.captions), [(cat, list(box)) for cat, box in c.boxes]) for c in from_caps]
    instances, captions = _coco_files(tmp_path, images)
    from_coco = load_coco(instances, captions)
    assert [c.render() for c in from_coco] == [c.render() for c in from_caps]


def test_coco_boxes_are_normalised_corners_with_three_decimals():
    # [x, y, w, h] pixels -> [x1, y1, x2, y2] in 0-1; a box spilling past the edge is clipped to 1.0.
    assert normalize_coco_box([64, 48, 128, 96], 640, 480) == (0.1, 0.1, 0.3, 0.3)
    assert normalize_coco_box([1.5, 0, 639.7, 480.4], 640, 480) == (0.002, 0.0, 1.0, 1.0)
    assert normalize_coco_box([100, 100, 1, 1], 333, 333) == (0.3, 0.3, 0.303, 0.303)


def test_shapes_world_folder_coco_files_and_generator_agree(tmp_path):
    build_shapes_world(tmp_path, num_images=6, seed=5, progress=False)
    from_folder = load_contexts(tmp_path)  # the folder: annotations/caps_boxes.jsonl
    from_coco = load_coco(tmp_path / "annotations" / "instances.json")  # sibling captions.json found
    from_generator = list(shapes_contexts(seed=5, num_images=6))
    assert from_folder == from_generator
    assert [c.render() for c in from_coco] == [c.render() for c in from_generator]
    assert from_generator[0].render() == symbolic_context(generate_scene(5, 0))
    assert from_generator[0].render(with_boxes=False) == symbolic_context(generate_scene(5, 0), with_boxes=False)


def test_several_sources_keep_order_and_reject_repeated_image_ids(tmp_path):
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text(json.dumps({"id": "1", "image": "1.jpg", "captions": ["one"], "instances": []}) + "\n")
    b.write_text(json.dumps({"id": "2", "image": "2.jpg", "captions": ["two"], "instances": []}) + "\n")
    contexts = load_contexts([a, b], image_prefix="coco/")
    assert [(c.image_id, c.image) for c in contexts] == [("1", "coco/1.jpg"), ("2", "coco/2.jpg")]
    with pytest.raises(ValueError, match="unique"):
        load_contexts([a, a])


def test_bad_sources_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "instances_x.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(FileNotFoundError, match="--captions"):
        load_contexts(tmp_path / "instances_x.json")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "image": "1.jpg"}\n')
    with pytest.raises(ValueError, match="bad.jsonl line 1"):
        load_contexts(bad)
    with pytest.raises(ValueError, match="one --captions per"):
        load_contexts([bad, bad], [tmp_path / "c.json"])


def test_images_without_captions_are_left_out_and_captions_stay_on_one_line(tmp_path):
    instances, captions = _coco_files(tmp_path, [("a", ["A cat."], [("cat", [0.1, 0.1, 0.5, 0.5])]), ("b", [], [])])
    assert [c.image_id for c in load_coco(instances, captions)] == ["a"]
    assert ImageContext("a", "a.jpg", (" A cat.\n", "A cat\non a mat.")).render() == "A cat.\nA cat on a mat."
