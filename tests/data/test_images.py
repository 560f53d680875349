"""Image reading errors and BLIP preprocessing parity with transformers."""

import numpy as np
import pytest
import torch
from PIL import Image

from vlpeft.data.images import BLIP_MEAN, BLIP_STD, ImagePreprocess, check_images_exist, load_image, preprocess
from vlpeft.errors import UserError


def _random_image(h, w, mode="RGB", seed=0):
    channels = {"RGB": 3, "RGBA": 4}[mode]
    a = np.random.default_rng(seed).integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    return Image.fromarray(a, mode=mode)


def test_load_image_decodes_to_rgb(tmp_path):
    path = tmp_path / "a.png"
    _random_image(9, 7, "RGBA").save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (7, 9)


def test_load_image_missing_file_names_it(tmp_path):
    with pytest.raises(UserError, match=r"nope\.png: image not found"):
        load_image(tmp_path / "nope.png")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_load_image_bad_file_is_a_user_error(tmp_path, damage):
    path = tmp_path / "bad.png"
    _random_image(64, 64).save(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    else:
        path.write_bytes(b"")
    with pytest.raises(UserError) as err:
        load_image(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "cannot read image" in message and "\n" not in message


def test_check_images_exist_names_first_missing_and_count(tmp_path):
    present = tmp_path / "x.png"
    _random_image(2, 2).save(present)
    paths = [present, tmp_path / "m1.png", tmp_path / "m2.png"]
    with pytest.raises(UserError, match=r"m1\.png: image not found \(2 of 3 images listed in ann\.json are missing\)"):
        check_images_exist(paths, "ann.json")
    check_images_exist([present], "ann.json")  # no error when all exist


@pytest.mark.parametrize("shape,mode", [((50, 70), "RGB"), ((32, 32), "RGB"), ((41, 23), "RGBA")])
def test_preprocess_matches_transformers_blip_processor(shape, mode):
    transformers = pytest.importorskip("transformers")
    size = 32
    image = _random_image(*shape, mode=mode, seed=shape[0])
    reference = transformers.BlipImageProcessor(size={"height": size, "width": size})(image, return_tensors="pt")
    ours = preprocess([image], ImagePreprocess(size))
    assert ours.shape == (1, 3, size, size) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference["pixel_values"], atol=1e-5, rtol=0)


def test_preprocess_no_resize_is_plain_normalisation():
    image = _random_image(16, 16)
    x = preprocess([image, image], ImagePreprocess(16))  # (2, 3, 16, 16)
    expected = (np.asarray(image, dtype=np.float32) / 255 - np.array(BLIP_MEAN, dtype=np.float32)) / np.array(
        BLIP_STD, dtype=np.float32
    )
    np.testing.assert_allclose(x[1].numpy(), expected.transpose(2, 0, 1), atol=1e-6)
    assert torch.equal(x[0], x[1])


def test_preprocess_accepts_uint8_arrays():
    image = _random_image(20, 20)
    assert torch.equal(preprocess([np.asarray(image)], ImagePreprocess(12)), preprocess([image], ImagePreprocess(12)))


def test_image_preprocess_dict_round_trip_and_validation():
    pp = ImagePreprocess(48, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), resample="bilinear")
    assert ImagePreprocess.from_dict(pp.to_dict()) == pp
    assert ImagePreprocess.from_dict({"image_size": 64}) == ImagePreprocess(64, BLIP_MEAN, BLIP_STD, "bicubic")
    with pytest.raises(UserError, match='did you mean "bicubic"'):
        ImagePreprocess(64, resample="bicubik")
    with pytest.raises(UserError, match="unknown keys"):
        ImagePreprocess.from_dict({"image_size": 64, "size": 3})


# ---------------------------------------------------------------------------------------------
# Every image mode reaches the model with its content: each case writes an image, loads it with
# load_image and compares with a reference conversion written here (numpy, from the raw values).

H, W = 6, 8
RNG = np.random.default_rng(3)
GRAY = RNG.integers(0, 256, (H, W)).astype(np.uint8)
ALPHA = RNG.integers(0, 256, (H, W)).astype(np.uint8)
RGB = RNG.integers(0, 256, (H, W, 3)).astype(np.uint8)
CMYK = RNG.integers(0, 256, (H, W, 4)).astype(np.uint8)
WIDE = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
FLOAT = RNG.random((H, W)).astype(np.float32)
PALETTE = RNG.integers(0, 256, (4, 3)).astype(np.uint8)
INDEX = RNG.integers(0, 4, (H, W)).astype(np.uint8)


def gray3(g):
    return np.repeat(np.asarray(g, dtype=np.float64)[..., None], 3, axis=2)


def on_white(colour, alpha):
    a = np.asarray(alpha, dtype=np.float64)[..., None] / 255
    return colour * a + 255 * (1 - a)


def palette_image():
    image = Image.fromarray(INDEX, "P")
    image.putpalette(PALETTE.flatten().tolist())
    image.info["transparency"] = 2
    return image


MODES = {  # mode -> (image to write, file suffix, expected RGB as floats)
    "1": (Image.fromarray(GRAY > 127).convert("1"), "png", gray3((GRAY > 127) * 255)),
    "L": (Image.fromarray(GRAY, "L"), "png", gray3(GRAY)),
    "LA": (Image.fromarray(np.stack([GRAY, ALPHA], -1), "LA"), "png", on_white(gray3(GRAY), ALPHA)),
    "P+transparency": (palette_image(), "png",
                       np.where((INDEX == 2)[..., None], 255.0, PALETTE[INDEX].astype(np.float64))),
    "RGB": (Image.fromarray(RGB, "RGB"), "png", RGB.astype(np.float64)),
    "RGBA": (Image.fromarray(np.concatenate([RGB, ALPHA[..., None]], -1), "RGBA"), "png", on_white(RGB, ALPHA)),
    "CMYK": (Image.fromarray(CMYK, "CMYK"), "tiff",
             (255 - CMYK[..., :3].astype(np.float64)) * (255 - CMYK[..., 3:].astype(np.float64)) / 255),
    "I;16": (Image.fromarray(WIDE), "png", gray3(WIDE / 257)),
    "I": (Image.fromarray(WIDE.astype(np.int32), "I"), "tiff", gray3(WIDE / 257)),
    "F": (Image.fromarray(FLOAT, "F"), "tiff", gray3(FLOAT * 255)),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_image_mode_keeps_its_content(mode, tmp_path):
    image, suffix, expected = MODES[mode]
    path = tmp_path / f"image.{suffix}"
    image.save(path)
    with Image.open(path) as check:  # the file really holds the mode under test
        assert check.mode == image.mode
    got = np.asarray(load_image(path), dtype=np.float64)
    assert got.shape == (H, W, 3)
    assert np.abs(got - expected).max() <= 1.0, f"{mode}: off by {np.abs(got - expected).max()}"
    assert got.std() > 10  # not a blank image


def test_a_16_bit_image_is_not_white(tmp_path):
    """A 16-bit PNG of a dark square on a mid-grey ground: Pillow's own conversion clips it to white."""
    values = np.full((16, 16), 30000, np.uint16)
    values[4:12, 4:12] = 5000
    Image.fromarray(values).save(tmp_path / "wide.png")
    got = np.asarray(load_image(tmp_path / "wide.png"))
    assert got[0, 0].tolist() == [117] * 3 and got[8, 8].tolist() == [19] * 3
    assert np.asarray(Image.open(tmp_path / "wide.png").convert("RGB")).min() == 255  # what vlpeft used to see


def test_a_folder_is_not_an_image(tmp_path):
    with pytest.raises(UserError, match=r": is a folder, not an image file"):
        load_image(tmp_path)


@pytest.mark.parametrize("orientation, shape", [(1, (32, 64, 3)), (6, (64, 32, 3)), (3, (32, 64, 3)), (8, (64, 32, 3))])
def test_exif_orientation_is_applied_from_a_file_and_from_embedded_bytes(tmp_path, orientation, shape):
    """A JPEG stored 64x32 with Orientation 6 (a phone photo) is 32 wide and 64 high, as every viewer
    and datasets.Image show it; the red left edge as stored is on top after turning it clockwise."""
    from vlpeft.data.files import ImageRef, decode_image

    pixels = np.zeros((32, 64, 3), np.uint8)  # (H, W, 3) as stored
    pixels[:, :8] = (255, 0, 0)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)
    from_file = np.asarray(load_image(path))
    embedded = decode_image(ImageRef(path="", data=path.read_bytes(), name="phone.jpg"))
    assert from_file.shape == shape and np.array_equal(from_file, embedded)
    red = from_file[..., 0] > 200
    where = {1: red[:, :4].all(), 6: red[:4, :].all(), 3: red[:, -4:].all(), 8: red[-4:, :].all()}[orientation]
    assert where, orientation


def test_a_huge_image_is_read_quietly_and_a_decompression_bomb_is_named(tmp_path, monkeypatch, recwarn):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's limits, scaled down: warn past 100, refuse past 200
    Image.new("RGB", (12, 12), (9, 9, 9)).save(tmp_path / "big.png")
    Image.new("RGB", (32, 32), (9, 9, 9)).save(tmp_path / "bomb.png")
    assert load_image(tmp_path / "big.png").size == (12, 12)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    with pytest.raises(UserError, match=r"bomb.png: more pixels than Pillow decodes \(.*\); a decompression bomb, "
                                        r"or an image to shrink first"):
        load_image(tmp_path / "bomb.png")


def test_a_url_is_not_an_image_file():
    with pytest.raises(UserError, match=r"^https://example.com/a.png: a URL; vlpeft reads image files only"):
        load_image("https://example.com/a.png")
