"""Example images for the demo: scenes of the synthetic shapes world, rendered on demand (no binary files to ship)."""

from pathlib import Path

# (world seed, scene index, question): scenes with several shapes, questions the shapes world trains on.
EXAMPLES = (
    (7, 3, "What shapes are in this image?"),
    (7, 11, "How many shapes are there, and what colours are they?"),
    (7, 19, "Describe this image in detail."),
)


def write_example_images(folder: str | Path) -> list[dict[str, str]]:
    """Render the example scenes as PNGs into `folder`; returns `[{"text", "image"}]` with absolute image paths."""
    from ..data.shapes import generate_scene, render

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for seed, index, question in EXAMPLES:
        path = folder / f"shapes-{seed}-{index}.png"
        if not path.is_file():
            render(generate_scene(seed, index, image_size=336, max_objects=4)).save(path)
        examples.append({"text": question, "image": str(path.resolve())})
    return examples
