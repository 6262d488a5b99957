"""The typed schema of params.yaml: the only module that knows its shape.

Every stage calls :func:`load_params` first, so a typo, a wrong type or an out-of-range value stops
the pipeline at its first stage with one line naming the key, before anything is downloaded or
trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ParamsError

PARAMS_FILE = Path("params.yaml")

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SampleSource(Section):
    """The embedded offline dataset: generated, deterministic, learnable (see ``sample.py``)."""

    classes: int = Field(6, ge=2, le=6)
    train_images: int = Field(110, ge=2, description="images of the most frequent class in train")
    test_images: int = Field(50, ge=2, description="images of the most frequent class in test")
    rarest_fraction: float = Field(0.7, gt=0.0, le=1.0)
    min_side: int = Field(80, ge=32)
    max_side: int = Field(160, ge=32)
    grayscale_fraction: Fraction = 0.1

    @model_validator(mode="after")
    def _sides(self) -> "SampleSource":
        if self.max_side < self.min_side:
            raise ValueError(f"max_side ({self.max_side}) must be >= min_side ({self.min_side})")
        return self


SOURCES = ("sample", "inaturalist", "archive", "folder")
IMPLEMENTED_SOURCES = ("sample",)


class Download(Section):
    source: str = "sample"
    max_pixels: int = Field(50_000_000, ge=1, description="decompression-bomb cap per image")
    sample: SampleSource = SampleSource()

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value not in SOURCES:
            raise ValueError(f"must be one of {', '.join(SOURCES)}")
        if value not in IMPLEMENTED_SOURCES:
            raise ValueError(
                f"'{value}' is not available in this version; allowed: {', '.join(IMPLEMENTED_SOURCES)}"
            )
        return value


class Subset(Section):
    classes: list[str] = Field(default_factory=list, description="explicit class names; empty = pick")
    num_classes: int = Field(4, ge=2)
    max_per_class: int | None = Field(None, ge=1, description="cap per class and split; null = none")
    val_fraction: float = Field(0.15, gt=0.0, lt=1.0)


class Data(Section):
    image_size: int = Field(64, ge=32, le=1024)
    batch_size: int = Field(32, ge=1, le=4096)


FillMode = Literal["reflect", "wrap", "constant", "nearest"]


class Augment(Section):
    """The study's ImageDataGenerator settings, applied with Keras preprocessing layers."""

    rotation: float = Field(40.0, ge=0.0, le=180.0, description="degrees")
    width_shift: Fraction = 0.2
    height_shift: Fraction = 0.2
    shear: float = Field(0.2, ge=0.0, le=1.0)
    zoom: float = Field(0.2, ge=0.0, lt=1.0)
    horizontal_flip: bool = True
    brightness: tuple[float, float] = (0.8, 1.2)
    fill_mode: FillMode = "reflect"

    @field_validator("brightness")
    @classmethod
    def _brightness(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 < low <= high <= 2.0:
            raise ValueError("must be [low, high] with 0 < low <= high <= 2")
        return value


BACKBONES = ("EfficientNetB0",)


class ModelParams(Section):
    backbone: Literal["EfficientNetB0"] = "EfficientNetB0"
    weights: str = Field("none", description="imagenet | none | path to a weights file")
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


class TrainHead(Section):
    epochs: int = Field(20, ge=1)
    learning_rate: PositiveFloat = 1e-2


BatchNormMode = Literal["auto", "frozen", "train"]


class Finetune(Section):
    epochs: int = Field(100, ge=0)
    learning_rate: PositiveFloat = 1e-4
    unfreeze: int | Literal["all"] = "all"
    batchnorm: BatchNormMode = Field(
        "auto", description="auto: frozen with pretrained weights, trained with weights none"
    )
    early_stopping_patience: int = Field(0, ge=0)

    @field_validator("unfreeze")
    @classmethod
    def _unfreeze(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be 'all' or a positive number of top layers")
        return value

    def batchnorm_trains(self, model: ModelParams) -> bool:
        """Pretrained statistics are worth protecting; a random base's are not (see README)."""
        if self.batchnorm == "auto":
            return not model.pretrained
        return self.batchnorm == "train"


Split = Literal["train", "val", "test"]


class Evaluate(Section):
    splits: list[Split] = Field(default_factory=lambda: ["train", "test"], min_length=1)
    top_k: int = Field(2, ge=1)


class Params(Section):
    seed: int = Field(42, ge=0, lt=2**31)
    download: Download = Download()
    subset: Subset = Subset()
    data: Data = Data()
    augment: Augment = Augment()
    model: ModelParams = ModelParams()
    train_head: TrainHead = TrainHead()
    finetune: Finetune = Finetune()
    evaluate: Evaluate = Evaluate()

    @model_validator(mode="after")
    def _cross_checks(self) -> "Params":
        classes = len(self.subset.classes) or self.subset.num_classes
        if self.evaluate.top_k > classes:
            raise ValueError(f"evaluate.top_k ({self.evaluate.top_k}) must be <= the number of classes ({classes})")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.subset.classes) or self.subset.num_classes


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
