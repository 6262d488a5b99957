import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from conftest import fetch
from inat_classifier.data.manifest import COLUMNS, read_manifest
from inat_classifier.params import SampleSource, parse_params
from inat_classifier.data.sources.sample import _pattern, class_counts

SMALL = {"download": {"sample": {"train_images": 12, "test_images": 6, "min_side": 40, "max_side": 80}}}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    fetch(parse_params(SMALL), root / "raw")
    return root / "raw"


def test_manifest_has_the_contract_columns_and_real_files(raw):
    manifest = read_manifest(raw)
    assert list(manifest.columns) == COLUMNS
    assert set(manifest["source"]) == {"sample"}
    for row in manifest.itertuples():
        with Image.open(row.path) as image:
            assert image.size == (int(row.width), int(row.height))
            assert image.format == "JPEG"


def test_like_the_study_test_year_has_an_extra_class_and_counts_differ(raw):
    manifest = read_manifest(raw)
    train = manifest[manifest.split == "train"]["class"].value_counts()
    test = manifest[manifest.split == "test"]["class"].value_counts()
    assert set(train.index) < set(test.index)
    assert train.nunique() > 1 and test.nunique() > 1


def test_sizes_aspect_ratios_and_some_grayscale_vary(raw):
    manifest = read_manifest(raw)
    ratios = manifest.width.astype(int) / manifest.height.astype(int)
    assert ratios.min() < 0.8 and ratios.max() > 1.25
    modes = {Image.open(path).mode for path in manifest.path}
    assert modes == {"RGB", "L"}


def test_generation_is_deterministic_byte_for_byte(raw, tmp_path):
    fetch(parse_params(SMALL), tmp_path / "raw")
    first = read_manifest(raw).drop(columns="path")
    second = read_manifest(tmp_path / "raw").drop(columns="path")
    pd.testing.assert_frame_equal(first, second)


def test_the_bytes_do_not_depend_on_how_many_threads_draw_them(raw, tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 1)  # one thread draws every picture in turn
    fetch(parse_params(SMALL), tmp_path / "raw")
    serial = read_manifest(tmp_path / "raw")
    assert serial.drop(columns="path").equals(read_manifest(raw).drop(columns="path"))
    assert len(set(serial.sha256)) == len(serial)  # and the pictures differ from each other


def test_the_sample_seed_draws_other_pictures_and_the_training_seed_none(raw, tmp_path):
    other = {"download": {"sample": {**SMALL["download"]["sample"], "seed": 7}}}
    fetch(parse_params(other), tmp_path / "other")
    assert set(read_manifest(raw).sha256).isdisjoint(read_manifest(tmp_path / "other").sha256)
    fetch(parse_params({**SMALL, "seed": 7}), tmp_path / "same")  # runs of several seeds score the same photos
    assert list(read_manifest(raw).sha256) == list(read_manifest(tmp_path / "same").sha256)


def test_mean_colour_alone_does_not_tell_the_classes_apart(tmp_path):
    """Mean colour is a weak cue at most: the network must learn patterns and colour relations.

    The committed run's test accuracy is reported in the README next to this baseline.
    """
    config = {"download": {"sample": {"train_images": 60, "test_images": 2, "min_side": 48, "max_side": 64}}}
    fetch(parse_params(config), tmp_path / "raw")
    manifest = read_manifest(tmp_path / "raw")
    train = manifest[manifest.split == "train"]
    features = np.array([np.asarray(Image.open(p).convert("RGB"), float).reshape(-1, 3).mean(0) for p in train.path])
    accuracy = cross_val_score(LogisticRegression(max_iter=2000), features, train["class"], cv=4).mean()
    assert accuracy < 0.5  # five classes: chance is 0.2


def test_class_counts_follow_the_config():
    counts = class_counts(SampleSource(classes=4, train_images=100, test_images=40, rarest_fraction=0.5))
    assert counts["train"] == {"Sample striata": 100, "Sample maculata": 83, "Sample tessellata": 67}
    assert list(counts["test"].values()) == [40, 33, 27, 20]


def test_every_grey_coat_keeps_its_pattern_visible_though_some_colour_pairs_share_one_lightness():
    """Hue contrast vanishes in grey: a grey coat's two greys must still differ in lightness."""
    from inat_classifier.data.sources.sample import GREY_CONTRAST, LUMA, PALETTES, _coat_colours, _grey_coat

    raw_gaps = []
    for palette in PALETTES:
        for i in range(200):
            light, dark = _coat_colours(palette, np.random.default_rng([3, i]))
            raw_gaps.append(abs(float(LUMA @ (light - dark))))
            grey_light, grey_dark = _grey_coat(light, dark)
            assert grey_light[0] - grey_dark[0] >= GREY_CONTRAST - 1e-9, (palette, i)
            assert 0 <= grey_dark.min() and grey_light.max() <= 255
    assert min(raw_gaps) < GREY_CONTRAST / 4  # what the grey pictures looked like before


def test_the_net_is_drawn_in_lines_a_third_of_its_period_wide():
    """Thinner lines blurred into stripes at 48 px, and some runs never told the two classes apart."""
    y, x = np.mgrid[0:600, 0:600].astype(np.float32)
    net = _pattern("net", x, y, 30.0, np.random.default_rng(0))
    assert abs(net[15].mean() - 1 / 3) < 0.02  # a row between two lines crosses those of the other direction
    assert abs(net.mean() - (1 - (2 / 3) ** 2)) < 0.02  # both directions: 5/9 of the coat


def test_a_pattern_period_is_a_fraction_of_the_longer_side(monkeypatch):
    """Training squashes each picture to a square, shrinking its longer axis most: a period drawn from
    the shorter side fell to half its size along that axis, and checks aliased into stripes at 48 px."""
    from inat_classifier.data.sources import sample

    periods = []
    monkeypatch.setattr(sample, "_pattern", lambda kind, u, v, period, rng: periods.append(period) or np.zeros_like(u))
    for i in range(20):
        sample.render("checks", (0.2, 0.26), "achromatic", 160, 80, np.random.default_rng(i))
    assert min(periods) >= 0.2 * 160 and max(periods) <= 0.26 * 160


def test_spots_are_sparse_enough_to_stay_apart():
    """Denser spots (1.2 a period squared) merged into blobs and bands that runs took for a net."""
    y, x = np.mgrid[0:240, 0:240].astype(np.float32)
    coverage = np.mean([_pattern("spots", x, y, 40.0, np.random.default_rng(i)).mean() for i in range(40)])
    assert 0.15 < coverage < 0.25
