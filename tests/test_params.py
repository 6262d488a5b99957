import subprocess
import sys

import pytest
import yaml
from pydantic import BaseModel

from conftest import REPO
from inat_classifier.errors import ParamsError
from inat_classifier.params import Params, load_params, parse_params


def test_repository_params_are_valid_and_match_the_schema_defaults_for_the_contract_keys():
    params = load_params(REPO / "params.yaml")
    assert params.download.source == "sample"
    assert params.subset.num_classes == 4
    assert params.model.backbone == "EfficientNetB0"
    assert params.evaluate.splits == ["train", "val", "test"]


def test_schema_defaults_are_the_committed_params():
    """One set of defaults: a key deleted from params.yaml falls back to the value it had."""
    assert load_params(REPO / "params.yaml") == Params()


def test_every_schema_key_appears_in_params_yaml():
    """params.yaml documents every knob: a key only in the schema would be invisible to users."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())

    def keys(model, prefix=""):
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                yield from keys(value, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    def present(key):
        node = raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    missing = [key for key in keys(Params()) if not present(key)]
    assert missing == []


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"finetune": {"learnig_rate": 0.1}}, "finetune.learnig_rate: unknown key"),
        ({"finetune": {"learning_rate": -1}}, "finetune.learning_rate: Input should be greater than 0"),
        ({"data": {"image_size": "big"}}, "data.image_size: Input should be a valid integer"),
        ({"download": {"source": "flickr"}}, "download.source: Input should be 'sample', 'inaturalist', 'archive' or 'folder'"),
        ({"download": {"source": "archive"}}, "download: archive.url is required when source is archive"),
        ({"model": {"weights": "missing.weights.h5"}}, "model.weights: weights file 'missing.weights.h5' does not exist"),
        ({"model": {"weights": "foo"}}, "model.weights: 'foo' is not imagenet, none or a .h5/.keras"),
        ({"finetune": {"unfreeze": 0}}, "finetune.unfreeze"),
        ({"finetune": {"unfreeze": "block8"}}, "finetune.unfreeze: must be 'auto', 'all', a positive number of top layers or block1 .. block7"),
        ({"finetune": {"stochastic_depth": 1.0}}, "finetune.stochastic_depth: must be 'auto' or a rate from 0 up to"),
        ({"finetune": {"stochastic_depth": "off"}}, "finetune.stochastic_depth"),
        ({"finetune": {"label_smoothing": 1.0}}, "finetune.label_smoothing: Input should be less than 1"),
        ({"finetune": {"adam_epsilon": 0}}, "finetune.adam_epsilon: must be 'auto' or a number above 0 and below 1"),
        ({"train_head": {"adam_epsilon": "tiny"}}, "train_head.adam_epsilon: must be 'auto' or a number above 0"),
        ({"finetune": {"global_clipnorm": -1}}, "finetune.global_clipnorm: must be 'auto', null (off) or a norm above 0"),
        ({"train_head": {"global_clipnorm": "on"}}, "train_head.global_clipnorm: must be 'auto', null (off) or a norm"),
        ({"finetune": {"global_clipnorm": True}}, "finetune.global_clipnorm: must be 'auto', null (off) or a norm"),
        ({"train_head": {"weight_decay": -0.1}}, "train_head.weight_decay: Input should be greater than or equal to 0"),
        ({"finetune": {"use_ema": "yes"}}, "finetune.use_ema: Input should be a valid boolean"),
        ({"finetune": {"mixup": 1.5}}, "finetune.mixup: Input should be less than or equal to 1"),
        ({"finetune": {"cutmix": -1}}, "finetune.cutmix: Input should be greater than or equal to 0"),
        ({"augment": {"randaugment_ops": 12}}, "augment.randaugment_ops: Input should be less than or equal to 11"),
        ({"train": {"precision": "float16"}}, "train.precision: Input should be 'auto', 'float32', 'mixed_float16' or 'mixed_bfloat16'"),
        ({"train_head": {"feature_cache": -1}}, "train_head.feature_cache: Input should be greater than or equal to 0"),
        ({"data": {"cache": "ram"}}, "data.cache: Input should be 'auto', 'memory' or 'disk'"),
        ({"augment": {"fill_mode": "mirror"}}, "augment.fill_mode: Input should be 'reflect'"),
        ({"augment": {"brightness": [1.2, 0.8]}}, "augment.brightness: must be [low, high]"),
        ({"evaluate": {"splits": ["holdout"]}}, "evaluate.splits.0: Input should be 'train', 'val' or 'test'"),
        ({"evaluate": {"top_k": 5}}, "evaluate.top_k (5) must be <= the number of classes (4)"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"train": {"onednn": "maybe"}}, "train.onednn.literal['auto']: Input should be 'auto' (got 'maybe')"),
        ({"train": {"fuse_elementwise": "sometimes"}}, "train.fuse_elementwise.literal['auto']: Input should be 'auto' (got 'sometimes')"),
        ({"download": {"sample": {"seed": -1}}}, "download.sample.seed: Input should be greater than or equal to 0"),
        ({"download": {"sample": {"seed": True}}}, "download.sample.seed: Input should be a valid integer (got True)"),
    ],
)
def test_bad_params_give_one_line_naming_the_key(raw, expected):
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_a_weights_file_that_exists_is_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.weights.h5").write_bytes(b"x")
    assert parse_params({"model": {"weights": "w.weights.h5"}}).model.pretrained


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize("stage", ["download", "subset", "train_head", "finetune", "evaluate"])
def test_every_stage_stops_on_bad_params_before_work_with_one_line_and_no_traceback(tmp_path, stage):
    (tmp_path / "params.yaml").write_text("train_head:\n  epochs: -3\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / f"{stage}.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: params.yaml: train_head.epochs: Input should be greater than or equal to 1 (got -3)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing was written


@pytest.mark.parametrize("phase", ["train_head", "finetune"])
def test_warmup_needs_a_cosine_schedule_and_fewer_epochs(phase):
    with pytest.raises(ParamsError, match=f"{phase}: warmup_epochs \\(2\\) needs schedule: cosine"):
        parse_params({phase: {"epochs": 5, "warmup_epochs": 2, "schedule": "constant"}})
    with pytest.raises(ParamsError, match="fewer than epochs"):
        parse_params({phase: {"epochs": 2, "schedule": "cosine", "warmup_epochs": 2}})
    assert parse_params({phase: {"epochs": 5, "schedule": "cosine", "warmup_epochs": 2}})


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"seed": True}, "seed: Input should be a valid integer (got True)"),
        ({"download": {"inaturalist": {"taxa": [True, "Aa bb"]}}}, "download.inaturalist.taxa.0"),
        ({"subset": {"classes": ["Aa", "Bb", "Aa"]}}, "subset.classes: 'Aa' listed twice"),
        ({"data": {"max_pixels": 100_000_000}}, "data.max_pixels: Input should be less than or equal to 89478485"),
    ],
)
def test_bools_duplicates_and_ineffective_caps_are_refused(raw, expected):
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


# Every optional setting with its older spelling of off: null must give the same params.
OLD_OFF_SPELLINGS = {
    "download": {"archive": {"url": "", "sha256": "", "categories_json": "", "supercategories": []}},
    "subset": {"classes": [], "max_per_class": None},
    "data": {"tfrecord_dir": ""},
    "model": {"weights": "none"},
    "train": {"distribute": "none"},
    "train_head": {"class_weight": "none", "warmup_epochs": 0, "feature_cache": 0},
    "finetune": {"epochs": 0, "class_weight": "none", "warmup_epochs": 0, "early_stopping_patience": 0},
}


def _nulls(tree):
    return {key: _nulls(value) if isinstance(value, dict) else None for key, value in tree.items()}


def test_null_is_off_for_every_optional_setting_and_the_old_spellings_still_work():
    old = parse_params(OLD_OFF_SPELLINGS)
    assert parse_params(_nulls(OLD_OFF_SPELLINGS)) == old
    assert old.model.pretrained is False and old.train_head.feature_cache == 0 and old.finetune.epochs == 0


def test_null_is_refused_where_a_setting_has_no_off():
    with pytest.raises(ParamsError, match="data.image_size: Input should be a valid integer"):
        parse_params({"data": {"image_size": None}})
    # dvc.yaml lists the folder as a dependency of download, so it is a folder whatever the source
    with pytest.raises(ParamsError, match="download.folder.path: Input should be a valid string"):
        parse_params({"download": {"folder": {"path": None}}})
    with pytest.raises(ParamsError, match="download.folder.path: String should have at least 1 character"):
        parse_params({"download": {"folder": {"path": ""}}})


def test_the_default_top_k_fits_two_classes_but_a_top_k_set_by_hand_must():
    assert parse_params({"subset": {"num_classes": 2}}).evaluate.top_k == 3  # evaluate uses min(3, classes)
    with pytest.raises(ParamsError, match=r"evaluate.top_k \(3\) must be <= the number of classes \(2\)"):
        parse_params({"subset": {"num_classes": 2}, "evaluate": {"top_k": 3}})


def test_download_max_pixels_still_works_with_one_line_of_warning(capsys):
    params = parse_params({"download": {"max_pixels": 1000}})
    assert params.data.max_pixels == 1000
    assert capsys.readouterr().err == "warning: download.max_pixels is deprecated: move it to data.max_pixels\n"
    assert parse_params({"download": {"max_pixels": 1000}, "data": {"max_pixels": 1000}}).data.max_pixels == 1000
    with pytest.raises(ParamsError, match=r"download.max_pixels \(1000\) and data.max_pixels \(2000\) differ"):
        parse_params({"download": {"max_pixels": 1000}, "data": {"max_pixels": 2000}})
