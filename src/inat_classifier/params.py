"""The typed schema of params.yaml: the only module that knows its shape.

Every stage calls :func:`load_params` first, so a typo, a wrong type or an out-of-range value stops
the pipeline at its first stage with one line naming the key, before anything is downloaded or
trained.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, field_validator, model_validator

from .errors import ParamsError
from .data.images import DEFAULT_MAX_PIXELS, PILLOW_MAX_PIXELS
from .layout import SPLITS

PARAMS_FILE = Path("params.yaml")

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _off(spelling: object) -> BeforeValidator:
    """``null`` means off for every key; the key's older spelling of off (none, 0, "", []) still works
    and is what the code sees, so one value reads the same whichever way it was written."""
    return BeforeValidator(lambda value: spelling if value is None else value)


OffText = Annotated[str, _off("")]
OffCount = Annotated[int, _off(0)]
OffFraction = Annotated[float, _off(0.0), Field(ge=0.0)]


class SampleSource(Section):
    """The embedded offline dataset: generated, deterministic, learnable (see ``sample.py``)."""

    classes: int = Field(6, ge=2, le=6)
    train_images: int = Field(160, ge=2, description="images of the most frequent class in train")
    test_images: int = Field(150, ge=2, description="images of the most frequent class in test")
    rarest_fraction: float = Field(0.7, gt=0.0, le=1.0)
    min_side: int = Field(80, ge=32)
    max_side: int = Field(160, ge=32)
    grayscale_fraction: Fraction = 0.1
    # The pictures' own seed, not the top-level one: like real photos, the sample stays put when
    # `seed` changes, so runs of several seeds differ by training alone and score the same photos.
    seed: StrictInt = Field(42, ge=0, lt=2**31)

    @model_validator(mode="after")
    def _sides(self) -> "SampleSource":
        if self.max_side < self.min_side:
            raise ValueError(f"max_side ({self.max_side}) must be >= min_side ({self.min_side})")
        return self


# Photo licence codes as the iNaturalist API writes them (null there means all rights reserved).
LicenseCode = Literal["cc0", "cc-by", "cc-by-nc", "cc-by-sa", "cc-by-nd", "cc-by-nc-sa", "cc-by-nc-nd"]
LICENSE_CODES: tuple[str, ...] = get_args(LicenseCode)
# Swainson's and Hermit Thrush look alike (the hard pair); raccoon tracks are the paw-print problem.
DEFAULT_TAXA = ("Catharus ustulatus", "Catharus guttatus", "Procyon lotor", "Sciurus carolinensis")
INATURALIST_API = "https://api.inaturalist.org/v1"
PHOTO_HOSTS = ("inaturalist-open-data.s3.amazonaws.com", "static.inaturalist.org")


class PerSplit(Section):
    train: int = Field(300, ge=1)
    test: int = Field(100, ge=1)


class InaturalistSource(Section):
    """Observations' photos from the iNaturalist v1 API, one year for train and one for test."""

    taxa: list[StrictStr | StrictInt] = Field(default_factory=lambda: list(DEFAULT_TAXA), min_length=2)  # no true
    train_year: int = Field(2017, ge=1800, le=2100)
    test_year: int = Field(2018, ge=1800, le=2100)
    max_per_class: PerSplit = PerSplit()
    quality_grade: Literal["research", "needs_id", "casual", "any"] = "research"
    licenses: list[LicenseCode] = Field(default_factory=lambda: list(LICENSE_CODES), min_length=1)
    evidence: Literal["not_other", "organism", "any"] = "not_other"
    photo_size: Literal["thumb", "small", "medium", "large", "original"] = "medium"
    photos_per_observation: int = Field(1, ge=1, le=20)
    api_url: str = INATURALIST_API
    photo_hosts: list[str] = Field(default_factory=lambda: list(PHOTO_HOSTS))
    concurrency: int = Field(4, ge=1, le=16)
    requests_per_minute: float = Field(60, gt=0, le=60, description="API requests; iNaturalist asks <= 60")
    photo_requests_per_minute: float = Field(300, gt=0, le=1200)

    @field_validator("taxa")
    @classmethod
    def _taxa(cls, value: list[str | int]) -> list[str | int]:
        """Digits are taxon ids whether YAML read them as numbers or strings; names keep their case."""
        taxa: list[str | int] = []
        for item in value:
            if isinstance(item, str):
                item = " ".join(item.split())
                if not item:
                    raise ValueError("a taxon name is empty")
                item = int(item) if item.isdigit() else item
            if isinstance(item, int) and item < 1:
                raise ValueError(f"taxon id {item} must be positive")
            if str(item).lower() in (str(t).lower() for t in taxa):
                raise ValueError(f"{item!r} is listed twice")
            taxa.append(item)
        return taxa

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"'{value}' is not an http(s) URL like {INATURALIST_API}")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"'{value}': plain http is only for a local test server; use https")
        return value.rstrip("/")

    @field_validator("photo_hosts")
    @classmethod
    def _photo_hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
                raise ValueError(f"'{host}' is not a bare host name like {PHOTO_HOSTS[0]}")
        return [host.lower() for host in value]


class ArchiveSource(Section):
    """A tar or zip archive, verified by its sha256, in the folders or iNat competition layout."""

    url: OffText = Field("", description="http(s):// or file:// URL, or a local path")
    sha256: OffText = ""
    layout: Literal["folders", "inat_json"] = "folders"
    train_json: str = "train2017.json"
    test_json: str = "val2017.json"
    categories_json: OffText = Field("", description="optional file with the real category names (2018)")
    supercategories: Annotated[list[str], _off([])] = Field(default_factory=lambda: ["Mammalia", "Aves"])

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if len(scheme) > 1 and scheme not in ("http", "https", "file"):
            raise ValueError(f"'{value}': only http://, https://, file:// or a local path are allowed")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        value = value.strip().lower()
        if value and not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("must be the 64 hex digits printed by `sha256sum ARCHIVE`")
        return value


class FolderSource(Section):
    """A local directory with ``train/<class>/*`` and ``test/<class>/*``, used in place.

    dvc.yaml lists ``path`` among download's deps, so it must name a folder whatever the source:
    DVC then hashes its files and a changed photo reruns download (and what follows).
    """

    path: str = Field("data/photos", min_length=1, description="the folder; a DVC dependency of download")


class Download(Section):
    source: Literal["sample", "inaturalist", "archive", "folder"] = "sample"
    sample: SampleSource = SampleSource()
    inaturalist: InaturalistSource = InaturalistSource()
    archive: ArchiveSource = ArchiveSource()
    folder: FolderSource = FolderSource()

    @model_validator(mode="after")
    def _chosen_source_is_complete(self) -> "Download":
        if self.source == "archive":
            for key, what in (("url", "an http(s)/file:// URL or a path"), ("sha256", "its sha256 digest")):
                if not getattr(self.archive, key):
                    raise ValueError(f"archive.{key} is required when source is archive ({what})")
        return self


class Subset(Section):
    classes: Annotated[list[str], _off([])] = Field(
        default_factory=list, description="explicit class names; null or empty = pick"
    )
    num_classes: int = Field(4, ge=2)
    max_per_class: int | None = Field(None, ge=1, description="cap per class and split; null = none")
    val_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    drop_duplicates: bool = Field(True, description="drop val/test photos that copy an earlier split's photo")

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        twice = sorted({name for name in value if value.count(name) > 1})
        if twice:
            raise ValueError(f"{', '.join(map(repr, twice))} listed twice")
        return value


# tf.io.gfile's filesystems besides local paths: ram:// is TensorFlow's in-process one (tests).
RECORD_SCHEMES = ("gs", "s3", "hdfs", "ram")


class Data(Section):
    image_size: int = Field(48, ge=32, le=1024)
    batch_size: int = Field(32, ge=1, le=4096, description="the global batch, split over replicas")
    format: Literal["files", "tfrecord"] = Field(
        "files", description="files: decode the photos at the start of each stage; tfrecord: stream shards"
    )
    cache: Literal["auto", "memory", "disk"] = Field(
        "auto", description="files: decoded uint8 images in memory when they fit in a quarter of RAM, else disk"
    )
    shard_size: int = Field(1000, ge=1, description="images per TFRecord shard and per block of the shuffle")
    shuffle_shards: int = Field(4, ge=1, description="blocks shuffled together; tfrecord holds this many in memory")
    tfrecord_dir: OffText = Field("", description="where subset writes shards: empty = data/subset/tfrecord")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, le=PILLOW_MAX_PIXELS, description="decompression-bomb cap per image, at most Pillow's own"
    )

    @field_validator("tfrecord_dir")
    @classmethod
    def _tfrecord_dir(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if "://" in value and scheme not in RECORD_SCHEMES:
            raise ValueError(f"'{value}': a local path or a {'://, '.join(RECORD_SCHEMES)}:// URL")
        return value.rstrip("/")


FillMode = Literal["reflect", "wrap", "constant", "nearest"]


class Augment(Section):
    """The study's ImageDataGenerator settings, with its semantics (see ``augment.py``)."""

    rotation: float = Field(40.0, ge=0.0, le=180.0, description="degrees")
    width_shift: Fraction = 0.2
    height_shift: Fraction = 0.2
    shear: float = Field(0.2, ge=0.0, le=45.0, description="degrees, as ImageDataGenerator's shear_range")
    zoom: float = Field(0.2, ge=0.0, lt=1.0)
    horizontal_flip: bool = True
    brightness: tuple[float, float] = (0.8, 1.2)
    fill_mode: FillMode = "reflect"
    randaugment_ops: OffCount = Field(0, ge=0, le=11, description="Keras' RandAugment: this many of its 11 operations a batch")
    randaugment_factor: Fraction = Field(0.5, description="RandAugment's strength")

    @field_validator("brightness")
    @classmethod
    def _brightness(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 < low <= high <= 2.0:
            raise ValueError("must be [low, high] with 0 < low <= high <= 2")
        return value


class ModelParams(Section):
    backbone: Literal["EfficientNetB0"] = "EfficientNetB0"
    weights: Annotated[str, _off("none")] = Field("none", description="imagenet | none | path to a weights file")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        if value in ("imagenet", "none"):
            return value
        if not value.endswith((".h5", ".keras")):
            raise ValueError(f"'{value}' is not imagenet, none or a .h5/.keras weights file")
        if not Path(value).is_file():
            raise ValueError(f"weights file '{value}' does not exist (allowed: imagenet, none, a file path)")
        return value

    @property
    def pretrained(self) -> bool:
        return self.weights != "none"


Precision = Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"]
Distribute = Literal["none", "mirrored", "multi_worker"]


class Train(Section):
    """How both training stages use the devices; ``auto`` picks what was measured fastest there."""

    precision: Precision = Field("auto", description="auto: mixed_float16 on a GPU, float32 on a CPU")
    jit_compile: bool | Literal["auto"] = Field(
        "auto", description="XLA for the whole model; auto: off (Keras compiles no XLA under deterministic ops); "
        "true: XLA with the ops left non-deterministic"
    )
    cpu_bf16_math: StrictBool = Field(
        False, description="oneDNN computes float32 convolutions and matrix products in bfloat16 (AMX, AVX512_BF16 CPUs)"
    )
    onednn: bool | Literal["auto"] = Field(
        "auto", description="oneDNN's CPU kernels; auto: off up to 64 px (Eigen's trained 1.5x faster at 48 px), "
        "TensorFlow's choice above (oneDNN where the CPU has AVX-512 VNNI/BF16 or AMX)"
    )
    fuse_elementwise: bool | Literal["auto"] = Field(
        "auto", description="XLA fuses the chains of elementwise operations between the convolutions (TensorFlow's "
        "auto-clustering of fusible ops); auto: on for fine-tuning the whole base with BatchNorm frozen above "
        "64 px on the CPU build (the study's recipe: epochs 1.2x at 224 px), off elsewhere (slower there)"
    )
    distribute: Annotated[Distribute, _off("none")] = Field(
        "none", description="mirrored: every local GPU; multi_worker: the machines in TF_CONFIG (distribute.py)"
    )


ClassWeight = Literal["none", "balanced"]
Schedule = Literal["constant", "cosine"]


class Phase(Section):
    """What both training phases set: how long, how fast, and how the rate changes over the epochs."""

    epochs: int = Field(10, ge=1)
    learning_rate: PositiveFloat = 1e-3
    class_weight: Annotated[ClassWeight, _off("none")] = Field(
        "none", description="balanced: weigh classes inversely to their counts"
    )
    schedule: Schedule = Field("constant", description="cosine: decay to 0 by the last epoch")
    warmup_epochs: OffCount = Field(0, ge=0, description="cosine: rise linearly from 0 over these epochs first")
    label_smoothing: OffFraction = Field(0.0, lt=1.0, description="move this share of each label to all classes evenly")
    weight_decay: OffFraction = Field(0.0, description="decoupled weight decay (AdamW): weights shrink by rate x this a step")
    use_ema: StrictBool = Field(False, description="keep an exponential moving average of the weights and end with it")
    adam_epsilon: float | Literal["auto"] = Field(
        "auto", description="Adam's epsilon, the floor under each weight's gradient scale; auto: Keras' 1e-7 with "
        "pretrained weights, 1e-3 with weights none"
    )

    @field_validator("adam_epsilon", mode="before")
    @classmethod
    def _adam_epsilon(cls, value: object) -> object:
        if value == "auto":
            return value
        try:  # YAML 1.1 reads 1e-7 (no dot) as text
            number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or not 0 < number < 1:
            raise ValueError("must be 'auto' or a number above 0 and below 1, e.g. 1e-7 (Keras' default)")
        return number

    global_clipnorm: Annotated[float | Literal["auto"], _off(0.0)] = Field(
        "auto", description="cap on the gradient's global norm (Keras' global_clipnorm); auto: off with pretrained "
        "weights, 10 with weights none; 0 or null: off"
    )

    @field_validator("global_clipnorm", mode="before")
    @classmethod
    def _global_clipnorm(cls, value: object) -> object:
        if value in ("auto", None) or isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return value  # None: off, read as 0 by _off
        raise ValueError("must be 'auto', null (off) or a norm above 0, e.g. 10")

    @model_validator(mode="after")
    def _warmup(self) -> "Phase":
        if self.warmup_epochs and (self.schedule != "cosine" or self.warmup_epochs >= self.epochs):
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) needs schedule: cosine and fewer than epochs")
        return self


class TrainHead(Phase):
    feature_cache: OffCount = Field(
        2, ge=0, description="0: end to end; N: base features of N views (1 plain + N-1 augmented)"
    )


BatchNormMode = Literal["auto", "frozen", "train"]


class Finetune(Phase):
    epochs: OffCount = Field(40, ge=0)
    learning_rate: PositiveFloat = 5e-3
    schedule: Schedule = "cosine"
    unfreeze: int | str = Field(
        "auto", description="auto: the top 20 layers with pretrained weights, all with weights none; "
        "all; N top layers; blockN: EfficientNet's block N and everything above it"
    )
    batchnorm: BatchNormMode = Field(
        "auto", description="auto: frozen with pretrained weights, trained with weights none"
    )
    stochastic_depth: Annotated[float | Literal["auto"], _off(0.0)] = Field(
        "auto", description="EfficientNet's rate of skipping whole blocks while training (Keras' drop_connect_rate: "
        "block b of B at rate x b / B); auto: Keras' 0.2 (the study) with pretrained weights, 0 with weights none"
    )
    early_stopping_patience: OffCount = Field(0, ge=0)
    mixup: OffFraction = Field(0.0, le=1.0, description="Keras' MixUp alpha: blend pairs of images and their labels")
    cutmix: OffFraction = Field(0.0, le=1.0, description="Keras' CutMix factor: paste a patch of another image, labels by area")

    @field_validator("unfreeze")
    @classmethod
    def _unfreeze(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value >= 1 or value in ("auto", "all") or re.fullmatch(r"block[1-7]", str(value)):
            return value
        raise ValueError("must be 'auto', 'all', a positive number of top layers or block1 .. block7")

    @field_validator("stochastic_depth")
    @classmethod
    def _stochastic_depth(cls, value: float | str) -> float | str:
        if value == "auto" or not isinstance(value, str) and 0 <= value < 1:
            return value
        raise ValueError("must be 'auto' or a rate from 0 up to (not including) 1")


SplitName = Literal["train", "val", "test"]  # layout.SPLITS


class Evaluate(Section):
    splits: list[SplitName] = Field(default_factory=lambda: list(SPLITS), min_length=1)
    top_k: int = Field(3, ge=1, description="top-k accuracy; 3 is the iNat competition's metric")
    tta: OffCount = Field(4, ge=0, description="test-time augmentation: average over the plain and tta - 1 augmented views")


class Params(Section):
    seed: StrictInt = Field(42, ge=0, lt=2**31)  # YAML's true is not 1
    download: Download = Download()
    subset: Subset = Subset()
    data: Data = Data()
    augment: Augment = Augment()
    model: ModelParams = ModelParams()
    train: Train = Train()
    train_head: TrainHead = TrainHead()
    finetune: Finetune = Finetune()
    evaluate: Evaluate = Evaluate()

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, raw: object) -> object:
        """``download.max_pixels`` (before data.max_pixels, which every decoding stage reads) still works."""
        download = raw.get("download") if isinstance(raw, dict) else None
        if not isinstance(download, dict) or "max_pixels" not in download:
            return raw
        download = {key: value for key, value in download.items() if key != "max_pixels"}
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        old, new = raw["download"]["max_pixels"], data.get("max_pixels", raw["download"]["max_pixels"])
        if new != old:
            raise ValueError(f"download.max_pixels ({old}) and data.max_pixels ({new}) differ; keep data.max_pixels only")
        print("warning: download.max_pixels is deprecated: move it to data.max_pixels", file=sys.stderr)
        return {**raw, "download": download, "data": {**data, "max_pixels": old}}

    @model_validator(mode="after")
    def _cross_checks(self) -> "Params":
        classes = len(self.subset.classes or []) or self.subset.num_classes
        # The default (3) shrinks to fit fewer classes (evaluate stage); a k set by hand must fit.
        if "top_k" in self.evaluate.model_fields_set and self.evaluate.top_k > classes:
            raise ValueError(f"evaluate.top_k ({self.evaluate.top_k}) must be <= the number of classes ({classes})")
        return self


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "params"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    shown = error.get("input")
    if isinstance(shown, (dict, list)) or error["type"] == "value_error":
        return f"{key}: {message}"
    return f"{key}: {message} (got {shown!r})"


def parse_params(raw: object, source: str = str(PARAMS_FILE)) -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(_describe(error) for error in exc.errors())
        raise ParamsError(f"{source}: {details}") from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_params(raw, str(path))
