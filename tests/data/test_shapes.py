"""The synthetic shapes world: deterministic, true to its ground truth, and usable by every later stage."""

import json
import re

import numpy as np
import pytest

from fixtures.external import external
from llava_hf.cli import main
from llava_hf.data import load_llava_dataset
from llava_hf.data.shapes import (
    COLORS,
    MCQ_PROMPT,
    build_shapes_world,
    captions,
    generate_scene,
    questions,
    render,
    symbolic_context,
)
from llava_hf.eval.scienceqa import parse_prediction


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    counts = build_shapes_world(out, num_images=60, seed=7, progress=False)
    return out, counts


def test_same_seed_same_world(tmp_path):
    build_shapes_world(tmp_path / "a", num_images=5, seed=3, progress=False)
    build_shapes_world(tmp_path / "b", num_images=5, seed=3, progress=False)
    for name in ("instruct.json", "mcq_test.json", "annotations/instances.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    first = sorted((tmp_path / "a" / "images").iterdir())[0]
    assert first.read_bytes() == (tmp_path / "b" / "images" / first.name).read_bytes()
    assert generate_scene(3, 0) != generate_scene(4, 0)


def test_rendered_pixels_match_the_annotations():
    scene = generate_scene(1, 2)
    pixels = np.asarray(render(scene))
    for obj in scene.objects:
        cx, cy = (int(v) for v in obj.center)
        assert tuple(pixels[cy, cx]) == COLORS[obj.color], obj


def test_symbolic_context_layout_matches_the_paper(world):
    context = symbolic_context(generate_scene(7, 0))
    caption_lines, box_lines = context.split("\n\n")
    assert len(caption_lines.split("\n")) == 5
    box = re.compile(
        r"^[a-z ]+: \[(0(\.\d{1,3})?|1\.0), (0(\.\d{1,3})?|1\.0), (0(\.\d{1,3})?|1\.0), (0(\.\d{1,3})?|1\.0)\]$"
    )
    assert all(box.match(line) for line in box_lines.split("\n")), box_lines
    # caps_boxes.jsonl has LLaVA-Bench's layout.
    out, _ = world
    row = json.loads((out / "annotations" / "caps_boxes.jsonl").read_text().splitlines()[0])
    assert set(row) == {"id", "image", "captions", "instances"} and len(row["captions"]) == 5
    reference = json.loads(
        external("llava-bench-coco", "caps_boxes_coco2014_val_80.jsonl").read_text().splitlines()[0]
    )
    assert set(row) == set(reference) and set(row["instances"][0]) == set(reference["instances"][0])


def test_blind_guessing_scores_chance_on_every_question_kind():
    # A blind model can only learn which option values win; each value must win as often as any other, per kind.
    from collections import Counter

    seen, won = Counter(), Counter()
    for index in range(1500):
        for q in questions(generate_scene(5, index)):
            for position, choice in enumerate(q["choices"]):
                seen[q["kind"], choice] += 1
                won[q["kind"], choice] += position == q["answer"]
    for kind in ("color", "shape", "count", "position"):
        rates = {value: won[k, value] / n for (k, value), n in seen.items() if k == kind}
        assert max(rates.values()) - min(rates.values()) < 0.1, (kind, rates)


def test_multiple_choice_answers_are_true():
    for index in range(50):
        scene = generate_scene(11, index)
        for q in questions(scene):
            answer = q["choices"][q["answer"]]
            assert len(set(q["choices"])) == len(q["choices"])
            # The solution ends by stating the right option and none of the wrong ones.
            conclusion = q["solution"].split(". ")[-1]
            words = set(re.findall(r"[a-z0-9]+", conclusion))
            assert answer in words and not words & (set(q["choices"]) - {answer}), q
            if q["kind"] == "count":
                assert answer == str(len(scene.objects))
                # the shapes are named one by one before the number: each once
                listed = re.findall(r"\b(?:a|an) (\w+ \w+)", q["solution"], flags=re.IGNORECASE)
                assert sorted(listed) == sorted(o.name for o in scene.objects), q
            elif q["kind"] == "color":
                shape = q["question"].split()[-1].rstrip("?")
                assert [o.color for o in scene.objects if o.shape == shape] == [answer]
            elif q["kind"] == "shape":
                color = q["question"].split()[4]
                assert [o.shape for o in scene.objects if o.color == color] == [answer]
            elif q["kind"] == "position":
                a, b = re.match(r"Is the (.+) to the left or to the right of the (.+)\?", q["question"]).groups()
                ax = next(o for o in scene.objects if o.name == a).center[0]
                bx = next(o for o in scene.objects if o.name == b).center[0]
                assert answer == ("left" if ax < bx else "right")


def test_captions_are_five_and_true():
    scene = generate_scene(5, 9)
    texts = captions(scene)
    assert len(texts) == 5 and len(set(texts)) == 5
    for obj in scene.objects:
        assert any(obj.color in text and obj.shape in text for text in texts)


def test_derived_files_load_and_split_by_image(world):
    out, counts = world
    assert counts["images"] == 60
    train_images = {r["image"] for r in json.loads((out / "mcq_train.json").read_text())}
    test_images = {r["image"] for r in json.loads((out / "mcq_test.json").read_text())}
    assert train_images and test_images and not train_images & test_images
    instruct = json.loads((out / "instruct.json").read_text())
    assert {r["type"] for r in instruct} == {"conv", "detail", "complex"}
    assert not {r["image"] for r in instruct} & test_images  # instruction data only from train images
    positions = {r["conversations"][0]["value"].startswith("<image>") for r in instruct}
    assert positions == {True, False}  # <image> before or after the question, at random
    for name in ("stage1.json", "instruct.json", "mcq_train.json", "mcq_test.json", "mcq_context.json"):
        dataset, report = load_llava_dataset(out / name, image_root=out / "images")
        assert report.rows_written == counts[name] and not report.skipped
    dataset, _ = load_llava_dataset(out / "stage1.json", image_root=out / "images", stage="plain")
    assert dataset[0]["images"][0].size == (224, 224)  # real, decodable files


def test_stage1_captions_name_every_shape_and_mcq_prompts_match_the_evaluation(world):
    out, _ = world
    scenes_by_file = {f"{generate_scene(7, i).image_id}.png": generate_scene(7, i) for i in range(60)}
    for record in json.loads((out / "stage1.json").read_text()):
        caption = record["conversations"][1]["value"]
        for obj in scenes_by_file[record["image"]].objects:
            assert f"{obj.size} {obj.color} {obj.shape}" in caption, (caption, obj)
    # Training questions carry MCQ_PROMPT; test questions get it from the evaluation at inference.
    train = json.loads((out / "mcq_train.json").read_text())
    test = json.loads((out / "mcq_test.json").read_text())
    assert all(r["conversations"][0]["value"].endswith(MCQ_PROMPT) for r in train)
    assert not any(MCQ_PROMPT in r["conversations"][0]["value"] for r in test)
    # Answers: the solution, then "The answer is X.", which the ScienceQA scorer reads as the record's letter.
    for record in train:
        answer = record["conversations"][1]["value"]
        assert answer.endswith(f" The answer is {record['answer']}.") and answer.count("The answer is") == 1, answer
        # one sentence before the letter; a count lists the shapes in one more
        assert len(answer.split(". ")) == (3 if record["kind"] == "count" else 2), answer
        assert parse_prediction(answer) == record["answer"]


def test_context_questions_are_text_only_and_their_letter_names_the_stated_option(world):
    out, _ = world
    context = json.loads((out / "mcq_context.json").read_text())
    train = json.loads((out / "mcq_train.json").read_text())
    assert len(context) == len({r["image"] for r in train})  # one per training image
    assert all("image" not in r for r in context)  # text-only: no image, no <image> token
    kinds, letters = set(), set()
    for record in context:
        human, answer = (turn["value"] for turn in record["conversations"])
        assert "<image>" not in human and human.endswith(MCQ_PROMPT)
        stated = human.split("\n")[0].removeprefix("Context: ")
        options = dict(line.split(". ", 1) for line in human.removesuffix(MCQ_PROMPT).split("\n")[2:])
        # The option the context states is the one the answer's letter names, and no other option is stated.
        conclusion = stated.split(". ")[-1]
        named = [letter for letter, text in options.items() if re.search(rf"\b{text}\b", conclusion)]
        assert named == [record["answer"]], (stated, options)
        assert answer == f"{stated} The answer is {record['answer']}." and parse_prediction(answer) == record["answer"]
        kinds.add(record["kind"])
        letters.add(record["answer"])
    assert kinds == {"color", "shape", "count", "position"} and len(letters) >= 3


def test_cli(tmp_path, capsys):
    assert main(["data", "shapes", str(tmp_path / "w"), "--num-images", "4", "--seed", "1"]) == 0
    assert "images: 4" in capsys.readouterr().out
    assert len(list((tmp_path / "w" / "images").iterdir())) == 4


def test_the_scorer_reads_the_gold_letter_from_solution_first_answers(world):
    from llava_hf.eval.scienceqa import score_scienceqa
    from llava_hf.eval.shapes import score_by_kind

    out, _ = world
    test = json.loads((out / "mcq_test.json").read_text())
    # The test file's own answers ("<solution> The answer is X.") score 100%, overall and per kind; bare letters too.
    gold = {r["id"]: r["conversations"][1]["value"] for r in test}
    assert score_scienceqa(gold, test)["accuracy"] == 100.0
    assert set(score_by_kind(gold, test).values()) == {100.0}
    assert score_scienceqa({r["id"]: r["answer"] for r in test}, test)["accuracy"] == 100.0
    wrong = {r["id"]: "ABCDE"[("ABCDE".index(r["answer"]) + 1) % r["num_choices"]] for r in test}
    assert score_scienceqa(wrong, test)["accuracy"] == 0.0
