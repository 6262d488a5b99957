import struct

import numpy as np
import pytest
from PIL import Image

from inat_classifier.data.images import ImageError, load_many, load_resized, open_rgb


def test_grayscale_palette_cmyk_and_alpha_become_rgb(image_factory, tmp_path):
    for name, mode, fmt in [("g.jpg", "L", None), ("p.png", "P", None), ("c.jpg", "CMYK", "JPEG"), ("a.png", "RGBA", None)]:
        image = open_rgb(image_factory(name, mode=mode, fmt=fmt))
        assert image.mode == "RGB"


def test_alpha_is_composited_on_white_not_black(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert np.asarray(open_rgb(path)).min() == 255


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(path, exif=exif)
    assert open_rgb(path).size == (20, 40)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 20])
def test_corrupt_files_raise_one_line_image_errors(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="bad.jpg: not a readable image") as caught:
        open_rgb(path)
    assert "\n" not in str(caught.value)


def test_truncated_jpeg_is_rejected(image_factory):
    path = image_factory("t.jpg", size=(200, 200))
    path.write_bytes(path.read_bytes()[:-400])
    with pytest.raises(ImageError, match="t.jpg"):
        open_rgb(path)


def test_pixel_cap_stops_decompression_bombs_before_decoding(image_factory):
    path = image_factory("big.png", size=(300, 300))
    with pytest.raises(ImageError, match="exceeds the 10000-pixel cap"):
        open_rgb(path, max_pixels=10_000)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        open_rgb(tmp_path / "nope.jpg")


def test_load_resized_is_square_uint8(image_factory):
    pixels = load_resized(image_factory("r.jpg", size=(90, 40)), 32)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8


def test_load_many_skips_and_reports_bad_files(image_factory, tmp_path):
    good = [image_factory(f"{i}.jpg", seed=i) for i in range(3)]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"garbage")
    pixels, kept, problems = load_many([good[0], bad, good[1], good[2]], 16)
    assert kept == [0, 2, 3]
    assert pixels.shape == (3, 16, 16, 3)
    assert len(problems) == 1 and "broken.jpg" in problems[0]
    np.testing.assert_array_equal(pixels[0], load_resized(good[0], 16))


def dds_with_unknown_pixel_format(path):
    """A DDS header Pillow's DDS plugin answers with NotImplementedError."""
    header = struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + b"\0" * 44 + struct.pack("<2I", 32, 0x4) + b"ABCD"
    path.write_bytes(b"DDS " + header + b"\0" * 20 + struct.pack("<5I", 0x1000, 0, 0, 0, 0) + b"\0" * 64)
    return path


def test_odd_formats_are_never_decoded_and_skipped_not_fatal(tmp_path, image_factory, monkeypatch):
    from PIL import EpsImagePlugin

    ghostscript = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: ghostscript.append(args) or 1 / 0)
    eps = tmp_path / "eps.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    odd = [dds_with_unknown_pixel_format(tmp_path / "x.dds"), eps]
    for path in odd:
        with pytest.raises(ImageError, match="not a readable image"):
            open_rgb(path)
    good = image_factory("good.jpg")
    pixels, kept, problems = load_many([odd[0], good, odd[1]], 16)
    assert kept == [1] and len(problems) == 2
    assert ghostscript == []  # EPS bytes named .jpg are not handed to Ghostscript


def test_any_decoder_exception_is_a_skip(image_factory, monkeypatch):
    from PIL import JpegImagePlugin

    def broken(self, *args):
        raise AttributeError("'NoneType' object has no attribute 'read'")

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", broken)
    path = image_factory("spider.jpg")
    with pytest.raises(ImageError, match="spider.jpg: not a readable image \\(.*NoneType"):
        open_rgb(path)
    assert load_many([path], 16)[1] == []


@pytest.mark.parametrize(
    "pixels, expected",
    [
        (np.full((4, 4), 30000, np.uint16), 117),  # I;16: 30000 / 65535 of white
        (np.full((4, 4), 0.5, np.float32), 128),  # F in 0..1
        (np.full((4, 4), 1000, np.int32), 4),  # I above 255: a 16-bit range
    ],
)
def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path, pixels, expected):
    path = tmp_path / "deep.tiff"
    Image.fromarray(pixels).save(path)
    rgb = np.asarray(open_rgb(path))
    assert rgb.shape == (4, 4, 3) and (rgb == expected).all(), rgb[0, 0]
