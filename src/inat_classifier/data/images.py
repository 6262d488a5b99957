"""Decoding photos safely: one place that turns any accepted file into RGB pixels.

Every source and every consumer (subset, training, predict) goes through :func:`open_rgb`, so EXIF
orientation, palette/alpha/CMYK/grayscale/16-bit conversion and the decompression-bomb cap are
applied the same way everywhere. Only photo formats are tried (Pillow's other plugins are odd
decoders, and EPS runs Ghostscript), and any decoder's exception makes the file skipped, not fatal.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from ..errors import DataError

# The decompression-bomb cap per image (params.yaml's data.max_pixels), and Pillow's own
# (PIL.Image.MAX_IMAGE_PIXELS), above which a larger cap would have no effect.
DEFAULT_MAX_PIXELS = 50_000_000
PILLOW_MAX_PIXELS = 89_478_485
# The formats photos come in; no other Pillow plugin is ever tried. JPEG's opener also reads MPO.
PHOTO_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_BACKGROUND = (255, 255, 255)
T = TypeVar("T")
A = TypeVar("A")
# Decoding is I/O and C code; results do not depend on the worker count.
DECODE_WORKERS = min(8, os.cpu_count() or 1)


class ImageError(DataError):
    """This file is not an image we accept (corrupt, truncated, too large, not an image)."""


class TooLarge(ImageError):
    """A readable image over the pixel cap: a matter of settings, not of the file."""


def open_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """Decode ``path`` fully into an upright RGB image, or raise :class:`ImageError` saying why.

    ``draft`` lets JPEG decoding skip resolution we will throw away (a large speed-up for photos).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=PHOTO_FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise TooLarge(f"{path}: {width}x{height} exceeds the {max_pixels}-pixel cap")
                if draft and image.format == "JPEG":
                    image.draft("RGB", (draft, draft))
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # Pillow's own cap, in open
        raise TooLarge(f"{path}: {' '.join(str(exc).split())}") from None
    except Exception as exc:  # noqa: BLE001 - whatever a decoder raises, this file is skipped, not the run
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageError(f"{path}: not a readable image ({reason})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in HIGH_DEPTH_MODES:
        image = _to_8bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float pixels scaled to 0..255: Pillow's own conversion clips them, mostly to white."""
    pixels = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if image.mode.startswith("I;16"):
        top = 65535.0
    else:  # 32-bit integers or floats: the smallest usual range that holds them
        peak = float(pixels.max(initial=0.0))
        ranges = (1.0, 255.0, 65535.0) if image.mode == "F" else (255.0, 65535.0)
        top = next((limit for limit in ranges if peak <= limit), peak)
    return Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).round().astype(np.uint8))


def load_resized(path: str | Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``size`` x ``size`` x 3 uint8 pixels, squashed like Keras' ``flow_from_directory`` did."""
    image = open_rgb(path, max_pixels=max_pixels, draft=size)
    resized = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(resized, dtype=np.uint8)


def try_each(fn: Callable[[A], T], paths: Sequence[A], desc: str | None) -> list[T | str]:
    """``fn`` over ``paths`` in threads (Pillow releases the GIL while decoding), with progress.

    An :class:`ImageError` becomes its one-line reason in the result: skipped and reported, not fatal.
    ``desc=None`` hides the progress bar (for callers that show their own).
    """

    def one(path: A) -> T | str:
        try:
            return fn(path)
        except ImageError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool:
        return list(tqdm(pool.map(one, paths), total=len(paths), desc=desc, unit="img", mininterval=1.0, disable=desc is None))


def load_many(
    paths: Sequence[str | Path],
    size: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    desc: str | None = "decoding",
    into: np.ndarray | None = None,
) -> tuple[np.ndarray, list[int], list[str]]:
    """Pixels of the readable images, their indices into ``paths``, and why the others were skipped.

    ``into`` (len(paths) x size x size x 3 uint8, e.g. a disk-backed memmap) receives the pixels in
    place, so a set larger than memory never has to fit in it; the kept rows end up at its front.
    """

    def load(item: tuple[int, str | Path]) -> np.ndarray | bool:
        index, path = item
        pixels = load_resized(path, size, max_pixels)
        if into is None:
            return pixels
        into[index] = pixels
        return True

    results = try_each(load, list(enumerate(paths)), desc)
    kept = [i for i, result in enumerate(results) if not isinstance(result, str)]
    problems = [result for result in results if isinstance(result, str)]
    if into is not None:
        for row, index in enumerate(kept):
            if row != index:
                into[row] = into[index]
        return into[: len(kept)], kept, problems
    pixels = np.stack([results[i] for i in kept]) if kept else np.zeros((0, size, size, 3), np.uint8)
    return pixels, kept, problems
