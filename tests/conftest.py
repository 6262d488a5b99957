"""Shared fixtures: tiny images and datasets written on the fly, never fetched."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO = Path(__file__).resolve().parents[1]


def write_image(path: Path, size=(40, 30), mode="RGB", seed=0, fmt=None) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def fetch(params, *args, **kwargs) -> None:
    """The download stage's call for a test's params: its section, the seed and the pixel cap."""
    from inat_classifier.sources import download

    download(params.download, params.seed, params.data.max_pixels, *args, **kwargs)


@pytest.fixture
def image_factory(tmp_path):
    def make(name="a.jpg", **kwargs):
        return write_image(tmp_path / name, **kwargs)

    return make


def pytest_report_header(config):
    """Which numerics path TensorFlow takes in this run (make test runs both)."""
    return f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset (the CPU decides)')}"
