"""``inat-classifier``: use the trained model (``predict``), export it for serving (``export``), compare
two runs on the same photos (``compare``), check a reproduction against the committed run (``check``)
or write a pull request's review (``review``).

Heavy imports (TensorFlow, Keras) happen inside the commands, so ``--help`` answers at once.
A user error is one line on stderr (``error: ...``) and exit status 2, as in the stage scripts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import UserError

from .layout import EXPORT_DIR as DEFAULT_EXPORT_DIR
from .layout import EXPORT_METRICS as DEFAULT_EXPORT_METRICS
from .layout import MODEL as DEFAULT_MODEL  # relative to the project root (the folder with dvc.yaml)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _pixel_cap(text: str) -> int:
    from .data.images import PILLOW_MAX_PIXELS

    value = _positive(text)
    if value > PILLOW_MAX_PIXELS:
        raise argparse.ArgumentTypeError(f"{value} is above Pillow's own limit of {PILLOW_MAX_PIXELS}, which would apply")
    return value


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("inat-classifier")
    except PackageNotFoundError:  # run from a source tree without `pip install -e .`
        return "unknown (not installed)"


def project_path(relative: Path, start: Path | None = None) -> Path:
    """``relative`` under the nearest folder from ``start`` up that holds dvc.yaml, so a default like
    models/model.keras works from any folder of the project; ``relative`` itself outside one."""
    start = (Path.cwd() if start is None else start).resolve()
    for folder in (start, *start.parents):
        if (folder / "dvc.yaml").is_file():
            return folder / relative
    return relative


MODEL_HELP = f"a .keras model (default: {DEFAULT_MODEL} in the project around the current folder)"


def build_parser() -> argparse.ArgumentParser:
    from .data.images import DEFAULT_MAX_PIXELS

    parser = argparse.ArgumentParser(
        prog="inat-classifier",
        description="Use the trained species classifier on photos, export it, or compare and check runs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="top-k species for image files and folders",
        description=(
            "Classify image files, and image files found recursively in folders, with the trained model. "
            "One row per readable image: path, prediction, probability, class_1, probability_1, ... "
            "Unreadable files are reported on stderr and skipped."
        ),
    )
    add = predict.add_argument
    add("inputs", nargs="+", metavar="PATH", help="image files or folders")
    add("--model", type=Path, metavar="PATH", help=MODEL_HELP)
    add(
        "--classes",
        type=Path,
        metavar="JSON",
        help="JSON list of class names in label order (default: <model stem>.classes.json beside the model; "
        "without it, this is required)",
    )
    add("-k", "--top-k", type=_positive, default=3, metavar="K", help="classes per image (default: %(default)s)")
    add(
        "--threshold",
        type=_probability,
        default=0.0,
        metavar="P",
        help="answer 'unknown' when the top probability is below this (default: %(default)s, never)",
    )
    add(
        "--rollup",
        action="store_true",
        help="below --threshold, answer the lowest taxon (genus, family, ...) whose species' summed probability "
        "reaches it ('Catharus, 0.93'), with a rank column; needs class names with their ancestry",
    )
    add("--format", choices=("table", "csv", "json"), help="default: from --output's extension, else table")
    add("-o", "--output", metavar="FILE",
        help="write here instead of stdout (a regular file is replaced atomically; /dev/stdout or a pipe is written to)")
    add("--batch-size", type=_positive, default=32, metavar="N", help="images per batch (default: %(default)s)")
    add("--tta", type=_positive, default=1, metavar="N",
        help="test-time augmentation: average the plain view and N-1 augmented ones (default: %(default)s, plain only)")
    add("--max-pixels", type=_pixel_cap, metavar="N", help=f"skip images larger than this (default: {DEFAULT_MAX_PIXELS})")
    add("--no-progress", action="store_true", help="no progress bar on stderr (shown when a folder is given)")
    predict.set_defaults(handler=run_predict)

    export = commands.add_parser(
        "export",
        help="SavedModel and TFLite (float16, int8) models, checked against the Keras model",
        description=(
            "Export the model as a SavedModel (TF Serving) and TFLite models with float16 and dynamic-range "
            "int8 weights, run each on test images, and write sizes and top-1 agreement with the Keras model."
        ),
    )
    add = export.add_argument
    add("--model", type=Path, metavar="PATH", help=MODEL_HELP)
    add(
        "--output-dir",
        type=Path,
        default=DEFAULT_EXPORT_DIR,
        metavar="DIR",
        help="folder for the exported models, replaced as a whole; refused if it holds other files "
        "(default: %(default)s)",
    )
    add(
        "--metrics",
        type=Path,
        default=DEFAULT_EXPORT_METRICS,
        metavar="FILE",
        help="sizes and top-1 agreement as JSON (default: %(default)s)",
    )
    add(
        "--images",
        nargs="+",
        metavar="PATH",
        help="image files or folders to compare on (default: the test split, data/subset/test.csv)",
    )
    add("--classes", type=Path, metavar="JSON", help="class names (default: as for predict)")
    add("--batch-size", type=_positive, default=32, metavar="N", help="images per batch (default: %(default)s)")
    export.set_defaults(handler=run_export)

    compare = commands.add_parser(
        "compare",
        help="accuracy of two runs on the same photos, with a paired interval and McNemar's test",
        description=(
            "For each split both runs evaluated: each run's accuracy, the difference B - A with its 95% "
            "interval (Newcombe's paired square-and-add) and the exact McNemar p-value, with a verdict at 0.05. "
            "A run is a git revision, a dvc experiment name or 'workspace'; its committed "
            "metrics/evaluate.json and metrics/predictions_<split>.csv are read without checking anything out."
        ),
    )
    add = compare.add_argument
    add("a", metavar="A", help="git revision, dvc experiment or 'workspace'")
    add("b", metavar="B", help="the same; the difference is B - A")
    add("--json", action="store_true", help="JSON instead of a table")
    compare.set_defaults(handler=run_compare)

    check = commands.add_parser(
        "check",
        help="after dvc repro: identical to HEAD's run, within tolerance of it, or differs (exit 1)",
        description=(
            "Compare the reproduced workspace with the committed run (HEAD): 'identical' when every output "
            "DVC leaves to git and dvc.lock equal HEAD's, else 'within tolerance' when each split's accuracy "
            "moved by at most the tolerance and McNemar finds no significant difference, else 'differs'."
        ),
    )
    check.set_defaults(handler=run_check)

    review = commands.add_parser(
        "review",
        help="one Markdown file for a pull request or CML comment: params, metrics, verdict, plots vs a base",
        description=(
            "Write the workspace's review against BASE: `dvc params diff --md`, `dvc metrics diff --md`, the "
            "verdict of `compare BASE workspace` and `dvc plots diff` (image plots embedded, the rest in an "
            "HTML page beside the file). `make report` runs it."
        ),
    )
    add = review.add_argument
    add("--base", default="main", metavar="REV", help="git revision or dvc experiment (default: %(default)s)")
    add("-o", "--output", type=Path, default=Path("review/review.md"), metavar="FILE",
        help="relative to the repository root; plots go to a plots/ folder beside it (default: %(default)s)")
    review.set_defaults(handler=run_review)
    return parser


def _require_model(path: Path) -> None:
    """Fail fast, before TensorFlow loads, when the model file is missing (the same message as load_model)."""
    if not path.is_file():
        raise UserError(f"{path}: model file not found; run the training stages first (dvc repro)")


def _class_names(args: argparse.Namespace) -> list[str]:
    return [taxon.name for taxon in _classes(args)]


def _classes(args: argparse.Namespace) -> list:
    """The classes with their taxonomy (``taxonomy.Taxon``), from --classes or beside the model."""
    from .data.classnames import load_taxa_beside, read_classes

    return read_classes(args.classes) if args.classes else load_taxa_beside(args.model)


def run_predict(args: argparse.Namespace) -> int:
    _require_model(args.model)
    from .data.images import DEFAULT_MAX_PIXELS
    from .train.model import load_model
    from .serve.predict import classify, collect_images, format_for, render, report_problems, write_output

    fmt = format_for(args.output, args.format)
    paths, missing = collect_images(args.inputs)
    report_problems(missing)
    if not paths:
        raise UserError(f"no image files found in {', '.join(map(str, args.inputs))}")
    classes = _classes(args)
    model = load_model(args.model)
    frame, problems = classify(
        model,
        paths,
        classes,
        top_k=args.top_k,
        threshold=args.threshold,
        rollup=args.rollup,
        batch_size=args.batch_size,
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
        progress=not args.no_progress and any(Path(item).is_dir() for item in args.inputs),
        tta=args.tta,
    )
    report_problems(problems)
    write_output(render(frame, fmt), args.output)
    skipped = len(problems) + len(missing)
    print(f"classified {len(frame)} image(s), skipped {skipped}", file=sys.stderr)
    return 0


def _require_locked_model(model: Path, metrics: Path) -> None:
    """``metrics/export.json`` is the pipeline's record: refuse to write it for a model other than the one
    dvc.lock pins (an older run's, or an experiment not committed), or it would describe the wrong model."""
    import yaml

    from .serve.export import md5_of

    root = project_path(Path(".")).resolve()
    lock = root / "dvc.lock"
    if metrics.resolve() != (root / DEFAULT_EXPORT_METRICS).resolve() or not lock.is_file():
        return
    outs = [out for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values() for out in stage.get("outs", [])]
    pinned = next((out.get("md5") for out in outs if out.get("path") == DEFAULT_MODEL.as_posix()), None)
    if pinned and md5_of(model) != pinned:
        raise UserError(f"{model} is not the model dvc.lock pins ({DEFAULT_MODEL}, md5 {pinned[:8]}...): run `dvc repro` "
                        f"or `dvc checkout` first, or write the figures elsewhere with --metrics FILE")


def run_export(args: argparse.Namespace) -> int:
    _require_model(args.model)
    _require_locked_model(args.model, args.metrics)
    from .atomic import write_json
    from .serve.export import check_agreement, check_output_dir, export_model, summary
    from .train.model import load_model
    from .serve.predict import collect_images, input_size, report_problems

    check_output_dir(args.output_dir)  # before any work: the folder is replaced as a whole
    names = _class_names(args)
    model = load_model(args.model)
    size = input_size(model)
    if args.images:
        from .data.images import load_many

        paths, missing = collect_images(args.images)
        report_problems(missing)
        pixels, _, problems = load_many(paths, size, desc="decoding")
        report_problems(problems)
    else:
        from .train.dataset import load_split
        from .params import load_params

        params = load_params()
        if params.data.image_size != size:
            raise UserError(
                f"{args.model} takes {size} px images but data.image_size is {params.data.image_size}; pass --images"
            )
        pixels = _test_pixels(params)
    shown = args.model.relative_to(Path.cwd()) if args.model.is_relative_to(Path.cwd()) else args.model  # as dvc.yaml names it
    report = export_model(model, args.output_dir, pixels, names, args.batch_size, model_path=shown)
    write_json(args.metrics, report)
    print(summary(report), file=sys.stderr)
    check_agreement(report)
    return 0


def _test_pixels(params) -> "np.ndarray":
    """The test split's uint8 pixels: decoded from the photos, or read from the subset's shards
    (``data.format: tfrecord``), a batch at a time, in the split's order."""
    import numpy as np

    from .train.dataset import batches, load_split

    split = load_split("test", params.data)
    if split.pixels is not None:
        return split.pixels
    ordered = batches(split, params.data, params.seed, shuffle=False).dataset
    return np.concatenate([images.numpy().astype(np.uint8) for images, _ in ordered])


def run_compare(args: argparse.Namespace) -> int:
    from .compare.comparison import compare_runs, render_json, render_text
    from .compare.revisions import repository_root, resolve

    root = repository_root()
    a, b = resolve(args.a, root), resolve(args.b, root)
    rows, notes = compare_runs(a, b)
    print((render_json if args.json else render_text)(a, b, rows, notes), end="")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from .compare.check import DIFFERS, check
    from .compare.revisions import repository_root

    verdict, lines = check(repository_root())
    print("\n".join([verdict, *(f"  {line}" for line in lines)]))
    return 1 if verdict == DIFFERS else 0


def run_review(args: argparse.Namespace) -> int:
    from .compare.revisions import repository_root
    from .compare.review import write_review

    print(write_review(repository_root(), args.base, args.output))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "model", False) is None:
        args.model = project_path(DEFAULT_MODEL)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
