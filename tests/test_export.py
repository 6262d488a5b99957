"""The export command on a model trained here: SavedModel and TFLite (float16, int8), each checked against Keras.

One export (one conversion per format, about a minute on two CPU cores) is shared by the module.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("keras")

from helpers.tiny_classifier import CLASSES, SIZE, dataset, train_tiny_classifier, write_picture  # noqa: E402

from inat_classifier.cli import main  # noqa: E402
from inat_classifier.errors import UserError  # noqa: E402
from inat_classifier.serve.export import (  # noqa: E402
    MIN_AGREEMENT,
    agreement,
    check_agreement,
    check_output_dir,
    export_model,
    figures_for,
    tflite_runner,
)
from inat_classifier.train.model import save_model  # noqa: E402
from inat_classifier.data.classnames import save_beside as save_class_names  # noqa: E402

TEST_IMAGES = 16


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A repository-like folder with params, a test split (one file corrupt) and a trained model, exported."""
    root = tmp_path_factory.mktemp("repo")
    (root / "params.yaml").write_text("data:\n  image_size: 32\n  batch_size: 8\n")
    rows = []
    for i in range(TEST_IMAGES):
        label = i % 2
        path = write_picture(root / "data" / "raw" / f"{i:02d}.png", label, seed=100 + i, size=(30 + i, 50 - i),
                             mode="L" if i == 3 else "RGB")
        rows.append({"path": str(path.relative_to(root)), "label": label, "class_name": CLASSES[label]})
    (root / "data" / "raw" / "bad.jpg").write_bytes(b"not a jpeg")
    rows.append({"path": "data/raw/bad.jpg", "label": 0, "class_name": CLASSES[0]})
    (root / "data" / "subset").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / "data" / "subset" / "test.csv", index=False)
    model = train_tiny_classifier()
    save_model(model, root / "models" / "model.keras")
    save_class_names(root / "models" / "model.keras", CLASSES)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        assert main(["export"]) == 0  # defaults: models/model.keras, the test split, metrics/export.json
    return root


@pytest.fixture(scope="module")
def report(workspace):
    return json.loads((workspace / "metrics" / "export.json").read_text())


def test_metrics_hold_sizes_and_top1_agreement_for_every_format(report):
    assert report["images"] == TEST_IMAGES  # the corrupt file was skipped, not fatal
    assert report["keras"]["size_bytes"] > 0
    for name in ("saved_model", "tflite_float16", "tflite_int8"):
        entry = report[name]
        assert entry["size_bytes"] > 0
        assert entry["top1_agreeing"] == round(entry["top1_agreement"] * TEST_IMAGES)
        assert 0.0 <= entry["max_probability_difference"] <= 1.0
    assert report["saved_model"]["top1_agreement"] == 1.0
    assert report["tflite_float16"]["top1_agreement"] >= MIN_AGREEMENT
    assert 0.0 <= report["tflite_int8"]["top1_agreement"] <= 1.0
    # float16 weights: 2 bytes instead of 4; int8 weights: 1 byte (EfficientNetB0's 4M parameters)
    assert report["tflite_int8"]["size_bytes"] < report["tflite_float16"]["size_bytes"] < report["keras"]["size_bytes"]


def test_the_figures_name_the_model_they_were_measured_on(workspace, report, tmp_path):
    """The report stage shows them on the card only beside that model (figures_for: the same md5)."""
    model = workspace / "models" / "model.keras"
    assert report["keras"]["md5"] == hashlib.md5(model.read_bytes()).hexdigest()
    assert figures_for(model, workspace / "metrics" / "export.json") == report
    other = tmp_path / "other.keras"
    other.write_bytes(model.read_bytes() + b"\0")
    assert figures_for(other, workspace / "metrics" / "export.json") is None
    assert figures_for(model, tmp_path / "no-export.json") is None


def test_artefacts_are_in_models_export_with_the_class_names(workspace, report):
    export = workspace / "models" / "export"
    assert (export / "saved_model" / "saved_model.pb").is_file()  # checked through serving_default, as TF Serving
    assert report["tflite_float16"]["path"] == "models/export/model_float16.tflite"
    for name, filename in (("tflite_float16", "model_float16.tflite"), ("tflite_int8", "model_int8.tflite")):
        assert (export / filename).stat().st_size == report[name]["size_bytes"]
    assert json.loads((export / "classes.json").read_text()) == CLASSES
    assert sorted(p.name for p in (workspace / "models").iterdir()) == ["export", "model.classes.json", "model.keras"]


def test_the_tflite_file_alone_reproduces_the_keras_probabilities(workspace):
    """What a phone app would do: read the file, feed float 0..255 pixels of any batch size."""
    model = train_tiny_classifier()
    x, _ = dataset(5, seed=9)
    expected = model(x, training=False).numpy()
    run = tflite_runner((workspace / "models" / "export" / "model_float16.tflite").read_bytes())
    np.testing.assert_allclose(run(x), expected, atol=0.02)
    np.testing.assert_allclose(run(x[:1]), expected[:1], atol=0.02)


def test_agreement_is_the_share_of_images_with_the_same_top1():
    reference = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.51, 0.49]])
    exported = np.array([[0.8, 0.2], [0.45, 0.55], [0.3, 0.7], [0.49, 0.51]])
    assert agreement(reference, exported) == {
        "top1_agreeing": 3,
        "top1_agreement": 0.75,
        "max_probability_difference": 0.1,
    }
    with pytest.raises(UserError, match="shape"):
        agreement(reference, exported[:, :1])


def test_an_export_that_disagrees_is_refused_after_the_report():
    good = {"top1_agreement": 1.0}
    check_agreement({"images": 200, "saved_model": good, "tflite_float16": {"top1_agreement": 0.99}})
    with pytest.raises(UserError, match=r"tflite_float16 agrees on top-1 for 98.50% of 200 images \(needs >= 99%\)"):
        check_agreement({"images": 200, "saved_model": good, "tflite_float16": {"top1_agreement": 0.985}})


def test_the_default_images_stream_from_tfrecord_shards(workspace, tmp_path, monkeypatch, report):
    """data.format: tfrecord keeps no decoded pixels in memory: the test split is read from its shards."""
    from inat_classifier.data.records import write_index, write_split

    root = tmp_path / "repo"
    (root / "models").mkdir(parents=True)
    for name in ("model.keras", "model.classes.json"):
        (root / "models" / name).write_bytes((workspace / "models" / name).read_bytes())
    frame = pd.read_csv(workspace / "data" / "subset" / "test.csv")
    frame = frame[frame.path != "data/raw/bad.jpg"]
    frame["path"] = [str(workspace / path) for path in frame.path]
    subset = root / "data" / "subset"
    subset.mkdir(parents=True)
    frame.to_csv(subset / "test.csv", index=False)
    shards = write_split(str(subset / "tfrecord"), "test", frame.path.tolist(), frame.label.tolist(), 32, 5, 10**6)
    write_index(subset, {"test": shards}, "tfrecord", {"test": len(frame)}, 32, 5)
    (root / "params.yaml").write_text("data:\n  image_size: 32\n  batch_size: 8\n  format: tfrecord\n  shard_size: 5\n")
    monkeypatch.chdir(root)
    assert main(["export"]) == 0
    streamed = json.loads((root / "metrics" / "export.json").read_text())
    assert streamed["images"] == TEST_IMAGES
    for name in ("saved_model", "tflite_float16"):  # the very pixels the files path decoded
        assert streamed[name]["max_probability_difference"] == report[name]["max_probability_difference"]


def test_the_pipelines_figures_are_refused_for_a_model_dvc_lock_does_not_pin(workspace, tmp_path, monkeypatch, capsys):
    root = tmp_path / "repo"
    (root / "models").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages:\n  finetune:\n    outs:\n    - path: models/model.keras\n"
                                   "      md5: 0123456789abcdef0123456789abcdef\n")
    (root / "models" / "model.keras").write_bytes((workspace / "models" / "model.keras").read_bytes())
    monkeypatch.chdir(root)
    assert main(["export"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "is not the model dvc.lock pins" in err
    assert not (root / "metrics").exists()


def test_export_command_writes_the_metrics_where_asked(workspace, tmp_path, monkeypatch, capsys):
    """The command's wiring, with the (slow, already tested) export replaced by a stand-in."""
    import inat_classifier.serve.export as export_module

    seen = {}

    def fake_export(model, out_dir, pixels, class_names, batch_size, model_path=None):
        seen.update(out_dir=out_dir, images=len(pixels), names=class_names, size=pixels.shape[1])
        entry = {"path": "x", "size_bytes": 1, "top1_agreeing": 0, "top1_agreement": 0.5}
        return {"images": len(pixels), **{name: entry for name in export_module.EXPORT_FORMATS}}

    monkeypatch.setattr(export_module, "export_model", fake_export)
    write_picture(tmp_path / "photos" / "a.jpg", 0, seed=1)
    write_picture(tmp_path / "photos" / "b.png", 1, seed=2)
    code = main(["export", "--model", str(workspace / "models" / "model.keras"), "--images", str(tmp_path / "photos"),
                 "--output-dir", str(tmp_path / "out"), "--metrics", str(tmp_path / "export.json")])
    err = capsys.readouterr().err
    assert seen == {"out_dir": tmp_path / "out", "images": 2, "names": CLASSES, "size": SIZE}
    assert json.loads((tmp_path / "export.json").read_text())["images"] == 2
    assert code == 2 and "error: exported model differs from the Keras model" in err


@pytest.mark.parametrize("foreign", ["model.keras", "notes.txt"])
def test_export_never_replaces_a_folder_with_other_files(tmp_path, monkeypatch, capsys, foreign):
    """--output-dir models (or data, or ~) once left only the export there."""
    monkeypatch.chdir(tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    (models / "model.keras").write_bytes(b"not loaded: the folder is refused first")
    (models / foreign).write_bytes(b"keep me")
    assert main(["export", "--output-dir", "models"]) == 2
    assert "--output-dir models: holds" in capsys.readouterr().err
    assert (models / foreign).read_bytes() in (b"keep me", b"not loaded: the folder is refused first")
    with pytest.raises(UserError, match="not only a previous export's files"):
        export_model(None, models, np.zeros((1, 8, 8, 3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_a_previous_export_is_replaced(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    for name in ("classes.json", "model_int8.tflite", "saved_model"):
        (out / name).write_text("old")
    check_output_dir(out)  # no error: the folder holds only an export's files
    check_output_dir(tmp_path / "new")
