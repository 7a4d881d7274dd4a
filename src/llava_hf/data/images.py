"""Image loading with explicit, tested handling of every odd file a large crawl contains.

`load_image` returns an RGB `PIL.Image` or raises `ImageError` naming the record and the problem:

| input | result |
|---|---|
| RGB | as is |
| grayscale (L, 1, P without alpha) | converted to RGB (safe: no information invented) |
| RGBA / LA / P with transparency | composited over white, then RGB (what a viewer shows) |
| CMYK, YCbCr | converted to RGB by PIL's colour conversion |
| 16-bit (I;16, I) | rescaled to 8 bits over the 16-bit range, then RGB |
| 32-bit float (F) | error: no safe fixed scale |
| missing file | error |
| corrupt or truncated file | error (decoding is forced, so a truncated JPEG never loads half-grey) |
| more than `max_pixels` pixels | error (decompression-bomb guard) |
"""

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Large enough for any photo in the LLaVA sets (the biggest COCO / LAION images are ~ 20 MP).
DEFAULT_MAX_PIXELS = 64_000_000


class ImageError(ValueError):
    """An image that cannot be used; names the record and the problem."""


def _to_rgb(image: Image.Image, where: str) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode == "F":
        raise ImageError(f"{where}: 32-bit float image (mode F) has no safe 8-bit scale; convert it to RGB first.")
    # L, 1, P, CMYK, YCbCr, LAB, HSV: PIL's conversions are exact or standard.
    return image.convert("RGB")


def load_image(
    source: str | Path | dict | Image.Image, where: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open, fully decode and convert one image to RGB; `source` is a path, a datasets Image dict or a PIL image."""
    if isinstance(source, Image.Image):
        return _to_rgb(source, where)
    if isinstance(source, dict):
        if source.get("bytes") is not None:
            import io

            try:
                embedded = Image.open(io.BytesIO(source["bytes"]))
            except (OSError, SyntaxError, ValueError) as error:
                raise ImageError(f"{where}: cannot decode the embedded image bytes: {error}") from error
            return load_image(embedded, where, max_pixels)
        source = source.get("path")
        if source is None:
            raise ImageError(f"{where}: the image entry has neither bytes nor a path.")
    if not isinstance(source, (str, Path)):
        raise ImageError(f"{where}: expected an image path, a PIL image or a {{bytes, path}} entry, got {source!r}.")
    path = Path(source)
    if not path.is_file():
        raise ImageError(f"{where}: image file not found: {path}")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{where}: {path} is {width}x{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,} (decompression-bomb guard); resize it or raise max_pixels."
                )
            # Force decoding: a truncated file fails here (unless someone set ImageFile.LOAD_TRUNCATED_IMAGES).
            image.load()
            return _to_rgb(image, where)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"{where}: cannot decode {path}: {error}") from error


def blank_like(image: Image.Image) -> Image.Image:
    """A grey RGB image of `image`'s size: the blank that stands in for an image in blind baselines (`llava-hf eval`)
    and in the grounding meter (`llava_hf.grounding`)."""
    return Image.new("RGB", image.size, (128, 128, 128))


def image_problem(source: Any, where: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, str] | None:
    """`(kind, message)` for an unusable image, `(kind, note)` for one that loads only after conversion, else None."""
    path = Path(source["path"] if isinstance(source, dict) else source)
    if not path.is_file():
        return "missing image", f"{where}: image file not found: {path}"
    try:
        with Image.open(path) as image:
            mode, size = image.mode, image.size
    except Exception as error:  # noqa: BLE001 - every failure to open is a corrupt image here
        return "corrupt image", f"{where}: cannot open {path}: {error}"
    if size[0] * size[1] > max_pixels:
        return "huge image", f"{where}: {path} is {size[0]}x{size[1]}, over {max_pixels:,} pixels"
    try:
        load_image(path, where, max_pixels)
    except ImageError as error:
        return "corrupt image", str(error)
    if mode != "RGB":
        return "non-RGB image (converted)", f"{where}: {path} is mode {mode}, converted to RGB"
    return None
