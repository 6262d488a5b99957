"""Exporting the classifier for serving, each artefact checked against the Keras model.

``<out>/saved_model/`` is a TensorFlow SavedModel for TF Serving (signature ``serving_default``,
also callable as ``serve``); ``<out>/model_float16.tflite`` and ``<out>/model_int8.tflite`` are
TFLite models with float16 and dynamic-range int8 weights. All take float32 images of shape
(N, S, S, 3) with values 0..255 (the model rescales itself) and return N x classes softmax
probabilities; ``<out>/classes.json`` names the classes in output order.

Each artefact is run on the same images as the Keras model; ``top1_agreement`` is the fraction of
images whose most probable class is the same as the Keras model's. ``<out>`` is replaced as a whole,
so it must be new, empty or hold nothing but a previous export's files (never ``models/`` or ``~``).
The figures record the Keras model's md5, so the model card shows them only beside that model
(:func:`figures_for`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_dir
from ..data.classnames import write_class_names
from ..errors import UserError

SAVED_MODEL = "saved_model"
TFLITE_FILES = {"tflite_float16": "model_float16.tflite", "tflite_int8": "model_int8.tflite"}
EXPORT_FORMATS = (SAVED_MODEL, *TFLITE_FILES)
CLASSES_JSON = "classes.json"
MIN_AGREEMENT = 0.99
# Formats that must agree with the Keras model on at least MIN_AGREEMENT of the images. Dynamic-range
# int8 changes the weights enough that it is measured and reported, not required.
REQUIRED = (SAVED_MODEL, "tflite_float16")
EXPORT_NAMES = frozenset({SAVED_MODEL, *TFLITE_FILES.values(), CLASSES_JSON})


def check_output_dir(out_dir: str | Path) -> None:
    """Refuse to replace a folder that holds anything but a previous export's files."""
    out_dir = Path(out_dir)
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise UserError(f"--output-dir {out_dir}: is a link or a file, not a folder; choose a new or empty folder")
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in EXPORT_NAMES) if out_dir.exists() else []
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UserError(
            f"--output-dir {out_dir}: holds {shown}, not only a previous export's files; the export replaces "
            "the whole folder, so choose a new or empty one"
        )


def export_model(
    model,
    out_dir: str | Path,
    pixels: np.ndarray,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
    model_path: str | Path | None = None,
) -> dict:
    """Write the SavedModel and both TFLite models to ``out_dir`` (replaced as a whole), run each on
    ``pixels`` and return sizes and top-1 agreement with the Keras model (``metrics/export.json``).
    """
    check_output_dir(out_dir)
    pixels = np.asarray(pixels, dtype=np.float32)
    if len(pixels) == 0:
        raise UserError("no images to check the exported models with")
    reference = np.asarray(model.predict(pixels, batch_size=batch_size, verbose=0))
    out_dir = Path(out_dir)
    report: dict = {"images": int(len(pixels))}
    if model_path is not None:
        report["keras"] = {"path": str(model_path), "size_bytes": Path(model_path).stat().st_size, "md5": md5_of(model_path)}

    with atomic_dir(out_dir) as tmp:
        saved = tmp / SAVED_MODEL
        model.export(str(saved), format="tf_saved_model", verbose=False)
        runners: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
            SAVED_MODEL: (_tree_size(saved), saved_model_runner(saved))
        }
        for name, filename in TFLITE_FILES.items():
            flat = convert_tflite(saved, quantization=name.removeprefix("tflite_"))
            (tmp / filename).write_bytes(flat)
            runners[name] = (len(flat), tflite_runner(flat))
        if class_names is not None:
            write_class_names(tmp / CLASSES_JSON, class_names)
        for name, (size, run) in runners.items():
            probs = run_batched(run, pixels, batch_size)
            where = out_dir / (SAVED_MODEL if name == SAVED_MODEL else TFLITE_FILES[name])
            report[name] = {"path": str(where), "size_bytes": size, **agreement(reference, probs)}
    return report


def md5_of(path: str | Path) -> str:
    """The file's md5, as dvc.lock records an output's."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def figures_for(model_path: str | Path, metrics: str | Path) -> dict | None:
    """The export figures in ``metrics`` (``metrics/export.json``) if they were measured on the model
    at ``model_path`` (the same md5), else None: missing, or another model's."""
    metrics = Path(metrics)
    if not metrics.is_file():
        return None
    figures = json.loads(metrics.read_text())
    return figures if figures.get("keras", {}).get("md5") == md5_of(model_path) else None


def saved_model_runner(folder: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """The SavedModel's ``serving_default`` signature (what TF Serving calls) as a batch function."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    (input_name,) = signature.structured_input_signature[1]

    def run(batch: np.ndarray) -> np.ndarray:
        (output,) = signature(**{input_name: tf.constant(batch, tf.float32)}).values()
        return output.numpy()

    return run


def convert_tflite(saved_model: str | Path, quantization: str) -> bytes:
    """A TFLite flatbuffer with ``float16`` weights or ``int8`` dynamic-range quantised weights."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization != "int8":
        raise ValueError(f"unknown quantization {quantization!r}")
    return converter.convert()


def tflite_interpreter(flat: bytes):
    """LiteRT's interpreter where installed, else TensorFlow's own (deprecated, still shipped)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Interpreter(model_content=flat)


def tflite_runner(flat: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float32 image batch to probabilities, resizing the input for each batch size."""
    interpreter = tflite_interpreter(flat)
    (source,) = interpreter.get_input_details()
    (target,) = interpreter.get_output_details()
    allocated: list[tuple[int, ...]] = []

    def run(batch: np.ndarray) -> np.ndarray:
        if not allocated or allocated[0] != batch.shape:
            interpreter.resize_tensor_input(source["index"], batch.shape)
            interpreter.allocate_tensors()
            allocated[:] = [batch.shape]
        interpreter.set_tensor(source["index"], batch.astype(source["dtype"]))
        interpreter.invoke()
        return np.array(interpreter.get_tensor(target["index"]))

    return run


def run_batched(run: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([run(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)])


def agreement(reference: np.ndarray, probs: np.ndarray) -> dict:
    """Top-1 agreement with the Keras model's probabilities and the largest probability difference."""
    if probs.shape != reference.shape:
        raise UserError(f"exported model returned shape {probs.shape}, the Keras model {reference.shape}")
    same = int(np.sum(probs.argmax(axis=1) == reference.argmax(axis=1)))
    return {
        "top1_agreeing": same,
        "top1_agreement": round(same / len(reference), 6),
        "max_probability_difference": round(float(np.max(np.abs(probs - reference))), 6),
    }


def check_agreement(report: dict, minimum: float = MIN_AGREEMENT, required: Sequence[str] = REQUIRED) -> None:
    """Refuse exports that do not behave like the Keras model (after the report has been written)."""
    failing = [
        f"{name} agrees on top-1 for {report[name]['top1_agreement']:.2%} of {report['images']} images"
        for name in required
        if report[name]["top1_agreement"] < minimum
    ]
    if failing:
        raise UserError(f"exported model differs from the Keras model: {'; '.join(failing)} (needs >= {minimum:.0%})")


def summary(report: dict) -> str:
    """One line for the console: sizes and agreement of each format."""
    parts = [
        f"{name} {report[name]['size_bytes'] / 1e6:.1f} MB, top-1 agreement {report[name]['top1_agreement']:.2%}"
        for name in EXPORT_FORMATS
    ]
    return f"checked on {report['images']} images: " + "; ".join(parts)


def _tree_size(folder: Path) -> int:
    """Bytes of the SavedModel's files, less ``fingerprint.pb``: a few bytes of hashes that vary between
    runs, so that the same model gives the same metrics file."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != "fingerprint.pb")
