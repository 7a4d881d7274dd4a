"""Odd image files: converted where safe, otherwise a clear error naming the record."""

import numpy as np
import pytest
from PIL import Image

from llava_hf.data.images import ImageError, image_problem, load_image


def _save(tmp_path, image, name):
    path = tmp_path / name
    image.save(path)
    return path


def test_grayscale_is_converted(tmp_path):
    path = _save(tmp_path, Image.new("L", (8, 8), 77), "gray.png")
    image = load_image(path)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (77, 77, 77)
    assert image_problem(path)[0] == "non-RGB image (converted)"


def test_rgba_is_composited_over_white(tmp_path):
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[..., 0] = 255
    pixels[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    image = load_image(_save(tmp_path, Image.fromarray(pixels, "RGBA"), "rgba.png"))
    assert image.getpixel((0, 0)) == (255, 0, 0) and image.getpixel((0, 3)) == (255, 255, 255)


def test_cmyk_is_converted(tmp_path):
    path = _save(tmp_path, Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "cmyk.jpg")
    red, green, blue = load_image(path).getpixel((4, 4))
    assert red > 200 and green < 60 and blue < 60


def test_16_bit_is_rescaled(tmp_path):
    array = np.full((6, 6), 65535, dtype=np.uint16)
    array[0, 0] = 0
    path = _save(tmp_path, Image.fromarray(array), "deep.png")
    image = load_image(path)
    assert image.getpixel((1, 1)) == (255, 255, 255) and image.getpixel((0, 0)) == (0, 0, 0)


def test_missing_file_names_the_record(tmp_path):
    with pytest.raises(ImageError, match=r"sample 'x' image 0: image file not found"):
        load_image(tmp_path / "nope.jpg", "sample 'x' image 0")


def test_corrupt_file_names_the_record(tmp_path):
    path = tmp_path / "junk.jpg"
    path.write_bytes(b"this is not an image")
    with pytest.raises(ImageError, match=r"rec 7: cannot decode"):
        load_image(path, "rec 7")
    assert image_problem(path)[0] == "corrupt image"


def test_truncated_file_fails_instead_of_loading_grey(tmp_path):
    rng = np.random.default_rng(0)
    path = _save(tmp_path, Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")), "full.jpg")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(truncated, "rec 9")
    assert image_problem(truncated)[0] == "corrupt image"


def test_decompression_bomb_is_refused(tmp_path):
    path = _save(tmp_path, Image.new("RGB", (300, 300)), "big.png")
    with pytest.raises(ImageError, match="decompression-bomb guard"):
        load_image(path, "rec 1", max_pixels=50_000)
    assert image_problem(path, max_pixels=50_000)[0] == "huge image"


def test_float_images_are_refused(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.ones((4, 4), dtype=np.float32)).save(path)
    with pytest.raises(ImageError, match="mode F"):
        load_image(path, "rec 2")
