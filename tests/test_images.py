"""Photos as users have them: every mode, EXIF rotation, broken files, sizes and metadata."""

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ImageError
from pipeline.images import (
    load_image, load_mask, output_size, read_png_metadata, restore_aspect, save_png, to_tensor, working_size,
)


def saved(tmp_path, image, name, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


def test_transparent_pixels_become_white_not_black(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    out = load_image(saved(tmp_path, rgba, "a.png"))
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize("mode, value, expected", [
    ("L", 128, (128, 128, 128)),
    ("1", 1, (255, 255, 255)),
    ("LA", (100, 255), (100, 100, 100)),
    ("P", 3, None),
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
])
def test_modes_convert_to_rgb(tmp_path, mode, value, expected):
    image = Image.new(mode, (4, 4), value)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    out = load_image(saved(tmp_path, image, f"x.{fmt.lower()}", format=fmt))
    assert out.mode == "RGB" and out.size == (4, 4)
    if expected is not None:
        assert out.getpixel((0, 0)) == expected
    else:
        assert out.getpixel((0, 0)) == tuple(image.convert("RGB").getpixel((0, 0)))


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    image = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    out = load_image(saved(tmp_path, image, "deep.png"))
    assert out.getpixel((0, 0))[0] in (127, 128)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), "white")
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    out = load_image(saved(tmp_path, image, "r.jpg", exif=exif, quality=95))
    assert out.size == (20, 40)
    r, g, b = out.getpixel((10, 2))
    assert r > 200 and g < 60  # the left stripe is now on top


@pytest.mark.parametrize("content", [b"", b"not an image at all", None])
def test_broken_files_are_one_clear_error(tmp_path, content):
    path = tmp_path / "broken.png"
    if content is None:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), "blue").save(buffer, format="PNG")
        content = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageError, match="broken.png"):
        load_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="nothere.png"):
        load_image(tmp_path / "nothere.png")


@pytest.mark.parametrize("w, h", [(640, 480), (480, 640), (1000, 700), (64, 64), (3000, 500), (100, 4000),
                                  (513, 512), (50, 50)])
def test_working_size_is_bounded_multiples_of_64_near_the_aspect(w, h):
    ww, hh = working_size(w, h, max_side=512)
    assert ww % 64 == 0 and hh % 64 == 0 and ww >= 64 and hh >= 64
    assert max(ww, hh) <= 512
    if min(w, h) / max(w, h) >= 0.125:
        # the short side is the multiple of 64 nearest the true aspect
        long_side = max(ww, hh)
        short_true = long_side * min(w, h) / max(w, h)
        assert abs(min(ww, hh) - short_true) <= 32 + 1e-9


def test_result_is_returned_at_the_input_aspect():
    assert output_size((1000, 700), (512, 384)) == (512, 358)
    restored = restore_aspect(Image.new("RGB", (512, 384)), (1000, 700))
    assert restored.size == (512, 358)


def test_tensor_range_and_mask(tmp_path):
    t = to_tensor(Image.new("RGB", (10, 10), (255, 0, 128)), (64, 64))
    assert t.shape == (1, 3, 64, 64) and t.max() <= 1 and t.min() >= -1
    mask = Image.new("L", (100, 100), 0)
    mask.paste(255, (0, 0, 50, 100))
    m = load_mask(saved(tmp_path, mask, "m.png"), (8, 8))
    assert m.shape == (1, 1, 8, 8) and m[..., :4].all() and not m[..., 4:].any()


def test_png_metadata_round_trip(tmp_path):
    meta = {"target_prompt": "a castle", "params": {"steps": 50, "blend_words": ["cat"]}}
    save_png(Image.new("RGB", (8, 8)), tmp_path / "r.png", meta)
    assert read_png_metadata(tmp_path / "r.png") == meta
