"""Running a trained classifier on new photos: files and folders in, top-k species out.

Output is one row per readable image, the same columns in every format (the JSON is the table as a
list of records)::

    path, prediction, probability, class_1, probability_1, ..., class_k, probability_k

``prediction`` is the most probable class, or ``unknown`` when its probability is below the
threshold; ``probability`` is that top-1 probability either way, and ``class_i``/``probability_i``
are the k most probable classes, most probable first. Unreadable files are reported and skipped.

With ``rollup``, an image below the threshold is answered with the lowest-ranked taxon (a genus, a
family, ...) whose classes' summed probability reaches it ("Catharus", 0.93), ``unknown`` only when
none does; a ``rank`` column follows ``prediction`` and ``probability`` is the answer's (the top
class's for ``unknown``).
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..atomic import write_text
from ..data.classnames import UNKNOWN
from ..data.images import DEFAULT_MAX_PIXELS, load_many
from ..data.taxonomy import Taxon, rollup_ranks
from ..data.taxonomy import rollup as roll_up
from ..errors import UserError
from ..evaluate.topk import DIGITS, rank_classes, top_k_columns

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
OUTPUT_FORMATS = ("table", "csv", "json")


# --- finding the images -----------------------------------------------------------------------


def collect_images(inputs: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Image files named directly or found (recursively, by extension) in folders, and what was missing.

    A file named directly is always tried, whatever its extension; in folders only files with an
    image extension (any case) count, in sorted order, hidden files and folders excluded.
    """
    paths: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = sorted(
                p
                for p in item.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(item).parts)
            )
            if not found:
                problems.append(f"{item}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder")
            paths.extend(found)
        elif item.is_file():
            paths.append(item)
        else:
            problems.append(f"{item}: no such file or folder")
    unique = list(dict.fromkeys(paths))  # a file named twice is classified once
    return unique, problems


# --- classifying ------------------------------------------------------------------------------

_PREDICTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def input_size(model) -> int:
    """The square side the model was built for, read from the model itself."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[1] is None or shape[3] != 3:
        raise UserError(f"the model's input shape {shape} is not (None, S, S, 3): not an image classifier")
    return int(shape[1])


def predictor(model):
    """The model in inference mode as one compiled function for any batch size (traced once per model)."""
    function = _PREDICTORS.get(model)
    if function is None:
        import tensorflow as tf

        size = input_size(model)
        ref = weakref.ref(model)  # the cache must not keep the model alive
        function = tf.function(
            lambda x: ref()(x, training=False),
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
        )
        _PREDICTORS[model] = function
    return function


def tta_views(count: int) -> Callable[[np.ndarray, int], list]:
    """A function of a uint8 batch and its index giving the plain float32 batch and ``count`` - 1
    augmented ones, each keyed by (view, batch index): the same views on every run."""
    if count == 1:
        return lambda pixels, batch: [pixels.astype("float32")]
    import tensorflow as tf

    from ..params import Augment
    from ..train.augment import build_augmenter

    augment = build_augmenter(Augment())
    return lambda pixels, batch: [pixels.astype("float32")] + [
        augment(tf.constant(pixels), tf.constant([view, batch], tf.int64)).numpy() for view in range(1, count)
    ]


def classify(
    model,
    paths: Sequence[str | Path],
    class_names: Sequence[str | Taxon],
    top_k: int = 3,
    threshold: float = 0.0,
    batch_size: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    tta: int = 1,
    rollup: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Predictions for the readable images (see the module docstring for the columns) and why the
    others were skipped. ``rollup`` needs the classes as :class:`Taxon` with their ancestry.

    Images are decoded and resized exactly as for training (:func:`images.load_resized`, at the
    model's input size), a batch at a time, so memory does not grow with the number of files.
    ``tta`` > 1 averages the plain view with ``tta`` - 1 views augmented as training augments
    (params.yaml's default ``augment`` section), like ``evaluate.tta``.
    """
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"threshold {threshold} is not between 0 and 1")
    if batch_size < 1:
        raise UserError(f"batch size {batch_size} must be at least 1")
    if tta < 1:
        raise UserError(f"tta {tta} must be at least 1 (1: the plain view only)")
    size = input_size(model)
    outputs = int(model.output_shape[-1])
    if outputs != len(class_names):
        raise UserError(f"the model predicts {outputs} classes but {len(class_names)} class names were given")
    k = max(1, min(top_k, outputs))
    taxa = [c if isinstance(c, Taxon) else Taxon(c) for c in class_names]
    if rollup and not rollup_ranks(taxa):
        raise UserError("--rollup needs the classes' ancestry, and these classes have none (a class-names file "
                        "of names only: rerun the pipeline, `dvc repro`, for one with taxonomy)")
    names = np.asarray([taxon.name for taxon in taxa], dtype=object)
    predict, views = predictor(model), tta_views(tta)

    kept: list[str] = []
    problems: list[str] = []
    probs: list[np.ndarray] = []
    with tqdm(
        total=len(paths), desc="classifying", unit="img", disable=not progress, file=sys.stderr, mininterval=1.0
    ) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            pixels, readable, unreadable = load_many(chunk, size, max_pixels, desc=None)
            problems += unreadable
            kept += [str(chunk[i]) for i in readable]
            if len(pixels):
                probs.append(np.mean([np.asarray(predict(view), np.float64) for view in views(pixels, start)], axis=0))
            bar.update(len(chunk))
    matrix = np.concatenate(probs) if probs else np.zeros((0, outputs))
    frame = _table(kept, matrix, names, k, threshold)
    return (_rolled_up(frame, matrix, taxa, threshold) if rollup else frame), problems


def columns(top_k: int, rollup: bool = False) -> list[str]:
    return ["path", "prediction", *(["rank"] if rollup else []), "probability", *top_k_columns(top_k)]


def _table(paths: list[str], probs: np.ndarray, names: np.ndarray, k: int, threshold: float) -> pd.DataFrame:
    ranked = rank_classes(probs, names, k)
    data: dict[str, object] = {
        "path": paths,
        "prediction": np.where(ranked["probability_1"] < threshold, UNKNOWN, ranked["class_1"]),
        "probability": ranked["probability_1"],
        **ranked,
    }
    return pd.DataFrame(data, columns=columns(k))


def _rolled_up(frame: pd.DataFrame, probs: np.ndarray, taxa: Sequence[Taxon], threshold: float) -> pd.DataFrame:
    """``frame`` with each answer below the threshold rolled up to a taxon that reaches it, and its rank."""
    answers, ranks, chances = roll_up(probs, taxa, threshold) if len(frame) else ([], [], np.zeros(0))
    frame = frame.copy()
    frame["prediction"] = [UNKNOWN if answer is None else answer for answer in answers]
    frame["rank"] = ranks
    frame["probability"] = np.asarray(chances, dtype=np.float64).round(DIGITS)
    k = (len(frame.columns) - 4) // 2
    return frame[columns(k, rollup=True)]


# --- output -----------------------------------------------------------------------------------


def render(frame: pd.DataFrame, fmt: str) -> str:
    """The predictions as an aligned table, CSV or JSON (a list of records with the CSV's columns)."""
    if fmt == "csv":
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False, lineterminator="\n")
        return buffer.getvalue()
    if fmt == "json":
        return json.dumps(frame.to_dict(orient="records"), indent=2, allow_nan=False) + "\n"
    if fmt == "table":
        return _aligned(frame) if len(frame) else "no images classified\n"
    raise UserError(f"unknown format '{fmt}' (choose from {', '.join(OUTPUT_FORMATS)})")


def _aligned(frame: pd.DataFrame) -> str:
    """Text columns left-aligned, probabilities to 3 decimals and right-aligned, two spaces apart."""
    cells = {
        column: [f"{value:.3f}" for value in frame[column]] if column.startswith("probability") else list(frame[column])
        for column in frame.columns
    }
    widths = {column: max(len(column), *(len(str(v)) for v in values)) for column, values in cells.items()}

    def line(values: dict) -> str:
        parts = [
            str(values[c]).rjust(widths[c]) if c.startswith("probability") else str(values[c]).ljust(widths[c])
            for c in frame.columns
        ]
        return "  ".join(parts).rstrip()

    rows = [line({c: c for c in frame.columns})]
    rows += [line({c: cells[c][i] for c in frame.columns}) for i in range(len(frame))]
    return "\n".join(rows) + "\n"


def format_for(output: str | Path | None, fmt: str | None) -> str:
    """An explicit ``--format``, else the output file's extension (.csv, .json), else a table."""
    if fmt:
        return fmt
    suffix = Path(output).suffix.lower() if output else ""
    return {".csv": "csv", ".json": "json"}.get(suffix, "table")


def write_output(text: str, output: str | Path | None, stream: TextIO | None = None) -> None:
    """To ``stream`` (stdout), to a special file such as ``/dev/stdout`` or a FIFO as it is, else atomically."""
    if output is None or str(output) == "-":
        (stream or sys.stdout).write(text)
        return
    try:
        mode = os.stat(output).st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    if stat.S_ISDIR(mode):
        raise UserError(f"{output}: is a folder; -o takes a file")
    if stat.S_ISREG(mode):
        write_text(output, text)
    else:  # replacing it would put a regular file where a device or a pipe was
        with open(output, "w") as handle:
            handle.write(text)


def report_problems(problems: Sequence[str], stream: TextIO | None = None) -> None:
    for problem in problems:
        print(f"skipped: {problem}", file=stream or sys.stderr)
