import numpy as np
import pytest
from PIL import Image

from inat_classifier.images import ImageError, load_many, load_resized, open_rgb


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
