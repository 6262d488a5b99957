"""The class-names file: a JSON list of distinct names in label order, written and read only here.

The subset stage writes ``data/subset/classes.json``; fine-tuning copies it beside the model
(``models/model.classes.json``) so that ``predict`` needs nothing but the model; the export puts
one beside the exported models. Every writer and reader checks the same rules.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..atomic import write_text
from ..errors import DataError
from ..layout import CLASSES_FILE, SUBSET_DIR

UNKNOWN = "unknown"  # what predict answers below its threshold: no class may be called that
SUFFIX = ".classes.json"


def checked(names: object, source: str | Path) -> list[str]:
    """``names`` if they are a non-empty list of distinct strings, none of them ``unknown``."""
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"{source}: expected a non-empty JSON list of class names (strings)")
    if len(set(names)) != len(names):
        raise DataError(f"{source}: class names are not distinct")
    if UNKNOWN in names:
        raise DataError(f"{source}: '{UNKNOWN}' is reserved for answers below the threshold")
    return names


def write_class_names(target: str | Path, names: Sequence[str]) -> Path:
    """Write the names, checked, atomically; the bytes depend only on the names."""
    write_text(target, json.dumps(checked(list(names), target), indent=2) + "\n")
    return Path(target)


def read_class_names(path: str | Path, missing: str = "") -> list[str]:
    """The checked names in ``path``; ``missing`` says how to make the file when it is not there."""
    path = Path(path)
    try:
        names = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: class names file not found{'; ' + missing if missing else ''}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a JSON list of class names ({' '.join(str(exc).split())})") from None
    return checked(names, path)


def beside(model_path: str | Path) -> Path:
    """``models/model.keras`` -> ``models/model.classes.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + SUFFIX)


def save_beside(model_path: str | Path, names: Sequence[str]) -> Path:
    """Write the class names beside the model (the finetune stage does this)."""
    return write_class_names(beside(model_path), names)


def load_beside(model_path: str | Path) -> list[str]:
    """The names beside the model. Never guessed from elsewhere (``data/subset/classes.json`` may belong
    to another experiment than this model): without them, the caller must name the file."""
    path = beside(model_path)
    if not path.is_file():
        raise DataError(f"class names not found beside the model ({path}); pass --classes PATH (a JSON list in label order)")
    return read_class_names(path)


def subset_classes(subset_dir: Path = SUBSET_DIR) -> list[str]:
    """The subset stage's class names, in label order."""
    return read_class_names(Path(subset_dir) / CLASSES_FILE, "run the subset stage first (dvc repro subset)")
