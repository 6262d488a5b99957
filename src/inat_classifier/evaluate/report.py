"""``reports/evaluate.md`` and its gallery ``reports/worst_test.png``: the evaluation as a person reads it.

The metrics files serve machines (``dvc metrics diff``, plots); this report is what one reads on
GitHub or in a CML comment: the study's per-class table, accuracy with its 95% interval, the
classes most often taken for one another, and the photos the model got wrong most confidently.
:func:`render_report` takes plain data and returns Markdown, and :func:`draw_gallery` draws a PNG
with no metadata, so the same evaluation always gives the same bytes (DVC hashes both).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..atomic import atomic_path
from ..data.images import DEFAULT_MAX_PIXELS, ImageError, open_rgb
from ..layout import SPLITS
from ..data.manifest import LICENSE_NAMES
from .markdown import cell as _cell
from .markdown import headline_table, in_split_order, number_cell

GALLERY_LIMIT = 8
COLUMNS = 4
TILE = 200  # photo area per tile (pixels, square); the label goes below it, long names are shortened
LINE, CREDIT_LINE = 16, 13  # one line of the default font at FONT_SIZE and at CREDIT_SIZE
LABEL_HEIGHT = 2 * LINE + 3 * CREDIT_LINE + 4  # true, predicted, then the credit: attribution, licence, source
FONT_SIZE, CREDIT_SIZE = 12, 10  # a caption-sized credit: an iNaturalist observation URL fits one line
PAD = 4
BACKGROUND, PHOTO_BACKGROUND = (255, 255, 255), (235, 235, 235)
TEXT, WRONG, CREDIT = (20, 20, 20), (170, 0, 0), (90, 90, 90)


@dataclass(frozen=True)
class SplitReport:
    """What the report shows of one split: its entry in ``metrics/evaluate.json``, its
    ``metrics/per_class_<split>.csv`` and :func:`most_confused_pairs` of its predictions."""

    metrics: Mapping
    table: pd.DataFrame
    confused: Sequence[tuple[str, str, int]]


def most_confused_pairs(true: Sequence[str], predicted: Sequence[str], top: int = 5) -> list[tuple[str, str, int]]:
    """The ``top`` (true class, predicted class, images) mistakes of a predictions file's ``true`` and
    ``predicted`` columns, most frequent first, ties by names."""
    counts = Counter((str(a), str(p)) for a, p in zip(true, predicted) if a != p)
    pairs = [(actual, guess, count) for (actual, guess), count in counts.items()]
    pairs.sort(key=lambda pair: (-pair[2], pair[0], pair[1]))
    return pairs[: max(top, 0)]


# --- the worst predictions and their gallery ---------------------------------------------------


def worst_misclassified(predictions: pd.DataFrame, limit: int = GALLERY_LIMIT) -> pd.DataFrame:
    """The ``limit`` wrong predictions made with the highest confidence (ties by path): the errors
    a threshold cannot catch, and often label noise or a look-alike worth a look."""
    wrong = predictions[predictions["true"] != predictions["predicted"]]
    ordered = wrong.sort_values(["confidence", "path"], ascending=[False, True], kind="stable")
    return ordered.head(max(limit, 0)).reset_index(drop=True)


def gallery_size(tiles: int, columns: int = COLUMNS) -> tuple[int, int]:
    """Width and height in pixels of a gallery of ``tiles`` tiles (``tiles`` >= 1)."""
    return min(tiles, columns) * TILE, math.ceil(tiles / columns) * (TILE + LABEL_HEIGHT)


def draw_gallery(
    rows: pd.DataFrame,
    target: str | Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    columns: int = COLUMNS,
    empty_message: str = "no misclassified test images",
) -> None:
    """Write a PNG grid of ``rows`` (``path, true, predicted, confidence`` and the credit columns
    ``license, attribution, url``), each photo decoded from its original file, labelled and credited
    under its tile; a small placeholder saying ``empty_message`` when there are none, so the declared
    output always exists. An unreadable photo becomes a grey tile, never a failure."""
    font = ImageFont.load_default(size=FONT_SIZE)
    if rows.empty:
        width = max(TILE * 2, math.ceil(font.getlength(empty_message)) + 2 * PAD)
        canvas = Image.new("RGB", (width, LABEL_HEIGHT), BACKGROUND)
        ImageDraw.Draw(canvas).text((PAD, PAD), empty_message, fill=TEXT, font=font)
    else:
        canvas = Image.new("RGB", gallery_size(len(rows), columns), BACKGROUND)
        for index, row in enumerate(rows.itertuples(index=False)):
            left, top = (index % columns) * TILE, (index // columns) * (TILE + LABEL_HEIGHT)
            _draw_tile(canvas, font, (left, top), row, max_pixels)
    # 256 colours: about a third of the bytes in git for a gallery that looks the same; median cut and
    # Floyd-Steinberg are deterministic, and Pillow writes no time or text chunks unless given pnginfo.
    palette = canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    with atomic_path(target) as tmp:
        palette.save(tmp, format="PNG")


def _draw_tile(canvas, font, origin, row, max_pixels) -> None:
    left, top = origin
    path, true, predicted, confidence = row.path, row.true, row.predicted, float(row.confidence)
    inner = TILE - 2 * PAD
    area = Image.new("RGB", (inner, inner), PHOTO_BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    try:
        photo = ImageOps.contain(open_rgb(path, max_pixels, draft=inner), (inner, inner), Image.Resampling.BICUBIC)
        area.paste(photo, ((inner - photo.width) // 2, (inner - photo.height) // 2))
    except ImageError:
        ImageDraw.Draw(area).text((PAD, PAD), "unreadable", fill=TEXT, font=font)
    canvas.paste(area, (left + PAD, top + PAD))
    y = top + TILE
    draw.text((left + PAD, y), _fit(draw, font, "true: ", true, ""), fill=TEXT, font=font)
    draw.text(
        (left + PAD, y + LINE),
        _fit(draw, font, "pred: ", predicted, f" ({confidence:.2f})"),
        fill=WRONG,
        font=font,
    )
    attribution, licence, url = credit(row)
    small = ImageFont.load_default(size=CREDIT_SIZE)
    for line, text in enumerate((attribution, licence, url.removeprefix("https://").removeprefix("www."))):
        draw.text((left + PAD, y + 2 * LINE + line * CREDIT_LINE), _cut(draw, small, text), fill=CREDIT, font=small)


def credit(row) -> tuple[str, str, str]:
    """(attribution, licence, url) of a predictions row: what must stand beside a photo shown or named."""
    attribution = str(getattr(row, "attribution", "") or "") or "no attribution recorded"
    code = str(getattr(row, "license", "") or "")
    return attribution, LICENSE_NAMES.get(code, code) or "licence unknown", str(getattr(row, "url", "") or "")


def _cut(draw: ImageDraw.ImageDraw, font, text: str) -> str:
    """``text`` shortened at its end to fit one tile (the full credit is in the report's table)."""
    width = TILE - 2 * PAD
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _fit(draw: ImageDraw.ImageDraw, font, prefix: str, name: str, suffix: str) -> str:
    """``prefix + name + suffix`` shortened at the name's start (never the confidence) to fit one tile.

    The end of a name tells classes apart: species of one genus share their first word.
    """
    width = TILE - 2 * PAD
    text = prefix + name + suffix
    while draw.textlength(text, font=font) > width and name:
        name = name[1:]
        text = prefix + "..." + name.lstrip() + suffix
    return text


# --- the Markdown --------------------------------------------------------------------------------


def render_report(
    splits: Mapping[str, SplitReport],
    worst: pd.DataFrame | None = None,
    gallery: str = "worst_test.png",
    data: Mapping | None = None,
    not_drawn: str | None = None,
) -> str:
    """The report as Markdown. ``worst`` is :func:`worst_misclassified` of the test predictions (None
    when test was not evaluated); ``gallery`` is the PNG's path relative to the report; ``data`` is
    the subset stage's ``metrics/subset.json`` (class balance and leaked copies); ``not_drawn`` is
    why the photos may not be shown (``manifest.showing_forbidden``): then they are only listed."""
    names = in_split_order(splits)
    lines = [
        "# Evaluation",
        "",
        "_Generated by the report stage (`reports/evaluate.md`); do not edit by hand. Numbers: "
        "`metrics/evaluate.json`; per image: `metrics/predictions_<split>.csv`; plots: `dvc plots show`._",
        "",
    ]
    if not names:
        return "\n".join(lines + ["No split was evaluated (`evaluate.splits`)."]) + "\n"
    lines += _headline(splits)
    if data is not None:
        lines += _data_section(data)
    for name in names:
        lines += _split_section(name, splits[name])
    lines += _worst_section(worst, gallery, not_drawn)
    return "\n".join(lines).rstrip() + "\n"


def _data_section(data: Mapping) -> list[str]:
    """Class balance and the leakage check: what to know before believing the numbers above."""
    lines = ["## Data checks", ""]
    for split in SPLITS:
        if split in data:
            ratio = data[split].get("imbalance_ratio")
            lines.append(f"- {split}: {data[split]['images']} images, largest / smallest class "
                         f"{'-' if ratio is None else f'{ratio:.2f}'}")
    copies = data.get("duplicates")
    if copies is not None:
        found = copies["exact"] + copies["near"]
        lines.append(
            f"- Leakage check: {found} val/test photos copy an earlier split's photo ({copies['exact']} exact, "
            f"{copies['near']} near); {copies['dropped']} dropped (`subset.drop_duplicates`; list in "
            "`data/subset/duplicates.csv`)."
        )
    return lines + [""]


def _headline(splits: Mapping[str, SplitReport]) -> list[str]:
    lines = ["## Headline metrics", "", *headline_table({name: split.metrics for name, split in splits.items()})]
    lines += [
        "",
        "The interval is the 95% Wilson score interval of accuracy: a difference between runs or experiments "
        "that stays inside it is noise, not evidence that one model is better. ECE (expected calibration "
        "error) is how far the model's confidence is from its accuracy (0 = calibrated).",
        "",
    ]
    return lines


def _split_section(name: str, split: SplitReport) -> list[str]:
    table = split.table
    lines = [
        f"## {name} ({split.metrics.get('images', len(table))} images)",
        "",
        "| class | images | correctly classified | incorrectly classified | precision | recall | F1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table.itertuples(index=False):
        cells = [_cell(row.class_name), str(row.images), str(row.correct), str(row.incorrect)]
        cells += [number_cell(float(v)) if row.images else "-" for v in (row.precision, row.recall, row.f1)]
        lines.append("| " + " | ".join(cells) + " |")
    totals = [int(table[column].sum()) for column in ("images", "correct", "incorrect")]
    lines.append("| **total** | " + " | ".join(str(t) for t in totals) + " | | | |")
    lines += ["", "Most confused (true class -> predicted class):", ""]
    if split.confused:
        lines += [
            f"- {_cell(actual)} -> {_cell(guess)}: {count} image{'s' if count != 1 else ''}"
            for actual, guess, count in split.confused
        ]
    else:
        lines.append("- none: every image was classified correctly.")
    return lines + [""]


def _worst_section(worst: pd.DataFrame | None, gallery: str, not_drawn: str | None = None) -> list[str]:
    lines = ["## Worst misclassified test photos", ""]
    if worst is None:
        return lines + ["The test split was not evaluated (`evaluate.splits`)."]
    if worst.empty:
        return lines + ["There are none: every test photo was classified correctly."]
    lines += [
        f"The {len(worst)} wrong predictions made with the highest confidence, most confident first "
        "(label noise, look-alikes and unusual photos show up here):",
        "",
    ]
    if not_drawn:
        lines += [f"Not drawn: {not_drawn}; they are listed instead.", ""]
    else:
        lines += [
            f"![The worst misclassified test photos, labelled with true and predicted class and credited]({gallery})",
            "",
        ]
    lines += [
        "| # | photo | true | predicted | confidence | credit |",
        "|---:|---|---|---|---:|---|",
    ]
    for rank, row in enumerate(worst.itertuples(index=False), start=1):
        attribution, licence, url = credit(row)
        source = f", [source]({url})" if url else ""
        lines.append(
            f"| {rank} | `{_cell(row.path)}` | {_cell(row.true)} | {_cell(row.predicted)} | {float(row.confidence):.2f} "
            f"| {_cell(attribution)}, {_cell(licence)}{source} |"
        )
    return lines
