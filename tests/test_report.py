"""reports/evaluate.md and its gallery on a tiny fake case: tables add up, worst first, a real PNG."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from inat_classifier.evaluate.evaluation import per_class_table, prediction_rows, split_metrics
from inat_classifier.data.manifest import photo_credits, showing_forbidden
from inat_classifier.evaluate.report import (
    COLUMNS,
    LABEL_HEIGHT,
    LINE,
    PAD,
    TILE,
    SplitReport,
    draw_gallery,
    gallery_size,
    most_confused_pairs,
    render_report,
    worst_misclassified,
)

NAMES = ["Sample maculata", "Sample striata", "Sample reticulata"]
# image i is a solid colour, so each gallery tile can be traced back to its photo
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200), (90, 90, 90)]
LABELS = np.array([0, 0, 1, 1, 2, 2, 0])
PROBS = np.array(
    [
        [0.9, 0.05, 0.05],  # right
        [0.2, 0.7, 0.1],  # wrong: maculata -> striata, 0.7
        [0.1, 0.8, 0.1],  # right
        [0.05, 0.05, 0.9],  # wrong: striata -> reticulata, 0.9
        [0.6, 0.1, 0.3],  # wrong: reticulata -> maculata, 0.6
        [0.1, 0.2, 0.7],  # right
        [0.3, 0.45, 0.25],  # wrong: maculata -> striata, 0.45
    ]
)


@pytest.fixture
def photos(tmp_path):
    paths = []
    for i, colour in enumerate(COLOURS):
        path = tmp_path / "raw" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (60 + 10 * i, 40), colour).save(path, quality=95)
        paths.append(str(path))
    return paths


def predictions(paths):
    return prediction_rows(paths, LABELS, PROBS, NAMES, top_k=2)


def split_report(labels=LABELS, probs=PROBS):
    names = np.asarray(NAMES)
    confused = most_confused_pairs(names[labels], names[np.asarray(probs).argmax(axis=1)])
    return SplitReport(split_metrics(labels, probs, 2, NAMES), per_class_table(labels, probs, NAMES), confused)


def test_most_confused_pairs_are_the_mistakes_most_frequent_first_then_by_name():
    true = ["a", "a", "b", "b", "b", "c", "c"]
    predicted = ["b", "b", "c", "b", "b", "a", "c"]  # a->b twice, b->c once, c->a once
    assert most_confused_pairs(true, predicted) == [("a", "b", 2), ("b", "c", 1), ("c", "a", 1)]
    assert most_confused_pairs(true, predicted, top=2) == [("a", "b", 2), ("b", "c", 1)]
    assert most_confused_pairs(true, true) == [] and most_confused_pairs([], []) == []


def test_the_report_reads_the_same_pairs_from_a_predictions_file(photos):
    rows = predictions(photos)
    assert most_confused_pairs(rows["true"], rows["predicted"]) == [
        ("Sample maculata", "Sample striata", 2),
        ("Sample reticulata", "Sample maculata", 1),
        ("Sample striata", "Sample reticulata", 1),
    ]


def test_worst_misclassified_are_the_wrong_ones_most_confident_first(photos):
    worst = worst_misclassified(predictions(photos))
    assert worst.path.tolist() == [photos[3], photos[1], photos[4], photos[6]]
    assert worst.confidence.tolist() == [0.9, 0.7, 0.6, 0.45]
    assert (worst.true != worst.predicted).all()
    assert worst_misclassified(predictions(photos), limit=2).path.tolist() == [photos[3], photos[1]]


def test_gallery_has_one_tile_per_photo_in_order(photos, tmp_path):
    worst = worst_misclassified(predictions(photos))
    target = tmp_path / "reports" / "worst_test.png"
    draw_gallery(worst, target)
    with Image.open(target) as png:
        assert png.format == "PNG" and png.mode == "P"  # quantised: small in git
        image = png.convert("RGB")
        assert image.size == gallery_size(4) == (COLUMNS * TILE, TILE + LABEL_HEIGHT)
        assert not {"date", "Creation Time", "timestamp"} & set(png.info)
        for index, photo in enumerate([3, 1, 4, 6]):  # each tile's centre shows its photo's colour
            centre = (index * TILE + TILE // 2, TILE // 2)
            assert np.abs(np.subtract(image.getpixel(centre), COLOURS[photo])).max() <= 8
        assert image.getpixel((3 * TILE + PAD // 2, PAD // 2)) == (255, 255, 255)
    first = hashlib.sha256(target.read_bytes()).hexdigest()
    draw_gallery(worst, target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == first  # same inputs, same bytes


def test_gallery_wraps_rows_and_survives_an_unreadable_photo(photos, tmp_path):
    rows = pd.concat([worst_misclassified(predictions(photos))] * 2, ignore_index=True)
    rows.loc[0, "path"] = str(tmp_path / "missing.jpg")
    draw_gallery(rows, tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as image:
        assert image.size == gallery_size(8) == (COLUMNS * TILE, 2 * (TILE + LABEL_HEIGHT))


def test_no_misclassifications_give_a_placeholder_png(photos, tmp_path):
    right = prediction_rows(photos, LABELS, np.eye(3)[LABELS], NAMES, 2)
    worst = worst_misclassified(right)
    assert worst.empty
    draw_gallery(worst, tmp_path / "none.png")
    with Image.open(tmp_path / "none.png") as image:
        assert image.format == "PNG" and image.size[0] <= 2 * TILE and image.size[1] <= LABEL_HEIGHT
    text = render_report({"test": split_report(LABELS, np.eye(3)[LABELS])}, worst)
    assert "every test photo was classified correctly" in text and "worst_test.png" not in text
    assert "- none: every image was classified correctly." in text


def test_report_tables_add_up_and_show_interval_pairs_and_gallery(photos):
    worst = worst_misclassified(predictions(photos))
    text = render_report({"test": split_report(), "train": split_report()}, worst, gallery="worst_test.png")
    assert text.index("## train") < text.index("## test")  # split order, whatever the dict order
    m = split_metrics(LABELS, PROBS, 2)
    assert f"| test | 7 | 0.429 ({m['accuracy_ci_low']:.3f}-{m['accuracy_ci_high']:.3f}) |" in text
    assert "inside it is noise" in text
    test = text[text.index("## test") :]
    rows = [line for line in test.splitlines() if line.startswith("| Sample ")]
    counts = [[int(cell) for cell in line.split("|")[2:5]] for line in rows]
    assert [r[0] for r in counts] == [3, 2, 2]
    assert all(images == correct + incorrect for images, correct, incorrect in counts)
    assert "| **total** | 7 | 3 | 4 |" in test
    assert "- Sample maculata -> Sample striata: 2 images" in test
    assert "![The worst misclassified test photos" in text and "](worst_test.png)" in text
    assert f"| 1 | `{photos[3]}` | Sample striata | Sample reticulata | 0.90 |" in text
    assert text == render_report({"train": split_report(), "test": split_report()}, worst)  # stable bytes
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_report_without_test_or_any_split():
    text = render_report({"train": split_report()}, None)
    assert "The test split was not evaluated" in text
    assert "No split was evaluated" in render_report({}, None)


def test_the_report_states_class_balance_and_the_leakage_check():
    data = {"train": {"images": 10, "imbalance_ratio": 1.5}, "test": {"images": 4, "imbalance_ratio": None},
            "duplicates": {"exact": 1, "near": 2, "in_val": 0, "in_test": 3, "dropped": 3}}
    text = render_report({}, None, data=data)
    assert "No split was evaluated" in text  # data checks need a scored split to be worth showing
    table = pd.DataFrame({"class_id": [0], "class_name": ["a"], "images": [2], "correct": [1], "incorrect": [1],
                          "precision": [1.0], "recall": [0.5], "f1": [0.667]})
    metrics = {"images": 2, "accuracy": 0.5, "accuracy_ci_low": 0.09, "accuracy_ci_high": 0.91}
    text = render_report({"test": SplitReport(metrics, table, [])}, None, data=data)
    assert "- train: 10 images, largest / smallest class 1.50" in text
    assert "- test: 4 images, largest / smallest class -" in text
    assert "3 val/test photos copy an earlier split's photo (1 exact, 2 near); 3 dropped" in text


# --- credits: every photo shown or named carries its licence, attribution and source ------------

CREDITED = pd.DataFrame({"license": ["cc-by-nc"] * 7, "attribution": ["(c) Ann Example, some rights reserved"] * 7,
                         "url": [f"https://www.inaturalist.org/observations/{i}" for i in range(7)]})


def test_predictions_carry_each_photos_credit(photos):
    rows = prediction_rows(photos, LABELS, PROBS, NAMES, 2, CREDITED)
    assert list(rows.columns[-3:]) == ["license", "attribution", "url"]
    assert rows.url.tolist() == CREDITED.url.tolist() and set(rows.license) == {"cc-by-nc"}
    assert set(predictions(photos).attribution) == {""}  # without credits the columns still exist
    with pytest.raises(ValueError, match="2 credits for 7 paths"):
        prediction_rows(photos, LABELS, PROBS, NAMES, 2, CREDITED.head(2))


def test_photo_credits_link_the_observation_page_and_follow_the_paths():
    manifest = pd.DataFrame({"path": ["a.jpg", "b.jpg"], "observation_id": ["42", ""],
                             "url": ["https://static.example/1.jpg", "file:///x/b.jpg"],
                             "license": ["cc-by", ""], "attribution": ["(c) Bo", ""]})
    credits = photo_credits(["b.jpg", "a.jpg", "missing.jpg"], manifest)
    assert credits.to_dict("records") == [
        {"license": "", "attribution": "", "url": "file:///x/b.jpg"},
        {"license": "cc-by", "attribution": "(c) Bo", "url": "https://www.inaturalist.org/observations/42"},
        {"license": "", "attribution": "", "url": ""},
    ]


def test_only_the_inat_competition_images_are_forbidden_to_show():
    assert "forbid" in showing_forbidden("archive", "inat_json")
    for source, layout in [("archive", "folders"), ("inaturalist", "folders"), ("sample", "inat_json"),
                           ("folder", "folders")]:
        assert showing_forbidden(source, layout) is None


def test_every_gallery_tile_is_credited(photos, tmp_path):
    worst = worst_misclassified(prediction_rows(photos, LABELS, PROBS, NAMES, 2, CREDITED))
    draw_gallery(worst, tmp_path / "credited.png")
    draw_gallery(worst.drop(columns=["license", "attribution", "url"]).assign(attribution=""), tmp_path / "bare.png")
    with Image.open(tmp_path / "credited.png") as credited, Image.open(tmp_path / "bare.png") as bare:
        credit_lines = (0, TILE + 2 * LINE, TILE, TILE + LABEL_HEIGHT)  # under the first tile's true/predicted lines
        ink = [np.asarray(image.convert("L").crop(credit_lines)) < 200 for image in (credited, bare)]
        assert ink[0].sum() > ink[1].sum() > 0  # a longer credit than "no attribution recorded, licence unknown"
        assert credited.size == gallery_size(4)


def test_the_report_credits_listed_photos_and_lists_forbidden_ones_without_drawing_them(photos):
    worst = worst_misclassified(prediction_rows(photos, LABELS, PROBS, NAMES, 2, CREDITED))
    text = render_report({"test": split_report()}, worst)
    assert (f"| 0.90 | (c) Ann Example, some rights reserved, CC BY-NC, "
            f"[source](https://www.inaturalist.org/observations/3) |") in text
    refused = render_report({"test": split_report()}, worst, not_drawn=showing_forbidden("archive", "inat_json"))
    assert "](worst_test.png)" not in refused and "Not drawn: the iNat competition's terms forbid" in refused
    assert f"| 1 | `{photos[3]}` |" in refused  # still listed, with its credit
