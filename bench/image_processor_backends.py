"""Pixel difference and speed of transformers 5's two CLIP image processor backends, LLaVA-1.5 preprocessing.

    python bench/image_processor_backends.py [--batch-size 8]

`CLIPImageProcessorPil` (`backend="pil"`) reproduces the PIL pipeline of transformers 4.x's `CLIPImageProcessor`
that the original LLaVA used (tests/models/test_convert.py checks it against a hand-written one to 1e-6), so it is the
reference here. `CLIPImageProcessor` (`backend="torchvision"`) resizes with torchvision's bicubic kernel. Both run at
336 px (CLIP ViT-L/14-336) after LLaVA-1.5's pad-to-square (`pad`) or on the image as it is (`square`). Images: random
noise at 72x48 and 48x72 (upscaled, the worst case) and, when scikit-image is installed, four photos (300x451 to
512x512). Prints one JSON line: versions, the largest and mean absolute pixel difference, and the time per image of
each backend (median of `torch.utils.benchmark`, best of 3 rounds) on a batch of photo-sized images.
"""

import argparse
import json
import platform

import numpy as np
import PIL
import torch
import torch.utils.benchmark as benchmark
import torchvision
import transformers
from PIL import Image
from transformers import CLIPImageProcessor, CLIPImageProcessorPil

from llava_hf.processing_llava import expand_to_square

SIZE = {"shortest_edge": 336}
CROP = {"height": 336, "width": 336}


def images() -> dict[str, list[Image.Image]]:
    rng = np.random.default_rng(0)
    out = {
        "noise": [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(48, 72), (72, 48)]]
    }
    try:
        import skimage.data
    except ImportError:
        return out
    out["photos"] = [
        Image.fromarray(getattr(skimage.data, name)()) for name in ("chelsea", "astronaut", "coffee", "rocket")
    ]
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else platform.machine()}, {len(names) or '?'} cores"


def prepare(image: Image.Image, aspect: str, mean: list[float]) -> Image.Image:
    # The processor pads in PIL with the mean colour as ints (LLaVA-1.5's expand2square), whatever the backend.
    return expand_to_square(image, tuple(int(x * 255) for x in mean)) if aspect == "pad" else image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    pil = CLIPImageProcessorPil(size=SIZE, crop_size=CROP)
    fast = CLIPImageProcessor(size=SIZE, crop_size=CROP)
    result: dict = {
        "bench": "image_processor_backends",
        "machine": cpu_name(),
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "transformers": transformers.__version__,
            "pillow": PIL.__version__,
        },
        "pixel_difference": {},
    }
    sets = images()
    for set_name, set_images in sets.items():
        for aspect in ("pad", "square"):
            diffs = []
            for image in set_images:
                prepared = prepare(image, aspect, pil.image_mean)
                a = pil(prepared, return_tensors="pt")["pixel_values"]
                b = fast(prepared, return_tensors="pt")["pixel_values"]
                diffs.append((a - b).abs())
            result["pixel_difference"][f"{set_name}/{aspect}"] = {
                "max": round(max(d.max().item() for d in diffs), 5),
                "mean": round(float(np.mean([d.mean().item() for d in diffs])), 6),
            }

    # Speed on photo-sized inputs (COCO-like 640x480 noise when scikit-image is missing), pad mode as LLaVA-1.5.
    photos = sets.get("photos") or [
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    ]
    batch = [prepare(photos[i % len(photos)], "pad", pil.image_mean) for i in range(args.batch_size)]
    timings = {}
    for _ in range(3):  # interleaved rounds
        for name, processor in (("pil", pil), ("torchvision", fast)):
            timer = benchmark.Timer(
                stmt="processor(batch, return_tensors='pt')", globals={"processor": processor, "batch": batch}
            )
            median = timer.blocked_autorange(min_run_time=1.0).median
            timings[name] = min(timings.get(name, float("inf")), median)
    result["ms_per_image"] = {name: round(1000 * t / args.batch_size, 2) for name, t in timings.items()}
    result["time_ratio_torchvision_over_pil"] = round(timings["torchvision"] / timings["pil"], 3)
    result["batch_size"] = args.batch_size
    print(json.dumps(result))


if __name__ == "__main__":
    main()
