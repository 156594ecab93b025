"""Photos as users have them: every mode, EXIF rotation, broken files, sizes, tensors, masks, metadata."""

import io
import math
import random
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms

from pipeline import files
from pipeline.errors import ImageError
from pipeline.images import (
    bounding_box, check_editable, from_tensor, load_image, load_mask, paste_result, png_with_metadata,
    read_png_metadata, region_at_photo_size,
    save_png, to_tensor, working_size,
)
from pipeline.files import write_atomically


def saved(tmp_path, image, name, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


def pixel(image, xy=(0, 0)):
    return tuple(image.getpixel(xy))


# ---------------------------------------------------------------------------------------------------
# Modes


def test_transparent_pixels_become_white_not_black(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.putpixel((1, 0), (255, 0, 0, 128))  # half-transparent red over white is pink
    out = load_image(saved(tmp_path, rgba, "a.png"))
    assert out.mode == "RGB" and out.size == (8, 8)
    assert pixel(out, (4, 4)) == (255, 255, 255)
    assert pixel(out, (0, 0)) == (0, 0, 255)
    r, g, b = pixel(out, (1, 0))
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1


@pytest.mark.parametrize("mode, value, expected", [
    ("L", 128, (128, 128, 128)),
    ("1", 1, (255, 255, 255)),
    ("1", 0, (0, 0, 0)),
    ("LA", (100, 255), (100, 100, 100)),
    ("LA", (0, 0), (255, 255, 255)),  # fully transparent black: white, not black
])
def test_grey_modes(tmp_path, mode, value, expected):
    out = load_image(saved(tmp_path, Image.new(mode, (4, 4), value), "x.png"))
    assert out.mode == "RGB" and out.size == (4, 4) and pixel(out) == expected


def test_palette_with_and_without_transparency(tmp_path):
    image = Image.new("P", (4, 2), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    image.putpixel((1, 0), 1)
    out = load_image(saved(tmp_path, image, "p.png"))
    assert pixel(out, (0, 0)) == (255, 0, 0) and pixel(out, (1, 0)) == (0, 0, 255)
    see_through = load_image(saved(tmp_path, image, "t.png", transparency=0))
    assert pixel(see_through, (0, 0)) == (255, 255, 255) and pixel(see_through, (1, 0)) == (0, 0, 255)
    gif = load_image(saved(tmp_path, image, "t.gif", transparency=0))
    assert pixel(gif, (0, 0)) == (255, 255, 255) and pixel(gif, (1, 0)) == (0, 0, 255)


@pytest.mark.parametrize("cmyk, rgb", [((0, 255, 255, 0), (255, 0, 0)), ((0, 0, 0, 255), (0, 0, 0)),
                                       ((0, 0, 0, 0), (255, 255, 255))])
def test_cmyk(tmp_path, cmyk, rgb):
    tiff = load_image(saved(tmp_path, Image.new("CMYK", (8, 8), cmyk), "c.tif"))
    assert pixel(tiff) == rgb
    jpeg = load_image(saved(tmp_path, Image.new("CMYK", (8, 8), cmyk), "c.jpg", quality=100))
    assert jpeg.mode == "RGB" and all(abs(a - b) <= 3 for a, b in zip(pixel(jpeg), rgb))


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    out = load_image(saved(tmp_path, image, "deep.png"))
    assert [pixel(out, (x, 0)) for x in range(4)] == [(0,) * 3, (1,) * 3, (128,) * 3, (255,) * 3]


def test_thirty_two_bit_integer_is_read_as_sixteen_bit_range(tmp_path):
    image = Image.fromarray(np.array([[0, 514, 65535, 70000]], dtype=np.int32))
    assert image.mode == "I"
    out = load_image(saved(tmp_path, image, "deep.tif"))
    assert [pixel(out, (x, 0))[0] for x in range(4)] == [0, 2, 255, 255]


@pytest.mark.parametrize("values, expected", [
    ([0.0, 0.5, 1.0], [0, 128, 255]),           # normalised data
    ([0.0, 100.0, 255.0], [0, 100, 255]),       # 8-bit data stored as float
    ([-1.0, 0.0, 1000.0], [0, 0, 255]),         # anything else is stretched
])
def test_float_images(tmp_path, values, expected):
    image = Image.fromarray(np.array([values], dtype=np.float32))
    assert image.mode == "F"
    out = load_image(saved(tmp_path, image, "f.tif"))
    got = [pixel(out, (x, 0))[0] for x in range(3)]
    assert got[0] == expected[0] and got[2] == expected[2] and abs(got[1] - expected[1]) <= 1


def test_embedded_srgb_profile_keeps_colours(tmp_path):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = load_image(saved(tmp_path, Image.new("RGB", (4, 4), (10, 200, 90)), "icc.png", icc_profile=srgb))
    assert all(abs(a - b) <= 1 for a, b in zip(pixel(out), (10, 200, 90)))
    assert "icc_profile" not in out.info


def _striped(width=40, height=20):
    """White image with a red band on its left quarter and a blue dot in the top-right corner."""
    image = Image.new("RGB", (width, height), "white")
    image.paste((255, 0, 0), (0, 0, width // 4, height))
    image.paste((0, 0, 255), (width - 6, 0, width, 6))
    return image


def _is(rgb, colour):
    targets = {"red": (255, 0, 0), "blue": (0, 0, 255), "white": (255, 255, 255)}
    return all(abs(a - b) < 60 for a, b in zip(rgb, targets[colour]))


@pytest.mark.parametrize("orientation, size, red_at, blue_at", [
    (1, (40, 20), (2, 10), (37, 2)),    # as stored
    (2, (40, 20), (37, 10), (2, 2)),    # mirrored left-right
    (3, (40, 20), (37, 10), (2, 17)),   # upside down
    (6, (20, 40), (10, 2), (17, 37)),   # shown after turning 90 degrees clockwise
    (8, (20, 40), (10, 37), (2, 2)),    # shown after turning 90 degrees anticlockwise
])
def test_exif_orientation_is_applied(tmp_path, orientation, size, red_at, blue_at):
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = load_image(saved(tmp_path, _striped(), "r.jpg", exif=exif, quality=95))
    assert out.size == size
    assert _is(pixel(out, red_at), "red") and _is(pixel(out, blue_at), "blue")
    assert "exif" not in out.info  # upright by definition: nothing left to rotate it twice


# ---------------------------------------------------------------------------------------------------
# Broken files


def _png_header_only(width, height):
    """A PNG that claims a size but has no pixel data: cheap to make, costly to decode if trusted."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _encoded(fmt, **kw):
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, format=fmt, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"a shopping list, not a photo\n", "not an image"),
    (_encoded("PNG")[:700], "damaged or incomplete"),
    (_encoded("JPEG")[:600], "damaged or incomplete"),
    (_png_header_only(64, 64), "damaged or incomplete"),
])
def test_broken_files_are_one_clear_error(tmp_path, content, reason):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageError) as error:
        load_image(path)
    message = str(error.value)
    assert str(path) in message and reason in message and "\n" not in message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="nothere.png.*does not exist"):
        load_image(tmp_path / "nothere.png")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header_only(20000, 20000))  # past PIL's own hard limit
    with pytest.raises(ImageError, match="huge.png.*megapixels"):
        load_image(huge)
    big = tmp_path / "big.png"
    big.write_bytes(_png_header_only(10000, 10000))  # past ours, below PIL's hard limit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match="big.png.*megapixels"):
            load_image(big)
    small = saved(tmp_path, Image.new("RGB", (100, 100)), "small.png")
    with pytest.raises(ImageError, match="megapixels"):
        load_image(small, max_pixels=5000)


# ---------------------------------------------------------------------------------------------------
# Sizes


def _sizes():
    rng = random.Random(7)
    fixed = [(640, 480), (480, 640), (1000, 700), (64, 64), (3000, 500), (100, 4000), (513, 512), (50, 50),
             (1, 1), (1, 10000), (10000, 1), (4032, 3024), (1920, 1080), (333, 1000)]
    return fixed + [(rng.randint(1, 9000), rng.randint(1, 9000)) for _ in range(300)]


@pytest.mark.parametrize("max_side", [512, 768, 64])
def test_working_size_is_bounded_multiples_of_64_nearest_the_aspect(max_side):
    for w, h in _sizes():
        ww, hh = working_size(w, h, max_side=max_side)
        assert ww % 64 == 0 and hh % 64 == 0 and min(ww, hh) >= 64, (w, h)
        assert max(ww, hh) == max_side, (w, h)
        assert (ww >= hh) if w >= h else (ww <= hh), (w, h)  # orientation kept
        # No other multiple of 64 for the short side gets closer to the true aspect ratio.
        exact = max_side * min(w, h) / max(w, h)
        error = abs(math.log(min(ww, hh) / exact))
        best = min(abs(math.log(s / exact)) for s in range(64, max_side + 1, 64))
        assert error <= best + 1e-12, (w, h)


def test_working_size_examples_and_invalid_arguments():
    assert working_size(1000, 700) == (512, 384)
    assert working_size(700, 1000) == (384, 512)
    assert working_size(640, 480) == (512, 384)
    assert working_size(200, 200) == (512, 512)  # small photos are scaled up to where SD 1.x works
    for bad in [dict(max_side=500), dict(max_side=0), dict(max_side=32), dict(multiple=0)]:
        with pytest.raises(ValueError):
            working_size(100, 100, **bad)
    for w, h in [(0, 10), (10, -1), (10.5, 10), (True, 10)]:
        with pytest.raises(ValueError):
            working_size(w, h)


def _noise(size, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("photo_size", [(640, 480), (1000, 700), (48, 40)])
def test_paste_keeps_the_photo_beyond_the_feather_and_the_result_inside(photo_size):
    photo, result = _noise(photo_size, 1), _noise((512, 384), 2)
    width, height = photo_size
    region = np.zeros((height, width), bool)
    region[height // 3:2 * height // 3, width // 3:2 * width // 3] = True
    out = paste_result(photo, result, None, region, feather=4)
    assert out.size == photo.size and out.mode == "RGB"
    got, kept = np.asarray(out), np.asarray(photo)
    edited = np.asarray(result.resize(photo.size, Image.Resampling.LANCZOS))
    reach = torch.from_numpy(region.astype(np.float32))[None, None]
    reach = F.max_pool2d(reach, 9, stride=1, padding=4)[0, 0].numpy() > 0  # the region grown by the feather
    assert np.array_equal(got[~reach], kept[~reach])
    assert np.array_equal(got[region], edited[region])
    assert not np.array_equal(got[reach & ~region], kept[reach & ~region])  # the ramp takes some of the result


@pytest.mark.parametrize("feather", [0, 1, 4, 9])
def test_paste_ramp_is_linear_over_the_feather_and_nothing_beyond(feather):
    photo, result = Image.new("RGB", (64, 8), (0, 0, 0)), Image.new("RGB", (64, 8), (250, 250, 250))
    region = np.zeros((8, 64), bool)
    region[:, :20] = True
    row = np.asarray(paste_result(photo, result, None, region, feather))[4, :, 0].astype(int)
    assert (row[:20] == 250).all() and (row[20 + feather:] == 0).all()
    expected = [round(round((1 - d / (feather + 1)) * 255) / 255 * 250) for d in range(1, feather + 1)]
    assert np.abs(row[20:20 + feather] - expected).max(initial=0) <= 1


def test_paste_of_a_crop_leaves_everything_outside_it_byte_for_byte():
    photo, result = _noise((300, 200), 5), _noise((128, 128), 6)
    box = (100, 50, 228, 178)
    out = np.asarray(paste_result(photo, result, box, None, feather=3))
    inside = np.zeros((200, 300), bool)
    inside[50:178, 100:228] = True
    assert np.array_equal(out[~inside], np.asarray(photo)[~inside])
    core = (slice(53, 175), slice(103, 225))  # more than the feather inside the box's edges: the result itself
    assert np.array_equal(out[core], np.asarray(result)[3:125, 3:125])
    whole = paste_result(photo, result, (0, 0, 300, 200), None, feather=3)  # a box the size of the photo
    assert whole.tobytes() == result.resize((300, 200), Image.Resampling.LANCZOS).tobytes()


def test_region_at_photo_size_places_latent_cells_on_their_box():
    region = torch.zeros(1, 1, 4, 4)
    region[..., 1:3, 1:3] = 1.0
    placed = region_at_photo_size(region, (10, 20, 50, 60), (80, 100))
    assert placed.shape == (100, 80) and placed[40, 30] and not placed[:20].any() and not placed[:, :10].any()
    assert bounding_box(placed) == (20, 30, 40, 50)  # the middle half of the 40-px box, edges kept by ">= 0.5"
    with pytest.raises(ValueError):
        region_at_photo_size(torch.ones(4, 4), (0, 0, 8, 8), (8, 8))


def test_paste_without_a_region_is_the_upsampled_result():
    photo, result = _noise((640, 480), 3), _noise((512, 384), 4)
    out = paste_result(photo, result, None, None)
    assert out.tobytes() == result.resize((640, 480), Image.Resampling.LANCZOS).tobytes()
    assert paste_result(result, result, None, None).tobytes() == result.tobytes()
    with pytest.raises(ValueError):
        paste_result(photo, result, None, np.ones((384, 512), bool))


# ---------------------------------------------------------------------------------------------------
# Tensors


def test_tensor_round_trip_is_exact_at_the_same_size():
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    t = to_tensor(image, (64, 48))
    assert t.shape == (1, 3, 48, 64) and t.dtype == torch.float32 and t.is_contiguous()
    assert t.min() >= -1 and t.max() <= 1
    assert np.array_equal(np.asarray(from_tensor(t)), pixels)
    assert np.array_equal(np.asarray(from_tensor(t[0])), pixels)


def test_tensor_values_resizing_and_clamping():
    t = to_tensor(Image.new("RGB", (10, 10), (255, 0, 255)), (64, 32))
    assert t.shape == (1, 3, 32, 64)
    assert torch.allclose(t[0, :, 5, 5], torch.tensor([1.0, -1.0, 1.0]), atol=1e-3)
    wild = torch.tensor([5.0, -7.0, float("nan")]).view(1, 3, 1, 1)
    assert pixel(from_tensor(wild)) == (255, 0, 128)
    with pytest.raises(ValueError):
        from_tensor(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError):
        from_tensor(torch.zeros(1, 4, 4, 4))


# ---------------------------------------------------------------------------------------------------
# Masks


def test_mask_from_brightness(tmp_path):
    mask = Image.new("L", (100, 100), 0)
    mask.paste(255, (0, 0, 50, 100))
    m = load_mask(saved(tmp_path, mask, "m.png"), (8, 4))
    assert m.shape == (1, 1, 4, 8) and m.dtype == torch.float32
    assert set(m.unique().tolist()) == {0.0, 1.0}
    assert m[..., :4].all() and not m[..., 4:].any()


def test_mask_from_alpha_when_painted_on_a_transparent_layer(tmp_path):
    strokes = Image.new("RGBA", (80, 80), (0, 0, 0, 0))
    strokes.paste((200, 30, 30, 255), (40, 0, 80, 80))  # red paint, not white: alpha decides
    m = load_mask(saved(tmp_path, strokes, "a.png"), (8, 8))
    assert not m[..., :4].any() and m[..., 4:].all()
    opaque = Image.new("RGBA", (80, 80), (0, 0, 0, 255))
    opaque.paste((255, 255, 255, 255), (0, 0, 40, 80))  # fully opaque: brightness decides
    m = load_mask(saved(tmp_path, opaque, "b.png"), (8, 8))
    assert m[..., :4].all() and not m[..., 4:].any()


def test_bad_mask_files(tmp_path):
    (tmp_path / "m.png").write_bytes(b"nope")
    with pytest.raises(ImageError, match="m.png"):
        load_mask(tmp_path / "m.png", (8, 8))
    with pytest.raises(ImageError, match="gone.png"):
        load_mask(tmp_path / "gone.png", (8, 8))


# ---------------------------------------------------------------------------------------------------
# PNG metadata and durable writes


def test_png_metadata_round_trip(tmp_path):
    meta = {"target_prompt": "一座中式的房子", "seed": 7, "params": {"steps": 50, "blend_words": ["cat"]},
            "mask": None, "guidance": 7.5}
    path = tmp_path / "r.png"
    save_png(Image.new("RGB", (8, 8), "red"), path, meta)
    assert read_png_metadata(path) == meta
    with Image.open(path) as img:
        assert pixel(img.convert("RGB")) == (255, 0, 0)
        lines = img.text["parameters"].splitlines()
    assert "target_prompt: 一座中式的房子" in lines and 'params: {"steps": 50, "blend_words": ["cat"]}' in lines
    save_png(Image.new("RGB", (8, 8)), path, {"seed": 8})  # replacing works too
    assert read_png_metadata(path) == {"seed": 8}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.png"]  # no temporary left behind


def test_png_metadata_edge_cases(tmp_path):
    plain = saved(tmp_path, Image.new("RGB", (4, 4)), "plain.png")
    assert read_png_metadata(plain) == {}
    with pytest.raises(ImageError, match="not a PNG"):
        read_png_metadata(saved(tmp_path, Image.new("RGB", (4, 4)), "photo.jpg"))
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("retake", "{broken")
    with pytest.raises(ImageError, match="damaged"):
        read_png_metadata(saved(tmp_path, Image.new("RGB", (4, 4)), "bad.png", pnginfo=info))
    with pytest.raises(ValueError):
        png_with_metadata(Image.new("RGB", (4, 4)), {"x": float("nan")})


@pytest.mark.parametrize("document", ['{"steps": ' + "9" * 5000 + "}",
                                      '{"params": ' + "[" * 100000 + "]" * 100000 + "}"])
def test_png_metadata_too_long_a_number_or_too_deep_is_damage(tmp_path, document):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("retake", document)
    with pytest.raises(ImageError, match="The Retake parameters stored in .*tampered.png are damaged"):
        read_png_metadata(saved(tmp_path, Image.new("RGB", (4, 4)), "tampered.png", pnginfo=info))


def test_png_metadata_of_a_bomb_is_refused_with_the_sentence_of_loading_it(tmp_path):
    for side in (50000, 10000):  # past PIL's hard limit; past ours only
        bomb = tmp_path / f"bomb{side}.png"
        bomb.write_bytes(_png_header_only(side, side))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with pytest.raises(ImageError) as loading:
                load_image(bomb)
            with pytest.raises(ImageError) as reading:
                read_png_metadata(bomb)
        assert str(reading.value) == str(loading.value) and "megapixels" in str(loading.value)


@pytest.mark.parametrize("size, max_side, words", [
    ((1, 1_100_000), 64, "smaller than one latent cell"),
    ((7, 7), 512, "smaller than one latent cell"),
    ((8, 600), 512, "about 75:1"),
    ((100, 6600), 512, "up to 64:1"),
    ((100, 900), 64, "up to 8:1"),
])
def test_photos_the_model_cannot_edit_are_refused_in_one_sentence(size, max_side, words):
    with pytest.raises(ImageError) as error:
        check_editable(*size, max_side=max_side, cell=8)
    message = str(error.value)
    assert f"{size[0]}x{size[1]}" in message and words in message and "\n" not in message, message


@pytest.mark.parametrize("size, max_side", [((8, 8), 512), ((100, 6400), 512), ((100, 800), 64), ((640, 480), 64),
                                            ((8, 512), 512), ((1, 1), 8)])
def test_photos_within_one_latent_cell_of_the_working_size_are_accepted(size, max_side):
    check_editable(*size, max_side=max_side, cell=1 if size == (1, 1) else 8)


def test_write_atomically_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    write_atomically(target, b"old")

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", broken)
    with pytest.raises(OSError):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
