"""``inat-classifier predict`` on a model trained here in seconds: files, folders, bad files, formats."""

from __future__ import annotations

import io
import json
import os
import stat
import threading

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("keras")

from helpers.tiny_classifier import CLASSES, SIZE, train_tiny_classifier, write_picture  # noqa: E402

from inat_classifier.cli import main  # noqa: E402
from inat_classifier.errors import UserError  # noqa: E402
from inat_classifier.data.images import load_resized  # noqa: E402
from inat_classifier.train.model import save_model  # noqa: E402
from inat_classifier.data.classnames import UNKNOWN  # noqa: E402
from inat_classifier.data.classnames import beside as class_names_path  # noqa: E402
from inat_classifier.data.classnames import load_beside as load_class_names  # noqa: E402
from inat_classifier.data.classnames import save_beside as save_class_names  # noqa: E402
from inat_classifier.serve.predict import classify, collect_images, columns, write_output  # noqa: E402

COLUMNS_K2 = ["path", "prediction", "probability", "class_1", "probability_1", "class_2", "probability_2"]


@pytest.fixture(scope="module")
def model():
    return train_tiny_classifier()


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "model.keras"
    save_model(model, path)
    save_class_names(path, CLASSES)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six readable pictures in nested folders (JPEG, PNG, grayscale, alpha), a corrupt JPEG and a non-image."""
    root = tmp_path_factory.mktemp("photos")
    write_picture(root / "smooth_a.jpg", 0, seed=1, size=(40, 56))
    write_picture(root / "noisy_a.JPG", 1, seed=2, size=(64, 48))
    write_picture(root / "nested" / "smooth_b.png", 0, seed=3)
    write_picture(root / "nested" / "deeper" / "noisy_b.jpeg", 1, seed=4)
    write_picture(root / "gray.png", 1, seed=5, mode="L")
    rgba = np.dstack([np.full((30, 30, 3), 90, np.uint8), np.linspace(0, 255, 900).reshape(30, 30).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "alpha.png")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    (root / "notes.txt").write_text("not a photo")
    (root / ".hidden").mkdir()
    write_picture(root / ".hidden" / "thumb.jpg", 0, seed=6)
    return root


READABLE = 6
_LOADED: dict = {}


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Run outside the repository (its models/ and data/ come and go with `dvc repro`); the command loads
    each model file for real, but only once per module (seconds each)."""
    import inat_classifier.train.model as model_module

    monkeypatch.chdir(tmp_path)

    real = model_module.load_model

    def load_once(path):
        if str(path) not in _LOADED:
            _LOADED[str(path)] = real(path)
        return _LOADED[str(path)]

    monkeypatch.setattr(model_module, "load_model", load_once)


def run_cli(capsys, *argv):
    code = main(["predict", "--no-progress", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_csv_output_has_the_documented_columns_and_skips_the_corrupt_file(model_file, photos, capsys, tmp_path):
    out = tmp_path / "predictions.csv"
    code, stdout, err = run_cli(capsys, photos, "--model", model_file, "--top-k", 2, "--output", out)
    assert code == 0 and stdout == ""
    frame = pd.read_csv(out)
    assert list(frame.columns) == COLUMNS_K2 == columns(2)
    assert len(frame) == READABLE
    names = {p.rsplit("/", 1)[-1] for p in frame["path"]}
    assert {"gray.png", "alpha.png", "noisy_a.JPG", "noisy_b.jpeg"} <= names
    assert "corrupt.jpg" not in names and "thumb.jpg" not in names
    assert set(frame["class_1"]) <= set(CLASSES) and set(frame["prediction"]) <= set(CLASSES)
    assert (frame["probability_1"] >= frame["probability_2"]).all()
    np.testing.assert_allclose(frame["probability_1"] + frame["probability_2"], 1.0, atol=1e-5)
    assert (frame["probability"] == frame["probability_1"]).all()
    assert "skipped:" in err and "corrupt.jpg: not a readable image" in err
    assert f"classified {READABLE} image(s), skipped 1" in err


def test_json_on_stdout_is_a_list_of_records_with_the_csv_columns(model_file, photos, capsys):
    code, stdout, _ = run_cli(capsys, photos, "--model", model_file, "--format", "json", "-k", 1)
    assert code == 0
    records = json.loads(stdout)
    assert len(records) == READABLE
    assert all(list(record) == columns(1) for record in records)
    assert all(isinstance(r["probability"], float) and r["class_1"] in CLASSES for r in records)


def test_table_is_the_default_on_the_terminal(model_file, photos, capsys):
    code, stdout, _ = run_cli(capsys, photos / "gray.png", photos / "alpha.png", "--model", model_file)
    assert code == 0
    header = stdout.splitlines()[0].split()
    assert header[:3] == ["path", "prediction", "probability"] and "probability_2" in header
    assert len(stdout.splitlines()) == 3


def test_predictions_match_the_model_on_the_training_decoder(model, photos):
    """The command decodes like training does (load_resized at the model's input size) and batches freely."""
    paths = sorted(p for p in photos.rglob("*.*") if p.suffix in (".jpg", ".png") and ".hidden" not in p.parts)
    paths = [p for p in paths if p.name != "corrupt.jpg"]
    one_batch, problems = classify(model, paths, CLASSES, top_k=2, progress=False)
    in_twos, _ = classify(model, paths, CLASSES, top_k=2, batch_size=2, progress=False)
    assert problems == []
    pd.testing.assert_frame_equal(one_batch, in_twos, atol=1e-5)
    expected = model(np.stack([load_resized(p, SIZE) for p in paths]).astype("float32"), training=False).numpy()
    np.testing.assert_allclose(one_batch["probability"], expected.max(axis=1), atol=1e-5)
    assert list(one_batch["class_1"]) == [CLASSES[i] for i in expected.argmax(axis=1)]


def test_threshold_turns_low_confidence_answers_into_unknown(model, photos):
    paths = [photos / "smooth_a.jpg", photos / "noisy_a.JPG", photos / "gray.png", photos / "alpha.png"]
    plain, _ = classify(model, paths, CLASSES, progress=False)
    cut = float(np.median(plain["probability"]))
    frame, _ = classify(model, paths, CLASSES, threshold=cut, progress=False)
    low = frame["probability"] < cut
    assert (frame.loc[low, "prediction"] == UNKNOWN).all()
    assert (frame.loc[~low, "prediction"] == frame.loc[~low, "class_1"]).all()
    everything, _ = classify(model, paths, CLASSES, threshold=1.0, progress=False)
    assert (everything.loc[everything["probability"] < 1.0, "prediction"] == UNKNOWN).all()
    assert (plain["prediction"] != UNKNOWN).all()


def test_rollup_answers_a_taxon_the_classes_share_when_no_class_reaches_the_threshold(
    model_file, photos, capsys, tmp_path
):
    from inat_classifier.data.classnames import write_class_names
    from inat_classifier.data.taxonomy import make

    both = {"kingdom": "Animalia", "phylum": "Chordata"}  # the tiny model's bird and raccoon share these
    taxa = [make(CLASSES[0], 12011, "species", "", {**both, "class": "Aves"}),
            make(CLASSES[1], 41663, "species", "", {**both, "class": "Mammalia"})]
    classes = write_class_names(tmp_path / "taxa.json", taxa)
    out = tmp_path / "rolled.csv"
    code, _, _ = run_cli(capsys, photos, "--model", model_file, "--classes", classes, "--threshold", 1.0, "--rollup",
                         "-o", out)
    frame = pd.read_csv(out, keep_default_na=False)
    assert code == 0 and list(frame.columns) == columns(2, rollup=True)
    sure = frame["probability_1"] >= 1.0  # rounded to 1: the species itself
    assert (~sure).any()
    assert (frame.loc[sure, "prediction"] == frame.loc[sure, "class_1"]).all()
    assert (frame.loc[sure, "rank"] == "species").all()
    # the lowest rank both classes share is the phylum (Chordata), whose summed probability is 1
    assert (frame.loc[~sure, "prediction"] == "Chordata").all() and (frame.loc[~sure, "rank"] == "phylum").all()
    assert (frame.loc[~sure, "probability"] == 1.0).all()
    code, _, err = run_cli(capsys, photos / "gray.png", "--model", model_file, "--threshold", 0.5, "--rollup")
    assert code == 2 and "--rollup needs the classes' ancestry" in err and len(err.splitlines()) == 1


def test_top_k_is_capped_at_the_number_of_classes(model, photos):
    frame, _ = classify(model, [photos / "gray.png"], CLASSES, top_k=5, progress=False)
    assert list(frame.columns) == columns(len(CLASSES))


def test_collect_images_recurses_by_extension_and_reports_missing_paths(photos, tmp_path):
    odd = tmp_path / "photo.data"
    odd.write_bytes((photos / "smooth_a.jpg").read_bytes())
    paths, problems = collect_images([photos, odd, photos / "gray.png", tmp_path / "nope.jpg"])
    names = [p.name for p in paths]
    assert names.count("gray.png") == 1  # named twice, classified once
    assert "photo.data" in names  # a file named directly is tried whatever its extension
    assert "notes.txt" not in names and "thumb.jpg" not in names
    assert "noisy_b.jpeg" in names and "corrupt.jpg" in names  # decoding, not the name, decides
    assert problems == [f"{tmp_path / 'nope.jpg'}: no such file or folder"]


def test_only_bad_inputs_are_never_a_crash(model_file, photos, capsys, tmp_path):
    code, stdout, err = run_cli(capsys, photos / "corrupt.jpg", tmp_path / "missing.png", "--model", model_file,
                                "--format", "csv")
    assert code == 0
    assert list(pd.read_csv(io.StringIO(stdout)).columns) == columns(2)
    assert "missing.png: no such file or folder" in err and "corrupt.jpg" in err


def test_class_names_come_from_beside_the_model_never_from_the_subset(tmp_path, monkeypatch):
    """data/subset/classes.json may be another experiment's: it once labelled predictions silently."""
    model_path = tmp_path / "models" / "model.keras"
    assert class_names_path(model_path) == tmp_path / "models" / "model.classes.json"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "subset").mkdir(parents=True)
    (tmp_path / "data" / "subset" / "classes.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(UserError, match="class names not found beside the model .*; pass --classes PATH"):
        load_class_names(model_path)
    save_class_names(model_path, ["x", "y", "z"])
    assert load_class_names(model_path) == ["x", "y", "z"]
    with pytest.raises(UserError, match="not distinct"):
        save_class_names(model_path, ["x", "x"])


def test_output_to_a_pipe_or_device_is_written_to_not_replaced(tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    write_output("path,prediction\n", fifo)
    reader.join(timeout=10)
    assert received == ["path,prediction\n"] and stat.S_ISFIFO(fifo.stat().st_mode)
    with pytest.raises(UserError, match="is a folder"):
        write_output("x", tmp_path)


def test_max_pixels_above_pillows_limit_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "x.jpg", "--max-pixels", "100000000"])
    assert "above Pillow's own limit of 89478485" in capsys.readouterr().err


def test_command_errors_are_one_line_and_exit_2(model_file, photos, capsys, tmp_path):
    code, _, err = run_cli(capsys, photos, "--model", tmp_path / "none.keras")
    assert code == 2 and err.startswith("error: ") and "model file not found" in err
    code, _, err = run_cli(capsys, tmp_path / "does_not_exist", "--model", model_file)
    assert code == 2 and "error: no image files found" in err
    wrong = tmp_path / "three.json"
    wrong.write_text(json.dumps(["a", "b", "c"]))
    code, _, err = run_cli(capsys, photos / "gray.png", "--model", model_file, "--classes", wrong)
    assert code == 2 and "predicts 2 classes but 3 class names" in err
    assert all(line.startswith(("error:", "skipped:")) for line in err.splitlines())


def test_a_model_that_needs_unsafe_deserialisation_is_refused(photos, capsys, tmp_path):
    keras = pytest.importorskip("keras")
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Lambda(lambda t: keras.ops.mean(t, axis=(1, 2)))(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    (tmp_path / "lambda.classes.json").write_text(json.dumps(["a", "b", "c"]))
    code, _, err = run_cli(capsys, photos / "gray.png", "--model", tmp_path / "lambda.keras")
    assert code == 2
    assert err.strip().endswith("lambda.keras: refused: loading it needs unsafe deserialisation (arbitrary code)")


def test_bad_arguments_are_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["predict", "x.jpg", "--threshold", "1.5"])
    assert caught.value.code == 2
    assert "1.5 is not between 0 and 1" in capsys.readouterr().err


def test_tta_averages_the_plain_view_with_augmented_ones_the_same_on_every_run(model, photos, model_file, capsys):
    paths, _ = collect_images([photos])
    plain, _ = classify(model, paths, CLASSES, progress=False)
    one, _ = classify(model, paths, CLASSES, progress=False, tta=1)
    pd.testing.assert_frame_equal(one, plain)
    three, _ = classify(model, paths, CLASSES, progress=False, tta=3)
    again, _ = classify(model, paths, CLASSES, progress=False, tta=3)
    pd.testing.assert_frame_equal(three, again)
    assert not np.allclose(three.probability_1, plain.probability_1)  # augmented views moved the answers
    assert (three[["probability_1", "probability_2"]].sum(axis=1) <= 1 + 1e-6).all()
    with pytest.raises(UserError, match="tta 0 must be at least 1"):
        classify(model, paths, CLASSES, progress=False, tta=0)
    assert main(["predict", str(photos), "--model", str(model_file), "--tta", "2", "--format", "csv"]) == 0
    assert len(pd.read_csv(io.StringIO(capsys.readouterr().out))) == len(three)


def test_evaluate_tta_views_are_the_plain_split_then_its_augmented_epochs(model):
    from inat_classifier.train.dataset import Split, batches
    from inat_classifier.train.features import view_outputs
    from inat_classifier.params import parse_params

    params = parse_params({"data": {"image_size": SIZE, "batch_size": 4}})
    rng = np.random.default_rng(0)
    split = Split("test", rng.integers(0, 255, (6, SIZE, SIZE, 3), dtype=np.uint8), np.array([0, 1] * 3), [], [])
    views = view_outputs(model, split, params.data, params.seed, params.augment, 3, "predictions")
    assert views.shape == (3, 6, len(CLASSES))
    plain = model.predict(batches(split, params.data, params.seed, shuffle=False).dataset, verbose=0)
    np.testing.assert_allclose(views[0], plain, rtol=1e-6)
    augmented = batches(split, params.data, params.seed, shuffle=False, augment=params.augment)
    augmented.set_epoch(2)
    np.testing.assert_allclose(views[2], model.predict(augmented.dataset, verbose=0), rtol=1e-6)
    assert not np.allclose(views[1], views[0]) and not np.allclose(views[2], views[1])
