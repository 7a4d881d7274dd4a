"""The symbolic context: what the text-only LLM sees of an image (the paper's captions + boxes).

For one image the context is its captions, one per line, then (for the types that use them) a blank line and one
`category: [x1, y1, x2, y2]` line per object, the box normalised to 0-1 and rounded to 3 decimals:

    A red bicycle leans on a fence by the river.
    ...

    bicycle: [0.287, 0.641, 0.507, 0.874]
    person: [0.0, 0.24, 0.214, 1.0]

That is the layout of LLaVA-Bench's `caps_boxes_coco2014_val_80.jsonl` and of the paper's few-shot `*_caps.txt`
files (no trailing newline). Sources:

- COCO-style annotations: an instances JSON (`images`, `annotations` with pixel `bbox` `[x, y, w, h]`,
  `categories`) plus a captions JSON (`annotations` with `image_id` and `caption`);
- caps_boxes `.jsonl` rows (`id`, `image`, `captions`, `instances: [{category, bbox}]`), boxes already normalised;
- the synthetic shapes world: its folder (it holds both of the above) or `generate_scene` directly.
"""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..utils import iter_jsonl

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ImageContext:
    """One image's captions and normalised boxes; `image_id` is the record key, `image` the path in the records."""

    image_id: str
    image: str
    captions: tuple[str, ...]
    boxes: tuple[tuple[str, Box], ...] = ()

    def render(self, with_boxes: bool = True) -> str:
        """Captions one per line, then (if `with_boxes` and there are any) a blank line and the box lines."""
        # One caption per line: a caption's own line breaks (COCO has a few) would break the layout.
        text = "\n".join(" ".join(caption.strip().splitlines()) for caption in self.captions)
        if with_boxes and self.boxes:
            text += "\n\n" + "\n".join(format_box(category, box) for category, box in self.boxes)
        return text


def format_box(category: str, box: Iterable[float]) -> str:
    """`category: [x1, y1, x2, y2]` with Python's float repr (`0.0`, `0.24`, `1.0`), as the paper printed them."""
    return f"{category}: [{', '.join(repr(float(value)) for value in box)}]"


def normalize_coco_box(bbox: list[float], width: float, height: float) -> Box:
    """COCO pixel `[x, y, w, h]` -> `(x1, y1, x2, y2)` in 0-1, 3 decimals (clipped: COCO boxes can spill by a pixel)."""
    x, y, w, h = (float(v) for v in bbox)

    def scale(value: float, size: float) -> float:
        return round(min(max(value / size, 0.0), 1.0), 3)

    return (scale(x, width), scale(y, height), scale(x + w, width), scale(y + h, height))


# -- COCO-style annotations ------------------------------------------------------------------------------------------
def load_coco(instances: str | Path, captions: str | Path | None = None, image_prefix: str = "") -> list[ImageContext]:
    """Contexts of every image in a COCO-style instances JSON, with captions from `captions` (default: the sibling
    file named like COCO's, `instances_X.json` -> `captions_X.json`, `instances.json` -> `captions.json`).

    Images keep the instances file's order; captions and boxes keep their annotation order. A category name is
    prefixed by the annotation's `attributes.color` when there is one (the shapes world's "red circle"). Images
    without captions are left out (the LLM would have nothing to go on) and logged.
    """
    import logging

    instances = Path(instances)
    captions_path = Path(captions) if captions is not None else _sibling_captions(instances)
    data = _read_json(instances)
    for field in ("images", "annotations", "categories"):
        if field not in data:
            raise ValueError(f"{instances}: not a COCO instances file (no {field!r} field).")
    caption_data = _read_json(captions_path)
    if "annotations" not in caption_data:
        raise ValueError(f"{captions_path}: not a COCO captions file (no 'annotations' field).")

    categories = {c["id"]: c["name"] for c in data["categories"]}
    captions_by_image: dict[int, list[str]] = {}
    for annotation in caption_data["annotations"]:
        captions_by_image.setdefault(annotation["image_id"], []).append(annotation["caption"])
    boxes_by_image: dict[int, list[tuple[str, list[float]]]] = {}
    for annotation in data["annotations"]:
        name = categories.get(annotation["category_id"])
        if name is None:
            raise ValueError(
                f"{instances}: annotation {annotation.get('id')} has category_id {annotation['category_id']}, "
                "which is not in 'categories'."
            )
        color = (annotation.get("attributes") or {}).get("color")
        boxes_by_image.setdefault(annotation["image_id"], []).append(
            (f"{color} {name}" if color else name, annotation["bbox"])
        )

    contexts, without_captions = [], 0
    for image in data["images"]:
        image_captions = captions_by_image.get(image["id"])
        if not image_captions:
            without_captions += 1
            continue
        width, height = image["width"], image["height"]
        boxes = tuple(
            (name, normalize_coco_box(bbox, width, height)) for name, bbox in boxes_by_image.get(image["id"], [])
        )
        file_name = image["file_name"]
        contexts.append(
            ImageContext(
                image_id=Path(file_name).stem,
                image=image_prefix + file_name,
                captions=tuple(image_captions),
                boxes=boxes,
            )
        )
    if without_captions:
        logging.getLogger(__name__).warning(
            "%s: %d image(s) have no captions in %s and are left out.", instances, without_captions, captions_path
        )
    return contexts


def _sibling_captions(instances: Path) -> Path:
    name = instances.name.replace("instances", "captions", 1)
    candidate = instances.with_name(name)
    if name == instances.name or not candidate.is_file():
        raise FileNotFoundError(
            f"{instances}: no captions file given and {candidate} does not exist; pass the COCO captions JSON "
            "with --captions."
        )
    return candidate


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}).") from error


# -- caps_boxes .jsonl -----------------------------------------------------------------------------------------------
def load_caps_boxes(path: str | Path, image_prefix: str = "") -> list[ImageContext]:
    """Contexts from a caps_boxes `.jsonl` (LLaVA-Bench's layout; the shapes world writes one too)."""
    path = Path(path)
    contexts = []
    for number, row in iter_jsonl(path):
        try:
            image = row["image"]
            contexts.append(
                ImageContext(
                    image_id=str(row.get("id", Path(image).stem)),
                    image=image_prefix + image,
                    captions=tuple(row["captions"]),
                    boxes=tuple(
                        (i["category"], tuple(round(float(v), 3) for v in i["bbox"])) for i in row.get("instances", [])
                    ),
                )
            )
        except (KeyError, TypeError) as error:
            raise ValueError(
                f"{path} line {number}: not a caps_boxes row ({type(error).__name__}: {error}); expected "
                '{"id", "image", "captions": [...], "instances": [{"category", "bbox"}]}.'
            ) from error
    return contexts


# -- the shapes world ------------------------------------------------------------------------------------------------
def shapes_contexts(seed: int, num_images: int, image_size: int = 224, max_objects: int = 4) -> Iterator[ImageContext]:
    """Contexts of the shapes world `seed` straight from the generator (no files needed)."""
    from ..data.shapes import captions, generate_scene, normalized_box

    for index in range(num_images):
        scene = generate_scene(seed, index, image_size, max_objects)
        yield ImageContext(
            image_id=scene.image_id,
            image=f"{scene.image_id}.png",
            captions=tuple(captions(scene)),
            boxes=tuple((obj.name, tuple(normalized_box(obj, scene))) for obj in scene.objects),
        )


# -- any of the above ------------------------------------------------------------------------------------------------
def load_contexts(
    annotations: str | Path | Iterable[str | Path],
    captions: str | Path | Iterable[str | Path] | None = None,
    image_prefix: str = "",
) -> list[ImageContext]:
    """Contexts from one or more sources, in order; image ids must be unique across them.

    Each of `annotations` is a caps_boxes `.jsonl`, a COCO instances `.json` (captions from the matching entry of
    `captions`, or its sibling captions file), or a folder: a shapes world (`annotations/caps_boxes.jsonl`) or any
    folder holding `caps_boxes.jsonl` or `instances.json` + `captions.json`.
    """
    paths = [Path(annotations)] if isinstance(annotations, (str, Path)) else [Path(p) for p in annotations]
    if captions is None:
        caption_paths: list[Path | None] = [None] * len(paths)
    else:
        caption_paths = [Path(captions)] if isinstance(captions, (str, Path)) else [Path(p) for p in captions]
    if len(caption_paths) != len(paths):
        raise ValueError(
            f"{len(paths)} annotation file(s) but {len(caption_paths)} captions file(s); give one --captions per "
            "COCO instances file, in the same order."
        )
    contexts: list[ImageContext] = []
    for path, caption_path in zip(paths, caption_paths):
        contexts.extend(_load_one(path, caption_path, image_prefix))
    seen: dict[str, int] = {}
    for context in contexts:
        seen[context.image_id] = seen.get(context.image_id, 0) + 1
    duplicates = [image_id for image_id, count in seen.items() if count > 1]
    if duplicates:
        raise ValueError(
            f"image ids must be unique across the annotation files (they key the output records); repeated: "
            f"{duplicates[:5]}{' ...' if len(duplicates) > 5 else ''}."
        )
    return contexts


def _load_one(path: Path, captions: Path | None, image_prefix: str) -> list[ImageContext]:
    if path.is_dir():
        for folder in (path / "annotations", path):
            if (folder / "caps_boxes.jsonl").is_file():
                return load_caps_boxes(folder / "caps_boxes.jsonl", image_prefix)
            if (folder / "instances.json").is_file():
                return load_coco(folder / "instances.json", captions, image_prefix)
        raise FileNotFoundError(
            f"{path}: a folder without caps_boxes.jsonl or instances.json (also looked in {path / 'annotations'})."
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such annotations file or folder.")
    if path.suffix == ".jsonl":
        return load_caps_boxes(path, image_prefix)
    return load_coco(path, captions, image_prefix)
