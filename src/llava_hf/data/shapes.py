"""The synthetic shapes world: llava-hf's offline default data.

A seeded generator draws images with 1-N coloured shapes and writes, for each image, what the paper fed to GPT-4:
COCO-style annotations with five captions and normalised boxes. From that ground truth it derives

- stage-1 caption pairs (image + caption),
- template-based instruction data of the paper's three types: conversation, detailed description, complex reasoning,
- ScienceQA-format multiple-choice questions with known answers (colour, shape, count, relative position), split by
  image into train and test: the CQM question and MCQ_PROMPT, answered with a short solution and the letter.

Everything is a pure function of `(seed, index)`, so any image can be regenerated alone and the output is identical
across runs and machines.
"""

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from .scienceqa import LETTERS, format_answer, format_cqm

SHAPES = ("circle", "square", "triangle", "diamond")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 20),
}
SIZES = {"small": (18, 28), "large": (36, 52)}  # half-extent in pixels at 224 px
MIN_IMAGE_SIZE = 32  # smaller images leave the shapes a pixel or two across, or no room at all
BACKGROUND = (245, 245, 240)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
# The multiple-choice instruction, on training and test questions alike: the answer states what the image shows, then
# the letter, as LLaVA v1's ScienceQA answers do (`format_answer("LEA", ...)`: "... The answer is B.").
# Eight SmolLM2 tokens, a tenth of a training question.
MCQ_PROMPT = "\nReason first, then the letter."
# Room for the longest such answer (27 SmolLM2 tokens, four shapes listed and counted) and the end token.
MCQ_MAX_NEW_TOKENS = 32

# Our own phrasings (the paper's brief-description instructions are not reproduced here).
CAPTION_INSTRUCTIONS = (
    "Give a short caption for this picture.",
    "Summarize the image in one sentence.",
    "What does this image show? Answer briefly.",
    "Write a brief description of the picture.",
    "Caption the image.",
)
DETAIL_INSTRUCTIONS = (
    "Describe this image in detail.",
    "Give a thorough description of everything in the picture.",
    "Explain what you see in the image, object by object.",
)


@dataclass(frozen=True)
class Shape:
    shape: str
    color: str
    size: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


@dataclass(frozen=True)
class Scene:
    image_id: str
    width: int
    height: int
    objects: tuple[Shape, ...]


# -- scenes ----------------------------------------------------------------------------------------------------------
def generate_scene(seed: int, index: int, image_size: int = 224, max_objects: int = 4) -> Scene:
    """Scene `index` of the world `seed`: 1..max_objects non-overlapping shapes, each (colour, shape) pair unique."""
    rng = random.Random(f"shapes-{seed}-{index}")
    count = rng.randint(1, max_objects)
    objects: list[Shape] = []
    used: set[tuple[str, str]] = set()
    attempts = 0
    while len(objects) < count and attempts < 200:
        attempts += 1
        shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
        if (shape, color) in used:
            continue
        size = rng.choice(list(SIZES))
        half = rng.randint(*SIZES[size]) * image_size // 224
        cx = rng.randint(half + 2, image_size - half - 2)
        cy = rng.randint(half + 2, image_size - half - 2)
        box = (cx - half, cy - half, cx + half, cy + half)
        if any(_overlap(box, other.box, margin=6) for other in objects):
            continue
        used.add((shape, color))
        objects.append(Shape(shape, color, size, box))
    return Scene(image_id=f"shapes-{seed}-{index:06d}", width=image_size, height=image_size, objects=tuple(objects))


def _overlap(a: tuple[int, ...], b: tuple[int, ...], margin: int) -> bool:
    return not (a[2] + margin < b[0] or b[2] + margin < a[0] or a[3] + margin < b[1] or b[3] + margin < a[1])


def render(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (scene.width, scene.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x1, y1, x2, y2 = obj.box
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse(obj.box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(obj.box, fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=fill)
        else:  # diamond
            cx, cy = obj.center
            draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill)
    return image


# -- language --------------------------------------------------------------------------------------------------------
def _region(obj: Shape, scene: Scene) -> str:
    cx, cy = obj.center
    horizontal = "left" if cx < scene.width / 3 else ("right" if cx > 2 * scene.width / 3 else "center")
    vertical = "top" if cy < scene.height / 3 else ("bottom" if cy > 2 * scene.height / 3 else "middle")
    if horizontal == "center" and vertical == "middle":
        return "in the center"
    if horizontal == "center":
        return f"at the {vertical}"
    if vertical == "middle":
        return f"on the {horizontal}"
    return f"in the {vertical} {horizontal}"


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _count_phrase(count: int, noun: str = "shape") -> str:
    return f"{NUMBER_WORDS[count]} {noun}{'s' if count != 1 else ''}"


def _list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def captions(scene: Scene) -> list[str]:
    """Five different, true captions of the scene (COCO has five per image)."""
    rng = random.Random(f"captions-{scene.image_id}")
    names = [_a(f"{o.size} {o.name}") for o in scene.objects]
    plain = [_a(o.name) for o in scene.objects]
    count = len(scene.objects)
    first = scene.objects[0]
    candidates = [
        f"{_list(names).capitalize()} on a light background.",
        f"A picture with {_count_phrase(count)}: {_list(plain)}.",
        f"{_count_phrase(count).capitalize()} drawn on a plain canvas.",
        f"A simple drawing of {_list(plain)}.",
        f"There is {_a(first.name)} {_region(first, scene)} of the image.",
        f"Flat coloured shapes: {_list([o.name for o in scene.objects])}.",
    ]
    rng.shuffle(candidates)
    return candidates[:5]


def full_caption(scene: Scene) -> str:
    """One caption naming every shape with its size, colour and place: the stage-1 target.

    Stage 1 aligns the projector through what the captions say; a caption that only counts the shapes ("Two shapes
    drawn on a plain canvas.") teaches nothing about colour or form, so the stage-1 pairs use this one.
    """
    parts = [f"{_a(o.size + ' ' + o.name)} {_region(o, scene)}" for o in scene.objects]
    return f"{_list(parts).capitalize()}."


def normalized_box(obj: Shape, scene: Scene) -> list[float]:
    """`[x1, y1, x2, y2]` in 0-1, rounded to 3 decimals (the paper's context layout: `0.0`, `0.24`, `0.574`)."""
    x1, y1, x2, y2 = obj.box
    return [
        round(x1 / scene.width, 3),
        round(y1 / scene.height, 3),
        round(x2 / scene.width, 3),
        round(y2 / scene.height, 3),
    ]


def boxes_context(scene: Scene) -> str:
    """`category: [x1, y1, x2, y2]` lines, normalised to 0-1 with 3 decimals, as in the paper's symbolic context."""
    return "\n".join(f"{obj.name}: {normalized_box(obj, scene)}" for obj in scene.objects)


def symbolic_context(scene: Scene, with_boxes: bool = True) -> str:
    """Captions one per line, then the boxes: what the text-only LLM sees of the image."""
    text = "\n".join(captions(scene))
    return text + ("\n\n" + boxes_context(scene) if with_boxes else "")


def _relation(a: Shape, b: Shape) -> str | None:
    """`left of` / `right of` / `above` / `below` when the separation is unambiguous, else None."""
    (ax, ay), (bx, by) = a.center, b.center
    dx, dy = bx - ax, by - ay
    if abs(dx) >= 2 * abs(dy) and abs(dx) > 20:
        return "left of" if dx > 0 else "right of"
    if abs(dy) >= 2 * abs(dx) and abs(dy) > 20:
        return "above" if dy > 0 else "below"
    return None


def conversation(scene: Scene) -> list[tuple[str, str]]:
    rng = random.Random(f"conv-{scene.image_id}")
    objects = list(scene.objects)
    turns = [
        (
            "How many shapes are in the image?",
            f"There {'is' if len(objects) == 1 else 'are'} {_count_phrase(len(objects))} in the image.",
        ),
    ]
    obj = rng.choice(objects)
    turns.append(
        (
            f"What color is the {obj.shape}?"
            if sum(o.shape == obj.shape for o in objects) == 1
            else f"What color is the {obj.size} {obj.shape} {_region(obj, scene)}?",
            f"It is {obj.color}.",
        )
    )
    turns.append((f"Where is the {obj.name}?", f"The {obj.name} is {_region(obj, scene)} of the image."))
    if len(objects) > 1:
        other = rng.choice([o for o in objects if o is not obj])
        relation = _relation(obj, other)
        if relation:
            turns.append(
                (
                    f"Where is the {obj.name} relative to the {other.name}?",
                    f"The {obj.name} is {relation} the {other.name}.",
                )
            )
    return turns


def detailed_description(scene: Scene) -> str:
    objects = sorted(scene.objects, key=lambda o: (o.center[1], o.center[0]))
    sentences = [f"The image shows {_count_phrase(len(objects))} on a plain light background."]
    for obj in objects:
        sentences.append(f"{_a(obj.size + ' ' + obj.name).capitalize()} is {_region(obj, scene)}.")
    colors = sorted({o.color for o in objects})
    sentences.append(f"The colors present are {_list(colors)}.")
    return " ".join(sentences)


def complex_reasoning(scene: Scene) -> tuple[str, str]:
    rng = random.Random(f"complex-{scene.image_id}")
    objects = list(scene.objects)
    if len(objects) > 1 and rng.random() < 0.5:
        removed = rng.choice(objects)
        left = len(objects) - 1
        return (
            f"If the {removed.name} were taken away, how many shapes would remain, and which would they be?",
            f"There are {_count_phrase(len(objects))} now. Removing the {removed.name} leaves {_count_phrase(left)}: "
            f"{_list([o.name for o in objects if o is not removed])}.",
        )
    largest = max(objects, key=lambda o: o.box[2] - o.box[0])
    return (
        "Which shape takes up the most space in the picture, and why?",
        f"The {largest.name} is the largest, about {largest.box[2] - largest.box[0]} pixels wide"
        + ("; it is the only shape in the image." if len(objects) == 1 else ", wider than every other shape."),
    )


def questions(scene: Scene, max_objects: int = 4) -> list[dict[str, Any]]:
    """Multiple-choice questions with known answers: colour, shape, count, relative position.

    Every kind is balanced so that a model that does not look at the image scores chance: the right answer is uniform
    over its values and the wrong options are drawn from the same values (a count's options stay within
    1..`max_objects`, the counts a scene can have; a "5" that is never right would let a blind model beat chance).
    """
    rng = random.Random(f"mcq-{scene.image_id}")
    objects = list(scene.objects)
    out = []

    def add(kind: str, question: str, answer: str, distractors: list[str], solution: str) -> None:
        options = [answer] + rng.sample(distractors, k=min(len(distractors), rng.randint(1, 3)))
        rng.shuffle(options)
        out.append(
            {
                "kind": kind,
                "question": question,
                "choices": options,
                "answer": options.index(answer),
                "solution": solution,
            }
        )

    unique_shapes = [o for o in objects if sum(p.shape == o.shape for p in objects) == 1]
    if unique_shapes:
        obj = rng.choice(unique_shapes)
        add(
            "color",
            f"What color is the {obj.shape}?",
            obj.color,
            [c for c in COLORS if c != obj.color],
            f"The {obj.shape} is {obj.color}.",
        )
    unique_colors = [o for o in objects if sum(p.color == o.color for p in objects) == 1]
    if unique_colors:
        obj = rng.choice(unique_colors)
        add(
            "shape",
            f"What shape is the {obj.color} object?",
            obj.shape,
            [s for s in SHAPES if s != obj.shape],
            f"The {obj.color} object is {_a(obj.shape)}.",
        )
    count = len(objects)
    # The shapes named one by one before the number, as stage 1's captions name them: a 135M LM that lists the shapes
    # it sees and then counts its own list gets the count right far more often than one asked to state the number
    # straight from the image (bench/RESULTS.md).
    add(
        "count",
        "How many shapes are in the image?",
        str(count),
        [str(n) for n in range(1, max_objects + 1) if n != count],
        f"{_list([_a(o.name) for o in objects]).capitalize()}. "
        f"There {'is' if count == 1 else 'are'} {count} shape{'' if count == 1 else 's'}.",
    )
    pairs = [(a, b, _relation(a, b)) for a in objects for b in objects if a is not b]
    horizontal = [(a, b, r) for a, b, r in pairs if r in ("left of", "right of")]
    if horizontal:
        a, b, relation = rng.choice(horizontal)
        side = "left" if relation == "left of" else "right"
        add(
            "position",
            f"Is the {a.name} to the left or to the right of the {b.name}?",
            side,
            ["left" if side == "right" else "right"],
            f"The {a.name} is to the {side} of the {b.name}.",
        )
    return out


# -- the whole world -------------------------------------------------------------------------------------------------
def scenes(seed: int, num_images: int, image_size: int = 224, max_objects: int = 4) -> Iterator[Scene]:
    for index in range(num_images):
        yield generate_scene(seed, index, image_size, max_objects)


def is_test_image(scene_index: int, seed: int, test_fraction: float) -> bool:
    return random.Random(f"split-{seed}-{scene_index}").random() < test_fraction


def build_shapes_world(
    out_dir: str | Path,
    num_images: int = 1000,
    seed: int = 0,
    image_size: int = 224,
    max_objects: int = 4,
    test_fraction: float = 0.2,
    progress: bool = True,
) -> dict[str, int]:
    """Write the world to `out_dir`; returns the count of each file's records.

    Layout: `images/<id>.png`; `annotations/instances.json` and `annotations/captions.json` (COCO style) and
    `annotations/caps_boxes.jsonl` (captions + normalised boxes per image, LLaVA-Bench's layout);
    `stage1.json` (caption pairs, train images), `instruct.json` (conversation / detail / complex, train images),
    `mcq_train.json` and `mcq_test.json` (multiple-choice questions, split by image), `mcq_context.json` (one
    text-only question per training image, its solution given as the context), all LLaVA records.
    """
    from tqdm.auto import tqdm

    for name, value in (("num_images", num_images), ("image_size", image_size), ("max_objects", max_objects)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}.")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be at least {MIN_IMAGE_SIZE} pixels (room to draw the shapes apart), got {image_size}."
        )
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1) (the share of images held out), got {test_fraction}.")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(exist_ok=True)
    categories = {shape: i + 1 for i, shape in enumerate(SHAPES)}
    instances: dict[str, list] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": n} for n, i in categories.items()],
    }
    caption_annotations: list[dict] = []
    stage1, instruct, mcq_train, mcq_test, mcq_context, caps_boxes = [], [], [], [], [], []
    for index, scene in enumerate(
        tqdm(
            scenes(seed, num_images, image_size, max_objects),
            total=num_images,
            disable=not progress,
            desc="shapes world",
        )
    ):
        file_name = f"{scene.image_id}.png"
        render(scene).save(out / "images" / file_name, compress_level=1)
        image_entry = {"id": index, "file_name": file_name, "width": scene.width, "height": scene.height}
        instances["images"].append(image_entry)
        for obj in scene.objects:
            x1, y1, x2, y2 = obj.box
            instances["annotations"].append(
                {
                    "id": len(instances["annotations"]) + 1,
                    "image_id": index,
                    "category_id": categories[obj.shape],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                    "attributes": {"color": obj.color, "size": obj.size},
                }
            )
        scene_captions = captions(scene)
        caps_boxes.append(
            {
                "id": scene.image_id,
                "image": file_name,
                "captions": scene_captions,
                "instances": [{"category": o.name, "bbox": normalized_box(o, scene)} for o in scene.objects],
            }
        )
        for caption in scene_captions:
            caption_annotations.append({"id": len(caption_annotations) + 1, "image_id": index, "caption": caption})

        test = is_test_image(index, seed, test_fraction)
        rng = random.Random(f"records-{scene.image_id}")
        if not test:
            stage1.append(
                _record(
                    f"{scene.image_id}-cap", file_name, [(rng.choice(CAPTION_INSTRUCTIONS), full_caption(scene))], rng
                )
            )
            instruct.append({**_record(f"{scene.image_id}-conv", file_name, conversation(scene), rng), "type": "conv"})
            instruct.append(
                {
                    **_record(
                        f"{scene.image_id}-detail",
                        file_name,
                        [(rng.choice(DETAIL_INSTRUCTIONS), detailed_description(scene))],
                        rng,
                    ),
                    "type": "detail",
                }
            )
            instruct.append(
                {**_record(f"{scene.image_id}-complex", file_name, [complex_reasoning(scene)], rng), "type": "complex"}
            )
        scene_questions = questions(scene, max_objects)
        if not test:
            mcq_context.append(context_question(scene_questions, f"{scene.image_id}-ctx", rng))
        for number, question in enumerate(scene_questions):
            prompt = format_cqm(question["question"], "", question["choices"], has_image=True)
            letter = LETTERS[question["answer"]]
            record = {
                "id": f"{scene.image_id}-q{number}",
                "image": file_name,
                "conversations": [
                    {
                        "from": "human",
                        # Training questions carry MCQ_PROMPT, which the evaluation runner appends to the test
                        # questions at inference (so those stay bare here).
                        "value": prompt if test else prompt + MCQ_PROMPT,
                    },
                    # What the image shows, then the letter ("The circle is red. The answer is B."): the letter is
                    # read off an answer the model has just written instead of being mapped from the image in one
                    # step, which a 135M LM does not learn from a few hundred questions (bench/RESULTS.md).
                    {"from": "gpt", "value": format_answer("LEA", letter, "", question["solution"])},
                ],
                "kind": question["kind"],
                "answer": letter,
                "num_choices": len(question["choices"]),
            }
            (mcq_test if test else mcq_train).append(record)

    instances_captions = {"images": instances["images"], "annotations": caption_annotations}
    (out / "annotations" / "instances.json").write_text(json.dumps(instances))
    (out / "annotations" / "captions.json").write_text(json.dumps(instances_captions))
    # The symbolic context in the layout of LLaVA-Bench's caps_boxes file, for the instruction-data engine.
    (out / "annotations" / "caps_boxes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in caps_boxes))
    files = {
        "stage1.json": stage1,
        "instruct.json": instruct,
        "mcq_train.json": mcq_train,
        "mcq_test.json": mcq_test,
        "mcq_context.json": mcq_context,
    }
    for name, records in files.items():
        (out / name).write_text(json.dumps(records, ensure_ascii=False))
    (out / "README.md").write_text(
        f"# shapes world (seed {seed}, {num_images} images of {image_size} px)\n\n"
        "Generated by `llava-hf data shapes`. Synthetic images and labels; no third-party content.\n"
    )
    return {name: len(records) for name, records in files.items()} | {"images": num_images}


def context_question(scene_questions: list[dict[str, Any]], record_id: str, rng: random.Random) -> dict[str, Any]:
    """One of the scene's questions as a text-only record (ScienceQA's text-context kind): the solution is the
    context ("Context: The circle is red."), the options are shuffled again, the answer is "<solution> The answer
    is X.", as for the image questions.

    What it teaches is the last step of every answer: naming the letter of the option the solution states. A 135M LM
    learns that copy from the image questions alone only now and then within a few hundred steps (the letter then
    disagrees with the written solution in over half of the answers); with a quarter of the rows stating the solution
    in the text, the 150-step run measured gave the letter of its written answer in 99% of answers (bench/RESULTS.md).
    """
    question = rng.choice(scene_questions)
    choices = list(question["choices"])
    truth = choices[question["answer"]]
    rng.shuffle(choices)
    letter = LETTERS[choices.index(truth)]
    prompt = format_cqm(question["question"], question["solution"], choices, has_image=False) + MCQ_PROMPT
    return {
        "id": record_id,
        "conversations": [
            {"from": "human", "value": prompt},
            {"from": "gpt", "value": format_answer("LEA", letter, "", question["solution"])},
        ],
        "kind": question["kind"],
        "answer": letter,
        "num_choices": len(choices),
    }


def _record(record_id: str, file_name: str, turns: list[tuple[str, str]], rng: random.Random) -> dict[str, Any]:
    """A LLaVA record; `<image>` goes before or after the first question at random (seeded), as in LLaVA's data."""
    conversations = []
    for number, (question, answer) in enumerate(turns):
        if number == 0:
            question = f"<image>\n{question}" if rng.random() < 0.5 else f"{question}\n<image>"
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"id": record_id, "image": file_name, "conversations": conversations}
