"""The class-names file: a JSON list of distinct classes in label order, written and read only here.

The subset stage writes ``data/subset/classes.json``; fine-tuning copies it beside the model
(``models/model.classes.json``) so that ``predict`` needs nothing but the model; the export puts
one beside the exported models. Every writer and reader checks the same rules.

Each entry is a class name, or, where its taxonomy is known (``taxonomy.py``), an object with the
``name`` and ``taxon_id``, ``rank``, ``common_name``, ``ancestry``. Files of names only (older ones,
or a source without taxonomy, which still writes them) read as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..atomic import write_text
from ..errors import DataError
from ..layout import CLASSES_FILE, SUBSET_DIR
from .taxonomy import Taxon, from_json

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


def checked_taxa(entries: object, source: str | Path) -> list[Taxon]:
    """The classes of a file's JSON (names, or objects with a ``name``), their names :func:`checked`."""
    if not isinstance(entries, list):
        raise DataError(f"{source}: expected a non-empty JSON list of class names (strings)")
    taxa = [from_json(entry, source) for entry in entries]
    checked([taxon.name for taxon in taxa], source)
    return taxa


def write_class_names(target: str | Path, classes: Sequence[str | Taxon]) -> Path:
    """Write the classes, checked, atomically: plain names unless some taxonomy is known; the bytes
    depend only on the classes."""
    taxa = [c if isinstance(c, Taxon) else Taxon(c) for c in classes]
    checked([taxon.name for taxon in taxa], target)
    data = [t.to_json() for t in taxa] if any(t.known for t in taxa) else [t.name for t in taxa]
    write_text(target, json.dumps(data, indent=2) + "\n")
    return Path(target)


def read_classes(path: str | Path, missing: str = "") -> list[Taxon]:
    """The checked classes in ``path``; ``missing`` says how to make the file when it is not there."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: class names file not found{'; ' + missing if missing else ''}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a JSON list of class names ({' '.join(str(exc).split())})") from None
    return checked_taxa(entries, path)


def read_class_names(path: str | Path, missing: str = "") -> list[str]:
    """The names of :func:`read_classes`."""
    return [taxon.name for taxon in read_classes(path, missing)]


def beside(model_path: str | Path) -> Path:
    """``models/model.keras`` -> ``models/model.classes.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + SUFFIX)


def save_beside(model_path: str | Path, classes: Sequence[str | Taxon]) -> Path:
    """Write the classes beside the model (the finetune stage does this)."""
    return write_class_names(beside(model_path), classes)


def load_taxa_beside(model_path: str | Path) -> list[Taxon]:
    """The classes beside the model. Never guessed from elsewhere (``data/subset/classes.json`` may belong
    to another experiment than this model): without them, the caller must name the file."""
    path = beside(model_path)
    if not path.is_file():
        raise DataError(f"class names not found beside the model ({path}); pass --classes PATH (a JSON list in label order)")
    return read_classes(path)


def load_beside(model_path: str | Path) -> list[str]:
    """The names of :func:`load_taxa_beside`."""
    return [taxon.name for taxon in load_taxa_beside(model_path)]


def subset_taxa(subset_dir: Path = SUBSET_DIR) -> list[Taxon]:
    """The subset stage's classes, in label order."""
    return read_classes(Path(subset_dir) / CLASSES_FILE, "run the subset stage first (dvc repro subset)")


def subset_classes(subset_dir: Path = SUBSET_DIR) -> list[str]:
    """The subset stage's class names, in label order."""
    return [taxon.name for taxon in subset_taxa(subset_dir)]
